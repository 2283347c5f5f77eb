"""The whole model: backbone + RPN + RoI heads, for both families.

:class:`DensePoseRCNN` works on already-resized images; :mod:`amanet.runtime` does the resize
and maps boxes back to the original image.
"""
from __future__ import annotations

import logging
from typing import Any, Dict, List, Optional, Tuple

import torch
from torch import nn

from ..config import Config
from .backbone import FPN
from .families import densepose_output_channels
from .roi_heads import DensePoseROIHeads
from .rpn import RPN

logger = logging.getLogger(__name__)


class DensePoseRCNN(nn.Module):
    """Generalized R-CNN with a DensePose branch.

    ``forward(images)`` takes a list of ``[3, H_i, W_i]`` float tensors (0..255, in the
    config's channel order) and returns, per image, ``boxes [D, 4]`` (XYXY in that image's
    coordinates), ``scores [D]``, ``classes [D]`` and ``densepose``: a dict of ``[D, C, S, S]``
    tensors (see :mod:`amanet.modeling.roi_heads`).
    """

    def __init__(self, cfg: Config):
        super().__init__()
        self.cfg = cfg.clone()
        self.backbone = FPN(cfg.backbone)
        self.proposal_generator = RPN(cfg.rpn, self.backbone.out_channels, self.backbone.strides)
        self.roi_heads = DensePoseROIHeads(cfg, self.backbone.out_channels, self.backbone.strides)
        self.register_buffer("pixel_mean", torch.tensor(cfg.input.pixel_mean).view(-1, 1, 1),
                             persistent=False)
        self.register_buffer("pixel_std", torch.tensor(cfg.input.pixel_std).view(-1, 1, 1),
                             persistent=False)
        self.size_divisibility = cfg.input.size_divisibility
        self.roi_heads.fold()

    @property
    def family(self) -> str:
        return self.cfg.family

    # -- checkpoints keep the folded AMANet weights in sync ---------------------------------
    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        result = super().load_state_dict(state_dict, strict=strict, assign=assign)
        self.roi_heads.fold()
        return result

    # -- stages ------------------------------------------------------------------------------
    def preprocess(self, images: List[torch.Tensor]) -> Tuple[torch.Tensor, List[Tuple[int, int]]]:
        """Normalise, then zero-pad to a common size divisible by ``size_divisibility``.

        Returns ``[B, 3, H_pad, W_pad]`` and the unpadded ``(h, w)`` of each image.
        """
        sizes = [(int(im.shape[-2]), int(im.shape[-1])) for im in images]
        max_h = max(s[0] for s in sizes)
        max_w = max(s[1] for s in sizes)
        d = self.size_divisibility
        if d > 1:
            max_h = (max_h + d - 1) // d * d
            max_w = (max_w + d - 1) // d * d
        batch = images[0].new_zeros((len(images), 3, max_h, max_w))
        for i, im in enumerate(images):
            x = (im.to(self.pixel_mean.device, torch.float32) - self.pixel_mean) / self.pixel_std
            batch[i, :, :x.shape[1], :x.shape[2]] = x
        return batch, sizes

    def forward(self, images: List[torch.Tensor], with_densepose: bool = True,
                unfolded: bool = False) -> List[Dict[str, Any]]:
        batch, sizes = self.preprocess(images)
        features = self.backbone(batch)
        proposals, _ = self.proposal_generator(features, sizes)
        results = self.roi_heads.detect(features, proposals, sizes)
        if with_densepose:
            self.attach_densepose(features, results, unfolded)
        return results

    def attach_densepose(self, features: Dict[str, torch.Tensor],
                         results: List[Dict[str, Any]], unfolded: bool = False) -> None:
        """Run the DensePose branch on the detections and split its outputs per image."""
        boxes = [r["boxes"] for r in results]
        total = sum(int(b.shape[0]) for b in boxes)
        if total == 0:
            empty = self.empty_densepose(features["p2"].device)
            for r in results:
                r["densepose"] = {k: v.clone() for k, v in empty.items()}
            return
        out = self.roi_heads.densepose(features, boxes, unfolded)
        start = 0
        for r, b in zip(results, boxes):
            n = int(b.shape[0])
            r["densepose"] = {k: v[start:start + n] for k, v in out.items()}
            start += n

    def densepose_channels(self) -> Dict[str, int]:
        """Channels of each DensePose output of this model, in the branch's order."""
        return densepose_output_channels(self.cfg)

    def empty_densepose(self, device: Optional[torch.device] = None) -> Dict[str, torch.Tensor]:
        s = self.cfg.densepose.heatmap_size
        return {k: torch.zeros((0, c, s, s), device=device)
                for k, c in self.densepose_channels().items()}


def build_model(cfg: Config) -> DensePoseRCNN:
    """A model with freshly initialised (random) weights, in eval mode."""
    model = DensePoseRCNN(cfg)
    model.eval()
    return model

