"""Read images from files or arrays into the model's input: ``[H, W, 3]`` uint8 BGR.

Grayscale, palette, RGBA, CMYK and 16-bit images are converted; EXIF orientation is applied.
Anything else (missing/empty/corrupt files, wrong dtypes or shapes) raises
:class:`~amanet.errors.InputError` with the reason.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import List, Sequence, Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ..errors import InputError

#: File extensions read as images when a folder is given.
IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif"}

ImageLike = Union[str, os.PathLike, np.ndarray]

# PIL refuses images above ~179 Mpx by default as a decompression-bomb guard; we allow up to
# 512 Mpx (a 16k x 32k photo) and refuse beyond with a clear message.
MAX_PIXELS = 512 * 1024 * 1024
Image.MAX_IMAGE_PIXELS = MAX_PIXELS


def expand_images(paths: Sequence[Union[str, os.PathLike]]) -> List[Path]:
    """Files as given; directories contribute their image files (sorted)."""
    out: List[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            out += sorted(f for f in p.iterdir() if f.suffix.lower() in IMAGE_EXTENSIONS)
        else:
            out.append(p)
    return out


def read_image(path: Union[str, os.PathLike]) -> np.ndarray:
    """Decode an image file into ``[H, W, 3]`` uint8 BGR."""
    p = Path(path)
    if not p.exists():
        raise InputError(f"image not found: {p}")
    if p.is_dir():
        raise InputError(f"expected an image file, got a directory: {p}")
    if p.stat().st_size == 0:
        raise InputError(f"image file is empty: {p}")
    try:
        with Image.open(p) as im:
            im = ImageOps.exif_transpose(im)
            im.load()
            rgb = _pil_to_rgb_uint8(im)
    except UnidentifiedImageError:
        raise InputError(f"not an image file (format not recognised): {p}") from None
    except Image.DecompressionBombError as e:
        raise InputError(f"image too large: {p} ({e})") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise InputError(f"corrupt or truncated image file {p}: {e}") from None
    return np.ascontiguousarray(rgb[:, :, ::-1])


def _pil_to_rgb_uint8(im: Image.Image) -> np.ndarray:
    if im.mode in ("I;16", "I;16B", "I;16L", "I"):
        a = np.asarray(im).astype(np.float64)
        peak = 65535.0 if im.mode.startswith("I;16") or a.max() > 255 else 255.0
        g = np.clip(np.round(a * (255.0 / peak)), 0, 255).astype(np.uint8)
        return np.repeat(g[:, :, None], 3, axis=2)
    if im.mode == "F":
        raise InputError("floating-point image files are not supported; save as 8/16-bit")
    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
        im = im.convert("RGBA")
        a = np.asarray(im).astype(np.float32)
        alpha = a[:, :, 3:4] / 255.0
        return np.round(a[:, :, :3] * alpha).astype(np.uint8)  # composite over black
    if im.mode != "RGB":
        im = im.convert("RGB")
    return np.asarray(im)


def as_bgr_uint8(image: ImageLike, channel_order: str = "BGR") -> np.ndarray:
    """A path or array -> ``[H, W, 3]`` uint8 BGR.

    Arrays: ``[H, W]`` gray, ``[H, W, 1|3|4]`` in ``channel_order`` (BGR like OpenCV, or RGB),
    uint8 or uint16 (scaled to 8 bits). Float arrays are refused: their range is ambiguous.
    """
    if isinstance(image, (str, os.PathLike)):
        return read_image(image)
    if not isinstance(image, np.ndarray):
        raise InputError(f"expected an image path or a numpy array, got {type(image).__name__}")
    a = image
    if a.ndim == 2:
        a = a[:, :, None]
    if a.ndim != 3 or a.shape[2] not in (1, 3, 4):
        raise InputError(f"expected an image array of shape [H, W], [H, W, 3] or [H, W, 4], got "
                         f"{list(image.shape)}")
    if a.shape[0] == 0 or a.shape[1] == 0:
        raise InputError(f"image is empty: shape {list(image.shape)}")
    if a.dtype == np.uint16:
        a = (a.astype(np.uint32) * 255 + 32767) // 65535
        a = a.astype(np.uint8)
    elif a.dtype != np.uint8:
        raise InputError(f"expected a uint8 (or uint16) image array, got {a.dtype}; convert "
                         "floats with (x * 255).clip(0, 255).astype(np.uint8)")
    if a.shape[2] == 1:
        a = np.repeat(a, 3, axis=2)
    elif a.shape[2] == 4:
        a = a[:, :, :3]
    if channel_order.upper() == "RGB":
        a = a[:, :, ::-1]
    elif channel_order.upper() != "BGR":
        raise InputError(f"channel_order must be 'BGR' or 'RGB', got {channel_order!r}")
    return np.ascontiguousarray(a)
