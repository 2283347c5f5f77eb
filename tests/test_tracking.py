"""amanet.runtime.tracking: box matching, resampling along boxes and motion, track ids, the
smoothing arithmetic (EMA, hysteresis), and Predictor.assemble rebuilding predict's output."""
from __future__ import annotations

import numpy as np
import pytest

from amanet.runtime.result import Prediction
from amanet.runtime.tracking import (FrameFlow, TemporalSmoother, box_iou, greedy_match,
                                     resample_roi)

S = 8   # RoI grid side in the synthetic predictions below


def test_box_iou_by_hand():
    a = np.array([[0, 0, 10, 10]], np.float32)
    b = np.array([[0, 0, 10, 10], [5, 0, 15, 10], [20, 20, 30, 30], [0, 0, 0, 0]], np.float32)
    np.testing.assert_allclose(box_iou(a, b), [[1.0, 50 / 150, 0.0, 0.0]])
    assert box_iou(np.zeros((0, 4)), b).shape == (0, 4)


def test_greedy_match_takes_the_best_pairs_first():
    iou = np.array([[0.9, 0.8], [0.85, 0.1], [0.0, 0.2]])
    # row 0 takes col 0 (0.9); then col 1's best free row is 2 (0.2 > 0.1), if over threshold
    assert sorted(greedy_match(iou, 0.3)) == [(0, 0)]
    assert sorted(greedy_match(iou, 0.05)) == [(0, 0), (2, 1)]
    assert greedy_match(np.zeros((0, 3)), 0.3) == []


def _ramp(box, axis):
    """[1, S, S]: the image x (axis 0) or y (axis 1) of each grid point's centre over ``box``."""
    x1, y1, x2, y2 = box
    xs = x1 + (np.arange(S) + 0.5) * (x2 - x1) / S
    ys = y1 + (np.arange(S) + 0.5) * (y2 - y1) / S
    X, Y = np.meshgrid(xs, ys)
    return (X if axis == 0 else Y)[None].astype(np.float32)


def test_resample_keeps_each_value_over_its_image_point():
    src = (10.0, 20.0, 50.0, 80.0)
    dst = (14.0, 26.0, 46.0, 70.0)          # inside src: every point is covered
    for axis in (0, 1):
        out, inside = resample_roi(_ramp(src, axis), src, dst)
        assert inside.all()
        np.testing.assert_allclose(out, _ramp(dst, axis), atol=1e-4)
    same, inside = resample_roi(_ramp(src, 0), src, src)
    np.testing.assert_allclose(same, _ramp(src, 0), atol=1e-5)
    # a box reaching past src: points outside are flagged and read the border's value
    out, inside = resample_roi(_ramp(src, 0), src, (30.0, 20.0, 70.0, 80.0))
    want = _ramp((30.0, 20.0, 70.0, 80.0), 0)
    assert inside[:, :4].all() and not inside[:, 4:].any()
    np.testing.assert_allclose(out[0][inside], want[0][inside], atol=1e-4)
    assert out[0][~inside].max() <= src[2]


class _Shift:
    """A FrameFlow stand-in: every point was (dx, dy) away one frame ago."""

    def __init__(self, dx, dy):
        self.d = (dx, dy)

    def __call__(self, x, y):
        return np.full_like(x, self.d[0]), np.full_like(y, self.d[1])


def test_resample_along_motion_reads_where_the_point_was():
    src = (10.0, 20.0, 50.0, 80.0)
    dst = (16.0, 24.0, 48.0, 70.0)
    moved, _ = resample_roi(_ramp(src, 0), src, dst, flow=_Shift(-3.0, 0.0))
    np.testing.assert_allclose(moved, _ramp(dst, 0) - 3.0, atol=1e-4)


