"""Box arithmetic with Detectron2's numerics (XYXY absolute boxes, continuous coordinates)."""
from __future__ import annotations

import math
from typing import Tuple

import torch

# Largest log-scale a predicted box may grow by (Detectron2's default clamp).
SCALE_CLAMP = math.log(1000.0 / 16)


def apply_deltas(deltas: torch.Tensor, boxes: torch.Tensor,
                 weights: Tuple[float, float, float, float],
                 scale_clamp: float = SCALE_CLAMP) -> torch.Tensor:
    """Decode ``deltas [R, K*4]`` (dx, dy, dw, dh per class) relative to ``boxes [R, 4]``.

    Returns ``[R, K*4]`` XYXY boxes.
    """
    deltas = deltas.float()
    boxes = boxes.to(deltas.dtype)
    widths = boxes[:, 2] - boxes[:, 0]
    heights = boxes[:, 3] - boxes[:, 1]
    ctr_x = boxes[:, 0] + 0.5 * widths
    ctr_y = boxes[:, 1] + 0.5 * heights

    wx, wy, ww, wh = weights
    dx = deltas[:, 0::4] / wx
    dy = deltas[:, 1::4] / wy
    dw = torch.clamp(deltas[:, 2::4] / ww, max=scale_clamp)
    dh = torch.clamp(deltas[:, 3::4] / wh, max=scale_clamp)

    pred_ctr_x = dx * widths[:, None] + ctr_x[:, None]
    pred_ctr_y = dy * heights[:, None] + ctr_y[:, None]
    pred_w = torch.exp(dw) * widths[:, None]
    pred_h = torch.exp(dh) * heights[:, None]

    x1 = pred_ctr_x - 0.5 * pred_w
    y1 = pred_ctr_y - 0.5 * pred_h
    x2 = pred_ctr_x + 0.5 * pred_w
    y2 = pred_ctr_y + 0.5 * pred_h
    return torch.stack((x1, y1, x2, y2), dim=-1).reshape(deltas.shape)


def get_deltas(src: torch.Tensor, target: torch.Tensor,
               weights: Tuple[float, float, float, float]) -> torch.Tensor:
    """Encode ``target [R,4]`` relative to ``src [R,4]``: the inverse of :func:`apply_deltas`."""
    src_w = src[:, 2] - src[:, 0]
    src_h = src[:, 3] - src[:, 1]
    src_x = src[:, 0] + 0.5 * src_w
    src_y = src[:, 1] + 0.5 * src_h
    tgt_w = target[:, 2] - target[:, 0]
    tgt_h = target[:, 3] - target[:, 1]
    tgt_x = target[:, 0] + 0.5 * tgt_w
    tgt_y = target[:, 1] + 0.5 * tgt_h
    wx, wy, ww, wh = weights
    return torch.stack((wx * (tgt_x - src_x) / src_w, wy * (tgt_y - src_y) / src_h,
                        ww * torch.log(tgt_w / src_w), wh * torch.log(tgt_h / src_h)), dim=1)


def clip_boxes(boxes: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Clamp ``[..., 4]`` XYXY boxes to ``[0, width] x [0, height]``."""
    x1 = boxes[..., 0].clamp(min=0, max=width)
    y1 = boxes[..., 1].clamp(min=0, max=height)
    x2 = boxes[..., 2].clamp(min=0, max=width)
    y2 = boxes[..., 3].clamp(min=0, max=height)
    return torch.stack((x1, y1, x2, y2), dim=-1)


def nonempty(boxes: torch.Tensor, threshold: float = 0.0) -> torch.Tensor:
    """Mask of boxes whose width and height both exceed ``threshold``."""
    return ((boxes[:, 2] - boxes[:, 0]) > threshold) & ((boxes[:, 3] - boxes[:, 1]) > threshold)


def box_area(boxes: torch.Tensor) -> torch.Tensor:
    return (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])


def pairwise_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """IoU matrix ``[len(a), len(b)]`` of XYXY boxes."""
    area_a, area_b = box_area(a), box_area(b)
    wh = (torch.min(a[:, None, 2:], b[None, :, 2:]) - torch.max(a[:, None, :2], b[None, :, :2]))
    inter = wh.clamp(min=0).prod(dim=2)
    union = area_a[:, None] + area_b[None, :] - inter
    return torch.where(inter > 0, inter / union, torch.zeros(1, dtype=inter.dtype,
                                                             device=inter.device))
