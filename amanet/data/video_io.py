"""Video in and out with PyAV (FFmpeg): frames as BGR uint8 arrays, streamed.

- :func:`open_video` reads a video file or a folder of frames (sorted image files, 25 frames/s)
  and returns a :class:`VideoSource`: size, frame rate, frame count (when the container says
  it) and an iterator of frames. A rotation flag in the container is honoured (frames come out upright).
- :class:`VideoSink` writes H.264 MP4 (the source's frame rate and size, and each frame's
  presentation time when given: a variable-frame-rate video keeps its timing) or a folder of
  lossless PNG frames. H.264 in 4:2:0 needs even sizes: an even-sized video is written as
  yuv420p (what every player reads), an odd-sized one as yuv444p (the exact size, High 4:4:4
  profile, which some players refuse). The output is written under a temporary name and renamed
  when :meth:`VideoSink.close` completes: an interrupted run never leaves a truncated file that
  looks finished.

Bad input is one :class:`~amanet.errors.InputError` line: missing, empty, unreadable or corrupt
files, no video stream, zero frames.
"""
from __future__ import annotations

import contextlib
import os
import shutil
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Iterator, Optional, Tuple, Union

import numpy as np

from ..errors import InputError
from .image_io import IMAGE_EXTENSIONS, read_image

PathLike = Union[str, os.PathLike]


@dataclass
class VideoSource:
    """A readable video: ``frames()`` yields BGR uint8 ``[H, W, 3]`` arrays in order."""
    path: Path
    width: int
    height: int
    fps: Fraction
    num_frames: Optional[int]     # None when the container does not say
    rotation: int = 0             # degrees the frames are turned to come out upright
    is_folder: bool = False
    time_base: Optional[Fraction] = None   # the stream's time unit (None: a folder)

    def frames(self) -> Iterator[np.ndarray]:
        for _, frame in self.timed_frames():
            yield frame

    def timed_frames(self) -> Iterator[Tuple[Optional[Fraction], np.ndarray]]:
        """``(time, frame)`` in order: ``time`` is the frame's presentation time in seconds
        after the first frame's (exact, in the stream's time base), ``None`` where the source
        has no timestamps (a folder of frames, a frame without one)."""
        if self.is_folder:
            for f in _frame_files(self.path):
                yield None, read_image(f)
            return
        import av

        try:
            with av.open(str(self.path)) as container:
                stream = container.streams.video[0]
                stream.thread_type = "AUTO"
                start = None
                for frame in container.decode(stream):
                    time = None
                    if frame.pts is not None and frame.time_base is not None:
                        time = frame.pts * Fraction(frame.time_base)
                        start = time if start is None else start
                        time -= start
                    yield time, _upright(frame.to_ndarray(format="bgr24"), self.rotation)
        except av.error.FFmpegError as e:
            raise InputError(f"corrupt or truncated video {self.path}: {e}") from None


def _frame_files(folder: Path):
    return sorted(f for f in folder.iterdir() if f.suffix.lower() in IMAGE_EXTENSIONS)


