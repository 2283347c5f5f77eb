"""Temporal stability for video: people tracked across frames, their boxes and DensePose outputs
smoothed over time so that body parts stop flickering.

Per frame, :class:`TemporalSmoother`:

1. matches the detections to the live tracks by box IoU (greedy, best pair first; a class never
   matches another): a matched detection inherits the track's id, the others start new tracks,
   and a track unmatched for more than ``max_missed`` frames ends;
2. when given the frame, measures the motion since the previous frame (dense optical flow,
   OpenCV DIS, :class:`FrameFlow`);
3. smooths a matched person's box: the track's box, moved by the median motion inside the new
   box, blended ``box_alpha * now + (1 - box_alpha) * moved`` (no lag from walking);
4. smooths its raw per-RoI DensePose outputs (``[C, S, S]`` on the box's grid): the track's
   outputs are carried along the motion onto the smoothed box's grid (each grid point reads where
   its image point was a frame ago), the current ones resampled onto that grid too, and the two
   blended ``dense_alpha * now + (1 - dense_alpha) * past`` wherever the past covers the point.
   Segmentation outputs are blended as probabilities (softmax over channels) and handed on as
   their logarithm, so argmax and the softmax gates downstream read the blend exactly; U, V and
   the confidences are blended as they are;
5. optionally (``hysteresis`` > 0) holds body-part labels: the part the person showed at a
   point last frame (by box geometry) keeps it unless another part beats it by that much
   probability. Off by default: it removes more flips but cost up to 3 points of GPS AP on
   held-out clips (bench/temporal.py, README);
6. rebuilds the :class:`Prediction` (charts, whole-image IUV, confidences) from the smoothed
   boxes and outputs with the predictor's own post-processing, and sets ``track_ids``.

A track's first frame passes through unchanged. Smoothing here is causal (no look-ahead), so
it streams with the video without delay; :class:`~amanet.runtime.lookahead.LookaheadSmoother`
adds a few frames of look-ahead on top of it (the default of ``amanet video --smooth``). The
defaults were chosen with ``bench/temporal.py`` on clips of another world seed than the
README's table.

:meth:`TemporalSmoother.propagate` makes a frame's prediction without the model: the people of
the previous frame carried along the optical flow, as step 4 carries a track's outputs (the
forward half of key frames, ``amanet video --keyframe-interval K``; see
:mod:`amanet.runtime.keyframes`).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from .result import Prediction

logger = logging.getLogger(__name__)

#: outputs blended as probabilities over their channels (the rest: as values)
SEGMENTATION_FIELDS = ("coarse_segm", "body_mask", "fine_segm")
#: outputs whose drawn labels get hysteresis: the body parts (on the gate it cost mask IoU
#: without fewer flips, measured with bench/temporal.py)
HYSTERESIS_FIELDS = ("fine_segm",)

#: ``assemble(boxes [D, 4] XYXY, scores [D], classes [D], densepose {field: [D, C, S, S]},
#: image_size (H, W)) -> Prediction``: the predictor's post-processing
Assemble = Callable[[np.ndarray, np.ndarray, np.ndarray, Dict[str, np.ndarray],
                     Tuple[int, int]], Prediction]


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of XYXY boxes ``a`` ``[N, 4]`` x ``b`` ``[M, 4]`` -> ``[N, M]``."""
    a = np.asarray(a, np.float64).reshape(-1, 4)
    b = np.asarray(b, np.float64).reshape(-1, 4)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=2)
    area_a = np.prod(np.clip(a[:, 2:] - a[:, :2], 0, None), axis=1)
    area_b = np.prod(np.clip(b[:, 2:] - b[:, :2], 0, None), axis=1)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def greedy_match(iou: np.ndarray, threshold: float) -> List[Tuple[int, int]]:
    """``(row, col)`` pairs, best IoU first, each row and column used once, IoU >= threshold."""
    pairs = []
    if iou.size == 0:
        return pairs
    order = np.argsort(-iou, axis=None, kind="stable")
    rows_used, cols_used = set(), set()
    for flat in order:
        r, c = divmod(int(flat), iou.shape[1])
        if iou[r, c] < threshold:
            break
        if r in rows_used or c in cols_used:
            continue
        rows_used.add(r)
        cols_used.add(c)
        pairs.append((r, c))
    return pairs


