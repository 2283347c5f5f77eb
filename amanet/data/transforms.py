"""Test-time image transforms with Detectron2's numerics.

Detectron2 resizes uint8 images with PIL bilinear (antialiased when shrinking) and rounds the
new size with ``int(x + 0.5)``; we do exactly the same so detections match to the pixel.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Tuple

import numpy as np
from PIL import Image

if TYPE_CHECKING:
    import torch


def resized_shape(h: int, w: int, short_edge: int, max_size: int) -> Tuple[int, int]:
    """Output ``(new_h, new_w)`` of a shortest-edge resize capped at ``max_size``."""
    scale = short_edge * 1.0 / min(h, w)
    if h < w:
        new_h, new_w = short_edge, scale * w
    else:
        new_h, new_w = scale * h, short_edge
    if max(new_h, new_w) > max_size:
        scale = max_size * 1.0 / max(new_h, new_w)
        new_h = new_h * scale
        new_w = new_w * scale
    return int(new_h + 0.5), int(new_w + 0.5)


def resize_image(img: np.ndarray, new_h: int, new_w: int) -> np.ndarray:
    """Bilinear resize of an ``[H, W, 3]`` uint8 image (PIL, as Detectron2 does)."""
    if img.shape[0] == new_h and img.shape[1] == new_w:
        return img
    pil = Image.fromarray(img)
    return np.asarray(pil.resize((new_w, new_h), Image.BILINEAR))


def resize_shortest_edge(img: np.ndarray, short_edge: int, max_size: int) -> np.ndarray:
    """``[H, W, 3]`` uint8 -> resized ``[H', W', 3]`` uint8."""
    new_h, new_w = resized_shape(img.shape[0], img.shape[1], short_edge, max_size)
    return resize_image(img, new_h, new_w)


def model_input(bgr: np.ndarray, inp) -> "torch.Tensor":
    """The test-time model input of an ``[H, W, 3]`` uint8 BGR image: resized as Detectron2's
    ResizeShortestEdge (``inp``: the config's :class:`~amanet.config.schema.InputConfig`), in
    the config's channel order, ``[3, H', W']`` float32 0..255."""
    import torch

    resized = resize_shortest_edge(bgr, inp.min_size_test, inp.max_size_test)
    if inp.format.upper() == "RGB":
        resized = resized[:, :, ::-1]
    return torch.from_numpy(np.ascontiguousarray(resized.transpose(2, 0, 1))).float()