def _upright(frame: np.ndarray, rotation: int) -> np.ndarray:
    # rotation: counter-clockwise degrees the display turns the stored frame
    turns = (rotation // 90) % 4
    return np.ascontiguousarray(np.rot90(frame, turns)) if turns else frame


def open_video(path: PathLike) -> VideoSource:
    """A video file or a folder of frames; :class:`InputError` if it cannot be read."""
    p = Path(path)
    if not p.exists():
        raise InputError(f"video not found: {p}")
    if p.is_dir():
        files = _frame_files(p)
        if not files:
            raise InputError(f"no image frames in folder {p}")
        first = read_image(files[0])
        return VideoSource(p, first.shape[1], first.shape[0], Fraction(25), len(files),
                           is_folder=True)
    if p.stat().st_size == 0:
        raise InputError(f"video file is empty: {p}")
    import av

    try:
        container = av.open(str(p))
    except (av.error.FFmpegError, UnicodeDecodeError) as e:
        raise InputError(f"not a readable video {p}: {e}") from None
    with container:
        if not container.streams.video:
            raise InputError(f"{p} has no video stream")
        stream = container.streams.video[0]
        rate = stream.average_rate or stream.guessed_rate or Fraction(25)
        frames = int(stream.frames) or None
        try:
            first = next(container.decode(stream), None)
        except av.error.FFmpegError as e:
            raise InputError(f"corrupt video {p}: {e}") from None
        if first is None:
            raise InputError(f"{p} has zero video frames")
        # the display matrix's counter-clockwise angle (FFmpeg's autorotate turns the same way)
        rotation = int(round(getattr(first, "rotation", 0) or 0)) % 360
        w, h = first.width, first.height
        if rotation % 180:
            w, h = h, w
        time_base = Fraction(stream.time_base) if stream.time_base else None
    return VideoSource(p, w, h, Fraction(rate), frames, rotation, time_base=time_base)


class VideoSink:
    """Write BGR uint8 frames to ``path``: ``.mp4`` / ``.mkv`` / ``.mov`` (H.264) or, for a path
    without one of those suffixes, a folder of PNG frames ``frame_000000.png``, ...

    Frames are stamped with the times :meth:`write` is given (seconds from the first frame,
    counted in ``time_base``, default ``1 / fps``) or, without one, ``index / fps``: a
    variable-frame-rate source written with its frames' times keeps its timing (a PNG folder
    keeps the frames, not their times). Written under ``<name>.partial`` and renamed by
    :meth:`close`; :meth:`abort` removes it.
    """

    VIDEO_SUFFIXES = (".mp4", ".mkv", ".mov")

    def __init__(self, path: PathLike, width: int, height: int, fps: Fraction, crf: int = 18,
                 time_base: Optional[Fraction] = None):
        self.path = Path(path)
        self.fps = Fraction(fps)
        self.time_base = Fraction(time_base) if time_base else 1 / self.fps
        self._last_pts: Optional[int] = None
        self.is_folder = self.path.suffix.lower() not in self.VIDEO_SUFFIXES
        self.width, self.height = int(width), int(height)
        self.tmp = self.path.with_name(self.path.name + ".partial")
        self.count = 0
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if self.tmp.exists():
                shutil.rmtree(self.tmp) if self.tmp.is_dir() else self.tmp.unlink()
            if self.is_folder:
                self.tmp.mkdir()
                return
            import av

            self.container = av.open(str(self.tmp), mode="w", format=self._format())
        except OSError as e:
            raise InputError(f"cannot write {self.path}: {e.strerror or e}") from None
        odd = self.width % 2 or self.height % 2
        stream = self.container.add_stream("libx264", rate=Fraction(fps))
        stream.width, stream.height = self.width, self.height
        stream.pix_fmt = "yuv444p" if odd else "yuv420p"
        stream.options = {"crf": str(crf), "preset": "veryfast"}
        stream.codec_context.time_base = self.time_base
        self.stream = stream

    def _format(self) -> str:
        return {".mp4": "mp4", ".mkv": "matroska", ".mov": "mov"}[self.path.suffix.lower()]

    def write(self, frame_bgr: np.ndarray, time: Optional[Fraction] = None) -> None:
        """Append a frame shown at ``time`` seconds (default: ``index / fps``)."""
        if frame_bgr.shape[:2] != (self.height, self.width):
            raise ValueError(f"frame {frame_bgr.shape[:2]} != the video's "
                             f"{(self.height, self.width)}")
        if self.is_folder:
            import cv2
            cv2.imwrite(str(self.tmp / f"frame_{self.count:06d}.png"), frame_bgr)
        else:
            import av
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame_bgr), format="bgr24")
            frame.pts, frame.time_base = self._stamp(time), self.time_base
            for packet in self.stream.encode(frame):
                self.container.mux(packet)
        self.count += 1

    def _stamp(self, time: Optional[Fraction]) -> int:
        """The next frame's pts (in ``time_base``) for ``time`` (``None``: ``index / fps``);
        a repeated or backwards time gets the next tick, since stamps must rise."""
        if time is None:
            time = Fraction(self.count) / self.fps
        pts = round(Fraction(time) / self.time_base)
        if self._last_pts is not None and pts <= self._last_pts:
            pts = self._last_pts + 1
        self._last_pts = pts
        return pts

    def close(self) -> Path:
        """Flush, then move the finished output to its name."""
        if not self.is_folder:
            for packet in self.stream.encode():
                self.container.mux(packet)
            self.container.close()
        if self.path.exists():
            shutil.rmtree(self.path) if self.path.is_dir() else self.path.unlink()
        os.replace(self.tmp, self.path)
        return self.path

    def abort(self) -> None:
        """Drop the partial output."""
        if not self.is_folder:
            # closing a broken stream may fail: it is deleted next anyway
            with contextlib.suppress(Exception):
                self.container.close()
        if self.tmp.exists():
            shutil.rmtree(self.tmp) if self.tmp.is_dir() else self.tmp.unlink()
