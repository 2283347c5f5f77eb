"""The DensePose-COCO evaluation protocol (GPS, GPSm and IoU AP) and box AP.

Scoring, as the DensePose evaluator released with Detectron2 (and the AMANet seed) defines it:

- For a detection ``d`` and a ground-truth person ``g`` with annotated points, each point
  ``(dp_x, dp_y)`` is placed in the image at ``g.x + dp_x * g.w / 255`` (sic: 255, as the
  official code) and read from ``d``'s IUV chart at ``int(x - d.x), int(y - d.y)``; points
  outside the detection box or on predicted background count 0. Otherwise the geodesic
  distance ``dist`` between the GT surface point and the predicted one gives
  ``exp(-dist^2 / (2 k^2))``, where ``k`` is the per-part normalisation of the GT point's
  part (:data:`PART_K`). GPS = the mean over the person's points.
- GPSm = ``sqrt(GPS * maskIoU)``; IOU mode = ``maskIoU``; the GT mask is the union of the
  ``dp_masks`` resampled to the GT box (bilinear, > 0.5), the predicted mask is the chart's
  foreground, both pasted into the image.
- Matching and averaging follow COCO (greedy by score, 10 thresholds 0.50:0.05:0.95, 101
  recall points) with the DensePose specifics: at most 20 detections per image, area ranges
  all / medium (32^2..96^2) / large (> 96^2), GT persons without DensePose points are
  "ignore" (a detection matched to one is not a false positive), a detection still unmatched
  at the strictest threshold that overlaps (box IoU >= 0.8) an unmatched GT takes that GT's
  ignore flag, and detections in an image whose GT persons are all ignored are ignored.

Metric dicts hold fractions in [0, 1] (-1 where undefined, e.g. no GT in an area range).
Not reproduced: images' ``ignore_regions_x/y`` (not used by DensePose-COCO; a warning is
logged when present) and the CSE (embedding) variant.

Geodesic distances come from a :class:`GeodesicProvider`: :class:`SMPLGeodesics` reproduces
the official lookup from the user's SMPL files; :class:`amanet.data.synthetic.SyntheticGeodesics`
serves the synthetic world.
"""
from __future__ import annotations

import base64
import contextlib
import io
import json
import logging
import math
import os
import pickle
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from ..data.densepose_coco import NUM_PARTS, decode_dp_masks
from ..data.geodesics import COARSE_GROUP, MEAN_GEODESIC_DISTANCES, PART_K, GeodesicProvider

logger = logging.getLogger(__name__)

__all__ = ["GeodesicProvider", "SMPLGeodesics", "SyntheticGeodesics", "evaluate_densepose",
           "evaluate_boxes", "geodesic_for_dataset", "densepose_results", "write_results_json",
           "decode_chart", "encode_chart", "format_metrics", "PART_K", "COARSE_GROUP",
           "MEAN_GEODESIC_DISTANCES"]

# ----------------------------------------------------------------------------- constants
IOU_THRESHOLDS = np.linspace(0.5, 0.95, 10)
RECALL_THRESHOLDS = np.linspace(0.0, 1.0, 101)
AREA_RANGES = {"all": (0.0, 1e5 ** 2), "medium": (32.0 ** 2, 96.0 ** 2),
               "large": (96.0 ** 2, 1e5 ** 2)}
MAX_DETS = 20
BOX_FALLBACK_IOU = 0.8
MODES = ("GPS", "GPSM", "IOU")