class FrameFlow:
    """Dense optical flow from a frame back to the previous one (OpenCV DIS, on a gray copy at
    most ``max_side`` px long): ``flow(x, y)`` is the displacement, in the frame's pixels, from
    the image point ``(x, y)`` now to where that point was one frame earlier."""

    def __init__(self, previous_bgr: np.ndarray, current_bgr: np.ndarray, max_side: int = 320):
        import cv2

        h, w = current_bgr.shape[:2]
        self.scale = min(1.0, max_side / max(h, w))
        size = (max(1, round(w * self.scale)), max(1, round(h * self.scale)))

        def small(bgr):
            gray = cv2.cvtColor(np.ascontiguousarray(bgr), cv2.COLOR_BGR2GRAY)
            return cv2.resize(gray, size, interpolation=cv2.INTER_AREA) if self.scale < 1 else gray

        dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
        self.field = dis.calc(small(current_bgr), small(previous_bgr), None) / self.scale

    def __call__(self, x: np.ndarray, y: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        fh, fw = self.field.shape[:2]
        xi = np.clip(np.floor(np.asarray(x) * self.scale).astype(np.int64), 0, fw - 1)
        yi = np.clip(np.floor(np.asarray(y) * self.scale).astype(np.int64), 0, fh - 1)
        d = self.field[yi, xi]
        return d[..., 0], d[..., 1]

    def median_in(self, box: np.ndarray, samples: int = 16) -> np.ndarray:
        """The median displacement ``(dx, dy)`` over a ``samples`` x ``samples`` grid in
        ``box`` (XYXY)."""
        xs = np.linspace(box[0], box[2], samples)
        ys = np.linspace(box[1], box[3], samples)
        dx, dy = self(*np.meshgrid(xs, ys))
        return np.array([np.median(dx), np.median(dy)])


def resample_roi(x: np.ndarray, src_box: np.ndarray, dst_box: np.ndarray,
                 mode: str = "bilinear", flow: Optional[FrameFlow] = None
                 ) -> Tuple[np.ndarray, np.ndarray]:
    """Values ``x`` ``[C, S, S]`` laid over the XYXY box ``src_box``, read on the ``[S, S]``
    grid of ``dst_box`` (``mode``: ``"bilinear"`` or ``"nearest"``). With ``flow``, ``x``
    belongs to the previous frame: each grid point is first moved to where its image point
    was then. Returns ``(values [C, S, S], inside [S, S])``: ``inside`` marks the grid points
    read from within ``src_box``; outside it, values are the nearest border's."""
    c, sh, sw = x.shape
    src = np.asarray(src_box, np.float64)
    dst = np.asarray(dst_box, np.float64)
    # pixel centres of dst's grid in image coordinates -> src's normalized [-1, 1] coordinates
    xs = dst[0] + (np.arange(sw) + 0.5) * (dst[2] - dst[0]) / sw
    ys = dst[1] + (np.arange(sh) + 0.5) * (dst[3] - dst[1]) / sh
    X, Y = np.meshgrid(xs, ys)
    if flow is not None:
        dx, dy = flow(X, Y)
        X, Y = X + dx, Y + dy
    gx = (X - src[0]) / max(src[2] - src[0], 1e-6) * 2 - 1
    gy = (Y - src[1]) / max(src[3] - src[1], 1e-6) * 2 - 1
    grid = np.stack([gx, gy], axis=-1)[None].astype(np.float32)                # [1, S, S, 2]
    out = F.grid_sample(torch.from_numpy(np.ascontiguousarray(x, np.float32))[None],
                        torch.from_numpy(grid), mode=mode, padding_mode="border",
                        align_corners=False)[0].numpy()
    inside = (np.abs(gx) <= 1) & (np.abs(gy) <= 1)
    return out, inside


def resample_fields(fields: Dict[str, np.ndarray], src_box: np.ndarray, dst_box: np.ndarray,
                    flow: Optional[FrameFlow] = None
                    ) -> Tuple[Dict[str, np.ndarray], np.ndarray]:
    """:func:`resample_roi` of every output ``{field: [C, S, S]}`` (one shared grid) in one
    call: ``({field: [C, S, S]}, inside [S, S])``."""
    names = list(fields)
    if not names:
        return {}, np.zeros((0, 0), bool)
    stacked, inside = resample_roi(np.concatenate([fields[k] for k in names]), src_box,
                                   dst_box, flow=flow)
    bounds = np.cumsum([0] + [fields[k].shape[0] for k in names])
    return {k: stacked[a:b] for k, a, b in zip(names, bounds[:-1], bounds[1:])}, inside


def blend_person(box: np.ndarray, dense: Dict[str, np.ndarray], other_box: np.ndarray,
                 other_dense: Dict[str, np.ndarray], flow: Optional[FrameFlow],
                 box_alpha: float, dense_alpha: float
                 ) -> Tuple[np.ndarray, Dict[str, np.ndarray]]:
    """One person now (``box`` ``[4]`` XYXY, outputs ``dense`` ``{field: [C, S, S]}``) blended
    with the same person in another frame (``other_box``, ``other_dense`` there); ``flow`` takes
    this frame's points to where they are in the other frame (``None``: no motion). The box:
    ``box_alpha * box + (1 - box_alpha) * other_box`` moved by the median motion inside
    ``box``; the outputs: both read on the new box's grid (the other's along the flow), blended
    ``dense_alpha * now + (1 - dense_alpha) * other`` where the other covers the point, now's
    elsewhere and for fields the other lacks. Returns ``(box [4], {field: [C, S, S]})``."""
    moved = other_box
    if flow is not None:
        moved = other_box + np.tile(-flow.median_in(box), 2)
    new_box = box_alpha * box + (1 - box_alpha) * moved
    out, _ = resample_fields(dense, box, new_box)
    shared = {k: v for k, v in other_dense.items() if k in out and v.shape == dense[k].shape}
    other, inside = resample_fields(shared, other_box, new_box, flow=flow)
    for k, v in other.items():
        out[k] = np.where(inside[None], dense_alpha * out[k] + (1 - dense_alpha) * v, out[k])
    return new_box, out


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=0, keepdims=True))
    return e / e.sum(axis=0, keepdims=True)