def test_frame_flow_measures_a_pan():
    rng = np.random.default_rng(0)
    base = (rng.random((60, 80)) * 255).astype(np.uint8)
    import cv2
    base = cv2.GaussianBlur(cv2.resize(base, (320, 240)), (5, 5), 0)
    prev = np.stack([base] * 3, axis=-1)
    now = np.roll(prev, 3, axis=1)       # the scene moved 3 px right
    flow = FrameFlow(prev, now)
    dx, dy = flow.median_in(np.array([60.0, 60.0, 260.0, 180.0]))
    assert abs(dx + 3.0) < 0.5 and abs(dy) < 0.5    # each point was 3 px to the left
    half = FrameFlow(prev, now, max_side=160)        # measured on a half-size copy
    assert abs(half.median_in(np.array([60.0, 60.0, 260.0, 180.0]))[0] + 3.0) < 0.75


def _prediction(boxes, fine_logits=None, u=None, classes=None):
    """A Prediction of ``len(boxes)`` people with AMANet's fields on an S x S grid."""
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    n = len(boxes)
    fine = np.zeros((n, 25, S, S), np.float32) if fine_logits is None else fine_logits
    gate = np.zeros((n, 2, S, S), np.float32)
    gate[:, 1] = 2.0
    uu = np.zeros((n, 25, S, S), np.float32) if u is None else u
    return Prediction(image_size=(100, 100), boxes=boxes, scores=np.ones(n, np.float32),
                      classes=np.zeros(n, np.int64) if classes is None else classes,
                      densepose={"body_mask": gate, "fine_segm": fine, "u": uu, "v": uu.copy()})


def _echo(boxes, scores, classes, densepose, image_size):
    """An ``assemble`` that hands its inputs back (what the smoother decided)."""
    return Prediction(image_size=image_size, boxes=boxes, scores=scores, classes=classes,
                      densepose=densepose)


def _softmax(x, axis):
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def test_ids_follow_people_through_order_swaps_gaps_and_newcomers():
    sm = TemporalSmoother(_echo, max_missed=2)
    a, b = [10, 10, 30, 60], [60, 10, 80, 60]
    ids = [sm(_prediction([a, b])).track_ids]
    ids.append(sm(_prediction([[b[0] + 1, 10, b[2] + 1, 60], [a[0] + 2, 10, a[2] + 2, 60]]))
               .track_ids)
    assert list(ids[0]) == [0, 1] and list(ids[1]) == [1, 0]
    assert list(sm(_prediction(np.zeros((0, 4)))).track_ids) == []      # nobody, one frame
    out = sm(_prediction([a, [40, 70, 50, 95]]))                         # a back; a newcomer
    assert list(out.track_ids) == [0, 2]
    for _ in range(3):                                                    # b unseen > 2 frames
        sm(_prediction([a]))
    assert list(sm(_prediction([b])).track_ids) == [3]
    # another class never continues a track
    sm2 = TemporalSmoother(_echo)
    sm2(_prediction([a]))
    assert list(sm2(_prediction([a], classes=np.array([1]))).track_ids) == [1]


def test_without_smoothing_outputs_and_boxes_pass_through():
    rng = np.random.default_rng(1)
    sm = TemporalSmoother(_echo, box_alpha=1.0, dense_alpha=1.0, hysteresis=0.0)
    for shift in (0.0, 3.0, 5.0):
        pred = _prediction([[10 + shift, 10, 40 + shift, 70]],
                           rng.normal(size=(1, 25, S, S)).astype(np.float32),
                           rng.random((1, 25, S, S)).astype(np.float32))
        out = sm(pred)
        np.testing.assert_allclose(out.boxes, pred.boxes)
        for k in ("body_mask", "fine_segm"):     # log-probabilities of the same softmax
            np.testing.assert_allclose(_softmax(out.densepose[k], 1),
                                       _softmax(pred.densepose[k], 1), atol=1e-5)
        np.testing.assert_allclose(out.densepose["u"], pred.densepose["u"], atol=1e-5)


