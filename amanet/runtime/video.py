"""DensePose on every frame of a video, streamed, so memory does not grow with the video's length.
Where there are cores to spare (or the model runs on a GPU), decoding runs in a thread ahead of
inference, drawing and encoding in another behind it, each through a bounded queue, and the three
overlap (OpenCV, PyAV and PyTorch release the GIL); otherwise the stages run one after another
(:func:`should_overlap`)."""
from __future__ import annotations

import logging
import queue
import threading
from fractions import Fraction
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from ..data.video_io import VideoSink, VideoSource, open_video
from .result import Prediction
from .tracking import smoothing_summary

logger = logging.getLogger(__name__)

_END = object()


class _Failure:
    def __init__(self, exc: BaseException):
        self.exc = exc


def should_overlap(device: str = "cpu") -> bool:
    """Whether decoding, inference and drawing + encoding should run in threads beside each
    other: on a GPU always; on the CPU only when this process has more cores than PyTorch's
    inference threads. Measured on 2 cores with 2 threads (s1x, 512x512): overlapping made a
    video 4-9 % slower in fp32 and 4-7 % in bf16 with key frames than running the stages one
    after another — the extra threads take cores from inference."""
    if device != "cpu":
        return True
    import os

    import torch
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:      # not Linux
        cores = os.cpu_count() or 1
    return cores > torch.get_num_threads()


def _threaded(items: Iterator, maxsize: int, name: str, enabled: bool = True) -> Iterator:
    """``items`` produced in a daemon thread, at most ``maxsize`` ahead of the consumer
    (``enabled`` False: produced in the consumer's thread, on demand)."""
    if not enabled:
        yield from items
        return
    q: "queue.Queue" = queue.Queue(maxsize=maxsize)
    stop = threading.Event()

    def produce():
        try:
            for item in items:
                while not stop.is_set():
                    try:
                        q.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            q.put(_END)
        except BaseException as e:  # noqa: BLE001 - handed to the consumer, raised there
            q.put(_Failure(e))
        finally:
            # a stopped consumer: close the source here, in its own thread, so that a chain of
            # these stages (and the decoder's file) shuts down too
            close = getattr(items, "close", None)
            if close is not None:
                close()

    thread = threading.Thread(target=produce, name=name, daemon=True)
    thread.start()
    try:
        while True:
            item = q.get()
            if item is _END:
                return
            if isinstance(item, _Failure):
                raise item.exc
            yield item
    finally:
        stop.set()


def predict_frames(predict: Callable[[np.ndarray], Prediction], source: VideoSource,
                   prefetch: int = 4,
                   smoother: Optional[Callable[..., Prediction]] = None,
                   keyframe_interval: int = 1, overlap: Optional[bool] = None,
                   batch_size: int = 1,
                   predict_many: Optional[Callable[[List[np.ndarray]], List[Prediction]]] = None
                   ) -> Iterator[Tuple[int, np.ndarray, Prediction]]:
    """``(index, frame_bgr, prediction)`` for every frame; with ``overlap`` (default:
    :func:`should_overlap` on the CPU) decoded in a thread, ``prefetch`` frames ahead. Each
    prediction passed through ``smoother`` (``Predictor.video_smoother()``: a
    :class:`~amanet.runtime.tracking.TemporalSmoother` or a
    :class:`~amanet.runtime.lookahead.LookaheadSmoother`, whose frames come out some frames
    later, still all and in order) when given. ``keyframe_interval`` K > 1: the model runs on
    frames 0, K, 2K, ... only; the smoother (required, a
    :class:`~amanet.runtime.keyframes.KeyframeInterpolator`) fills the frames between from the
    key frames on both sides (the last frame is a key frame too). ``batch_size`` B > 1: the
    model frames go to ``predict_many`` B at a time (``Predictor.predict_many``), the frames
    between them waiting with them."""
    for i, _, frame, pred in _timed_predictions(predict, source, prefetch, smoother,
                                                keyframe_interval, overlap, batch_size,
                                                predict_many):
        yield i, frame, pred


