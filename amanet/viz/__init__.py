"""Pictures of predictions: Detectron2's own DensePose pictures (:mod:`.detectron2`), the part
map and IUV image, and our overlay (:mod:`.overlay`). :func:`render` draws any of
:data:`STYLES` by name."""
from __future__ import annotations

from typing import Optional

import numpy as np

from ..runtime.result import Prediction
from .detectron2 import COLORMAPS, MATRIX_STYLES, draw_densepose, draw_scored_boxes
from .overlay import draw_overlay, iuv_contours, iuv_to_png_array, part_palette, whole_image_iuv

__all__ = ["STYLES", "render", "parse_styles", "save_picture", "draw_overlay", "iuv_contours", "iuv_to_png_array",
           "part_palette", "COLORMAPS"]

#: Every picture ``render`` draws: Detectron2's ``dp_segm``, ``dp_u``, ``dp_v``, ``bbox``
#: (``apply_net.py show``), ``magicanimate`` (VIRIDIS part index on a VIRIDIS(0) canvas),
#: ``parts`` (the part index 0..24, 8-bit, one channel), ``iuv`` (RGB = I, U, V) and our
#: ``overlay``.
STYLES = ("dp_segm", "dp_u", "dp_v", "bbox", "magicanimate", "parts", "iuv", "overlay")


def render(image_bgr: np.ndarray, pred: Prediction, style: str, cmap: Optional[str] = None,
           alpha: Optional[float] = None, gate_threshold: float = 0.3) -> np.ndarray:
    """The picture ``style`` of ``pred`` for ``image_bgr`` (uint8 ``[H, W, 3]`` BGR): uint8
    ``[H, W, 3]`` BGR, or ``[H, W]`` for ``parts`` and ``[H, W, 3]`` RGB = (I, U, V) for
    ``iuv``. ``cmap`` / ``alpha`` replace the style's colormap and opacity (Detectron2
    styles); ``gate_threshold``: AMANet's body-mask gate."""
    if style not in STYLES:
        raise ValueError(f"unknown picture {style!r}; choose from {', '.join(STYLES)}")
    if style in MATRIX_STYLES:
        return draw_densepose(image_bgr, pred, style, cmap, alpha, gate_threshold)
    if style == "bbox":
        return draw_scored_boxes(image_bgr, pred)
    if style == "overlay":
        return draw_overlay(image_bgr, pred)
    iuv = whole_image_iuv(pred)
    return np.ascontiguousarray(iuv[0]) if style == "parts" else iuv_to_png_array(iuv)


def parse_styles(spec: str) -> list:
    """``"dp_segm,bbox"`` -> ``["dp_segm", "bbox"]``; an unknown name is a ``ValueError``."""
    names = [n.strip() for n in str(spec).split(",") if n.strip()]
    unknown = [n for n in names if n not in STYLES]
    if unknown or not names:
        raise ValueError(f"unknown picture {', '.join(unknown) or repr(spec)}; choose from "
                         f"{', '.join(STYLES)}")
    return names


def save_picture(path, picture: np.ndarray, style: str) -> None:
    """Write what :func:`render` returned as a PNG: ``parts`` 8-bit gray, ``iuv`` RGB =
    (I, U, V), the others as the BGR picture they are (stored as an ordinary RGB PNG)."""
    from PIL import Image

    if style == "parts" or style == "iuv":
        Image.fromarray(picture).save(path)
    else:
        Image.fromarray(np.ascontiguousarray(picture[:, :, ::-1])).save(path)
