"""Our overlay picture (parts coloured, U/V iso-contours, boxes) and the whole-image IUV."""
from __future__ import annotations

import colorsys
from typing import Optional

import cv2
import numpy as np

from ..runtime.result import Prediction


def part_palette(num_parts: int = 24) -> np.ndarray:
    """uint8 ``[num_parts + 1, 3]`` BGR colours; entry 0 (background) is black."""
    pal = np.zeros((num_parts + 1, 3), np.uint8)
    for i in range(1, num_parts + 1):
        # golden-ratio hue steps keep neighbouring part ids visually distinct
        h = (i * 0.618033988749895) % 1.0
        r, g, b = colorsys.hsv_to_rgb(h, 0.75, 0.95)
        pal[i] = (int(b * 255), int(g * 255), int(r * 255))
    return pal


def iuv_contours(iuv: np.ndarray, levels: int = 10) -> np.ndarray:
    """bool ``[H, W]``: pixels where U or V crosses one of ``levels`` iso-lines (foreground)."""
    fg = iuv[0] > 0
    edges = np.zeros(fg.shape, bool)
    for ch in (1, 2):
        q = (iuv[ch].astype(np.int32) * levels) // 256
        dx = np.zeros_like(edges)
        dy = np.zeros_like(edges)
        dx[:, :-1] = (q[:, :-1] != q[:, 1:]) & fg[:, :-1] & fg[:, 1:]
        dy[:-1, :] = (q[:-1, :] != q[1:, :]) & fg[:-1, :] & fg[1:, :]
        edges |= dx | dy
    return edges


def draw_overlay(image_bgr: np.ndarray, pred: Prediction, alpha: float = 0.6,
                 draw_boxes: bool = True, iuv: Optional[np.ndarray] = None) -> np.ndarray:
    """The image with body parts coloured, U/V contours in white and boxes with scores."""
    out = image_bgr.copy()
    iuv = whole_image_iuv(pred) if iuv is None else iuv
    labels = iuv[0]
    fg = labels > 0
    if fg.any():
        colours = part_palette(max(24, int(labels.max())))[labels]
        out[fg] = (alpha * colours[fg] + (1 - alpha) * out[fg]).astype(np.uint8)
        out[iuv_contours(iuv)] = (255, 255, 255)
    if draw_boxes:
        thick = max(1, round(max(out.shape[:2]) / 500))
        for (x1, y1, x2, y2), s in zip(pred.boxes, pred.scores):
            p1, p2 = (int(round(x1)), int(round(y1))), (int(round(x2)), int(round(y2)))
            cv2.rectangle(out, p1, p2, (0, 255, 0), thick)
            cv2.putText(out, f"{s:.2f}", (p1[0], max(p1[1] - 3, 10)), cv2.FONT_HERSHEY_SIMPLEX,
                        0.4 * thick, (0, 255, 0), thick, cv2.LINE_AA)
    return out


def whole_image_iuv(pred: Prediction) -> np.ndarray:
    """``pred.iuv``, or the charts composited now (higher score wins) when it was not kept."""
    if pred.iuv is not None:
        return pred.iuv
    import torch

    from ..modeling.postprocess import paste_iuv
    return paste_iuv([torch.from_numpy(c) for c in pred.charts], pred.chart_boxes.tolist(),
                     pred.scores.tolist(), pred.image_size).numpy()


def iuv_to_png_array(iuv: np.ndarray) -> np.ndarray:
    """``[3, H, W]`` (I, U, V) -> ``[H, W, 3]`` for writing with PIL as RGB = (I, U, V)."""
    return np.ascontiguousarray(np.moveaxis(iuv, 0, -1))