def person(pred: Prediction, i: int) -> Tuple[np.ndarray, Dict[str, np.ndarray]]:
    """Person ``i`` of ``pred``: box ``[4]`` (float64 XYXY) and outputs ``{field: [C, S, S]}``,
    segmentation as probabilities (a softmax over channels reads the model's logits and a
    smoother's log-probabilities alike)."""
    return (np.asarray(pred.boxes[i], np.float64),
            {k: (_softmax(v[i]) if k in SEGMENTATION_FIELDS else v[i])
             for k, v in pred.densepose.items()})


@dataclass
class People:
    """The people of one frame between smoothing steps, before post-processing
    (:meth:`TemporalSmoother.finish` makes the :class:`Prediction`): ``boxes`` float64
    ``[D, 4]`` XYXY, ``scores`` ``[D]``, ``classes`` ``[D]``, ``track_ids`` ``[D]``, ``dense``
    per person ``{field: [C, S, S]}`` (segmentation as probabilities), ``image_size`` (H, W)."""
    image_size: Tuple[int, int]
    boxes: np.ndarray
    scores: np.ndarray
    classes: np.ndarray
    track_ids: np.ndarray
    dense: List[Dict[str, np.ndarray]]

    def __len__(self) -> int:
        return len(self.dense)


@dataclass
class _Track:
    id: int
    cls: int
    box: np.ndarray                            # [4] smoothed XYXY
    dense: Dict[str, np.ndarray]               # field -> [C, S, S] (segmentation: probabilities)
    labels: Dict[str, np.ndarray]              # segmentation field -> [S, S] label drawn last
    score: float = 0.0                         # the detection's score when last seen
    missed: int = 0


