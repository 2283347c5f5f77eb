"""RoI poolers: FPN level assignment (box head, s1x) and multi-path pooling (AMANet).

Boxes are given per image as ``[R_i, 4]`` XYXY tensors in the coordinates of the (resized,
padded) input; features are ``[B, C, H, W]`` per level.
"""
from __future__ import annotations

import math
from typing import List, Sequence

import torch
from torch import nn

from ..ops import roi_align

_ALIGNED = {"ROIAlign": False, "ROIAlignV2": True}


def aligned_flag(pooler_type: str) -> bool:
    """``ROIAlign`` -> aligned=False, ``ROIAlignV2`` -> aligned=True (Detectron2's names)."""
    try:
        return _ALIGNED[pooler_type]
    except KeyError:
        raise ValueError(f"POOLER_TYPE={pooler_type!r} is not supported "
                         f"({sorted(_ALIGNED)})") from None


def rois_like(boxes: List[torch.Tensor], feature: torch.Tensor) -> torch.Tensor:
    """``[R, 5]`` rois on the features' device, in float32 at least: coordinates of large
    images do not fit a 16-bit float (bf16 / fp16 features under autocast)."""
    return boxes_to_rois(boxes).to(feature.device, torch.promote_types(feature.dtype,
                                                                       torch.float32))


def boxes_to_rois(boxes: List[torch.Tensor]) -> torch.Tensor:
    """Per-image boxes -> ``[R, 5]`` rows of (batch index, x1, y1, x2, y2)."""
    if len(boxes) == 0:
        return torch.zeros((0, 5))
    idx = torch.cat([torch.full((b.shape[0], 1), float(i), dtype=b.dtype, device=b.device)
                     for i, b in enumerate(boxes)], dim=0)
    return torch.cat([idx, torch.cat(boxes, dim=0)], dim=1)


def assign_levels(rois: torch.Tensor, min_level: int, max_level: int,
                  canonical_box_size: int = 224, canonical_level: int = 4) -> torch.Tensor:
    """FPN level index (0-based from ``min_level``) of each RoI, by sqrt(area)."""
    box = rois[:, 1:]
    sizes = torch.sqrt((box[:, 2] - box[:, 0]) * (box[:, 3] - box[:, 1]))
    levels = torch.floor(canonical_level + torch.log2(sizes / canonical_box_size + 1e-8))
    return (torch.clamp(levels, min=min_level, max=max_level) - min_level).to(torch.int64)


def pool_by_level(features: List[torch.Tensor], rois: torch.Tensor, output_size: int,
                  scales: List[float], sampling_ratio: int, aligned: bool, min_level: int,
                  max_level: int) -> torch.Tensor:
    """ROIAlign of each RoI ``[R, 5]`` from its FPN level (Detectron2's assignment rule):
    ``-> [R, C, S, S]`` in input order; one feature map: no assignment.

    Eager and scripted, each RoI is pooled from its own level only; traced (ONNX / TensorRT)
    every level is pooled and the RoI's level selected, which keeps the graph free of
    data-dependent scatters at L x the pooling work.
    """
    s = int(output_size)
    if len(features) == 1:
        return roi_align(features[0], rois, [s, s], scales[0], sampling_ratio, aligned)
    levels = assign_levels(rois, min_level, max_level)
    if torch.jit.is_scripting() or not torch.jit.is_tracing():
        out = features[0].new_zeros((rois.shape[0], features[0].shape[1], s, s))
        for lvl, feat in enumerate(features):
            inds = torch.nonzero(levels == lvl).squeeze(1)
            if inds.numel() > 0:
                out[inds] = roi_align(feat, rois[inds], [s, s], scales[lvl], sampling_ratio,
                                      aligned)
        return out
    out = torch.zeros(0)
    for lvl, feat in enumerate(features):
        pooled = roi_align(feat, rois, [s, s], scales[lvl], sampling_ratio, aligned)
        out = pooled if lvl == 0 else torch.where((levels == lvl)[:, None, None, None], pooled,
                                                   out)
    return out


class ROIPooler(nn.Module):
    """ROIAlign from one of several FPN levels per RoI: ``-> [R, C, S, S]`` in input order."""

    def __init__(self, output_size: int, scales: Sequence[float], sampling_ratio: int,
                 pooler_type: str):
        super().__init__()
        self.output_size = int(output_size)
        self.scales = [float(s) for s in scales]
        self.sampling_ratio = int(sampling_ratio)
        self.aligned = aligned_flag(pooler_type)
        self.min_level = int(round(-math.log2(self.scales[0])))
        self.max_level = int(round(-math.log2(self.scales[-1])))

    def forward(self, features: List[torch.Tensor], boxes: List[torch.Tensor]) -> torch.Tensor:
        return self.forward_rois(features, rois_like(boxes, features[0]))

    def forward_rois(self, features: List[torch.Tensor], rois: torch.Tensor) -> torch.Tensor:
        """Pooling of ``[R, 5]`` rois (batch index first)."""
        return pool_by_level(features, rois, self.output_size, self.scales, self.sampling_ratio,
                             self.aligned, self.min_level, self.max_level)


class MultiPathPooler(nn.Module):
    """AMANet pooling: every RoI from every level, level i at its own output size.

    Returns a list of ``[R, C, S_i, S_i]`` (p2 32x32, p3 16x16, p4 16x16, p5 8x8 by default).
    """

    def __init__(self, output_sizes: Sequence[int], scales: Sequence[float], sampling_ratio: int,
                 pooler_type: str):
        super().__init__()
        if len(output_sizes) != len(scales):
            raise ValueError("one output size per pooled level is required")
        self.output_sizes = [int(s) for s in output_sizes]
        self.scales = [float(s) for s in scales]
        self.sampling_ratio = int(sampling_ratio)
        self.aligned = aligned_flag(pooler_type)

    def forward(self, features: List[torch.Tensor], boxes: List[torch.Tensor]
                ) -> List[torch.Tensor]:
        return self.forward_rois(features, rois_like(boxes, features[0]))

    def forward_rois(self, features: List[torch.Tensor], rois: torch.Tensor
                     ) -> List[torch.Tensor]:
        """Pooling of ``[R, 5]`` rois (batch index first): one map per path."""
        out: List[torch.Tensor] = []
        for i, feat in enumerate(features):
            s = self.output_sizes[i]
            out.append(roi_align(feat, rois, [s, s], self.scales[i], self.sampling_ratio,
                                 self.aligned))
        return out
