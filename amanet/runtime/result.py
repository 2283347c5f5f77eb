"""Flat, typed prediction results and their DensePose-COCO JSON form."""
from __future__ import annotations

import base64
import io
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

import numpy as np
from PIL import Image


@dataclass
class Prediction:
    """Everything the model says about one image, in original-image coordinates.

    - ``boxes``: float32 ``[D, 4]`` XYXY; ``scores``: float32 ``[D]``; ``classes``: int64 ``[D]``.
    - ``densepose``: raw per-RoI outputs, float32 ``[D, C, S, S]`` per key under Detectron2's
      field names: ``coarse_segm`` (AMANet: ``body_mask``), ``fine_segm``, ``u``, ``v`` and the
      model's confidences (``sigma_2``, ``kappa_u``, ``kappa_v``, ``fine_segm_confidence``,
      ``coarse_segm_confidence``).
    - ``charts``: per person uint8 ``[3, h, w]`` = (I 0..24, U 0..255, V 0..255), placed at
      ``chart_boxes[i]`` = int ``(x, y, w, h)``.
    - ``chart_confidences``: per person (models with confidences only) a dict of float32
      ``[h, w]`` maps: each confidence resampled like U/V and read at the pixel's part
      (Detectron2's ``ToChartResultConverterWithConfidences``).
    - ``iuv``: optional whole-image uint8 ``[3, H, W]`` (higher score wins where people overlap).
    - ``track_ids``: int64 ``[D]``, the person's id across a video's frames (set by
      :class:`~amanet.runtime.tracking.TemporalSmoother`; ``None`` otherwise). Its
      ``densepose`` segmentation fields are then log-probabilities (see that module).
    """
    image_size: tuple
    boxes: np.ndarray
    scores: np.ndarray
    classes: np.ndarray
    densepose: Dict[str, np.ndarray] = field(default_factory=dict)
    charts: List[np.ndarray] = field(default_factory=list)
    chart_boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), np.int64))
    chart_confidences: List[Dict[str, np.ndarray]] = field(default_factory=list)
    iuv: Optional[np.ndarray] = None
    track_ids: Optional[np.ndarray] = None

    def __len__(self) -> int:
        return int(self.boxes.shape[0])

    def save_confidences(self, path) -> bool:
        """Write the per-person confidence charts to ``path`` (npz: ``<field>_<i>`` float32
        ``[h, w]`` for person ``i``, and ``chart_boxes`` int64 ``[D, 4]`` XYWH, the layout of
        Detectron2's chart results). Returns False (nothing written) for a model without
        confidences."""
        if not self.chart_confidences:
            return False
        arrays = {f"{name}_{i}": conf for i, confs in enumerate(self.chart_confidences)
                  for name, conf in confs.items()}
        np.savez_compressed(path, chart_boxes=self.chart_boxes, **arrays)
        return True

    def to_coco_json(self, image_id: Any = 0, category_id: int = 1) -> List[Dict[str, Any]]:
        """DensePose-COCO results entries, as the AMANet/Detectron2 evaluators write them.

        ``bbox`` is float XYWH; ``densepose`` is ``[[3, h, w], base64 PNG of the IUV chart]``.
        """
        out = []
        for i in range(len(self)):
            x1, y1, x2, y2 = (float(v) for v in self.boxes[i])
            chart = self.charts[i]
            out.append({
                "image_id": image_id,
                "category_id": category_id,
                "bbox": [x1, y1, x2 - x1, y2 - y1],
                "score": float(self.scores[i]),
                "densepose": [list(chart.shape), encode_png(chart)],
            })
        return out


def encode_png(chart: np.ndarray) -> str:
    """uint8 ``[3, h, w]`` -> base64 text of an RGB PNG (channels I, U, V)."""
    if chart.ndim != 3 or chart.shape[0] != 3 or chart.dtype != np.uint8:
        raise ValueError(f"expected a uint8 [3, h, w] chart, got {chart.dtype} {chart.shape}")
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(np.moveaxis(chart, 0, -1))).save(buf, format="png",
                                                                         optimize=True)
    return base64.encodebytes(buf.getvalue()).decode()


def decode_png(shape: List[int], data: str) -> np.ndarray:
    """The inverse of :func:`encode_png`: uint8 ``[3, h, w]``."""
    im = Image.open(io.BytesIO(base64.decodebytes(data.encode())))
    arr = np.moveaxis(np.asarray(im.convert("RGB"), dtype=np.uint8), -1, 0)
    return arr.reshape(shape)
