"""Fast R-CNN box head (2 FC) and box predictor with test-time detection selection.

Names reproduce Detectron2's keys: ``roi_heads.box_head.fc{1,2}``,
``roi_heads.box_predictor.{cls_score,bbox_pred}``.
"""
from __future__ import annotations

from typing import List, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from ..config import ROIHeadsConfig
from ..ops import batched_nms
from .box_ops import apply_deltas, clip_boxes


class FastRCNNFCHead(nn.Module):
    """``[R, C, 7, 7] -> [R, fc_dim]`` through ``num_fc`` Linear + ReLU layers."""

    def __init__(self, in_dim: int, num_fc: int, fc_dim: int):
        super().__init__()
        self.num_fc = num_fc
        for k in range(num_fc):
            fc = nn.Linear(in_dim if k == 0 else fc_dim, fc_dim)
            nn.init.kaiming_uniform_(fc.weight, a=1)
            nn.init.constant_(fc.bias, 0)
            self.add_module(f"fc{k + 1}", fc)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.flatten(x, start_dim=1)
        for fc in self.children():  # fc1..fcN in order (TorchScript unrolls)
            x = F.relu(fc(x))
        return x


class FastRCNNPredictor(nn.Module):
    """Class logits ``[R, K+1]`` (last = background) and deltas ``[R, K*4]`` (or ``[R, 4]``)."""

    def __init__(self, in_dim: int, num_classes: int, cls_agnostic: bool):
        super().__init__()
        self.num_classes = num_classes
        self.cls_score = nn.Linear(in_dim, num_classes + 1)
        self.bbox_pred = nn.Linear(in_dim, 4 if cls_agnostic else 4 * num_classes)
        nn.init.normal_(self.cls_score.weight, std=0.01)
        nn.init.normal_(self.bbox_pred.weight, std=0.001)
        nn.init.constant_(self.cls_score.bias, 0)
        nn.init.constant_(self.bbox_pred.bias, 0)

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        # float32 whatever the compute precision: box decoding and scores need it
        return self.cls_score(x).float(), self.bbox_pred(x).float()


def select_detections(logits: torch.Tensor, deltas: torch.Tensor, proposals: torch.Tensor,
                      image_size: Tuple[int, int], cfg: ROIHeadsConfig
                      ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Decode, clip, threshold, per-class NMS and keep the top detections of one image.

    ``logits [R, K+1]``, ``deltas [R, K*4]``, ``proposals [R, 4]`` ->
    boxes ``[D, 4]``, scores ``[D]``, classes ``[D]`` (int64), sorted by score.
    """
    boxes = apply_deltas(deltas, proposals, cfg.bbox_reg_weights)
    scores = F.softmax(logits, dim=-1)
    valid = torch.isfinite(boxes).all(dim=1) & torch.isfinite(scores).all(dim=1)
    if not bool(valid.all()):
        boxes, scores = boxes[valid], scores[valid]
    scores = scores[:, :-1]
    num_reg = boxes.shape[1] // 4
    h, w = image_size
    boxes = clip_boxes(boxes.reshape(-1, 4), h, w).view(-1, num_reg, 4)
    mask = scores > cfg.score_thresh_test
    inds = mask.nonzero()
    if num_reg == 1:
        boxes = boxes[inds[:, 0], 0]
    else:
        boxes = boxes[mask]
    scores = scores[mask]
    keep = batched_nms(boxes, scores, inds[:, 1], cfg.nms_thresh_test)
    if cfg.detections_per_image >= 0:
        keep = keep[:cfg.detections_per_image]
    return boxes[keep], scores[keep], inds[keep, 1]
