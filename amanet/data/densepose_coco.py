"""DensePose-COCO annotations: reading, validation and the part-label tables.

The format (DensePose-COCO, as released with the DensePose paper) extends a COCO person
annotation with

- ``dp_x, dp_y``: annotated point positions in the person box scaled to 256 x 256
  (``x_img = x0 + dp_x * w / 256``),
- ``dp_I``: fine part label 1..24 of each point, ``dp_U, dp_V``: its chart coordinates in [0, 1],
- ``dp_masks``: 14 compressed RLE masks (pycocotools) of the coarse parts in the 256 x 256 box
  frame (an empty list where a part is absent).

:func:`load_densepose_coco` turns the JSON into one record per image. Annotations that are
corrupt or inconsistent are never passed on silently: each is logged with ``logger.warning``
naming the image (and annotation) id and the problem, counted in a :class:`LoadReport`, and
skipped (the whole image when its file is missing).
"""
from __future__ import annotations

import json
import logging
import os
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple, Union

import numpy as np

logger = logging.getLogger(__name__)

# ----------------------------------------------------------------------------- part tables
# Fine parts (dp_I), as documented with DensePose-COCO:
# 1, 2 = torso, 3 = right hand, 4 = left hand, 5 = left foot, 6 = right foot,
# 7, 9 = upper leg right, 8, 10 = upper leg left, 11, 13 = lower leg right,
# 12, 14 = lower leg left, 15, 17 = upper arm left, 16, 18 = upper arm right,
# 19, 21 = lower arm left, 20, 22 = lower arm right, 23, 24 = head.
# The finer split (front/back, inside/outside) is not part of the documentation; the
# names below are the convention the synthetic body of this package follows.
PART_NAMES = (
    "background",
    "torso_back", "torso_front", "right_hand", "left_hand", "left_foot", "right_foot",
    "upper_leg_right_back", "upper_leg_left_back", "upper_leg_right_front",
    "upper_leg_left_front", "lower_leg_right_back", "lower_leg_left_back",
    "lower_leg_right_front", "lower_leg_left_front",
    "upper_arm_left_inside", "upper_arm_right_inside", "upper_arm_left_outside",
    "upper_arm_right_outside", "lower_arm_left_inside", "lower_arm_right_inside",
    "lower_arm_left_outside", "lower_arm_right_outside",
    "head_right", "head_left",
)
NUM_PARTS = 24
NUM_COARSE_PARTS = 14
MASK_SIZE = 256

# Coarse parts (the 14 dp_masks): 1 torso, 2 right hand, 3 left hand, 4 left foot,
# 5 right foot, 6 upper leg right, 7 upper leg left, 8 lower leg right, 9 lower leg left,
# 10 upper arm left, 11 upper arm right, 12 lower arm left, 13 lower arm right, 14 head.
COARSE_PART_NAMES = (
    "background", "torso", "right_hand", "left_hand", "left_foot", "right_foot",
    "upper_leg_right", "upper_leg_left", "lower_leg_right", "lower_leg_left",
    "upper_arm_left", "upper_arm_right", "lower_arm_left", "lower_arm_right", "head",
)
# fine part (index 0..24) -> coarse part (0..14)
FINE_TO_COARSE = np.array([0, 1, 1, 2, 3, 4, 5, 6, 7, 6, 7, 8, 9, 8, 9,
                           10, 11, 10, 11, 12, 13, 12, 13, 14, 14], dtype=np.int64)
# Horizontal-flip label maps (Detectron2's DensePoseTransformData tables).
FLIP_PART_MAP = np.array([0, 1, 2, 4, 3, 6, 5, 8, 7, 10, 9, 12, 11, 14, 13,
                          16, 15, 18, 17, 20, 19, 22, 21, 24, 23], dtype=np.int64)
FLIP_MASK_MAP = np.array([0, 1, 3, 2, 5, 4, 7, 6, 9, 8, 11, 10, 13, 12, 14], dtype=np.int64)

# COCO person keypoints and their left/right swap under a horizontal flip.
KEYPOINT_NAMES = (
    "nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder",
    "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_hip",
    "right_hip", "left_knee", "right_knee", "left_ankle", "right_ankle",
)
KEYPOINT_FLIP_MAP = np.array([0, 2, 1, 4, 3, 6, 5, 8, 7, 10, 9, 12, 11, 14, 13, 16, 15],
                             dtype=np.int64)