@dataclass
class TemporalSmoother:
    """Track people across a video's frames and smooth their boxes and DensePose outputs
    (see the module doc).

    Call it on each frame's :class:`Prediction` in order, with the frame's BGR image where there
    is one; it returns the smoothed prediction with ``track_ids``. ``assemble`` is the
    predictor's post-processing (:meth:`amanet.runtime.Predictor.assemble`). ``box_alpha`` /
    ``dense_alpha``: weight of the current frame (1 = no smoothing); ``hysteresis``: the
    probability margin a new part label needs (0 = none); ``iou_threshold``: the least IoU that
    continues a track; ``max_missed``: frames a track survives undetected (not drawn
    meanwhile).
    """
    assemble: Assemble
    box_alpha: float = 0.5
    dense_alpha: float = 0.5
    hysteresis: float = 0.0
    iou_threshold: float = 0.3
    max_missed: int = 5
    tracks: List[_Track] = field(default_factory=list)
    next_id: int = 0
    _previous: Optional[np.ndarray] = field(default=None, repr=False)
    _no_people: Optional[Dict[str, np.ndarray]] = field(default=None, repr=False)

    def __post_init__(self):
        for name in ("box_alpha", "dense_alpha"):
            a = getattr(self, name)
            if not 0.0 < a <= 1.0:
                raise ValueError(f"{name} must be in (0, 1], got {a}")
        if not 0.0 <= self.hysteresis < 1.0:
            raise ValueError(f"hysteresis must be in [0, 1), got {self.hysteresis}")

    def reset(self) -> None:
        self.tracks = []
        self.next_id = 0
        self._previous = None
        self._no_people = None

    def __call__(self, pred: Prediction, frame: Optional[np.ndarray] = None) -> Prediction:
        return self.update(pred, frame)

    def push(self, pred: Prediction, frame: Optional[np.ndarray] = None,
             key: Any = None) -> List[Tuple[Any, Prediction]]:
        """:meth:`update` in the video pipeline's form (that of
        :class:`~amanet.runtime.lookahead.LookaheadSmoother`): ``[(key, smoothed pred)]``."""
        return [(key, self.update(pred, frame))]

    def flush(self) -> List[Tuple[Any, Prediction]]:
        """Nothing waits in a causal smoother."""
        return []

    def _decide(self, track: _Track) -> Dict[str, np.ndarray]:
        """The outputs handed on for ``track`` this frame: its smoothed outputs, with the
        segmentation labels it drew last frame favoured by ``hysteresis`` (a label changes only
        when another beats it by that much probability); remembers the labels drawn now."""
        out = dict(track.dense)
        drawn = {}
        if self.hysteresis == 0:
            return out
        for k in HYSTERESIS_FIELDS:
            if k not in out:
                continue
            p = out[k]
            before = track.labels.get(k)
            if before is not None:
                bonus = np.zeros_like(p)
                rows, cols = np.nonzero(before >= 0)
                bonus[before[rows, cols], rows, cols] = self.hysteresis
                p = (p + bonus) / (1.0 + bonus.sum(axis=0, keepdims=True))
                out[k] = p
            drawn[k] = p.argmax(axis=0)
        track.labels = drawn
        return out

    def update(self, pred: Prediction, frame: Optional[np.ndarray] = None) -> Prediction:
        """The smoothed ``pred``; ``frame`` (its BGR image) lets the smoother follow motion
        inside the boxes (optical flow to the previous frame) instead of assuming none."""
        return self.finish(self.track(pred, frame))

    def finish(self, people: People) -> Prediction:
        """``people`` post-processed into a :class:`Prediction` (charts, IUV) with
        ``track_ids``."""
        out = self.assemble(people.boxes.astype(np.float32), people.scores, people.classes,
                            handed_on(people.dense, self._no_people), tuple(people.image_size))
        out.track_ids = people.track_ids
        return out

    def track(self, pred: Prediction, frame: Optional[np.ndarray] = None) -> People:
        """:meth:`update` before post-processing."""
        n = len(pred)
        flow = None
        if frame is not None:
            if self._previous is not None and self._previous.shape == frame.shape:
                flow = FrameFlow(self._previous, frame)
            self._previous = frame
        fields_ = list(pred.densepose)
        self._no_people = {k: np.zeros((0,) + v.shape[1:], np.float32)
                           for k, v in pred.densepose.items()}
        dense_now = [{k: (_softmax(pred.densepose[k][i]) if k in SEGMENTATION_FIELDS
                          else pred.densepose[k][i]) for k in fields_} for i in range(n)]
        iou = box_iou([t.box for t in self.tracks], pred.boxes)
        for r, t in enumerate(self.tracks):
            iou[r, pred.classes != t.cls] = 0.0
        matched = dict((c, r) for r, c in greedy_match(iou, self.iou_threshold))

        boxes = np.array(pred.boxes, np.float64).reshape(-1, 4)
        ids = np.zeros(n, np.int64)
        out_dense: List[Dict[str, np.ndarray]] = []
        live: List[_Track] = []
        for i in range(n):
            if i in matched:
                track = self.tracks[matched[i]]
                box, dense = blend_person(boxes[i], dense_now[i], track.box, track.dense, flow,
                                          self.box_alpha, self.dense_alpha)
                labels = {}
                for k in fields_:
                    if k in track.labels and k in track.dense:
                        last = track.labels[k][None].astype(np.float32)
                        before, _ = resample_roi(last, track.box, box, "nearest")
                        _, inside = resample_roi(last, track.box, box, "nearest", flow=flow)
                        labels[k] = np.where(inside, before[0], -1).astype(np.int64)
                track.box, track.dense, track.missed = box, dense, 0
                track.labels = labels
                track.score = float(pred.scores[i])
            else:
                track = _Track(self.next_id, int(pred.classes[i]), boxes[i], dense_now[i], {},
                               float(pred.scores[i]))
                self.next_id += 1
            out_dense.append(self._decide(track))
            boxes[i] = track.box
            ids[i] = track.id
            live.append(track)
        for r, t in enumerate(self.tracks):
            if r not in matched.values():
                t.missed += 1
                if t.missed <= self.max_missed:
                    live.append(t)
        self.tracks = live
        return People(tuple(pred.image_size), boxes, pred.scores, pred.classes, ids, out_dense)

    def propagate(self, frame: np.ndarray) -> Prediction:
        """A prediction for ``frame`` without running the model (the frames between key frames,
        see :func:`amanet.runtime.video.run_video`'s ``keyframe_interval``): everyone shown on
        the previous frame carried along the motion since then (optical flow): the box moved by
        the median motion inside it, the DensePose outputs point by point onto the new box's
        grid. Scores, classes and track ids are kept; nobody new appears and nobody leaves until
        the next predicted frame. The tracks hold the carried state, so the next frame
        (propagated or predicted) continues from it."""
        return self.finish(self.carried(frame))

    def carried(self, frame: np.ndarray) -> People:
        """:meth:`propagate` before post-processing."""
        if self._no_people is None:
            raise RuntimeError("propagate() needs a predicted frame first (update())")
        h, w = frame.shape[:2]
        flow = None
        if self._previous is not None and self._previous.shape == frame.shape:
            flow = FrameFlow(self._previous, frame)
        self._previous = frame
        shown = [t for t in self.tracks if t.missed == 0]
        boxes = np.zeros((len(shown), 4), np.float64)
        for j, t in enumerate(shown):
            box = moved_box(t.box, flow, (h, w)) if flow is not None else t.box
            t.dense = resample_fields(t.dense, t.box, box, flow=flow)[0]
            t.box, t.labels = box, {}
            boxes[j] = box
        return People((h, w), boxes, np.array([t.score for t in shown], np.float32),
                      np.array([t.cls for t in shown], np.int64),
                      np.array([t.id for t in shown], np.int64), [t.dense for t in shown])