def check_count(value, what: str, least: int) -> int:
    """``value`` as an int >= ``least`` (``what`` names it in the error), or one clear
    ValueError (a bool or a float is refused, not rounded)."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < least:
        raise ValueError(f"{what} must be a whole number >= {least}, got {value!r}")
    return int(value)


def check_keyframe_interval(keyframe_interval) -> int:
    """``keyframe_interval`` as an int >= 1, or one clear ValueError."""
    return check_count(keyframe_interval, "keyframe interval", 1)


def _check_schedule(keyframe_interval, smoother) -> int:
    every = check_keyframe_interval(keyframe_interval)
    if every > 1 and not hasattr(smoother, "carry"):
        raise ValueError("a keyframe interval > 1 needs a KeyframeInterpolator to fill the "
                         "frames between key frames (Predictor.video_smoother), not "
                         f"{type(smoother).__name__}")
    return every


def check_batch_size(batch_size, predict_many) -> int:
    """``batch_size`` as an int >= 1; a batch size > 1 needs ``predict_many``."""
    batch_size = check_count(batch_size, "batch size", 1)
    if batch_size > 1 and predict_many is None:
        raise ValueError("a batch size > 1 needs predict_many (Predictor.predict_many)")
    return batch_size


def _model_batches(frames: Iterator[Tuple[Optional[Fraction], np.ndarray]], every: int,
                   batch_size: int) -> Iterator[List[Tuple[int, Optional[Fraction], np.ndarray]]]:
    """``(index, time, frame)`` runs of consecutive frames, each ending with its
    ``batch_size``-th key frame (the last run may hold fewer): what one batch of model inputs
    waits for (memory: ``batch_size * every`` frames)."""
    run: List[Tuple[int, Optional[Fraction], np.ndarray]] = []
    keys = 0
    for i, (time, frame) in enumerate(frames):
        run.append((i, time, frame))
        if i % every == 0:
            keys += 1
            if keys == batch_size:
                yield run
                run, keys = [], 0
    if run:
        yield run


def _timed_predictions(predict, source: VideoSource, prefetch: int, smoother,
                       keyframe_interval: int = 1, overlap: Optional[bool] = None,
                       batch_size: int = 1, predict_many=None
                       ) -> Iterator[Tuple[int, Optional[Fraction], np.ndarray, Prediction]]:
    """:func:`predict_frames` with each frame's presentation time (seconds, or ``None``)."""
    every = _check_schedule(keyframe_interval, smoother)
    batch_size = check_batch_size(batch_size, predict_many)
    overlap = should_overlap() if overlap is None else overlap
    frames = _threaded(source.timed_frames(), prefetch, "amanet-decode", overlap)
    last = None
    for run in _model_batches(frames, every, batch_size):
        keyed = [frame for i, _, frame in run if i % every == 0]
        preds = iter(predict_many(keyed) if batch_size > 1 else [predict(f) for f in keyed])
        for i, time, frame in run:
            if smoother is None:
                yield i, time, frame, next(preds)
                continue
            # look-ahead smoothers and key frames hand frames on some frames later
            if i % every:
                done = smoother.carry(frame, (i, time, frame))
            else:
                done = smoother.push(next(preds), frame, (i, time, frame))
            for (j, t, f), pred in done:
                yield j, t, f, pred
            last = frame
    if smoother is None:
        return
    # the last frame is a key frame too, so that the frames before it are filled from both sides
    done = smoother.end(predict(last)) if getattr(smoother, "waiting", False) else []
    for (j, t, f), pred in done + smoother.flush():
        yield j, t, f, pred


class _FrameIntervals:
    """The shortest and longest interval between consecutive frame times seen so far."""

    def __init__(self):
        self.last: Optional[Fraction] = None
        self.shortest: Optional[Fraction] = None
        self.longest: Optional[Fraction] = None

    def add(self, time: Optional[Fraction]) -> None:
        if time is not None and self.last is not None:
            step = time - self.last
            self.shortest = step if self.shortest is None else min(self.shortest, step)
            self.longest = step if self.longest is None else max(self.longest, step)
        self.last = time

    @property
    def variable(self) -> bool:
        """Whether the intervals differ by more than a millisecond (a time base's rounding)."""
        return self.longest is not None and self.longest - self.shortest > Fraction(1, 1000)


def output_paths(out: Path, styles: Sequence[str]) -> Dict[str, Path]:
    """One output per picture style: ``out`` itself for one style, else ``<stem>_<style>``
    beside it (``clip.mp4`` -> ``clip_dp_segm.mp4``; a folder ``frames`` -> ``frames_dp_segm``)."""
    if len(styles) == 1:
        return {styles[0]: out}
    return {s: out.with_name(f"{out.stem}_{s}{out.suffix}") for s in styles}


def save_frame_npz(folder: Path, index: int, pred: Prediction) -> None:
    """The raw per-frame result: boxes, scores, classes, chart boxes, the raw DensePose
    outputs (``densepose_<field>``) and, when tracked, ``track_ids``."""
    extra = {"track_ids": pred.track_ids} if pred.track_ids is not None else {}
    np.savez_compressed(folder / f"frame_{index:06d}.npz", boxes=pred.boxes, scores=pred.scores,
                        classes=pred.classes, chart_boxes=pred.chart_boxes, **extra,
                        **{f"densepose_{k}": v for k, v in pred.densepose.items()})


