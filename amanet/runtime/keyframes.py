"""Key frames: the model on every K-th frame only, the frames between filled from the key
frames on both sides (``amanet video --keyframe-interval K``).

A frame between key frames ``k`` and ``k + K`` gets the people of frame ``k`` carried forwards
along the optical flow (:meth:`~amanet.runtime.tracking.TemporalSmoother.propagate`) and those
of frame ``k + K`` carried backwards, and blends each person seen on both by distance: at
``k + d`` the forward view weighs ``(K - d) / K``. A person on one side only is that side's
(nobody new appears before the key frame that shows them; nobody leaves before the next key
frame). Carrying from both sides halves how far a view is carried, and motion errors grow with
that distance: measured with ``bench/temporal.py`` (README, "Key frames").

The frames between wait for the next key frame: memory is ``K - 1`` frames and their
predictions, whatever the video's length, and each comes out when that key frame is in. The
video's last frame is a key frame too (:meth:`KeyframeInterpolator.end`: one more model run
where the length is not ``1 + n K``), so no frame is carried from one side only.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from .result import Prediction
from .tracking import (FrameFlow, People, TemporalSmoother, blend_person, moved_box,
                       resample_fields)


@dataclass
class _Between:
    key: Any
    frame: np.ndarray
    forward: People               # the previous key frame's people carried forwards


class KeyframeInterpolator:
    """Fills the frames between key frames from both sides (module doc). ``tracker``: a
    tracking-only :class:`~amanet.runtime.tracking.TemporalSmoother` (alphas 1), which matches
    key frames' people to the carried ones (track ids) and carries them forwards.

    Feed frames in order: :meth:`push` a key frame's prediction, :meth:`carry` a frame between;
    each returns the ``(key, prediction)`` pairs now complete, in frame order. After the last
    frame: :meth:`end` with the model's prediction for it if it was carried, then
    :meth:`flush`."""

    def __init__(self, tracker: TemporalSmoother):
        self.tracker = tracker
        self._between: List[_Between] = []

    def reset(self) -> None:
        self.tracker.reset()
        self._between = []

    def carry(self, frame: np.ndarray, key: Any = None) -> List[Tuple[Any, Prediction]]:
        """A frame between key frames: ``[]`` (it waits for the next key frame)."""
        self._between.append(_Between(key, frame, self.tracker.carried(frame)))
        return []

    def push(self, pred: Prediction, frame: np.ndarray,
             key: Any = None) -> List[Tuple[Any, Prediction]]:
        """A key frame's prediction: the waiting frames, now filled from both sides, then this
        one (tracked)."""
        return self._keyed(self.tracker.track(pred, frame), frame, key)

    @property
    def waiting(self) -> bool:
        """Whether frames wait for a key frame (the last one fed was carried)."""
        return bool(self._between)

    def end(self, pred: Prediction) -> List[Tuple[Any, Prediction]]:
        """The model's prediction for the last frame fed (a carried one): that frame becomes a
        key frame, so the frames before it are filled from both sides. Returns every frame
        still waiting, in order."""
        if not self._between:
            raise RuntimeError("end() needs a carried frame last (the last frame was a key "
                               "frame: call flush())")
        last = self._between.pop()
        # the tracker already stands on this frame (it carried its people there)
        return self._keyed(self.tracker.track(pred), last.frame, last.key)

    def flush(self) -> List[Tuple[Any, Prediction]]:
        """The frames still waiting, carried forwards only (after :meth:`end`: none)."""
        done = [(b.key, self.tracker.finish(b.forward)) for b in self._between]
        self._between = []
        return done

    def _keyed(self, now: People, frame: np.ndarray, key: Any) -> List[Tuple[Any, Prediction]]:
        return self._fill(now, frame) + [(key, self.tracker.finish(now))]

    def _fill(self, key: People, key_frame: np.ndarray) -> List[Tuple[Any, Prediction]]:
        """The waiting frames blended with the ``key`` frame's people carried back to each."""
        between, self._between = self._between, []
        span = len(between) + 1                       # frames from the last key frame to this
        backward = {int(t): (key.boxes[j], key.dense[j]) for j, t in enumerate(key.track_ids)}
        later = key_frame
        done: List[Tuple[Any, Prediction]] = []
        for d in range(len(between), 0, -1):          # d: frames after the last key frame
            b = between[d - 1]
            flow = (FrameFlow(later, b.frame) if later.shape == b.frame.shape else None)
            backward = {t: _carried(box, outputs, flow, b.frame.shape[:2])
                        for t, (box, outputs) in backward.items()}
            done.append((b.key, self._blend(b.forward, backward, (span - d) / span)))
            later = b.frame
        return done[::-1]

    def _blend(self, forward: People, backward: Dict[int, Tuple[np.ndarray, Dict]],
               weight: float) -> Prediction:
        """``forward``'s people, each blended with its backward view (``weight``: the forward
        one's)."""
        boxes = forward.boxes.copy()
        dense = []
        for i, outputs in enumerate(forward.dense):
            t = int(forward.track_ids[i])
            if t in backward:
                boxes[i], outputs = blend_person(boxes[i], outputs, backward[t][0],
                                                 backward[t][1], None, weight, weight)
            dense.append(outputs)
        return self.tracker.finish(People(forward.image_size, boxes, forward.scores,
                                          forward.classes, forward.track_ids, dense))


def _carried(box: np.ndarray, outputs: Dict[str, np.ndarray], flow: Optional[FrameFlow],
             image_hw: Tuple[int, int]) -> Tuple[np.ndarray, Dict[str, np.ndarray]]:
    """A person moved one frame back along ``flow`` (this frame's points -> where in the later
    one; ``None``: no motion)."""
    if flow is None:
        return box, outputs
    new = moved_box(box, flow, image_hw)
    return new, resample_fields(outputs, box, new, flow=flow)[0]