# COCO skeleton (1-based keypoint pairs), written into generated JSON categories.
KEYPOINT_SKELETON = [[16, 14], [14, 12], [17, 15], [15, 13], [12, 13], [6, 12], [7, 13],
                     [6, 7], [6, 8], [7, 9], [8, 10], [9, 11], [2, 3], [1, 2], [1, 3],
                     [2, 4], [3, 5], [4, 6], [5, 7]]

DP_POINT_KEYS = ("dp_x", "dp_y", "dp_I", "dp_U", "dp_V")

# tolerances of the validity checks (float noise in real files, not a licence for bad data)
_XY_EPS = 1e-3
_UV_EPS = 1e-6


# ----------------------------------------------------------------------------- structures
class DensePoseAnnotation:
    """DensePose data of one person, relative to its box (the 256 x 256 frame).

    ``x, y``: float32 ``[P]`` in 0..256; ``i``: int64 ``[P]`` in 1..24; ``u, v``: float32
    ``[P]`` in [0, 1]; ``masks``: uint8 ``[256, 256]`` with coarse labels 0..14 (or None).

    ``masks`` may be held as the (already validated) ``dp_masks`` RLE list and decoded on each
    access: 64 KiB per person adds up to ~3 GB over DensePose-COCO train, the RLEs to a few MB.
    ``has_masks`` tells whether there are masks without decoding them.
    """
    __slots__ = ("x", "y", "i", "u", "v", "_masks", "_rle")

    def __init__(self, x: np.ndarray, y: np.ndarray, i: np.ndarray, u: np.ndarray,
                 v: np.ndarray, masks: Optional[np.ndarray] = None, masks_rle: Any = None):
        self.x, self.y, self.i, self.u, self.v = x, y, i, u, v
        self._masks = masks
        self._rle = None if masks is not None else masks_rle

    @property
    def masks(self) -> Optional[np.ndarray]:
        if self._masks is not None:
            return self._masks
        return None if self._rle is None else decode_dp_masks(self._rle)

    @masks.setter
    def masks(self, value: Optional[np.ndarray]) -> None:
        self._masks, self._rle = value, None

    @property
    def has_masks(self) -> bool:
        return self._masks is not None or self._rle is not None

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def __repr__(self) -> str:
        return (f"DensePoseAnnotation({len(self)} points, masks="
                f"{'yes' if self.has_masks else 'no'})")

    def copy(self) -> "DensePoseAnnotation":
        out = DensePoseAnnotation(self.x.copy(), self.y.copy(), self.i.copy(), self.u.copy(),
                                  self.v.copy(), None if self._masks is None else self._masks.copy())
        out._rle = self._rle
        return out


@dataclass
class LoadReport:
    """What :func:`load_densepose_coco` kept and what it skipped, and why."""
    json_path: str = ""
    num_images: int = 0              # images returned
    num_annotations: int = 0         # annotations returned
    num_densepose: int = 0           # of which carry DensePose data
    skipped_images: int = 0
    skipped_annotations: int = 0
    problems: Counter = field(default_factory=Counter)   # kind -> count
    details: List[Tuple[Any, Any, str, str]] = field(default_factory=list)
    # (image_id, annotation_id or None, kind, message)

    @property
    def num_skipped(self) -> int:
        return self.skipped_images + self.skipped_annotations

    def add(self, image_id, ann_id, kind: str, message: str, whole_image: bool = False) -> None:
        self.problems[kind] += 1
        self.details.append((image_id, ann_id, kind, message))
        if whole_image:
            self.skipped_images += 1
        else:
            self.skipped_annotations += 1
        where = f"image {image_id}" + ("" if ann_id is None else f", annotation {ann_id}")
        logger.warning("%s: %s: %s (skipped %s)", os.path.basename(self.json_path) or "json",
                       where, message, "image" if whole_image else "annotation")

    def summary(self) -> str:
        s = (f"{self.num_images} images, {self.num_annotations} annotations "
             f"({self.num_densepose} with DensePose); skipped {self.skipped_images} images, "
             f"{self.skipped_annotations} annotations")
        if self.problems:
            s += " [" + ", ".join(f"{k}: {n}" for k, n in sorted(self.problems.items())) + "]"
        return s

    __str__ = summary