def test_ema_blends_boxes_and_values_of_a_tracked_person():
    sm = TemporalSmoother(_echo, box_alpha=0.5, dense_alpha=0.25, hysteresis=0.0)
    box = [10, 10, 50, 90]
    sm(_prediction([box], u=np.zeros((1, 25, S, S), np.float32)))
    out = sm(_prediction([[14, 10, 54, 90]], u=np.ones((1, 25, S, S), np.float32)))
    np.testing.assert_allclose(out.boxes, [[12, 10, 52, 90]])
    inner = out.densepose["u"][0][:, :, 1:-1]        # columns the past box covers
    np.testing.assert_allclose(inner, 0.25, atol=1e-5)


def test_hysteresis_stops_a_near_tie_from_flipping():
    def tie(first):      # part `first` at 0.47, the other at 0.43, the rest share 0.10
        p = np.full((1, 25, S, S), 0.1 / 23, np.float32)
        p[0, first], p[0, 7 if first == 3 else 3] = 0.47, 0.43
        return np.log(p)

    def labels(sm):
        return [int(sm(_prediction([[10, 10, 50, 90]], tie(f))).densepose["fine_segm"]
                    [0, :, 4, 4].argmax()) for f in (3, 7, 3, 7, 7, 7)]

    plain = TemporalSmoother(_echo, box_alpha=1.0, dense_alpha=1.0, hysteresis=0.0)
    held = TemporalSmoother(_echo, box_alpha=1.0, dense_alpha=1.0, hysteresis=0.1)
    assert labels(plain) == [3, 7, 3, 7, 7, 7]
    assert labels(held) == [3, 3, 3, 3, 3, 3]    # 0.04 < 0.1: never beaten
    # a clear change passes at once
    strong = TemporalSmoother(_echo, box_alpha=1.0, dense_alpha=1.0, hysteresis=0.1)
    strong(_prediction([[10, 10, 50, 90]], tie(3)))
    p = np.full((1, 25, S, S), 0.01, np.float32)
    p[0, 7] = 0.8
    out = strong(_prediction([[10, 10, 50, 90]], np.log(p)))
    assert out.densepose["fine_segm"][0, :, 4, 4].argmax() == 7


def _textured_pan(shift, steps):
    """BGR frames ``[240, 320]`` of a blurred random texture moving ``shift`` px right per
    frame (the first frame unmoved)."""
    import cv2
    rng = np.random.default_rng(0)
    base = cv2.GaussianBlur(cv2.resize((rng.random((60, 80)) * 255).astype(np.uint8),
                                       (320, 240)), (5, 5), 0)
    first = np.stack([base] * 3, axis=-1)
    return [np.roll(first, shift * t, axis=1) for t in range(steps)]


def test_propagate_carries_people_along_the_motion():
    """Key frames: the frames between are the last people moved along the optical flow —
    boxes by the scene's motion, outputs read where each point was (a ramp of image x over
    the first box reads 3 px less per frame at the same grid point), scores and ids kept."""
    frames = _textured_pan(3, 3)
    box = [100.0, 60.0, 180.0, 180.0]
    rng = np.random.default_rng(2)
    fine = rng.normal(size=(1, 25, S, S)).astype(np.float32)
    u = np.repeat(_ramp(box, 0)[None], 25, axis=1)               # [1, 25, S, S]: image x
    pred = _prediction([box], fine, u)
    pred.scores = np.array([0.7], np.float32)
    sm = TemporalSmoother(_echo, box_alpha=1.0, dense_alpha=1.0)
    sm(pred, frames[0])
    for t in (1, 2):
        out = sm.propagate(frames[t])
        assert list(out.track_ids) == [0] and out.image_size == (240, 320)
        np.testing.assert_allclose(out.scores, [0.7])
        np.testing.assert_allclose(out.boxes[0], np.add(box, [3 * t, 0, 3 * t, 0]), atol=0.5)
        inner = (slice(None), slice(1, -1), slice(1, -1))        # away from the box's border
        np.testing.assert_allclose(out.densepose["u"][0][inner],
                                   (_ramp(out.boxes[0], 0)[0] - 3 * t)[None].repeat(25, 0)
                                   [inner], atol=0.6)
        assert (_softmax(out.densepose["fine_segm"], 1).argmax(1)[0][inner[1:]] ==
                fine.argmax(1)[0][inner[1:]]).mean() > 0.9
    # the next predicted frame continues the track from where it was carried
    moved = _prediction([np.add(box, [9, 0, 9, 0])], fine, u)
    assert list(sm(moved, np.roll(frames[0], 9, axis=1)).track_ids) == [0]


