"""Video throughput: frames/s of ``amanet video`` against the plain per-frame loop people write
around Detectron2 (decode, eager fp32 predict, draw, encode, one after another), measured in the
same run on the same clip.

Clips are made here: the bundled photo panning across the frame, written as H.264 at the asked
size. The model is a preset with random (smoke) weights and detections forced (score threshold
0, ``TEST.DETECTIONS_PER_IMAGE`` = N), as in :mod:`.latency`. Every case runs the whole clip end
to end (decode, inference, drawing, encode) after one warm-up frame; frames/s = frames / wall
time.
"""
from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

logger = logging.getLogger(__name__)

LOOP = "loop"           # the baseline: sequential per-frame loop, eager fp32
PIPELINE = "amanet"     # run_video: threaded decode / infer / draw+encode


@dataclass
class VideoResult:
    mode: str
    backend: str
    precision: str
    height: int
    width: int
    detections: int
    frames: int
    seconds: float
    fps: float
    speedup: float = 0.0    # fps / the loop's fps on the same clip and detections
    keyframe_interval: int = 1   # the model on every K-th frame, people carried in between
    smooth: bool = False         # amanet video --smooth
    batch_size: int = 1          # amanet video --batch: model frames at a time


def make_clip(path: Path, height: int, width: int, frames: int, fps: int = 25) -> Path:
    """The bundled photo, panning 8 px per frame, as an H.264 clip of ``height x width``."""
    from PIL import Image

    from ..assets import PHOTO
    from ..data.video_io import VideoSink

    photo = np.asarray(Image.open(PHOTO).convert("RGB").resize((width + 8 * frames, height)))
    sink = VideoSink(path, width, height, Fraction(fps))
    for i in range(frames):
        sink.write(np.ascontiguousarray(photo[:, 8 * i:8 * i + width, ::-1]))
    return sink.close()


def _overrides(detections: int) -> List[str]:
    return ["MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0", "TEST.DETECTIONS_PER_IMAGE",
            str(detections)]


def make_predictor(family: str, backend: str, precision: str, detections: int,
                   work_dir: Path, threads: int, device: str = "cpu",
                   clip: Optional[Path] = None):
    """A Predictor with smoke weights (eager) or over their export (openvino/onnxruntime/
    torchscript; int8: calibrated on the first frames of ``clip``), detections forced."""
    from ..runtime import Predictor
    from .latency import bench_model, export_artifacts, int8_ranges

    if backend == "eager":
        return Predictor(family, None, overrides=_overrides(detections), precision=precision,
                         threads=threads, device=device)
    work_dir.mkdir(parents=True, exist_ok=True)
    ranges = None
    if precision == "int8":
        if clip is None:
            raise ValueError("an int8 case needs the clip to calibrate on")
        ranges = int8_ranges(family, clip_inputs(clip, family))
    artifacts = export_artifacts(bench_model(family, detections), work_dir / f"d{detections}",
                                 precisions=(precision,) if backend == "torchscript"
                                 or precision == "int8" else (), calibration=ranges)
    key = (("torchscript", precision) if backend == "torchscript" else
           ("openvino", "int8") if precision == "int8" else ("onnxruntime", "fp32"))
    return Predictor.from_export(str(artifacts[key]), backend=backend, device=device,
                                 precision=None if backend == "torchscript" else precision,
                                 threads=threads)


def clip_inputs(clip: Path, family: str, frames: int = 2) -> list:
    """The model inputs of the first ``frames`` frames of ``clip`` (int8 calibration)."""
    from itertools import islice

    from ..config import load_config
    from ..data.transforms import model_input
    from ..data.video_io import open_video

    inp = load_config(family).input
    return [model_input(f, inp) for f in islice(open_video(clip).frames(), frames)]


def loop_baseline(predictor, clip: Path, out: Path, style: str) -> int:
    """Decode, predict, draw, encode: one frame after another (no overlap)."""
    from ..data.video_io import VideoSink, open_video
    from ..viz import render

    source = open_video(clip)
    sink = VideoSink(out, source.width, source.height, source.fps)
    n = 0
    for frame in source.frames():
        sink.write(render(frame, predictor(frame), style))
        n += 1
    sink.close()
    return n