# ----------------------------------------------------------------------------- geodesics
class SMPLGeodesics(GeodesicProvider):
    """The official DensePose procedure on the SMPL files the user supplies.

    - ``smpl_subdiv_mat`` (``SMPL_subdiv.mat``): ``U_subdiv``, ``V_subdiv``, ``Part_ID_subdiv``
      of the subdivided template's vertices;
    - ``transform_mat`` (``SMPL_SUBDIV_TRANSFORM.mat``): ``index``, 1-based Pdist vertex of
      each subdivided vertex (0 = none);
    - ``pdist_pkl`` (``Pdist_matrix.pkl``): ``{"Pdist_matrix": condensed pairwise geodesic
      distances of the n Pdist vertices}`` (scipy ``pdist`` order).

    A point (I, U, V) goes to the nearest subdivided vertex of part I in (U, V) space, then
    through ``index`` to a Pdist vertex; the distance is the table entry (0 for the same
    vertex, inf when the prediction has no vertex).
    """

    def __init__(self, smpl_subdiv_mat: Union[str, os.PathLike],
                 pdist_pkl: Union[str, os.PathLike], transform_mat: Union[str, os.PathLike]):
        from ..data.matfile import loadmat

        sub = loadmat(smpl_subdiv_mat)
        for key in ("U_subdiv", "V_subdiv", "Part_ID_subdiv"):
            if key not in sub:
                raise ValueError(f"{smpl_subdiv_mat}: no variable {key!r}")
        u = np.asarray(sub["U_subdiv"], dtype=np.float64).reshape(-1)
        v = np.asarray(sub["V_subdiv"], dtype=np.float64).reshape(-1)
        parts = np.asarray(sub["Part_ID_subdiv"]).reshape(-1).astype(np.int64)
        if not (u.size == v.size == parts.size):
            raise ValueError(f"{smpl_subdiv_mat}: U/V/Part_ID sizes differ")
        tr = loadmat(transform_mat)
        if "index" not in tr:
            raise ValueError(f"{transform_mat}: no variable 'index'")
        self.transform = np.asarray(tr["index"]).reshape(-1).astype(np.int64)
        if self.transform.size != u.size:
            raise ValueError(f"{transform_mat}: 'index' has {self.transform.size} entries, "
                             f"SMPL_subdiv has {u.size} vertices")
        with open(pdist_pkl, "rb") as f:
            arrays = pickle.load(f, encoding="latin1")
        pd = np.asarray(arrays["Pdist_matrix"] if isinstance(arrays, dict) else arrays)
        self.pdist = pd.reshape(-1)
        n = int(round((1 + math.sqrt(1 + 8 * self.pdist.size)) / 2))
        if n * (n - 1) // 2 != self.pdist.size:
            raise ValueError(f"{pdist_pkl}: {self.pdist.size} entries is not n(n-1)/2")
        self.n = n
        if self.transform.max(initial=0) > n:
            raise ValueError(f"{transform_mat}: index refers to vertex {self.transform.max()} "
                             f"but Pdist has {n}")
        self.part_uv = []
        self.part_vertex = []          # 1-based subdivided vertex ids, per part
        ids = np.arange(u.size) + 1
        for p in range(1, NUM_PARTS + 1):
            sel = parts == p
            self.part_uv.append(np.stack([u[sel], v[sel]], axis=1))
            self.part_vertex.append(ids[sel])

    def vertices(self, i, u, v) -> np.ndarray:
        """1-based Pdist vertex of each point (0 where it has none)."""
        i = np.asarray(i, dtype=np.int64).reshape(-1)
        uv = np.stack([np.asarray(u, np.float64).reshape(-1),
                       np.asarray(v, np.float64).reshape(-1)], axis=1)
        sub = np.zeros(i.shape, np.int64)
        for p in range(1, NUM_PARTS + 1):
            sel = np.nonzero(i == p)[0]
            if sel.size == 0 or self.part_uv[p - 1].shape[0] == 0:
                continue
            ref = self.part_uv[p - 1]
            for s in range(0, sel.size, 512):
                q = uv[sel[s:s + 512]]
                d2 = ((q[:, None, :] - ref[None, :, :]) ** 2).sum(-1)
                sub[sel[s:s + 512]] = self.part_vertex[p - 1][np.argmin(d2, axis=1)]
        out = np.zeros(i.shape, np.int64)
        ok = sub > 0
        out[ok] = self.transform[sub[ok] - 1]
        return out

    def distance(self, i_gt, u_gt, v_gt, i_pred, u_pred, v_pred) -> np.ndarray:
        a = self.vertices(i_gt, u_gt, v_gt)
        b = self.vertices(i_pred, u_pred, v_pred)
        d = np.full(a.shape, np.inf)
        d[a <= 0] = np.nan
        both = (a > 0) & (b > 0)
        same = both & (a == b)
        d[same] = 0.0
        diff = both & (a != b)
        lo = np.minimum(a[diff], b[diff]) - 1
        hi = np.maximum(a[diff], b[diff]) - 1
        n = self.n
        idx = n * lo - lo * (lo + 1) // 2 + (hi - lo - 1)   # scipy condensed index
        d[diff] = self.pdist[idx]
        return d


