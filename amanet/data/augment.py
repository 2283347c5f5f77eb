"""Training-time augmentation: multi-scale shortest-edge resize and the DensePose flip.

Both act on an image (``[H, W, C]`` uint8) and the annotation list of a record made by
:func:`amanet.data.densepose_coco.load_densepose_coco`, and return new objects (the inputs are
not modified).

- :func:`random_resize` follows Detectron2's ``ResizeShortestEdge`` (``sampling="choice"``: the
  short side is drawn from the list; ``"range"``: uniformly from ``[min, max]``; the long side
  is capped at ``max_size``; sizes round with ``int(x + 0.5)``) and resizes with PIL bilinear
  like the test-time path. Boxes, keypoints and polygons scale; DensePose points and masks
  stay as they are (they live in the box's 256 x 256 frame).
- :func:`hflip` mirrors the image, boxes, keypoints (swapping left/right) and polygons, and the
  DensePose data: ``x -> 256 - x``, parts through ``symmetry.part_map``, (U, V) through the
  symmetry's per-part remapping, masks mirrored with their labels through ``mask_map``.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from .densepose_coco import (FLIP_MASK_MAP, FLIP_PART_MAP, KEYPOINT_FLIP_MAP, MASK_SIZE,
                             NUM_PARTS, DensePoseAnnotation)
from .transforms import resize_image, resized_shape

UVRemap = Callable[[np.ndarray, np.ndarray, np.ndarray], Tuple[np.ndarray, np.ndarray]]


# ----------------------------------------------------------------------------- symmetry
@dataclass
class FlipSymmetry:
    """How DensePose labels change under a horizontal flip.

    - ``part_map``: int ``[25]``, fine part -> mirrored part (0 -> 0).
    - ``mask_map``: int ``[15]``, coarse mask label -> mirrored label.
    - ``u_table, v_table``: float32 ``[24, 256, 256]``: for a point on part ``i`` (1..24) with
      ``(u, v)``, the mirrored point has ``u' = u_table[i - 1, int(255 v), int(255 u)]`` and
      likewise ``v'`` (Detectron2's ``UV_symmetry_transforms.mat`` layout and lookup).
    - ``uv_fn``: optional exact remap ``(i_old, u, v) -> (u', v')``; used instead of the
      tables when given (the synthetic body's analytic symmetry).
    """
    part_map: np.ndarray = field(default_factory=lambda: FLIP_PART_MAP.copy())
    mask_map: np.ndarray = field(default_factory=lambda: FLIP_MASK_MAP.copy())
    u_table: Optional[np.ndarray] = None
    v_table: Optional[np.ndarray] = None
    uv_fn: Optional[UVRemap] = None

    def __post_init__(self):
        self.part_map = np.asarray(self.part_map, dtype=np.int64)
        self.mask_map = np.asarray(self.mask_map, dtype=np.int64)
        if self.part_map.shape != (NUM_PARTS + 1,):
            raise ValueError(f"part_map must have 25 entries, got {self.part_map.shape}")
        if self.mask_map.shape != (15,):
            raise ValueError(f"mask_map must have 15 entries, got {self.mask_map.shape}")
        if (self.u_table is None) != (self.v_table is None):
            raise ValueError("give both u_table and v_table, or neither")
        if self.u_table is not None:
            self.u_table = np.asarray(self.u_table, dtype=np.float32)
            self.v_table = np.asarray(self.v_table, dtype=np.float32)
            for t in (self.u_table, self.v_table):
                if t.shape[0] != NUM_PARTS or t.ndim != 3:
                    raise ValueError(f"UV tables must be [24, H, W], got {list(t.shape)}")
        if self.u_table is None and self.uv_fn is None:
            raise ValueError("a FlipSymmetry needs UV tables or an exact uv_fn")

    def remap_uv(self, i: np.ndarray, u: np.ndarray, v: np.ndarray
                 ) -> Tuple[np.ndarray, np.ndarray]:
        """(U, V) of the mirrored points; ``i`` is the part *before* the flip (1..24)."""
        i = np.asarray(i, dtype=np.int64)
        u = np.asarray(u, dtype=np.float32)
        v = np.asarray(v, dtype=np.float32)
        if self.uv_fn is not None:
            nu, nv = self.uv_fn(i, u, v)
            return np.asarray(nu, np.float32), np.asarray(nv, np.float32)
        th, tw = self.u_table.shape[1:]
        ui = np.clip((u * (tw - 1)).astype(np.int64), 0, tw - 1)
        vi = np.clip((v * (th - 1)).astype(np.int64), 0, th - 1)
        pi = np.clip(i - 1, 0, NUM_PARTS - 1)
        return self.u_table[pi, vi, ui].copy(), self.v_table[pi, vi, ui].copy()

    def tables(self, size: int = 256) -> Tuple[np.ndarray, np.ndarray]:
        """``(u_table, v_table)``; sampled from ``uv_fn`` when no tables were given."""
        if self.u_table is not None:
            return self.u_table, self.v_table
        g = np.arange(size, dtype=np.float32) / (size - 1)
        vv, uu = np.meshgrid(g, g, indexing="ij")
        ut = np.zeros((NUM_PARTS, size, size), np.float32)
        vt = np.zeros_like(ut)
        for p in range(1, NUM_PARTS + 1):
            a, b = self.remap_uv(np.full(uu.shape, p), uu, vv)
            ut[p - 1], vt[p - 1] = a, b
        return ut, vt

    @classmethod
    def from_mat(cls, path: Union[str, os.PathLike]) -> "FlipSymmetry":
        """Detectron2's ``UV_symmetry_transforms.mat`` (cells ``U_transforms``,
        ``V_transforms`` of 24 ``[256, 256]`` tables) with the standard part/mask maps."""
        from .matfile import loadmat

        m = loadmat(path)
        tabs = []
        for key in ("U_transforms", "V_transforms"):
            if key not in m:
                raise ValueError(f"{path}: no variable {key!r}")
            cells = np.asarray(m[key], dtype=object).reshape(-1)
            if cells.size != NUM_PARTS:
                raise ValueError(f"{path}: {key} has {cells.size} tables, expected 24")
            tabs.append(np.stack([np.asarray(c, dtype=np.float32) for c in cells]))
        return cls(u_table=tabs[0], v_table=tabs[1])

    @classmethod
    def from_npz(cls, path: Union[str, os.PathLike]) -> "FlipSymmetry":
        z = np.load(path)
        return cls(part_map=z["part_map"], mask_map=z["mask_map"], u_table=z["u_table"],
                   v_table=z["v_table"])

    def save_npz(self, path: Union[str, os.PathLike]) -> None:
        ut, vt = self.tables()
        np.savez_compressed(path, part_map=self.part_map, mask_map=self.mask_map, u_table=ut,
                            v_table=vt)


# ----------------------------------------------------------------------------- flip
def flip_densepose(dp: DensePoseAnnotation, symmetry: FlipSymmetry) -> DensePoseAnnotation:
    """The DensePose data of a mirrored box (box-relative frame)."""
    u, v = symmetry.remap_uv(dp.i, dp.u, dp.v) if len(dp) else (dp.u.copy(), dp.v.copy())
    masks = None
    if dp.masks is not None:
        masks = symmetry.mask_map[dp.masks[:, ::-1]].astype(np.uint8)
    return DensePoseAnnotation(
        x=(MASK_SIZE - dp.x).astype(np.float32), y=dp.y.copy(),
        i=symmetry.part_map[dp.i].astype(np.int64), u=u, v=v, masks=masks)


def _flip_polygons(segm: Any, width: int) -> Any:
    if isinstance(segm, list):
        out = []
        for poly in segm:
            p = np.asarray(poly, dtype=np.float64).copy()
            p[0::2] = width - p[0::2]
            out.append(p.tolist())
        return out
    if isinstance(segm, dict):  # RLE: decode, mirror, encode
        from pycocotools import mask as mask_utils
        rle = segm if not isinstance(segm.get("counts"), list) else \
            mask_utils.frPyObjects(segm, *segm["size"])
        m = mask_utils.decode(_rle_bytes(rle))[:, ::-1]
        return _encode_rle(m)
    return segm


def _rle_bytes(rle: Dict[str, Any]) -> Dict[str, Any]:
    c = rle["counts"]
    return {"size": rle["size"], "counts": c.encode() if isinstance(c, str) else c}


def _encode_rle(m: np.ndarray) -> Dict[str, Any]:
    from pycocotools import mask as mask_utils
    r = mask_utils.encode(np.asfortranarray(m.astype(np.uint8)))
    return {"size": [int(s) for s in r["size"]], "counts": r["counts"].decode()}


def hflip(image: np.ndarray, annotations: Sequence[Dict[str, Any]], symmetry: FlipSymmetry
          ) -> Tuple[np.ndarray, List[Dict[str, Any]]]:
    """Mirror an image and its annotations left-right (see the module docstring)."""
    h, w = image.shape[:2]
    out_img = np.ascontiguousarray(image[:, ::-1])
    out = []
    for ann in annotations:
        a = dict(ann)
        x0, y0, x1, y1 = (float(b) for b in ann["bbox"])
        a["bbox"] = np.array([w - x1, y0, w - x0, y1], dtype=np.float32)
        if ann.get("keypoints") is not None:
            k = np.asarray(ann["keypoints"], dtype=np.float32).copy()
            k[:, 0] = w - k[:, 0]
            a["keypoints"] = k[KEYPOINT_FLIP_MAP]
        if ann.get("dp") is not None:
            a["dp"] = flip_densepose(ann["dp"], symmetry)
        if "segmentation" in ann:
            a["segmentation"] = _flip_polygons(ann["segmentation"], w)
        out.append(a)
    return out_img, out


# ----------------------------------------------------------------------------- resize
def choose_short_edge(min_sizes: Union[int, Sequence[int]], rng: np.random.Generator,
                      sampling: str = "choice") -> int:
    """Detectron2's ``ResizeShortestEdge`` draw: one of ``min_sizes`` ("choice") or an integer
    in ``[min_sizes[0], min_sizes[1]]`` ("range")."""
    sizes = [int(min_sizes)] if np.isscalar(min_sizes) else [int(s) for s in min_sizes]
    if not sizes:
        raise ValueError("min_sizes is empty")
    if sampling == "choice":
        return sizes[int(rng.integers(len(sizes)))]
    if sampling == "range":
        if len(sizes) != 2:
            raise ValueError(f"sampling='range' needs (min, max), got {sizes}")
        return int(rng.integers(sizes[0], sizes[1] + 1))
    raise ValueError(f"sampling must be 'choice' or 'range', got {sampling!r}")


def scale_annotations(annotations: Sequence[Dict[str, Any]], sx: float, sy: float,
                      new_hw: Optional[Tuple[int, int]] = None) -> List[Dict[str, Any]]:
    """Annotations of an image resized by ``(sx, sy)``; DensePose data is box-relative and
    stays unchanged (shared, not copied)."""
    out = []
    for ann in annotations:
        a = dict(ann)
        a["bbox"] = (np.asarray(ann["bbox"], np.float32) *
                     np.array([sx, sy, sx, sy], np.float32)).astype(np.float32)
        if ann.get("keypoints") is not None:
            k = np.asarray(ann["keypoints"], np.float32).copy()
            k[:, 0] *= sx
            k[:, 1] *= sy
            a["keypoints"] = k
        segm = ann.get("segmentation")
        if isinstance(segm, list):
            polys = []
            for poly in segm:
                p = np.asarray(poly, np.float64).copy()
                p[0::2] *= sx
                p[1::2] *= sy
                polys.append(p.tolist())
            a["segmentation"] = polys
        elif isinstance(segm, dict) and new_hw is not None:
            import cv2
            from pycocotools import mask as mask_utils
            rle = segm if not isinstance(segm.get("counts"), list) else \
                mask_utils.frPyObjects(segm, *segm["size"])
            m = mask_utils.decode(_rle_bytes(rle))
            m = cv2.resize(m, (new_hw[1], new_hw[0]), interpolation=cv2.INTER_NEAREST)
            a["segmentation"] = _encode_rle(m)
        out.append(a)
    return out


def random_resize(image: np.ndarray, annotations: Sequence[Dict[str, Any]],
                  min_sizes: Union[int, Sequence[int]], max_size: int,
                  rng: np.random.Generator, sampling: str = "choice"
                  ) -> Tuple[np.ndarray, List[Dict[str, Any]]]:
    """Multi-scale training resize: short side drawn by :func:`choose_short_edge`, long side
    capped at ``max_size`` (Detectron2's rule), PIL bilinear; annotations scaled to match."""
    h, w = image.shape[:2]
    short = choose_short_edge(min_sizes, rng, sampling)
    nh, nw = resized_shape(h, w, short, max_size)
    out = resize_image(image, nh, nw)
    return out, scale_annotations(annotations, nw / w, nh / h, (nh, nw))


def resize_record(record: Dict[str, Any], image: np.ndarray, min_sizes, max_size: int,
                  rng: np.random.Generator, sampling: str = "choice"
                  ) -> Tuple[np.ndarray, Dict[str, Any]]:
    """:func:`random_resize` on a whole record (``height``/``width`` updated)."""
    img, anns = random_resize(image, record["annotations"], min_sizes, max_size, rng, sampling)
    rec = dict(record)
    rec["annotations"] = anns
    rec["height"], rec["width"] = img.shape[:2]
    return img, rec