def handed_on(dense: List[Dict[str, np.ndarray]], no_people: Dict[str, np.ndarray]
              ) -> Dict[str, np.ndarray]:
    """Per-person outputs ``{field: [C, S, S]}`` (segmentation as probabilities) stacked into
    the model's raw outputs ``{field: [D, C, S, S]}`` (segmentation as log-probabilities);
    ``no_people``: the fields' empty ``[0, C, S, S]`` arrays, returned when ``dense`` is empty."""
    if not dense:
        return no_people
    out = {}
    for k in no_people:
        stack = np.stack([d[k] for d in dense]).astype(np.float32)
        out[k] = np.log(np.maximum(stack, 1e-12)) if k in SEGMENTATION_FIELDS else stack
    return out


def moved_box(box: np.ndarray, flow: FrameFlow, image_hw: Tuple[int, int]) -> np.ndarray:
    """``box`` (XYXY, previous frame) moved to the current frame by the median motion inside it.
    ``flow`` points backwards (now -> then), so the motion is read inside the moved box, found
    by fixed-point iteration from the old one (twice). Moving the edges one by one (each by the
    motion of the box's third beside it) measured worse: box AP 0.2-1.0 points lower, more
    label flips (bench/temporal.py, world seed 5)."""
    old = np.asarray(box, np.float64)
    new = old
    for _ in range(2):
        new = old - np.tile(flow.median_in(new), 2)
    h, w = image_hw
    new = np.clip(new, 0, [w, h, w, h])
    if new[2] - new[0] < 1 or new[3] - new[1] < 1:      # moved out of the picture: keep it
        return np.clip(old, 0, [w, h, w, h])
    return new


def smoothing_summary(smoother: Optional[Callable[..., Prediction]]
                      ) -> Optional[Dict[str, float]]:
    """The settings of ``smoother`` for a run's summary (``None`` when not smoothing)."""
    if smoother is None:
        return None
    lookahead = getattr(smoother, "lookahead", 0)
    # the TemporalSmoother inside a LookaheadSmoother or a KeyframeInterpolator
    smoother = getattr(smoother, "smoother", getattr(smoother, "tracker", smoother))
    if not isinstance(smoother, TemporalSmoother):
        return {"smoother": type(smoother).__name__}
    return {"lookahead": lookahead, "box_alpha": smoother.box_alpha,
            "dense_alpha": smoother.dense_alpha, "hysteresis": smoother.hysteresis,
            "iou_threshold": smoother.iou_threshold, "max_missed": smoother.max_missed,
            "tracks": smoother.next_id}


__all__: Sequence[str] = ("TemporalSmoother", "FrameFlow", "box_iou", "greedy_match",
                          "resample_roi", "resample_fields", "blend_person", "handed_on",
                          "moved_box", "person", "People",
                          "SEGMENTATION_FIELDS",
                          "HYSTERESIS_FIELDS", "smoothing_summary")
