"""Training augmentation glue: Detectron2's ``ResizeShortestEdge`` then ``RandomFlip``
(:mod:`amanet.data.augment`) on a record's image and annotations, from one numpy RNG."""
from __future__ import annotations

import logging
from typing import Any, List, Mapping, Tuple

import numpy as np

from ..config.schema import InputConfig
from ..data.augment import hflip, random_resize

logger = logging.getLogger(__name__)
_warned = False


def apply(image: np.ndarray, anns: List[Mapping[str, Any]], rng: np.random.Generator,
          cfg: InputConfig, symmetry: Any = None) -> Tuple[np.ndarray, List[dict]]:
    """Resize (short side drawn from ``INPUT.MIN_SIZE_TRAIN``), then flip with probability 0.5
    when ``INPUT.RANDOM_FLIP`` is ``horizontal``. The RNG draws: scale, then the flip coin."""
    global _warned
    image, anns = random_resize(image, list(anns), cfg.min_size_train, cfg.max_size_train, rng,
                                cfg.min_size_train_sampling)
    if cfg.random_flip == "horizontal":
        flip = bool(rng.random() < 0.5)
        if flip and symmetry is not None:
            image, anns = hflip(image, anns, symmetry)
        elif flip and not _warned:
            _warned = True
            logger.warning("INPUT.RANDOM_FLIP=horizontal but no DensePose flip symmetry is "
                           "available (for DensePose-COCO supply UV_symmetry_transforms.mat): "
                           "images are not flipped")
    elif cfg.random_flip == "vertical":
        raise ValueError("INPUT.RANDOM_FLIP=vertical is not supported for DensePose training")
    return image, anns