def time_case(mode: str, predictor, clip: Path, out: Path, style: str,
              keyframe_interval: int = 1, smooth: bool = False, batch_size: int = 1
              ) -> Tuple[int, float]:
    from ..data.video_io import open_video
    from ..runtime.video import run_video, should_overlap

    predictor(next(open_video(clip).frames()))   # warm-up (one-time kernel set-up)
    start = time.perf_counter()
    if mode == LOOP:
        n = loop_baseline(predictor, clip, out, style)
    else:
        n = run_video(predictor.predict, clip, out, [style], progress=False,
                      smoother=predictor.video_smoother(smooth, keyframe_interval),
                      keyframe_interval=keyframe_interval, batch_size=batch_size,
                      predict_many=predictor.batched(batch_size),
                      overlap=should_overlap(predictor.device.type))["frames"]
    return n, time.perf_counter() - start


def run_all(family: str, sizes: Sequence[Tuple[int, int]], detections: Sequence[int],
            cases: Sequence[Tuple], frames: int, work_dir: Path, threads: int = 2,
            style: str = "magicanimate", device: str = "cpu") -> List[VideoResult]:
    """The loop baseline, then ``cases`` (``(backend, precision[, keyframe_interval[,
    smooth[, batch_size]]])``, through ``amanet video``), per clip size and detection count."""
    import torch

    torch.set_num_threads(threads)
    results: List[VideoResult] = []
    for h, w in sizes:
        clip = make_clip(work_dir / f"clip_{h}x{w}.mp4", h, w, frames)
        for d in detections:
            runs = [(LOOP, "eager", "fp32", 1, False, 1)] + [
                (PIPELINE, *c[:2], c[2] if len(c) > 2 else 1, len(c) > 3 and bool(c[3]),
                 c[4] if len(c) > 4 else 1)
                for c in cases]
            base_fps: Optional[float] = None
            for mode, backend, precision, every, smooth, batch in runs:
                predictor = make_predictor(family, backend, precision, d, work_dir / "exports",
                                           threads, device, clip)
                n, secs = time_case(mode, predictor, clip, work_dir / f"out_{mode}.mp4", style,
                                    every, smooth, batch)
                r = VideoResult(mode, backend, precision, h, w, d, n, secs, n / secs,
                                keyframe_interval=every, smooth=smooth, batch_size=batch)
                base_fps = r.fps if mode == LOOP else base_fps
                r.speedup = r.fps / base_fps if base_fps else 0.0
                logger.info("%s %s %s key frames every %d%s, batch %d, %dx%d %d people: %.2f "
                            "frames/s (%.2fx)", mode, backend, precision, every,
                            ", smoothed" if smooth else "", batch, h, w, d, r.fps, r.speedup)
                results.append(r)
    return results


def markdown_table(results: List[VideoResult], header: str = "") -> str:
    lines = [header, ""] if header else []
    lines += ["| clip | people | pipeline | backend | precision | key frames | smoothed | "
              "batch | frames | s | frames/s | vs loop |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        every = "all" if r.keyframe_interval == 1 else f"every {r.keyframe_interval}"
        lines.append(f"| {r.width}x{r.height} | {r.detections} | {r.mode} | {r.backend} | "
                     f"{r.precision} | {every} | {'yes' if r.smooth else 'no'} | "
                     f"{r.batch_size} | {r.frames} | {r.seconds:.1f} | {r.fps:.3f} | "
                     f"{r.speedup:.2f}x |")
    return "\n".join(lines)


def _label(r: VideoResult) -> Tuple[str, ...]:
    every = () if r.keyframe_interval == 1 else (f"key frames 1/{r.keyframe_interval}",)
    return (r.mode, r.backend, r.precision, *every, *(("smoothed",) if r.smooth else ()),
            *((f"batch {r.batch_size}",) if r.batch_size > 1 else ()))


def bar_chart(results: List[VideoResult], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = sorted({(r.width, r.height, r.detections) for r in results})
    labels = list(dict.fromkeys(_label(r) for r in results))     # in the order they ran
    fig, ax = plt.subplots(figsize=(10, 4))
    width = 0.8 / max(len(labels), 1)
    for j, lab in enumerate(labels):
        ys = [next((r.fps for r in results if (r.width, r.height, r.detections) == g
                    and _label(r) == lab), 0.0) for g in groups]
        ax.bar(np.arange(len(groups)) + j * width, ys, width, label=" ".join(lab))
    ax.set_xticks(np.arange(len(groups)) + width * (len(labels) - 1) / 2)
    ax.set_xticklabels([f"{w}x{h}, {d} people" for w, h, d in groups])
    ax.set_ylabel("frames/s")
    ax.set_title("amanet video vs the per-frame loop (same clip, same run)")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def to_json(results: List[VideoResult], meta: Dict[str, Any]) -> Dict[str, Any]:
    return {"meta": meta, "results": [asdict(r) for r in results]}
