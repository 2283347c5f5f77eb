"""amanet.runtime.lookahead: smoothing that looks frames ahead — frames handed on late but all
and in order, a symmetric (lag-free) filter in time, the future carried along the motion, and
its settings checked."""
from __future__ import annotations

import numpy as np
import pytest

from amanet.runtime.lookahead import LookaheadSmoother, check_lookahead, future_weight
from amanet.runtime.tracking import TemporalSmoother
from test_tracking import S, _echo, _prediction, _ramp, _softmax, _textured_pan

BOX = [20.0, 10.0, 60.0, 90.0]


def _u_series(values, box=BOX):
    """One person at ``box`` per frame, U and V the constant ``values[t]`` over the grid."""
    out = []
    for v in values:
        u = np.full((1, 25, S, S), v, np.float32)
        out.append(_prediction([box], u=u))
    return out


def _run(smoother, preds, frames=None):
    got = []
    for t, p in enumerate(preds):
        got += smoother.push(p, None if frames is None else frames[t], t)
    return got + smoother.flush()


def test_frames_come_out_late_but_all_and_in_order():
    sm = LookaheadSmoother(TemporalSmoother(_echo), lookahead=3)
    preds = _u_series(np.arange(7.0))
    waits = [len(sm.push(p, None, t)) for t, p in enumerate(preds)]
    assert waits == [0, 0, 0, 1, 1, 1, 1]
    rest = sm.flush()
    assert [k for k, _ in rest] == [4, 5, 6]
    assert sm.flush() == []
    sm.reset()
    assert [k for k, _ in _run(sm, preds)] == list(range(7))
    assert [int(p.track_ids[0]) for _, p in _run(LookaheadSmoother(TemporalSmoother(_echo), 2),
                                                 preds)] == [0] * 7


def _u_out(results):
    return np.array([float(p.densepose["u"][0, 0, 4, 4]) for _, p in results])


@pytest.mark.parametrize("alpha", [0.4, 0.6])
def test_an_impulse_spreads_the_same_way_before_and_after(alpha):
    """One frame's value spreads over the frames before it as over those after it (within
    the look-ahead): the filter is symmetric in time; the causal one only spreads forwards."""
    values = np.zeros(21)
    values[10] = 1.0
    look = LookaheadSmoother(TemporalSmoother(_echo, box_alpha=alpha, dense_alpha=alpha), 4)
    out = _u_out(_run(look, _u_series(values)))
    for k in range(1, 4):
        assert out[10 - k] == pytest.approx(out[10 + k], rel=1e-4), (k, out)
    assert out[10] > out[9] > out[8] > out[7] > 0
    assert out[5] == 0.0                        # beyond the look-ahead: untouched
    # the weights add up to one (a constant stays itself) and match the module doc's b
    flat = _u_out(_run(LookaheadSmoother(TemporalSmoother(_echo, dense_alpha=alpha), 4),
                       _u_series(np.full(12, 5.0))))
    np.testing.assert_allclose(flat, 5.0, rtol=1e-5)
    b = future_weight(alpha)
    assert out[10] == pytest.approx((1 - b) * alpha, rel=1e-4)
    causal = TemporalSmoother(_echo, dense_alpha=alpha)
    causal_out = _u_out(_run(causal, _u_series(values)))
    assert causal_out[9] == 0.0 and causal_out[11] > 0


def test_a_steady_change_is_followed_without_lag():
    """U growing by 1 per frame: the causal smoother trails by (1 - a) / a frames, looking
    4 frames ahead by well under a quarter of one."""
    values = np.arange(30.0)
    look = _u_out(_run(LookaheadSmoother(TemporalSmoother(_echo, dense_alpha=0.4), 4),
                       _u_series(values)))
    causal = _u_out(_run(TemporalSmoother(_echo, dense_alpha=0.4), _u_series(values)))
    steady = slice(15, 25)
    assert np.all(np.abs(causal[steady] - values[steady] + 1.5) < 0.01), causal
    assert np.all(np.abs(look[steady] - values[steady]) < 0.25), look


def test_the_future_is_carried_back_along_the_motion():
    """A scene panning 3 px per frame, the person's box with it, U the image x each point had
    on the first frame (so it moves with the body): every frame's U is consistent with the
    others only if the later frames are read where each point will be; then smoothing
    changes nothing."""
    frames = _textured_pan(3, 8)
    box0 = np.array([100.0, 60.0, 180.0, 180.0])
    preds = []
    for t in range(8):
        box = box0 + [3 * t, 0, 3 * t, 0]
        u = np.repeat((_ramp(box, 0) - 3 * t)[None], 25, axis=1)      # image x on frame 0
        preds.append(_prediction([box], np.zeros((1, 25, S, S), np.float32), u))
    out = _run(LookaheadSmoother(TemporalSmoother(_echo, box_alpha=0.4, dense_alpha=0.4), 4),
               preds, frames)
    inner = (slice(None), slice(1, -1), slice(1, -1))
    for t, p in out:
        np.testing.assert_allclose(p.boxes[0], preds[t].boxes[0], atol=0.5)
        np.testing.assert_allclose(p.densepose["u"][0][inner], preds[t].densepose["u"][0][inner],
                                   atol=0.6)


def test_people_missing_ahead_keep_the_causal_result():
    """A person not on the next frame gets the causal smoother's result; someone who only
    appears later is not shown early."""
    a, b = [10.0, 10.0, 40.0, 70.0], [60.0, 10.0, 90.0, 70.0]
    rng = np.random.default_rng(3)

    def frame(boxes):
        n = len(boxes)
        return _prediction(boxes, rng.normal(size=(n, 25, S, S)).astype(np.float32),
                           rng.random((n, 25, S, S)).astype(np.float32))

    preds = [frame([a, b]), frame([a]), frame([a, b]), frame([a, b])]
    causal = _run(TemporalSmoother(_echo), preds)
    look = _run(LookaheadSmoother(TemporalSmoother(_echo), 2), preds)
    assert [list(p.track_ids) for _, p in look] == [list(p.track_ids) for _, p in causal]
    # frame 0: b (id 1) is not on frame 1, so its result is the causal one
    np.testing.assert_allclose(look[0][1].densepose["u"][1], causal[0][1].densepose["u"][1],
                               atol=1e-6)
    np.testing.assert_allclose(_softmax(look[0][1].densepose["fine_segm"][1], 0),
                               _softmax(causal[0][1].densepose["fine_segm"][1], 0), atol=1e-5)
    # while a (id 0), on the later frames, is blended with them
    assert not np.allclose(look[0][1].densepose["u"][0], causal[0][1].densepose["u"][0])
    assert len(look[1][1]) == 1                 # b is back on frame 2, not yet on frame 1


def test_empty_frames_pass():
    sm = LookaheadSmoother(TemporalSmoother(_echo), 2)
    preds = [_prediction(np.zeros((0, 4))), _prediction([BOX]), _prediction(np.zeros((0, 4)))]
    out = _run(sm, preds)
    assert [len(p) for _, p in out] == [0, 1, 0]
    assert out[0][1].densepose["u"].shape == (0, 25, S, S)


@pytest.mark.parametrize("bad", [-1, 1.5, True, "2"])
def test_bad_lookahead_is_one_clear_error(bad):
    with pytest.raises(ValueError, match="whole number >= 0"):
        check_lookahead(bad)
    with pytest.raises(ValueError, match="whole number >= 1"):
        LookaheadSmoother(TemporalSmoother(_echo), 0)
    assert check_lookahead(0) == 0 and check_lookahead(np.int64(3)) == 3
