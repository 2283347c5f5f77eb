"""Temporal smoothing that also looks a few frames ahead, for videos read from a file.

:class:`~amanet.runtime.tracking.TemporalSmoother` is causal: each frame is blended with the
past only, so a smoothed boundary trails a moving limb, and smoothing harder trails further.
:class:`LookaheadSmoother` hands frame ``t`` on only once frame ``t + L`` has arrived, and
blends the causal result with the same people's outputs on those ``L`` frames, each carried
back along the optical flow:

- the future side is exponential smoothing run backwards over frames ``t + L`` .. ``t + 1``
  with the causal side's own alphas (``future = a * now_s + (1 - a) * future_{s+1}``);
- the two sides are weighted ``(1 - b, b)`` with ``b = (1 - a) / (2 - a)``, which makes every
  frame's weight the same at the same distance before and after ``t`` (the forward-backward
  smoothing of a whole clip, truncated at ``L`` frames ahead): no lag, so the same alpha removes
  more flicker at no cost in accuracy.

People are the causal smoother's tracks (a person is found on the later frames by track id).
Memory is ``L + 1`` frames and their predictions, whatever the video's length; output is ``L``
frames late, so this suits files, not live streams (there: ``lookahead=0``, the causal one).

Measured with ``bench/temporal.py`` (README, "Temporal stability"): look-ahead 4 with alpha 0.4
(:data:`DEFAULT_LOOKAHEAD`, :data:`LOOKAHEAD_ALPHA`, chosen on clips of world seed 5).
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any, Deque, Dict, List, Optional, Tuple

import numpy as np

from .result import Prediction
from .tracking import FrameFlow, People, TemporalSmoother, blend_person, person
from .video import check_count

#: frames looked ahead by ``amanet video --smooth`` and ``Predictor.video_smoother``
DEFAULT_LOOKAHEAD = 4
#: box and output alpha (weight of the frame itself) used with look-ahead
LOOKAHEAD_ALPHA = 0.4


def check_lookahead(lookahead, least: int = 0) -> int:
    """``lookahead`` as an int >= ``least``, or one clear ValueError."""
    return check_count(lookahead, "lookahead", least)


def future_weight(alpha: float) -> float:
    """``b`` of the module doc: the future side's share that makes the filter symmetric."""
    return (1.0 - alpha) / (2.0 - alpha)


@dataclass
class _Entry:
    key: Any                          # handed back with the frame's prediction
    frame: Optional[np.ndarray]       # BGR, for the flow to the next frame
    raw: Dict[int, Tuple[np.ndarray, Dict[str, np.ndarray]]]  # track id -> the model's person
    forward: People                   # the causal smoother's (same people, same order)
    to_next: Optional[FrameFlow] = None   # this frame's points -> where in the next frame


class LookaheadSmoother:
    """``smoother`` (a causal :class:`~amanet.runtime.tracking.TemporalSmoother`, which
    tracks) made symmetric by looking ``lookahead`` frames ahead (module doc).

    Feed frames in order with :meth:`push`, which returns the predictions now complete (none
    for the first ``lookahead`` frames, then one per frame), and call :meth:`flush` after the
    last frame for the rest.
    """

    def __init__(self, smoother: TemporalSmoother, lookahead: int = DEFAULT_LOOKAHEAD):
        self.smoother = smoother
        self.lookahead = check_lookahead(lookahead, 1)
        self._buffer: Deque[_Entry] = deque()

    def reset(self) -> None:
        self.smoother.reset()
        self._buffer.clear()

    def push(self, pred: Prediction, frame: Optional[np.ndarray] = None,
             key: Any = None) -> List[Tuple[Any, Prediction]]:
        """Take the next frame's prediction (and its BGR image, to follow motion); return
        ``[(key, smoothed prediction)]`` for the frame that is now ``lookahead`` frames back,
        or ``[]`` while the first frames wait for theirs."""
        forward = self.smoother.track(pred, frame)
        if self._buffer:
            last = self._buffer[-1]
            if frame is not None and last.frame is not None and last.frame.shape == frame.shape:
                last.to_next = FrameFlow(frame, last.frame)
        raw = {int(t): person(pred, j) for j, t in enumerate(forward.track_ids)}
        self._buffer.append(_Entry(key, frame, raw, forward))
        if len(self._buffer) > self.lookahead:
            return [self._emit()]
        return []

    def flush(self) -> List[Tuple[Any, Prediction]]:
        """``[(key, prediction)]`` of the frames still waiting (the video has ended: each looks
        ahead as far as there are frames)."""
        out = []
        while self._buffer:
            out.append(self._emit())
        return out

    def _emit(self) -> Tuple[Any, Prediction]:
        now = self._buffer.popleft()
        fwd = now.forward
        a_box, a_dense = self.smoother.box_alpha, self.smoother.dense_alpha
        boxes = fwd.boxes.copy()
        dense = []
        for i, outputs in enumerate(fwd.dense):
            ahead = self._ahead(int(fwd.track_ids[i]))
            if ahead is not None:
                boxes[i], outputs = blend_person(boxes[i], outputs, ahead[0], ahead[1],
                                                 now.to_next, 1 - future_weight(a_box),
                                                 1 - future_weight(a_dense))
            dense.append(outputs)
        return now.key, self.smoother.finish(People(fwd.image_size, boxes, fwd.scores,
                                                    fwd.classes, fwd.track_ids, dense))

    def _ahead(self, track_id: int) -> Optional[Tuple[np.ndarray, Dict[str, np.ndarray]]]:
        """The person ``track_id`` on the waiting frames, smoothed backwards from the last onto
        the first of them: ``(box [4], {field: [C, S, S]})`` in that first waiting frame, or
        ``None`` when the next frame does not show them."""
        state = None
        for entry in reversed(self._buffer):
            if track_id not in entry.raw:   # not on this frame: what lies beyond does not reach
                state = None
                continue
            box, outputs = entry.raw[track_id]
            if state is not None:
                box, outputs = blend_person(box, outputs, state[0], state[1], entry.to_next,
                                            self.smoother.box_alpha, self.smoother.dense_alpha)
            state = (box, outputs)
        return state