def geodesic_for_dataset(gt_json: Union[str, Dict[str, Any]]) -> Optional[GeodesicProvider]:
    """The provider a ground-truth file calls for: the synthetic body's for synthetic data
    (marked in the JSON's ``info``), else SMPL from ``$AMANET_SMPL_DIR`` (or
    ``$AMANET_DATASETS/densepose``) when the three files are there, else None."""
    data = _load_json(gt_json)
    info = data.get("info") or {}
    if isinstance(info, dict) and str(info.get("body_model", "")).startswith("amanet-synthetic"):
        from ..data.synthetic import SyntheticGeodesics
        return SyntheticGeodesics()
    dirs = [os.environ.get("AMANET_SMPL_DIR", "")]
    if os.environ.get("AMANET_DATASETS"):
        dirs.append(os.path.join(os.environ["AMANET_DATASETS"], "densepose"))
    for d in filter(None, dirs):
        files = [os.path.join(d, f) for f in ("SMPL_subdiv.mat", "Pdist_matrix.pkl",
                                              "SMPL_SUBDIV_TRANSFORM.mat")]
        if all(os.path.isfile(f) for f in files):
            return SMPLGeodesics(files[0], files[1], files[2])
    return None


# ----------------------------------------------------------------------------- results I/O
def encode_chart(chart: np.ndarray) -> str:
    """uint8 ``[3, h, w]`` (I, U, V) -> base64 PNG text (the seed's encoding)."""
    from ..runtime.result import encode_png
    return encode_png(chart)


def decode_chart(entry: Any) -> np.ndarray:
    """A result's ``densepose`` field -> uint8 ``[3, h, w]``.

    Accepts ``[[3, h, w], b64]`` (Detectron2), ``[[[3, h, w], b64], [x, y, w, h]]`` (the
    AMANet seed's ``DensePoseResult`` entry), a ``{"shape", "data"}`` dict, or an array.
    """
    if isinstance(entry, np.ndarray):
        arr = entry
    else:
        if isinstance(entry, dict):
            shape, data = entry["shape"], entry["data"]
        elif (isinstance(entry, (list, tuple)) and len(entry) == 2
              and isinstance(entry[0], (list, tuple)) and len(entry[0]) == 2
              and isinstance(entry[0][1], str)):
            shape, data = entry[0]
        elif isinstance(entry, (list, tuple)) and len(entry) == 2 and isinstance(entry[1], str):
            shape, data = entry
        else:
            raise ValueError("unrecognised 'densepose' result entry")
        from PIL import Image
        im = Image.open(io.BytesIO(base64.decodebytes(data.encode())))
        arr = np.moveaxis(np.asarray(im.convert("RGB"), dtype=np.uint8), -1, 0)
        arr = arr.reshape([int(s) for s in shape])
    if arr.ndim != 3 or arr.shape[0] != 3:
        raise ValueError(f"a DensePose chart must be [3, h, w], got {list(arr.shape)}")
    return np.asarray(arr, dtype=np.uint8)


def densepose_results(pred: Any, image_id: Any, category_id: int = 1) -> List[Dict[str, Any]]:
    """Result entries of one :class:`amanet.runtime.result.Prediction`, in the seed's format:
    ``{"image_id", "category_id", "bbox": [x, y, w, h], "score",
    "densepose": [[[3, h, w], b64 PNG], [x, y, w, h]]}``."""
    out = []
    for k in range(len(pred)):
        x1, y1, x2, y2 = (float(b) for b in pred.boxes[k])
        box = [x1, y1, x2 - x1, y2 - y1]
        chart = np.asarray(pred.charts[k], dtype=np.uint8)
        out.append({"image_id": image_id, "category_id": int(category_id), "bbox": box,
                    "score": float(pred.scores[k]),
                    "densepose": [[list(chart.shape), encode_chart(chart)], box]})
    return out


def write_results_json(path: Union[str, os.PathLike], results: Sequence[Dict[str, Any]]) -> None:
    """Write result entries (charts as base64 PNG; arrays are encoded on the way)."""
    out = []
    for r in results:
        r = dict(r)
        dp = r.get("densepose")
        if isinstance(dp, np.ndarray):
            r["densepose"] = [[list(dp.shape), encode_chart(dp)], list(map(float, r["bbox"]))]
        out.append(r)
    with open(path, "w") as f:
        json.dump(out, f)


