"""DensePose pictures drawn exactly as Detectron2 draws them.

Generation pipelines (human animation, virtual try-on) were trained on these pictures, so every
rounding is Detectron2's (``densepose/vis/base.py``, ``densepose_results.py``,
``bounding_box.py`` and ``apply_net.py show``):

- per person, the chart ``(labels, uv)`` of Detectron2's ``ToChartResultConverter``, turned into
  an IUV array by ``cat(labels, uv * 255).type(torch.uint8)``: a U/V code outside 0..255 wraps
  modulo 256 (U or V a little above 1 draws dark), as in Detectron2's pictures;
- ``MatrixVisualizer``: the value channel scaled (I by 255/24, U/V by 1), clipped to 0..255,
  coloured with an OpenCV colormap; where the label is 0 the picture keeps its pixels; the blend
  ``image * (1 - alpha) + colour * alpha`` is computed in float64 and stored into uint8, which
  truncates; later people are drawn over earlier ones;
- ``apply_net.py show`` draws on the photo turned gray (``COLOR_BGR2GRAY``, three channels);
  the "MagicAnimate" style draws the part index with VIRIDIS and alpha 1 on a canvas of
  VIRIDIS(0).

Where Detectron2's drawing breaks, ours does not: a chart that crosses the image border is
cropped to the image (Detectron2's array assignment fails), a zero-size box is skipped.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np
import torch

from ..modeling import postprocess as pp
from ..runtime.result import Prediction

N_PART_LABELS = 24
COLORMAPS: Dict[str, int] = {
    "parula": cv2.COLORMAP_PARULA, "viridis": cv2.COLORMAP_VIRIDIS, "jet": cv2.COLORMAP_JET,
    "turbo": cv2.COLORMAP_TURBO, "inferno": cv2.COLORMAP_INFERNO, "magma": cv2.COLORMAP_MAGMA,
}
BOX_COLOR_BGR = (18, 127, 15)
TEXT_COLOR_BGR = (218, 227, 218)
TEXT_SCALE = 0.35

#: style -> (IUV channel drawn, value scale, default colormap, default alpha, background)
MATRIX_STYLES: Dict[str, Tuple[int, float, str, float, str]] = {
    "dp_segm": (0, 255.0 / N_PART_LABELS, "parula", 0.7, "gray"),
    "dp_u": (1, 1.0, "parula", 0.7, "gray"),
    "dp_v": (2, 1.0, "parula", 0.7, "gray"),
    "magicanimate": (0, 255.0 / N_PART_LABELS, "viridis", 1.0, "canvas"),
}


def colormap(name: str) -> int:
    try:
        return COLORMAPS[name]
    except KeyError:
        raise ValueError(f"unknown colormap {name!r}; known: {', '.join(COLORMAPS)}") from None


#: the last prediction's arrays: ``(pred, gate_threshold, arrays)``, so that one frame drawn in
#: several styles converts its outputs once (matched by identity, not by value)
_LAST_CHARTS: Tuple = (None, None, None)


def chart_iuv_arrays(pred: Prediction, gate_threshold: float = 0.3) -> List[np.ndarray]:
    """Per person, Detectron2's uint8 IUV array ``[3, h, w]`` (h, w: the chart box), from the
    raw outputs in ``pred.densepose`` (chart family: ``ToChartResultConverter``; AMANet: its
    body-mask gate at ``gate_threshold``). The last prediction's arrays are reused (its outputs
    are not expected to change in place)."""
    global _LAST_CHARTS
    last, threshold, arrays = _LAST_CHARTS
    if last is pred and threshold == gate_threshold:
        return arrays
    arrays = _chart_iuv_arrays(pred, gate_threshold)
    _LAST_CHARTS = (pred, gate_threshold, arrays)
    return arrays


def _chart_iuv_arrays(pred: Prediction, gate_threshold: float) -> List[np.ndarray]:
    dp = {k: torch.from_numpy(np.asarray(v)) for k, v in pred.densepose.items()}
    out = []
    for i in range(len(pred)):
        box = [int(v) for v in pred.chart_boxes[i]]
        if "coarse_segm" in dp:
            labels, uv = pp.iuv_chart_s1x(dp["coarse_segm"][i], dp["fine_segm"][i], dp["u"][i],
                                          dp["v"][i], box)
        else:
            labels, uv = pp.iuv_chart_amanet_float(dp["fine_segm"][i], dp["u"][i], dp["v"][i],
                                                   dp["body_mask"][i], box, gate_threshold)
        # torch's float -> uint8 cast truncates toward zero and wraps modulo 256
        codes = ((uv * 255.0).to(torch.int64) & 255).to(torch.uint8)
        out.append(torch.cat([labels[None], codes]).numpy())
    return out


def draw_boxes_xywh(pred: Prediction) -> List[Tuple[int, int, int, int]]:
    """Detectron2's drawing boxes: XYWH from the float32 XYXY boxes, each value ``int()``."""
    b = np.asarray(pred.boxes, np.float32).reshape(-1, 4)
    xywh = np.stack([b[:, 0], b[:, 1], b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]], axis=1)
    return [tuple(int(v) for v in row) for row in xywh]


