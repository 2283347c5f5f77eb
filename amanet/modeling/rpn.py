"""Region proposal network: anchors, the shared RPN head, and test-time proposal selection.

Names reproduce Detectron2's keys: ``proposal_generator.rpn_head.{conv,objectness_logits,
anchor_deltas}``.
"""
from __future__ import annotations

import math
from typing import Dict, List, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from ..config import RPNConfig
from ..ops import batched_nms
from .box_ops import apply_deltas, clip_boxes, nonempty


def cell_anchors(sizes: Tuple[float, ...], aspect_ratios: Tuple[float, ...]) -> torch.Tensor:
    """Anchors centred at 0: ``[len(sizes)*len(ratios), 4]``, sizes outer, ratios inner."""
    anchors = []
    for size in sizes:
        area = size ** 2.0
        for ratio in aspect_ratios:
            w = math.sqrt(area / ratio)
            h = ratio * w
            anchors.append([-w / 2.0, -h / 2.0, w / 2.0, h / 2.0])
    return torch.tensor(anchors)


class AnchorGenerator(nn.Module):
    """Per-level anchors ``[H*W*A, 4]``, position-major then anchor (Detectron2 order)."""

    def __init__(self, cfg: RPNConfig, strides: List[int]):
        super().__init__()
        sizes = cfg.anchor_sizes
        ratios = cfg.aspect_ratios
        if len(sizes) == 1:
            sizes = sizes * len(strides)
        if len(ratios) == 1:
            ratios = ratios * len(strides)
        if len(sizes) != len(strides) or len(ratios) != len(strides):
            raise ValueError("MODEL.ANCHOR_GENERATOR.SIZES/ASPECT_RATIOS must have one entry or "
                             f"one per RPN level ({len(strides)})")
        self.strides = list(strides)
        self.offset = cfg.anchor_offset
        self.num_anchors = len(sizes[0]) * len(ratios[0])
        for i, (s, r) in enumerate(zip(sizes, ratios)):
            self.register_buffer(f"cell_anchors_{i}", cell_anchors(tuple(s), tuple(r)),
                                 persistent=False)

    def forward(self, grid_sizes: List[Tuple[int, int]]) -> List[torch.Tensor]:
        out = []
        for i, ((h, w), stride) in enumerate(zip(grid_sizes, self.strides)):
            base = getattr(self, f"cell_anchors_{i}")
            shift_x = torch.arange(self.offset * stride, w * stride, step=stride,
                                   dtype=torch.float32, device=base.device)
            shift_y = torch.arange(self.offset * stride, h * stride, step=stride,
                                   dtype=torch.float32, device=base.device)
            sy, sx = torch.meshgrid(shift_y, shift_x, indexing="ij")
            sx, sy = sx.reshape(-1), sy.reshape(-1)
            shifts = torch.stack((sx, sy, sx, sy), dim=1)
            out.append((shifts.view(-1, 1, 4) + base.view(1, -1, 4)).reshape(-1, 4))
        return out


class RPNHead(nn.Module):
    """Shared 3x3 conv + ReLU, then per-anchor objectness and box deltas."""

    def __init__(self, in_channels: int, num_anchors: int, box_dim: int = 4):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, in_channels, 3, padding=1)
        self.objectness_logits = nn.Conv2d(in_channels, num_anchors, 1)
        self.anchor_deltas = nn.Conv2d(in_channels, num_anchors * box_dim, 1)
        for layer in (self.conv, self.objectness_logits, self.anchor_deltas):
            nn.init.normal_(layer.weight, std=0.01)
            nn.init.constant_(layer.bias, 0)

    def forward(self, features: List[torch.Tensor]) -> Tuple[List[torch.Tensor],
                                                               List[torch.Tensor]]:
        """Per level: logits ``[B, H*W*A]`` and deltas ``[B, H*W*A, 4]``."""
        logits, deltas = [], []
        for x in features:
            t = F.relu(self.conv(x))
            # float32 whatever the compute precision: anchor decoding and top-k need it
            lg = self.objectness_logits(t).float()
            dl = self.anchor_deltas(t).float()
            b, a, h, w = lg.shape
            logits.append(lg.permute(0, 2, 3, 1).reshape(b, -1))
            deltas.append(dl.view(b, a, 4, h, w).permute(0, 3, 4, 1, 2).reshape(b, -1, 4))
        return logits, deltas