def run_video(predict: Callable[[np.ndarray], Prediction], source_path, out_path,
              styles: Sequence[str] = ("magicanimate",),
              draw: Optional[Callable[[np.ndarray, Prediction, str], np.ndarray]] = None,
              npz_dir=None, progress: bool = True, queue_size: int = 4,
              smoother: Optional[Callable[..., Prediction]] = None,
              keyframe_interval: int = 1, overlap: Optional[bool] = None,
              batch_size: int = 1,
              predict_many: Optional[Callable[[List[np.ndarray]], List[Prediction]]] = None
              ) -> Dict[str, object]:
    """Predict every frame of ``source_path`` (a video file or a folder of frames) and write the
    pictures ``styles`` as videos (``.mp4``/``.mkv``/``.mov``) or PNG folders at ``out_path``
    (see :func:`output_paths`), plus per-frame ``.npz`` results into ``npz_dir``. ``smoother``
    (``Predictor.video_smoother()``): people tracked and smoothed over time;
    ``keyframe_interval`` K > 1: the model runs on every K-th frame only, the smoother carries
    the people along the optical flow in between (see :func:`predict_frames`). ``overlap``:
    decode, infer and draw + encode in threads beside each other (default:
    :func:`should_overlap` on the CPU; pass ``should_overlap("cuda")`` for a GPU model).
    ``batch_size`` B > 1: the model frames go to ``predict_many`` B at a time.

    Every output is written under a temporary name and renamed only when the whole video is
    done; on any error (or Ctrl-C) the partial outputs are removed. Returns a summary.
    """
    from tqdm import tqdm

    from ..viz import render

    draw = draw or render
    keyframe_interval = _check_schedule(keyframe_interval, smoother)
    batch_size = check_batch_size(batch_size, predict_many)
    overlap = should_overlap() if overlap is None else overlap
    source = open_video(source_path)
    paths = output_paths(Path(out_path), list(styles))
    sinks: Dict[str, VideoSink] = {}
    npz = Path(npz_dir) if npz_dir else None
    npz_tmp = npz.with_name(npz.name + ".partial") if npz is not None else None

    def abort() -> None:
        for sink in sinks.values():
            sink.abort()
        if npz_tmp is not None and npz_tmp.exists():
            import shutil
            shutil.rmtree(npz_tmp)

    try:
        for s, p in paths.items():
            sinks[s] = VideoSink(p, source.width, source.height, source.fps,
                                 time_base=source.time_base)
        if npz_tmp is not None:
            npz_tmp.mkdir(parents=True, exist_ok=True)
    except BaseException:
        abort()
        raise
    people: List[int] = []
    intervals = _FrameIntervals()
    bar = tqdm(total=source.num_frames, unit="frame", desc="video", disable=not progress)

    predicted = [0]

    def counted(frame: np.ndarray) -> Prediction:
        predicted[0] += 1
        return predict(frame)

    def counted_many(frames: List[np.ndarray]) -> List[Prediction]:
        predicted[0] += len(frames)
        return predict_many(frames)

    def drawn() -> Iterator[Tuple[int, Optional[Fraction], Dict[str, np.ndarray], Prediction]]:
        for i, time, frame, pred in _timed_predictions(counted, source, queue_size, smoother,
                                                       keyframe_interval, overlap, batch_size,
                                                       counted_many):
            yield i, time, {s: draw(frame, pred, s) for s in styles}, pred

    try:
        # overlapping: drawing happens in the producer thread, encoding here, inference beside
        # both; otherwise each frame goes through decode, inference, drawing and encoding in turn
        for i, time, pictures, pred in _threaded(drawn(), queue_size, "amanet-infer",
                                                 overlap):
            for s, pic in pictures.items():
                sinks[s].write(_as_bgr(pic, s), time)
            if npz_tmp is not None:
                save_frame_npz(npz_tmp, i, pred)
            people.append(len(pred))
            intervals.add(time)
            bar.update(1)
        if not people:
            raise ValueError(f"{source_path}: no frame could be decoded")
        written = {s: str(sink.close()) for s, sink in sinks.items()}
        if npz_tmp is not None:
            import os
            import shutil
            if npz.exists():
                shutil.rmtree(npz)
            os.replace(npz_tmp, npz)
    except BaseException:
        abort()
        raise
    finally:
        bar.close()
    return {"frames": len(people), "fps": float(source.fps), "size": [source.width,
                                                                      source.height],
            "outputs": written, "people_per_frame": people,
            "npz": str(npz) if npz is not None else None,
            "variable_frame_rate": intervals.variable,
            "smoothing": smoothing_summary(smoother),
            "keyframe_interval": keyframe_interval, "batch_size": batch_size,
            "predicted_frames": predicted[0],
            "overlapped": overlap}


def _as_bgr(picture: np.ndarray, style: str) -> np.ndarray:
    """A picture as a BGR frame: the one-channel part map as gray, the IUV image (RGB = I, U, V)
    channel-swapped so that the video's red is I."""
    if picture.ndim == 2:
        return np.repeat(picture[:, :, None], 3, axis=2)
    if style == "iuv":
        return np.ascontiguousarray(picture[:, :, ::-1])
    return picture