def test_propagate_shows_only_people_seen_on_the_last_frame_and_needs_one():
    sm = TemporalSmoother(_echo, box_alpha=1.0, dense_alpha=1.0)
    frames = _textured_pan(2, 4)
    with pytest.raises(RuntimeError, match="predicted frame first"):
        sm.propagate(frames[0])
    a, b = [20, 20, 80, 120], [150, 30, 220, 200]
    sm(_prediction([a, b]), frames[0])
    sm(_prediction([b]), frames[1])                 # a unseen: not carried
    out = sm.propagate(frames[2])
    assert list(out.track_ids) == [1] and out.boxes.shape == (1, 4)
    sm(_prediction(np.zeros((0, 4))), frames[3])    # nobody: an empty prediction
    empty = sm.propagate(frames[3])
    assert len(empty) == 0 and list(empty.track_ids) == []
    assert {k: v.shape for k, v in empty.densepose.items()} == {
        "body_mask": (0, 2, S, S), "fine_segm": (0, 25, S, S), "u": (0, 25, S, S),
        "v": (0, 25, S, S)}


@pytest.mark.parametrize("bad", [{"box_alpha": 0.0}, {"dense_alpha": 1.5},
                                 {"hysteresis": -0.1}, {"hysteresis": 1.0}])
def test_settings_out_of_range_are_refused(bad):
    with pytest.raises(ValueError, match=next(iter(bad))):
        TemporalSmoother(_echo, **bad)


@pytest.fixture(scope="module")
def demo():
    from amanet.assets import DEMO_MODEL
    from amanet.runtime import Predictor
    return Predictor(None, str(DEMO_MODEL))


def test_assemble_rebuilds_exactly_what_predict_made(demo):
    from amanet.assets import SYNTHETIC_IMAGE

    pred = demo(str(SYNTHETIC_IMAGE))
    assert len(pred) > 0
    again = demo.assemble(pred.boxes, pred.scores, pred.classes, pred.densepose,
                          pred.image_size)
    np.testing.assert_array_equal(again.iuv, pred.iuv)
    np.testing.assert_array_equal(again.chart_boxes, pred.chart_boxes)
    for x, y in zip(again.charts, pred.charts, strict=True):
        np.testing.assert_array_equal(x, y)
    with pytest.raises(ValueError, match="not this model's"):
        demo.assemble(pred.boxes, pred.scores, pred.classes,
                      {"fine_segm": pred.densepose["fine_segm"]}, pred.image_size)


def test_smoother_over_the_demo_model_keeps_its_first_frame(demo):
    """A track's first frame is the per-frame prediction (labels exactly, through the
    log-probability round trip)."""
    from amanet.assets import SYNTHETIC_IMAGE
    from amanet.data.image_io import read_image

    frame = read_image(SYNTHETIC_IMAGE)
    pred = demo(frame)
    out = demo.temporal_smoother()(pred, frame)
    assert list(out.track_ids) == list(range(len(pred)))
    np.testing.assert_array_equal(out.boxes, pred.boxes)
    agree = (out.iuv[0] == pred.iuv[0]).mean()
    assert agree > 0.9999, agree
