"""The training data stream: which images form iteration ``t``'s batch, and their augmentation.

Everything random is a pure function of ``(seed, iteration, slot)`` where ``slot`` is the
image's position in the *global* batch of ``SOLVER.IMS_PER_BATCH`` images:

- data order: the records are shuffled once per epoch by a permutation seeded with
  ``(seed, epoch)``; global batch ``t`` takes stream positions ``t*B .. t*B+B-1``;
- each image gets a :class:`numpy.random.SeedSequence` ``(seed, t, slot)`` that seeds its
  augmentation (scale choice, flip) and its anchor/proposal sampling in the model.

A process of rank ``r`` in a world of ``P`` takes slots ``r*B/P .. (r+1)*B/P - 1``. So the
batch contents do not depend on the number of processes, and resuming at iteration ``k`` needs
no sampler state besides ``k`` (the state is saved anyway, for inspection).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch

from ..config import Config
from ..data.image_io import read_image
from ..modeling.training import ImageTargets, targets_from_annotations

logger = logging.getLogger(__name__)

__all__ = ["TrainingStream", "filter_records", "slot_seeds"]


def slot_seeds(seed: int, iteration: int, slot: int) -> Tuple[int, int]:
    """(augmentation seed, sampling seed) of one global batch slot."""
    a, b = np.random.SeedSequence([int(seed), int(iteration), int(slot)]).generate_state(2)
    return int(a), int(b)


def filter_records(records: Sequence[Mapping[str, Any]]) -> List[Mapping[str, Any]]:
    """Drop images without a non-crowd annotation (``DATALOADER.FILTER_EMPTY_ANNOTATIONS``)."""
    kept = [r for r in records
            if any(not a.get("iscrowd", 0) for a in r.get("annotations", []))]
    if len(kept) < len(records):
        logger.info("dropped %d of %d images without usable annotations",
                    len(records) - len(kept), len(records))
    return kept


@dataclass
class Sample:
    image: torch.Tensor          # [3, H, W] float32, 0..255, the config's channel order
    targets: ImageTargets
    sample_seed: int
    image_id: Any


class TrainingStream:
    """Batches of a list of records (the :mod:`amanet.data.densepose_coco` contract).

    Args:
        records: dataset records (already filtered; see :func:`filter_records`).
        cfg: the config (``input.*`` augmentation, ``solver.ims_per_batch``).
        seed: the run's seed.
        rank, world_size: this process's shard of each global batch.
        symmetry: the DensePose flip symmetry (part / UV remap) for horizontal flips; ``None``
            takes :func:`amanet.data.synthetic.synthetic_symmetry` if flips are enabled and the
            data module offers nothing else.
        category_to_class: dataset category id -> class index (default: all -> 0).
    """

    def __init__(self, records: Sequence[Mapping[str, Any]], cfg: Config, seed: int,
                 rank: int = 0, world_size: int = 1, symmetry: Any = None,
                 category_to_class: Optional[Mapping[int, int]] = None):
        if not records:
            raise ValueError("the training set has no images with annotations")
        batch = cfg.solver.ims_per_batch
        if batch % world_size:
            raise ValueError(f"SOLVER.IMS_PER_BATCH={batch} must be divisible by the number of "
                             f"processes ({world_size})")
        self.records = list(records)
        self.cfg = cfg
        self.seed = int(seed)
        self.rank = rank
        self.world_size = world_size
        self.batch_size = batch
        self.local_batch = batch // world_size
        self.symmetry = symmetry
        self.category_to_class = category_to_class
        self._perm_epoch = -1
        self._perm: np.ndarray = np.arange(0)

    # -- order -----------------------------------------------------------------------------
    def _permutation(self, epoch: int) -> np.ndarray:
        if epoch != self._perm_epoch:
            rng = np.random.default_rng([self.seed, epoch, 0x5EED])
            self._perm = rng.permutation(len(self.records))
            self._perm_epoch = epoch
        return self._perm

    def global_indices(self, iteration: int) -> List[int]:
        """Dataset indices of the whole global batch of ``iteration``."""
        n = len(self.records)
        out = []
        for j in range(self.batch_size):
            pos = iteration * self.batch_size + j
            out.append(int(self._permutation(pos // n)[pos % n]))
        return out

    def local_slots(self) -> range:
        return range(self.rank * self.local_batch, (self.rank + 1) * self.local_batch)

    # -- loading ---------------------------------------------------------------------------
    def load(self, index: int, aug_seed: int) -> Tuple[torch.Tensor, ImageTargets, Any]:
        """One record, read and augmented with ``aug_seed``."""
        rec = self.records[index]
        image = read_image(rec["file_name"])
        anns = [a for a in rec["annotations"] if not a.get("iscrowd", 0)]
        rng = np.random.default_rng(aug_seed)
        image, anns = self.augment(image, anns, rng)
        if self.cfg.input.format.upper() == "RGB":
            image = image[:, :, ::-1]
        tensor = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))).float()
        targets = targets_from_annotations(anns, self.category_to_class,
                                           self.cfg.densepose.num_keypoints)
        return tensor, targets, rec.get("image_id")

    def augment(self, image: np.ndarray, anns: List[Mapping[str, Any]], rng: np.random.Generator):
        """Detectron2's training augmentation: shortest-edge resize, then horizontal flip."""
        from . import _augment
        return _augment.apply(image, anns, rng, self.cfg.input, self.symmetry)

    def batch(self, iteration: int) -> List[Sample]:
        """This process's shard of the global batch of ``iteration``."""
        indices = self.global_indices(iteration)
        out = []
        for slot in self.local_slots():
            aug_seed, sample_seed = slot_seeds(self.seed, iteration, slot)
            image, targets, image_id = self.load(indices[slot], aug_seed)
            out.append(Sample(image, targets, sample_seed, image_id))
        return out

    def state_dict(self) -> Dict[str, Any]:
        """The sampler is stateless (a function of seed and iteration); this records it."""
        return {"kind": "stateless-per-iteration", "seed": self.seed,
                "num_records": len(self.records), "ims_per_batch": self.batch_size}