class RPN(nn.Module):
    """Proposals per image: boxes ``[R, 4]`` (XYXY, resized-image coords) and logits ``[R]``."""

    def __init__(self, cfg: RPNConfig, in_channels: int, strides: Dict[str, int]):
        super().__init__()
        self.cfg = cfg
        self.in_features = list(cfg.in_features)
        self.anchor_generator = AnchorGenerator(cfg, [strides[f] for f in self.in_features])
        self.rpn_head = RPNHead(in_channels, self.anchor_generator.num_anchors)

    def forward(self, features: Dict[str, torch.Tensor], image_sizes: List[Tuple[int, int]]
                ) -> Tuple[List[torch.Tensor], List[torch.Tensor]]:
        feats = [features[f] for f in self.in_features]
        anchors = self.anchor_generator([(int(x.shape[-2]), int(x.shape[-1])) for x in feats])
        logits, deltas = self.rpn_head(feats)
        proposals = []
        for anc, dl in zip(anchors, deltas):
            b = dl.shape[0]
            decoded = apply_deltas(dl.reshape(-1, 4), anc.repeat(b, 1), self.cfg.bbox_reg_weights)
            proposals.append(decoded.view(b, -1, 4))
        pre = self.cfg.pre_nms_topk_test if not self.training else self.cfg.pre_nms_topk_train
        post = self.cfg.post_nms_topk_test if not self.training else self.cfg.post_nms_topk_train
        return find_top_proposals(proposals, logits, image_sizes, self.cfg.nms_thresh, pre, post,
                                  self.cfg.min_size)

    def predict_raw(self, features: Dict[str, torch.Tensor]):
        """Anchors, logits and deltas per level (training needs them for the losses)."""
        feats = [features[f] for f in self.in_features]
        anchors = self.anchor_generator([(int(x.shape[-2]), int(x.shape[-1])) for x in feats])
        logits, deltas = self.rpn_head(feats)
        return anchors, logits, deltas


def find_top_proposals(proposals: List[torch.Tensor], logits: List[torch.Tensor],
                       image_sizes: List[Tuple[int, int]], nms_thresh: float, pre_nms_topk: int,
                       post_nms_topk: int, min_box_size: float
                       ) -> Tuple[List[torch.Tensor], List[torch.Tensor]]:
    """Top-k per level, then per image: drop non-finite, clip, drop empty, per-level NMS, top-k.

    ``proposals[l]: [B, HWA_l, 4]``, ``logits[l]: [B, HWA_l]``.
    """
    num_images = len(image_sizes)
    device = proposals[0].device
    batch_idx = torch.arange(num_images, device=device)
    top_props, top_scores, level_ids = [], [], []
    for level, (props, lg) in enumerate(zip(proposals, logits)):
        k = min(pre_nms_topk, lg.shape[1])
        scores, idx = lg.topk(k, dim=1)
        top_props.append(props[batch_idx[:, None], idx])
        top_scores.append(scores)
        level_ids.append(torch.full((k,), level, dtype=torch.int64, device=device))
    all_props = torch.cat(top_props, dim=1)
    all_scores = torch.cat(top_scores, dim=1)
    all_levels = torch.cat(level_ids, dim=0)

    boxes_out, scores_out = [], []
    for n, (h, w) in enumerate(image_sizes):
        boxes, scores, lvl = all_props[n], all_scores[n], all_levels
        valid = torch.isfinite(boxes).all(dim=1) & torch.isfinite(scores)
        if not bool(valid.all()):
            boxes, scores, lvl = boxes[valid], scores[valid], lvl[valid]
        boxes = clip_boxes(boxes, h, w)
        keep = nonempty(boxes, min_box_size)
        if not bool(keep.all()):
            boxes, scores, lvl = boxes[keep], scores[keep], lvl[keep]
        keep = batched_nms(boxes, scores, lvl, nms_thresh)[:post_nms_topk]
        boxes_out.append(boxes[keep])
        scores_out.append(scores[keep])
    return boxes_out, scores_out