def draw_matrix(image_bgr: np.ndarray, mask: np.ndarray, matrix: np.ndarray,
                box_xywh: Sequence[int], cmap: int, val_scale: float, alpha: float) -> None:
    """Detectron2's ``MatrixVisualizer.visualize``, in place on ``image_bgr`` (uint8 HxWx3)."""
    x, y, w, h = (int(v) for v in box_xywh)
    if w <= 0 or h <= 0:
        return
    if mask.shape != (h, w):
        # Detectron2 passes its interpolation flag where cv2.resize takes ``dst``: both resize
        # with the default, INTER_LINEAR
        mask = cv2.resize(mask, (w, h))
    if matrix.shape != (h, w):
        matrix = cv2.resize(matrix, (w, h))
    H, W = image_bgr.shape[:2]
    x0, y0 = max(x, 0), max(y, 0)
    x1, y1 = min(x + w, W), min(y + h, H)
    if x0 >= x1 or y0 >= y1:
        return
    crop = (slice(y0 - y, y1 - y), slice(x0 - x, x1 - x))
    mask, matrix = mask[crop], matrix[crop]
    region = image_bgr[y0:y1, x0:x1, :]
    background = mask == 0
    scaled = matrix.astype(np.float32) * val_scale
    colour = cv2.applyColorMap(scaled.clip(0, 255).astype(np.uint8), cmap)
    colour[background] = region[background]
    image_bgr[y0:y1, x0:x1, :] = region * (1.0 - alpha) + colour * alpha


def gray_background(image_bgr: np.ndarray) -> np.ndarray:
    """``apply_net.py show``'s canvas: the photo in gray, three channels."""
    gray = cv2.cvtColor(np.ascontiguousarray(image_bgr), cv2.COLOR_BGR2GRAY)
    return np.tile(gray[:, :, None], [1, 1, 3])


def draw_densepose(image_bgr: np.ndarray, pred: Prediction, style: str,
                   cmap: Optional[str] = None, alpha: Optional[float] = None,
                   gate_threshold: float = 0.3) -> np.ndarray:
    """One of :data:`MATRIX_STYLES` (``dp_segm``, ``dp_u``, ``dp_v``, ``magicanimate``) of
    ``pred`` over ``image_bgr`` (uint8 HxWx3, the original image): a new BGR picture."""
    channel, val_scale, default_cmap, default_alpha, background = MATRIX_STYLES[style]
    cm = colormap(cmap or default_cmap)
    a = default_alpha if alpha is None else float(alpha)
    if background == "gray":
        canvas = gray_background(image_bgr)
    else:
        canvas = cv2.applyColorMap(np.zeros(image_bgr.shape[:2], np.uint8), cm)
    for iuv, box in zip(chart_iuv_arrays(pred, gate_threshold), draw_boxes_xywh(pred)):
        mask = (iuv[0] > 0).astype(np.uint8)
        draw_matrix(canvas, mask, iuv[channel], box, cm, val_scale, a)
    return canvas


def draw_scored_boxes(image_bgr: np.ndarray, pred: Prediction) -> np.ndarray:
    """``apply_net.py show bbox``: on the gray photo, each box (1 px, green) and its score
    (``"%6.4f"``, Hershey simplex 0.35, anti-aliased) at its top-left corner."""
    canvas = gray_background(image_bgr)
    b = np.asarray(pred.boxes, np.float32).reshape(-1, 4)
    for (x0, y0, x1, y1), score in zip(b, np.asarray(pred.scores, np.float32)):
        w, h = x1 - x0, y1 - y0
        cv2.rectangle(canvas, (int(x0), int(y0)), (int(x0 + w), int(y0 + h)), BOX_COLOR_BGR, 1)
        cv2.putText(canvas, "{0:6.4f}".format(score), (int(x0), int(y0)),
                    cv2.FONT_HERSHEY_SIMPLEX, TEXT_SCALE, TEXT_COLOR_BGR, 1, cv2.LINE_AA)
    return canvas