class AnnotationError(ValueError):
    """A corrupt or inconsistent annotation; ``kind`` is a short machine-readable tag."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind


# ----------------------------------------------------------------------------- decoding
def decode_dp_masks(dp_masks: Any) -> np.ndarray:
    """``dp_masks`` (a list of up to 14 RLEs, ``[]`` for absent parts) -> uint8 [256, 256].

    Mask ``k`` (0-based) sets label ``k + 1``; later masks win where they overlap (as
    Detectron2 decodes them). A single RLE dict (one foreground mask) gives label 1.
    Raises :class:`AnnotationError` when an entry cannot be decoded to 256 x 256.
    """
    from pycocotools import mask as mask_utils

    out = np.zeros((MASK_SIZE, MASK_SIZE), np.uint8)
    if isinstance(dp_masks, dict):
        entries = [dp_masks]
    elif isinstance(dp_masks, (list, tuple)):
        entries = list(dp_masks)
    else:
        raise AnnotationError("dp_mask_undecodable",
                              f"dp_masks must be a list of RLEs, got {type(dp_masks).__name__}")
    if len(entries) > NUM_COARSE_PARTS:
        raise AnnotationError("dp_mask_undecodable",
                              f"dp_masks has {len(entries)} entries, at most 14 expected")
    for k, rle in enumerate(entries):
        if rle is None or (isinstance(rle, (list, tuple)) and len(rle) == 0):
            continue
        if not isinstance(rle, dict) or "counts" not in rle or "size" not in rle:
            raise AnnotationError("dp_mask_undecodable",
                                  f"dp_masks[{k}] is not an RLE dict with 'size' and 'counts'")
        try:
            size = [int(s) for s in rle["size"]]
            counts = rle["counts"]
            if isinstance(counts, list):                     # uncompressed RLE
                if sum(int(c) for c in counts) != size[0] * size[1]:
                    raise ValueError("run lengths do not add up to the mask size")
                r = mask_utils.frPyObjects({"size": size, "counts": counts}, size[0], size[1])
            else:
                r = {"size": size, "counts": counts.encode() if isinstance(counts, str)
                     else counts}
            m = mask_utils.decode(r)
        except Exception as e:  # pycocotools raises assorted types on garbage
            raise AnnotationError("dp_mask_undecodable",
                                  f"dp_masks[{k}] cannot be decoded: {e}") from None
        if m.shape[:2] != (MASK_SIZE, MASK_SIZE):
            raise AnnotationError("dp_mask_undecodable",
                                  f"dp_masks[{k}] is {list(m.shape[:2])}, expected 256x256")
        out[m.reshape(MASK_SIZE, MASK_SIZE) > 0] = 1 if isinstance(dp_masks, dict) else k + 1
    return out


def encode_dp_masks(masks: np.ndarray) -> List[Any]:
    """uint8 ``[256, 256]`` coarse labels -> the 14-entry ``dp_masks`` list (``[]`` if empty)."""
    from pycocotools import mask as mask_utils

    out: List[Any] = []
    for k in range(1, NUM_COARSE_PARTS + 1):
        m = masks == k
        if not m.any():
            out.append([])
            continue
        rle = mask_utils.encode(np.asfortranarray(m.astype(np.uint8)))
        out.append({"size": [int(s) for s in rle["size"]], "counts": rle["counts"].decode()})
    return out


def _float_array(values, name: str) -> np.ndarray:
    try:
        a = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        raise AnnotationError("dp_not_numeric", f"{name} is not a list of numbers") from None
    if a.ndim != 1:
        raise AnnotationError("dp_not_numeric", f"{name} must be a flat list, got shape "
                              f"{list(a.shape)}")
    if not np.all(np.isfinite(a)):
        raise AnnotationError("dp_not_finite", f"{name} contains NaN or infinite values")
    return a


def parse_densepose(ann: Dict[str, Any], lazy_masks: bool = False
                    ) -> Optional[DensePoseAnnotation]:
    """The DensePose part of one annotation dict (None when it has none); validates it
    (masks are decoded either way; with ``lazy_masks`` only the RLEs are kept)."""
    present = [k for k in DP_POINT_KEYS if k in ann]
    if not present:
        if "dp_masks" in ann:
            raise AnnotationError("dp_incomplete", "dp_masks without dp_x/dp_y/dp_I/dp_U/dp_V")
        return None
    if len(present) != len(DP_POINT_KEYS):
        missing = [k for k in DP_POINT_KEYS if k not in ann]
        raise AnnotationError("dp_incomplete", f"DensePose fields missing: {', '.join(missing)}")
    arrs = {k: _float_array(ann[k], k) for k in DP_POINT_KEYS}
    lengths = {k: int(a.shape[0]) for k, a in arrs.items()}
    if len(set(lengths.values())) != 1:
        raise AnnotationError("dp_length_mismatch", "DensePose point lists differ in length: "
                              + ", ".join(f"{k}={n}" for k, n in lengths.items()))
    x, y, i, u, v = (arrs[k] for k in DP_POINT_KEYS)
    if np.any(i != np.round(i)) or np.any((i < 1) | (i > NUM_PARTS)):
        bad = i[(i != np.round(i)) | (i < 1) | (i > NUM_PARTS)]
        raise AnnotationError("dp_part_out_of_range",
                              f"dp_I must be integers 1..24, found {bad[:5].tolist()}")
    for name, a in (("dp_U", u), ("dp_V", v)):
        if np.any((a < -_UV_EPS) | (a > 1 + _UV_EPS)):
            bad = a[(a < -_UV_EPS) | (a > 1 + _UV_EPS)]
            raise AnnotationError("dp_uv_out_of_range",
                                  f"{name} must lie in [0, 1], found {bad[:5].tolist()}")
    for name, a in (("dp_x", x), ("dp_y", y)):
        if np.any((a < -_XY_EPS) | (a > MASK_SIZE + _XY_EPS)):
            bad = a[(a < -_XY_EPS) | (a > MASK_SIZE + _XY_EPS)]
            raise AnnotationError("dp_point_out_of_frame",
                                  f"{name} must lie in the box frame 0..256, found "
                                  f"{bad[:5].tolist()}")
    masks = decode_dp_masks(ann["dp_masks"]) if "dp_masks" in ann else None
    rle = None
    if masks is not None and lazy_masks:
        masks, rle = None, ann["dp_masks"]
    return DensePoseAnnotation(
        x=np.clip(x, 0, MASK_SIZE).astype(np.float32),
        y=np.clip(y, 0, MASK_SIZE).astype(np.float32),
        i=i.astype(np.int64), u=np.clip(u, 0, 1).astype(np.float32),
        v=np.clip(v, 0, 1).astype(np.float32), masks=masks, masks_rle=rle)


def parse_bbox_xywh(bbox: Any) -> np.ndarray:
    """COCO ``[x, y, w, h]`` -> float32 XYXY; raises on wrong length, non-finite or w/h <= 0."""
    try:
        b = np.asarray(bbox, dtype=np.float64)
    except (TypeError, ValueError):
        raise AnnotationError("bad_bbox", f"bbox is not 4 numbers: {bbox!r}") from None
    if b.shape != (4,):
        raise AnnotationError("bad_bbox", f"bbox must have 4 numbers, got {bbox!r}")
    if not np.all(np.isfinite(b)):
        raise AnnotationError("bad_bbox", f"bbox has NaN or infinite values: {bbox!r}")
    if b[2] <= 0 or b[3] <= 0:
        raise AnnotationError("bad_bbox", f"bbox has non-positive size: {bbox!r}")
    return np.array([b[0], b[1], b[0] + b[2], b[1] + b[3]], dtype=np.float32)


def parse_keypoints(kps: Any) -> Optional[np.ndarray]:
    """COCO keypoints (51 numbers) -> float32 ``[17, 3]``, coordinates + 0.5 (pixel centres,
    as Detectron2's COCO loader does); None for an absent/empty list."""
    if kps is None or (isinstance(kps, (list, tuple)) and len(kps) == 0):
        return None
    try:
        k = np.asarray(kps, dtype=np.float64)
    except (TypeError, ValueError):
        raise AnnotationError("bad_keypoints", "keypoints are not numbers") from None
    if k.shape != (51,):
        raise AnnotationError("bad_keypoints",
                              f"keypoints must have 17 x 3 = 51 numbers, got {k.size}")
    if not np.all(np.isfinite(k)):
        raise AnnotationError("bad_keypoints", "keypoints contain NaN or infinite values")
    k = k.reshape(17, 3).copy()
    k[:, :2] += 0.5
    return k.astype(np.float32)


def parse_annotation(ann: Dict[str, Any], lazy_masks: bool = False) -> Dict[str, Any]:
    """One COCO/DensePose annotation dict -> the record form (raises AnnotationError)."""
    if "bbox" not in ann:
        raise AnnotationError("bad_bbox", "annotation has no bbox")
    out = {
        "bbox": parse_bbox_xywh(ann["bbox"]),
        "category_id": int(ann.get("category_id", 1)),
        "iscrowd": int(ann.get("iscrowd", 0)),
        "dp": parse_densepose(ann, lazy_masks),
        "keypoints": parse_keypoints(ann.get("keypoints")),
    }
    if "segmentation" in ann:
        out["segmentation"] = ann["segmentation"]
    if "id" in ann:
        out["id"] = ann["id"]
    if "area" in ann:
        out["area"] = float(ann["area"])
    return out


# ----------------------------------------------------------------------------- loading
def load_densepose_coco(json_path: Union[str, os.PathLike], image_root: Union[str, os.PathLike],
                        report: bool = False, check_images: bool = True,
                        lazy_masks: bool = True):
    """Read a DensePose-COCO JSON into one record per image (sorted by image id).

    Record: ``{"file_name", "image_id", "height", "width", "annotations": [ann, ...]}`` where
    ``ann = {"bbox": float32[4] XYXY absolute, "category_id", "iscrowd", "dp":
    DensePoseAnnotation or None, "keypoints": float32[17, 3] or None}`` plus ``segmentation``,
    ``id`` and ``area`` when the JSON has them. Corrupt annotations (and images whose file is
    missing, with ``check_images``) are logged, counted and skipped. Every ``dp_masks`` is
    decoded once to validate it; with ``lazy_masks`` (default) only its RLE is kept and
    ``dp.masks`` decodes on access (see :class:`DensePoseAnnotation`).

    Returns the records, or ``(records, LoadReport)`` with ``report=True``.
    """
    json_path = os.fspath(json_path)
    image_root = os.fspath(image_root)
    rep = LoadReport(json_path=json_path)
    with open(json_path, "r") as f:
        data = json.load(f)
    if not isinstance(data, dict) or "images" not in data:
        raise ValueError(f"{json_path}: not a COCO JSON (no 'images' list)")

    images: Dict[Any, Dict[str, Any]] = {}
    for img in data["images"]:
        iid = img.get("id")
        if iid in images:
            rep.add(iid, None, "duplicate_image_id", "image id appears twice", whole_image=True)
            continue
        images[iid] = img
    anns_by_image: Dict[Any, List[Dict[str, Any]]] = {iid: [] for iid in images}
    seen_ann_ids = set()
    for ann in data.get("annotations", []):
        iid, aid = ann.get("image_id"), ann.get("id")
        if iid not in anns_by_image:
            rep.add(iid, aid, "unknown_image", "annotation refers to an image id not in 'images'")
            continue
        if aid is not None:
            if aid in seen_ann_ids:
                rep.add(iid, aid, "duplicate_annotation_id", "annotation id appears twice")
                continue
            seen_ann_ids.add(aid)
        anns_by_image[iid].append(ann)

    records = []
    for iid in sorted(images, key=lambda k: (str(type(k)), k)):
        img = images[iid]
        file_name = os.path.join(image_root, img.get("file_name", ""))
        try:
            height, width = int(img["height"]), int(img["width"])
            if height <= 0 or width <= 0:
                raise ValueError
        except (KeyError, TypeError, ValueError):
            rep.add(iid, None, "bad_image_entry", "image entry lacks a positive height/width",
                    whole_image=True)
            continue
        if check_images and not os.path.isfile(file_name):
            rep.add(iid, None, "missing_image", f"image file not found: {file_name}",
                    whole_image=True)
            continue
        anns = []
        for ann in anns_by_image[iid]:
            try:
                parsed = parse_annotation(ann, lazy_masks)
            except AnnotationError as e:
                rep.add(iid, ann.get("id"), e.kind, str(e))
                continue
            anns.append(parsed)
            rep.num_densepose += parsed["dp"] is not None
        rep.num_annotations += len(anns)
        rep.num_images += 1
        records.append({"file_name": file_name, "image_id": iid, "height": height,
                        "width": width, "annotations": anns})
    if rep.num_skipped:
        logger.warning("%s: %s", json_path, rep.summary())
    else:
        logger.info("%s: %s", json_path, rep.summary())
    return (records, rep) if report else records


def dp_points_to_image(dp: DensePoseAnnotation, bbox_xyxy: np.ndarray) -> np.ndarray:
    """Box-relative points -> float32 ``[P, 2]`` image coordinates (``x0 + x * w / 256``)."""
    x0, y0, x1, y1 = (float(b) for b in bbox_xyxy)
    return np.stack([x0 + dp.x * (x1 - x0) / MASK_SIZE, y0 + dp.y * (y1 - y0) / MASK_SIZE],
                    axis=1).astype(np.float32)