# ----------------------------------------------------------------------------- helpers
def _load_json(obj: Union[str, os.PathLike, Dict[str, Any], List[Any]]) -> Any:
    if isinstance(obj, (str, os.PathLike)):
        with open(obj, "r") as f:
            return json.load(f)
    return obj


def _zoom_bilinear(mask: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """``scipy.ndimage.zoom(mask, order=1, prefilter=False)`` to ``(out_h, out_w)``, as
    Detectron2's evaluator calls it: corner samples aligned (``in = out * (n_in - 1) /
    (n_out - 1)``, in that floating-point order) and SciPy's default ``mode="constant"``,
    which makes a row or column whose coordinate rounds past the last input sample
    (``n_in - 1 + ulp``) zero, not the edge's value: GT masks then lose that row/column, and
    so must ours for the IoU to be Detectron2's."""
    def coords(n_out, n_in):
        if n_out <= 1:
            return np.zeros(max(n_out, 0))
        return np.arange(n_out) * ((n_in - 1) / (n_out - 1))
    m = mask.astype(np.float64)
    ys, xs = coords(out_h, m.shape[0]), coords(out_w, m.shape[1])
    y0 = np.minimum(np.floor(ys).astype(int), m.shape[0] - 1)
    x0 = np.minimum(np.floor(xs).astype(int), m.shape[1] - 1)
    y1 = np.minimum(y0 + 1, m.shape[0] - 1)
    x1 = np.minimum(x0 + 1, m.shape[1] - 1)
    wy = (ys - y0)[:, None]
    wx = (xs - x0)[None, :]
    top = m[y0][:, x0] * (1 - wx) + m[y0][:, x1] * wx
    bot = m[y1][:, x0] * (1 - wx) + m[y1][:, x1] * wx
    out = top * (1 - wy) + bot * wy
    out[ys > m.shape[0] - 1, :] = 0.0
    out[:, xs > m.shape[1] - 1] = 0.0
    return out


def _paste_rle(mask: Optional[np.ndarray], box_xywh, im_h: int, im_w: int):
    """Encode a box-sized binary mask placed at ``int(x), int(y)`` into an image-sized RLE."""
    from pycocotools import mask as mask_utils

    im = np.zeros((im_h, im_w), np.uint8)
    if mask is not None:
        x, y, w, h = (float(b) for b in box_xywh)
        xi, yi = int(x), int(y)
        x0, y0 = max(xi, 0), max(yi, 0)
        x1 = min(int(x + w), im_w, xi + mask.shape[1])
        y1 = min(int(y + h), im_h, yi + mask.shape[0])
        if x1 > x0 and y1 > y0:
            im[y0:y1, x0:x1] = mask[y0 - yi:y1 - yi, x0 - xi:x1 - xi] > 0
    return mask_utils.encode(np.asfortranarray(im))


@dataclass
class _Det:
    id: int
    image_id: Any
    category_id: int
    bbox: List[float]
    score: float
    area: float
    entry: Any
    _chart: Optional[np.ndarray] = None

    @property
    def chart(self) -> np.ndarray:
        if self._chart is None:
            self._chart = decode_chart(self.entry)
        return self._chart


def _prepare_dets(results: Sequence[Dict[str, Any]], image_ids: set) -> List[_Det]:
    dets = []
    for k, r in enumerate(results):
        if r["image_id"] not in image_ids:
            raise ValueError(f"result {k} refers to image {r['image_id']!r}, which is not in "
                             "the ground truth")
        b = [float(v) for v in r["bbox"]]
        if "densepose" not in r:
            raise ValueError(f"result {k} has no 'densepose' chart")
        dets.append(_Det(k + 1, r["image_id"], int(r.get("category_id", 1)), b,
                         float(r["score"]), b[2] * b[3], r["densepose"]))
    return dets


# ----------------------------------------------------------------------------- per pair
def _gps_matrix(gts, dts, geodesic: GeodesicProvider, point_scale: float) -> np.ndarray:
    """``[D, G]`` GPS of every detection against every non-ignored GT."""
    ious = np.zeros((len(dts), len(gts)))
    for j, g in enumerate(gts):
        if g["_dp_ignore"]:
            continue
        gx, gy, gw, gh = (float(b) for b in g["bbox"])
        dp_x = np.asarray(g["dp_x"], np.float64) * gw / point_scale
        dp_y = np.asarray(g["dp_y"], np.float64) * gh / point_scale
        i_gt = np.asarray(g["dp_I"], np.float64).astype(np.int64)
        u_gt = np.asarray(g["dp_U"], np.float64)
        v_gt = np.asarray(g["dp_V"], np.float64)
        n = i_gt.size
        if n == 0:
            continue
        k = geodesic.normalisation(i_gt)
        # Gather the predictions of all detections at this GT's points, then one call.
        rows, reads = [], []
        for di, d in enumerate(dts):
            dx, dy = int(d.bbox[2]), int(d.bbox[3])
            px = (dp_x + gx - d.bbox[0]).astype(np.int64)    # truncation, as the official
            py = (dp_y + gy - d.bbox[1]).astype(np.int64)
            inside = (px >= 0) & (py >= 0) & (px < dx) & (py < dy)
            if not inside.any():
                continue
            chart = d.chart
            if chart.shape[1] != dy or chart.shape[2] != dx:
                raise ValueError(
                    f"detection on image {d.image_id}: chart is {list(chart.shape[1:])} but "
                    f"its box {d.bbox} needs [int(h), int(w)] = [{dy}, {dx}]")
            px_c = np.where(inside, px, 0)
            py_c = np.where(inside, py, 0)
            ip = chart[0, py_c, px_c].astype(np.int64)
            ip[~inside] = 0
            up = chart[1, py_c, px_c] / 255.0
            vp = chart[2, py_c, px_c] / 255.0
            rows.append(di)
            reads.append((ip, up, vp))
        if not rows:
            continue
        ip = np.concatenate([r[0] for r in reads])
        up = np.concatenate([r[1] for r in reads])
        vp = np.concatenate([r[2] for r in reads])
        m = len(rows)
        dist = np.asarray(geodesic.distance(np.tile(i_gt, m), np.tile(u_gt, m),
                                            np.tile(v_gt, m), ip, up, vp), np.float64)
        dist = dist.reshape(m, n)
        with np.errstate(over="ignore", invalid="ignore"):
            vals = np.exp(-(dist ** 2) / (2.0 * k[None, :] ** 2))
        vals[np.isinf(dist)] = 0.0
        valid = ~np.isnan(dist)
        for r, di in enumerate(rows):
            cnt = int(valid[r].sum())
            ious[di, j] = float(vals[r][valid[r]].sum() / cnt) if cnt else 0.0
    return ious


def _mask_iou_matrix(gts, dts, im_h: int, im_w: int) -> np.ndarray:
    from pycocotools import mask as mask_utils

    if not gts or not dts:
        return np.zeros((len(dts), len(gts)))
    g_rles = []
    for g in gts:
        if "dp_masks" in g:
            m = np.minimum(decode_dp_masks(g["dp_masks"]), 1).astype(np.float64)
            _, _, w, h = (float(b) for b in g["bbox"])
            oh = int(round(m.shape[0] * (max(h, 1.0) / m.shape[0])))
            ow = int(round(m.shape[1] * (max(w, 1.0) / m.shape[1])))
            m = (_zoom_bilinear(m, oh, ow) > 0.5).astype(np.uint8)
            g_rles.append(_paste_rle(m, g["bbox"], im_h, im_w))
        elif isinstance(g.get("segmentation"), list) and g["segmentation"]:
            g_rles.append(mask_utils.merge(mask_utils.frPyObjects(g["segmentation"], im_h, im_w)))
        elif isinstance(g.get("segmentation"), dict):
            s = g["segmentation"]
            if isinstance(s["counts"], list):
                g_rles.append(mask_utils.frPyObjects(s, im_h, im_w))
            else:
                g_rles.append({"size": s["size"], "counts": s["counts"].encode()
                               if isinstance(s["counts"], str) else s["counts"]})
        else:
            g_rles.append(_paste_rle(None, g["bbox"], im_h, im_w))
    d_rles = [_paste_rle(d.chart[0] > 0, d.bbox, im_h, im_w) for d in dts]
    iscrowd = [int(g.get("iscrowd", 0)) for g in gts]
    return np.asarray(mask_utils.iou(d_rles, g_rles, iscrowd)).reshape(len(dts), len(gts))


def _box_iou_matrix(gts, dts) -> np.ndarray:
    from pycocotools import mask as mask_utils
    if not gts or not dts:
        return np.zeros((len(dts), len(gts)))
    iscrowd = [int(g.get("iscrowd", 0)) for g in gts]
    return np.asarray(mask_utils.iou([d.bbox for d in dts], [list(map(float, g["bbox"]))
                                                            for g in gts], iscrowd)
                      ).reshape(len(dts), len(gts))


# ----------------------------------------------------------------------------- matching
def _match_image(gts, dts, scores: np.ndarray, box_ious: np.ndarray, area_rng, thresholds):
    """COCO greedy matching of one image/category/area range with the DensePose rules.

    ``gts``/``dts`` are in their computed order (dts by score); ``scores`` is ``[D, G]``.
    """
    T, G, D = len(thresholds), len(gts), len(dts)
    g_ign = np.array([bool(g["_dp_ignore"]) or not (area_rng[0] <= g["area"] <= area_rng[1])
                      for g in gts], dtype=bool)
    order = np.argsort(g_ign, kind="mergesort")          # non-ignored GTs first
    g_ign = g_ign[order]
    scores = scores[:, order] if D and G else scores
    box_ious = box_ious[:, order] if D and G else box_ious
    crowd = np.array([int(gts[k].get("iscrowd", 0)) for k in order], dtype=bool)
    gt_ids = [gts[k]["id"] for k in order]
    gtm = np.zeros((T, G), dtype=np.int64)
    dtm = np.zeros((T, D), dtype=np.int64)
    d_ign = np.zeros((T, D), dtype=bool)
    if G == 0 or np.all(g_ign):
        d_ign[:] = True
    if D and G:
        for t, thr in enumerate(thresholds):
            for di in range(D):
                best = min(thr, 1 - 1e-10)
                m = -1
                for gi in range(G):
                    if gtm[t, gi] and not crowd[gi]:
                        continue
                    if m > -1 and not g_ign[m] and g_ign[gi]:
                        break
                    s = scores[di, gi]
                    if s < best or s == 0.0:
                        continue
                    best, m = s, gi
                if m == -1:
                    continue
                d_ign[t, di] = g_ign[m]
                dtm[t, di] = gt_ids[m]
                gtm[t, m] = dts[di].id
        # box-overlap fallback, evaluated at the strictest threshold (as the official code)
        t = T - 1
        for di in range(D):
            if dtm[t, di]:
                continue
            best, m = BOX_FALLBACK_IOU, -1
            for gi in range(G):
                if gtm[t, gi] and not crowd[gi]:
                    continue
                if box_ious[di, gi] < best:
                    continue
                best, m = box_ious[di, gi], gi
            if m > -1:
                d_ign[:, di] = g_ign[m]
                if g_ign[m]:
                    dtm[t, di] = gt_ids[m]
                    gtm[t, m] = dts[di].id
    out_of_range = np.array([not (area_rng[0] <= d.area <= area_rng[1]) for d in dts], bool)
    d_ign |= (dtm == 0) & out_of_range[None, :]
    return {"dt_scores": np.array([d.score for d in dts]), "dtm": dtm, "d_ign": d_ign,
            "g_ign": g_ign}


def _accumulate(per_image: List[dict], thresholds) -> Tuple[np.ndarray, np.ndarray]:
    """precision ``[T, R]`` and recall ``[T]`` (-1 when there is no non-ignored GT)."""
    T, R = len(thresholds), len(RECALL_THRESHOLDS)
    precision = -np.ones((T, R))
    recall = -np.ones(T)
    E = [e for e in per_image if e is not None]
    if not E:
        return precision, recall
    scores = np.concatenate([e["dt_scores"][:MAX_DETS] for e in E])
    inds = np.argsort(-scores, kind="mergesort")
    dtm = np.concatenate([e["dtm"][:, :MAX_DETS] for e in E], axis=1)[:, inds]
    d_ign = np.concatenate([e["d_ign"][:, :MAX_DETS] for e in E], axis=1)[:, inds]
    g_ign = np.concatenate([e["g_ign"] for e in E])
    npig = int(np.count_nonzero(~g_ign))
    if npig == 0:
        return precision, recall
    tps = (dtm > 0) & ~d_ign
    fps = (dtm == 0) & ~d_ign
    tp_sum = np.cumsum(tps, axis=1).astype(np.float64)
    fp_sum = np.cumsum(fps, axis=1).astype(np.float64)
    for t in range(T):
        tp, fp = tp_sum[t], fp_sum[t]
        nd = tp.size
        rc = tp / npig
        pr = tp / (fp + tp + np.spacing(1))
        recall[t] = rc[-1] if nd else 0.0
        pr = np.maximum.accumulate(pr[::-1])[::-1] if nd else pr   # precision envelope
        q = np.zeros(R)
        idx = np.searchsorted(rc, RECALL_THRESHOLDS, side="left")
        ok = idx < nd
        q[ok] = pr[idx[ok]]
        precision[t] = q
    return precision, recall


def _summary(prec: Dict[str, np.ndarray], rec: Dict[str, np.ndarray], thresholds
             ) -> Dict[str, float]:
    def mean(a):
        a = a[a > -1]
        return float(a.mean()) if a.size else -1.0

    def at(arr, thr):
        k = np.where(np.abs(thresholds - thr) < 1e-3)[0]
        return arr[k] if k.size else np.array([-1.0])

    out = {"AP": mean(prec["all"]), "AP50": mean(at(prec["all"], 0.5)),
           "AP75": mean(at(prec["all"], 0.75)), "APm": mean(prec["medium"]),
           "APl": mean(prec["large"]), "AR": mean(rec["all"]),
           "AR50": mean(at(rec["all"], 0.5)), "AR75": mean(at(rec["all"], 0.75)),
           "ARm": mean(rec["medium"]), "ARl": mean(rec["large"])}
    return out


# ----------------------------------------------------------------------------- entry points
def evaluate_densepose(gt_json: Union[str, os.PathLike, Dict[str, Any]],
                       results: Union[str, os.PathLike, Sequence[Dict[str, Any]]],
                       geodesic: Optional[GeodesicProvider] = None, mode: str = "GPS",
                       point_scale: float = 255.0, return_details: bool = False
                       ) -> Dict[str, Any]:
    """DensePose AP of ``results`` against a DensePose-COCO ground truth.

    Args:
        gt_json: path of (or the loaded) ground-truth JSON.
        results: result entries (or a results JSON path): ``image_id``, ``category_id``,
            ``bbox`` (XYWH), ``score``, ``densepose`` (see :func:`decode_chart`; the chart is
            ``[3, int(h), int(w)]`` and box-relative).
        geodesic: the surface distance provider (not needed for ``mode="IOU"``).
        mode: ``"GPS"``, ``"GPSm"`` or ``"IOU"``.
        point_scale: divisor mapping ``dp_x`` to the box (255 as the official evaluator;
            256 is the annotation format's own definition).
        return_details: also return the per-image score matrices under ``"details"``.

    Returns ``{"AP", "AP50", "AP75", "APm", "APl", "AR", "AR50", "AR75", "ARm", "ARl"}`` as
    fractions (-1 = undefined); with ``return_details`` also the per-image matrices.
    """
    mode_key = str(mode).upper()
    if mode_key not in MODES:
        raise ValueError(f"mode must be one of GPS, GPSm, IOU; got {mode!r}")
    if mode_key in ("GPS", "GPSM") and geodesic is None:
        raise ValueError(f"mode {mode!r} needs a GeodesicProvider: SMPLGeodesics (SMPL_subdiv.mat, "
                         "Pdist_matrix.pkl, SMPL_SUBDIV_TRANSFORM.mat) for DensePose-COCO, "
                         "SyntheticGeodesics for synthetic data")
    gt = _load_json(gt_json)
    res = _load_json(results)
    images = {img["id"]: img for img in gt["images"]}
    if any("ignore_regions_x" in img and img["ignore_regions_x"] for img in gt["images"]):
        logger.warning("the ground truth has ignore regions; they are not applied")
    cat_ids = sorted({c["id"] for c in gt.get("categories", [])} or
                     {a["category_id"] for a in gt.get("annotations", [])})
    dets = _prepare_dets(res, set(images))
    gts_by = {}
    for a in gt.get("annotations", []):
        a = dict(a)
        a["_dp_ignore"] = "dp_x" not in a
        a.setdefault("area", float(a["bbox"][2]) * float(a["bbox"][3]))
        gts_by.setdefault((a["image_id"], a["category_id"]), []).append(a)
    dts_by: Dict[Any, List[_Det]] = {}
    for d in dets:
        dts_by.setdefault((d.image_id, d.category_id), []).append(d)

    thresholds = IOU_THRESHOLDS
    per_area: Dict[str, List[Optional[dict]]] = {k: [] for k in AREA_RANGES}
    details = {}
    for cat in cat_ids:
        for iid in sorted(images, key=lambda k: (str(type(k)), k)):
            gts = gts_by.get((iid, cat), [])
            dts = sorted(dts_by.get((iid, cat), []), key=lambda d: -d.score)[:MAX_DETS]
            if not gts and not dts:
                for k in per_area:
                    per_area[k].append(None)
                continue
            gps = _gps_matrix(gts, dts, geodesic, point_scale) if mode_key != "IOU" and gts \
                and dts else np.zeros((len(dts), len(gts)))
            if mode_key in ("GPSM", "IOU"):
                miou = _mask_iou_matrix(gts, dts, int(images[iid]["height"]),
                                        int(images[iid]["width"]))
            if mode_key == "GPS":
                scores = gps
            elif mode_key == "GPSM":
                scores = np.sqrt(gps * miou)
            else:
                scores = miou
            box = _box_iou_matrix(gts, dts)
            if return_details:
                details[(iid, cat)] = {"scores": scores, "gps": gps, "box_iou": box,
                                       "dt_ids": [d.id for d in dts],
                                       "gt_ids": [g["id"] for g in gts]}
            for k, rng in AREA_RANGES.items():
                per_area[k].append(_match_image(gts, dts, scores, box, rng, thresholds))
    prec, rec = {}, {}
    for k in AREA_RANGES:
        prec[k], rec[k] = _accumulate(per_area[k], thresholds)
    out: Dict[str, Any] = _summary(prec, rec, thresholds)
    if return_details:
        out["details"] = details
        out["precision"] = prec
        out["recall"] = rec
    return out


def evaluate_boxes(gt_json: Union[str, os.PathLike, Dict[str, Any]],
                   results: Union[str, os.PathLike, Sequence[Dict[str, Any]]]) -> Dict[str, float]:
    """COCO box AP (pycocotools ``COCOeval``, ``iouType="bbox"``) as fractions:
    AP, AP50, AP75, APs, APm, APl, AR1, AR10, AR100, ARs, ARm, ARl."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    names = ["AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm",
             "ARl"]
    gt = _load_json(gt_json)
    res = _load_json(results)
    entries = [{"image_id": r["image_id"], "category_id": int(r.get("category_id", 1)),
                "bbox": [float(v) for v in r["bbox"]], "score": float(r["score"])}
               for r in res]
    gt_anns = [a for a in gt.get("annotations", [])]
    if not entries and gt.get("images"):
        # pycocotools cannot load an empty result list: one zero-score 1 x 1 box scores AP 0
        # where there is ground truth and -1 where there is none, as no detections would.
        cat = min([c["id"] for c in gt.get("categories", [])] or [1])
        entries = [{"image_id": gt["images"][0]["id"], "category_id": cat,
                    "bbox": [0.0, 0.0, 1.0, 1.0], "score": 0.0}]
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        ds = dict(gt)
        ds["annotations"] = [dict(a, id=a.get("id", k + 1), area=a.get(
            "area", float(a["bbox"][2]) * float(a["bbox"][3])), iscrowd=a.get("iscrowd", 0))
            for k, a in enumerate(gt_anns)]
        coco_gt.dataset = ds
        coco_gt.createIndex()
        coco_dt = coco_gt.loadRes(entries)
        ev = COCOeval(coco_gt, coco_dt, "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return {k: float(v) for k, v in zip(names, ev.stats)}


def format_metrics(metrics: Dict[str, Any]) -> str:
    """One line, x100 like Detectron2's tables."""
    keys = [k for k in ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR", "AR50", "AR75", "ARm",
                        "ARl", "AR1", "AR10", "AR100") if k in metrics]
    return "  ".join(f"{k} {100 * metrics[k]:.2f}" if metrics[k] >= 0 else f"{k} -"
                     for k in keys)


def __getattr__(name: str):
    # ``evaluate.SyntheticGeodesics`` without importing the synthetic world eagerly
    if name == "SyntheticGeodesics":
        from ..data.synthetic import SyntheticGeodesics
        return SyntheticGeodesics
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
