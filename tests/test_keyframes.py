"""amanet.runtime.keyframes: the frames between key frames filled from both sides — handed on
in order once the next key frame is in, weighted by distance, the later key frame carried back
along the motion, people on one side only kept as that side has them."""
from __future__ import annotations

import numpy as np
import pytest

from amanet.runtime.keyframes import KeyframeInterpolator
from amanet.runtime.tracking import TemporalSmoother
from test_tracking import S, _echo, _prediction, _ramp, _textured_pan

BOX = [100.0, 60.0, 180.0, 180.0]


def _tracker():
    return TemporalSmoother(_echo, box_alpha=1.0, dense_alpha=1.0)


def _with_u(box, value):
    u = value if isinstance(value, np.ndarray) else np.full((1, 25, S, S), value, np.float32)
    return _prediction([box], np.zeros((1, 25, S, S), np.float32), u)


def _run(kf, preds, frames, every):
    got = []
    for t, f in enumerate(frames):
        got += kf.push(preds[t], f, t) if t % every == 0 else kf.carry(f, t)
    return got + kf.flush()


def test_frames_between_wait_for_the_next_key_frame_and_keep_their_order():
    frames = _textured_pan(0, 7)
    kf = KeyframeInterpolator(_tracker())
    preds = {t: _with_u(BOX, float(t)) for t in (0, 3, 6)}
    got = [len(kf.push(preds[t], f, t) if t % 3 == 0 else kf.carry(f, t))
           for t, f in enumerate(frames)]
    assert got == [1, 0, 0, 3, 0, 0, 3]
    kf.reset()
    out = _run(kf, preds, frames[:6], 3)              # frames 4, 5: after the last key frame
    assert [k for k, _ in out] == list(range(6))
    assert [list(p.track_ids) for _, p in out] == [[0]] * 6


def test_a_still_person_is_blended_by_distance_from_the_two_key_frames():
    """U 0 on key frame 0 and 4 on key frame 4: the frames between read 1, 2, 3; after the
    last key frame, the forward view only."""
    frames = _textured_pan(0, 7)                     # a still scene
    out = _run(KeyframeInterpolator(_tracker()), {0: _with_u(BOX, 0.0), 4: _with_u(BOX, 4.0)},
               frames, 4)
    u = [float(p.densepose["u"][0, 0, 4, 4]) for _, p in out]
    np.testing.assert_allclose(u, [0, 1, 2, 3, 4, 4, 4], atol=1e-3)


def test_the_last_frame_ends_as_a_key_frame_so_the_tail_is_filled_from_both_sides():
    """Key frames 0 and 4 (U 0, 4), frames 5, 6 carried, then end() with U 7 for frame 6: frame
    5 sits halfway between 4 and 6."""
    frames = _textured_pan(0, 7)
    kf = KeyframeInterpolator(_tracker())
    got = []
    for t, f in enumerate(frames):
        got += kf.push(_with_u(BOX, float(t)), f, t) if t in (0, 4) else kf.carry(f, t)
    assert kf.waiting and [k for k, _ in got] == [0, 1, 2, 3, 4]
    got += kf.end(_with_u(BOX, 7.0))
    assert not kf.waiting and kf.flush() == []
    assert [k for k, _ in got] == list(range(7))
    u = [float(p.densepose["u"][0, 0, 4, 4]) for _, p in got]
    np.testing.assert_allclose(u, [0, 1, 2, 3, 4, 5.5, 7], atol=1e-3)
    assert [list(p.track_ids) for _, p in got] == [[0]] * 7
    with pytest.raises(RuntimeError, match="carried frame last"):
        kf.end(_with_u(BOX, 0.0))


def test_the_later_key_frame_is_carried_back_along_the_motion():
    """A scene panning 3 px per frame with the person; U is the image x each point had on the
    first frame: the key frames agree only if each view is moved the right way, and then the
    frames between hold the same U and boxes that moved with the scene."""
    frames = _textured_pan(3, 5)

    def at(t):
        box = np.add(BOX, [3 * t, 0, 3 * t, 0])
        return _with_u(box, np.repeat((_ramp(box, 0) - 3 * t)[None], 25, axis=1))

    out = _run(KeyframeInterpolator(_tracker()), {0: at(0), 4: at(4)}, frames, 4)
    inner = (slice(None), slice(1, -1), slice(1, -1))
    for t, p in out:
        want = at(t)
        np.testing.assert_allclose(p.boxes[0], want.boxes[0], atol=0.5)
        np.testing.assert_allclose(p.densepose["u"][0][inner], want.densepose["u"][0][inner],
                                   atol=0.6)


def test_people_on_one_side_only():
    """Someone on the first key frame only is carried forwards as before; someone who first
    appears on the next key frame is not shown before it."""
    frames = _textured_pan(0, 4)
    a, b = [20.0, 20.0, 80.0, 120.0], [150.0, 30.0, 220.0, 200.0]
    first = _prediction([a], np.zeros((1, 25, S, S), np.float32),
                        np.full((1, 25, S, S), 1.0, np.float32))
    later = _prediction([b], np.zeros((1, 25, S, S), np.float32),
                        np.full((1, 25, S, S), 9.0, np.float32))
    out = _run(KeyframeInterpolator(_tracker()), {0: first, 3: later}, frames, 3)
    for t in (1, 2):
        p = out[t][1]
        assert list(p.track_ids) == [0]
        np.testing.assert_allclose(p.boxes[0], a, atol=1e-3)
        np.testing.assert_allclose(p.densepose["u"][0], 1.0, atol=1e-3)
    assert list(out[3][1].track_ids) == [1]
