"""Temporal stability of video DensePose, against the synthetic world's moving-people truth.

Each clip (:func:`amanet.data.synthetic_video.write_clip`) is predicted once per frame; the same
per-frame predictions are then passed through a :class:`~amanet.runtime.tracking.TemporalSmoother`
per setting, so every case sees identical detections. Measured per case:

- **flip rate**: among pixels whose true part label (1..24) is the same in two consecutive frames,
  the fraction whose predicted label (the whole-image IUV's I, 0 = background) differs between
  those frames;
- **per-frame accuracy**: GPS / GPSm / IoU / box AP of all frames against their truth (the
  synthetic geodesics), as the evaluator scores still images.

Key-frame cases (``keyframe_interval`` K) use the same predictions on frames 0, K, 2K, ... and
fill the others from them (:mod:`amanet.runtime.keyframes`; the model's results there are
unused).
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

logger = logging.getLogger(__name__)

METRICS = (("GPS AP", "densepose_GPS"), ("GPSm AP", "densepose_GPSm"),
           ("IoU AP", "densepose_IOU"), ("box AP", "bbox"))


def label_flips(predicted: np.ndarray, truth: np.ndarray) -> Tuple[int, int]:
    """``(flips, stable)`` over consecutive frames of part-label maps ``[T, H, W]``: ``stable``
    counts pixels whose true label is a body part (> 0) and the same in both frames, ``flips``
    those of them whose predicted label changes."""
    predicted = np.asarray(predicted)
    truth = np.asarray(truth)
    if predicted.shape != truth.shape or predicted.ndim != 3:
        raise ValueError(f"label maps must both be [T, H, W]; got {predicted.shape} and "
                         f"{truth.shape}")
    stable = (truth[1:] == truth[:-1]) & (truth[1:] > 0)
    flips = stable & (predicted[1:] != predicted[:-1])
    return int(flips.sum()), int(stable.sum())


#: cases measured by default: name -> settings of ``Predictor.video_smoother`` (``smooth``,
#: default True; ``keyframe_interval``; ``lookahead``; the smoother's alphas, ``hysteresis``,
#: ...) and ``flow`` (default True: the smoother sees the frames, i.e. follows motion)
CASES: Dict[str, Dict] = {
    "smoothed (defaults: look-ahead 4, alpha 0.4)": {},
    "look-ahead 2": {"lookahead": 2},
    "causal (look-ahead 0, alpha 0.5)": {"lookahead": 0},
    "causal, alpha 0.3": {"lookahead": 0, "dense_alpha": 0.3},
    "no optical flow": {"flow": False},
    "causal + hysteresis 0.1": {"lookahead": 0, "hysteresis": 0.1},
    "hysteresis only": {"lookahead": 0, "box_alpha": 1.0, "dense_alpha": 1.0,
                        "hysteresis": 0.1},
    # the model on every K-th frame only, the frames between filled from the key frames on
    # both sides (amanet video --keyframe-interval K): what the speed costs in accuracy
    **{f"key frames every {k}": {"smooth": False, "keyframe_interval": k}
       for k in (2, 3, 4, 6, 8)},
}


#: case settings that are not ``Predictor.video_smoother``'s (see :data:`CASES`)
RUN_SETTINGS = ("flow",)


@dataclass
class TemporalResult:
    case: str                                   # "per-frame" or a CASES name
    settings: Optional[Dict]                    # None for per-frame
    flips: int = 0
    stable: int = 0
    ap: Dict[str, float] = field(default_factory=dict)   # name -> AP (fraction)
    tracks: int = 0

    @property
    def flip_rate(self) -> float:
        return self.flips / max(self.stable, 1)


def _merge_truth(clips: Sequence[Path], out: Path) -> Path:
    """One DensePose-COCO JSON of every clip's frames (image ids made unique per clip)."""
    merged = None
    for c, path in enumerate(clips):
        data = json.loads(Path(path).read_text())
        base = (c + 1) * 100000
        for img in data["images"]:
            img["id"] += base
            img["file_name"] = str(Path(path).parent / img["file_name"])
        for a in data["annotations"]:
            a["image_id"] += base
            a["id"] += base
        if merged is None:
            merged = data
        else:
            merged["images"] += data["images"]
            merged["annotations"] += data["annotations"]
    out.write_text(json.dumps(merged, separators=(",", ":")))
    return out


def _smoother(predictor, settings: Dict):
    """The video smoother of a case's ``settings`` (:data:`CASES`)."""
    rest = {k: v for k, v in settings.items() if k not in RUN_SETTINGS}
    return predictor.video_smoother(rest.pop("smooth", True), **rest)


def run_temporal(weights: str, work_dir: Path, clips: int = 4, frames: int = 32,
                 image_size: Tuple[int, int] = (256, 256), cases: Optional[Dict[str, Dict]] = None,
                 seed: int = 0, threads: int = 2, progress: bool = True,
                 figure: Optional[Path] = None, backend: str = "eager",
                 precision: str = "fp32") -> List[TemporalResult]:
    """The per-frame predictor, then one smoother per ``cases`` entry (default :data:`CASES`),
    over ``clips`` synthetic clips of ``frames`` frames (world ``seed``); results in that
    order. The model runs as ``backend`` in ``precision``
    (:func:`~amanet.benchmarks.accuracy.case_predictor`). ``figure``: also draw the first
    clip's middle frames (:func:`strip_figure`)."""
    from tqdm import tqdm

    from ..data.synthetic_video import write_clip
    from ..data.video_io import open_video
    from ..engine.evaluate import densepose_results
    from ..engine.inference import score_results
    from ..runtime.tracking import smoothing_summary
    from .accuracy import case_predictor

    cases = CASES if cases is None else cases
    predictor = case_predictor(weights, backend, precision, Path(work_dir), threads,
                               whole_image_iuv=True)
    results = [TemporalResult("per-frame", None)]
    results += [TemporalResult(name, dict(settings)) for name, settings in cases.items()]
    entries: List[List[dict]] = [[] for _ in results]
    truth_files = []
    bar = tqdm(total=clips * frames, desc="temporal", unit="frame", disable=not progress)
    for c in range(clips):
        files = write_clip(Path(work_dir) / f"clip_{c:03d}", seed, c, frames, image_size)
        truth_files.append(files.annotations)
        truth = np.load(files.truth)["I"]
        smoothers = [None] + [_smoother(predictor, r.settings) for r in results[1:]]
        sees = [True] + [r.settings.get("flow", True) for r in results[1:]]
        every = [1] + [r.settings.get("keyframe_interval", 1) for r in results[1:]]
        labels = [[] for _ in results]

        def record(k, t, p):
            labels[k].append(p.iuv[0] if p.iuv is not None else
                             np.zeros(truth.shape[1:], np.uint8))
            entries[k].extend(densepose_results(p, (c + 1) * 100000 + t + 1))

        for t, frame in enumerate(open_video(files.frames).frames()):
            pred = predictor(frame)
            for k, sm in enumerate(smoothers):
                if sm is None:
                    record(k, t, pred)
                    continue
                # look-ahead smoothers and key frames hand frames on later
                done = (sm.carry(frame, t) if t % every[k] else
                        sm.push(pred, frame if sees[k] else None, t))
                for tk, p in done:
                    record(k, tk, p)
            bar.update(1)
        for k, sm in enumerate(smoothers):
            if sm is None:
                continue
            # as in amanet video: the last frame is a key frame too
            done = sm.end(pred) if getattr(sm, "waiting", False) else []
            for tk, p in done + sm.flush():
                record(k, tk, p)
        for k, res in enumerate(results):
            f, s = label_flips(np.stack(labels[k]), truth)
            res.flips += f
            res.stable += s
            if smoothers[k] is not None:
                res.tracks += smoothing_summary(smoothers[k])["tracks"]
        if figure is not None and c == 0:
            mid = max(0, frames // 2 - 3)
            images = [fr for t, fr in enumerate(open_video(files.frames).frames())
                      if mid <= t < mid + 6]
            strip_figure(images, truth[mid:mid + 6],
                         {results[k].case: np.stack(labels[k][mid:mid + 6])
                          for k in range(min(2, len(results)))}, figure)
    bar.close()
    gt = _merge_truth(truth_files, Path(work_dir) / "truth_all.json")
    for res, ents in zip(results, entries, strict=True):
        metrics = score_results(str(gt), ents)
        res.ap = {name: float(metrics[key]["AP"]) for name, key in METRICS if key in metrics}
        logger.info("%s: flip rate %.4f, %s", res.case, res.flip_rate, res.ap)
    return results


def strip_figure(images: Sequence[np.ndarray], truth: np.ndarray,
                 predicted: Dict[str, np.ndarray], path: Path) -> None:
    """Consecutive frames (columns): the image, the true part labels, then each case's
    predicted labels with its flips (label changed where the truth did not) in red."""
    import textwrap

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = 2 + len(predicted)
    cols = len(images)
    fig, axes = plt.subplots(rows, cols, figsize=(1.9 * cols, 1.9 * rows), squeeze=False)
    cmap = plt.get_cmap("nipy_spectral", 25)
    for t in range(cols):
        axes[0, t].imshow(np.ascontiguousarray(images[t][:, :, ::-1]))
        axes[0, t].set_title(f"frame {t}" if t else "frame 0 (of the strip)", fontsize=8)
        axes[1, t].imshow(truth[t], cmap=cmap, vmin=0, vmax=24, interpolation="nearest")
        for r, (name, labels) in enumerate(predicted.items(), start=2):
            rgb = cmap(labels[t] / 24.0)[:, :, :3]
            if t:
                stable = (truth[t] == truth[t - 1]) & (truth[t] > 0)
                flips = stable & (labels[t] != labels[t - 1])
                rgb[flips] = (1.0, 0.0, 0.0)
                axes[r, t].set_title(f"{int(flips.sum())} flips", fontsize=8)
            axes[r, t].imshow(rgb, interpolation="nearest")
    for r, name in enumerate(["image", "truth", *predicted]):
        axes[r, 0].set_ylabel("\n".join(textwrap.wrap(name, 22)), fontsize=8)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle("part labels over consecutive frames; red: a flip where the truth kept its "
                 "part", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def markdown_table(results: List[TemporalResult], header: str = "") -> str:
    """Flip rate and AP x100 per case, with the change against the per-frame case."""
    base = results[0]
    names = [n for n, _ in METRICS if n in base.ap]
    lines = [header, ""] if header else []
    lines.append("| case | label flips / stable px | flip rate | vs per-frame | "
                 + " | ".join(names) + " |")
    lines.append("|---|---|---|---|" + "---|" * len(names))
    for r in results:
        change = ("—" if r is base else
                  f"{100 * (r.flip_rate / max(base.flip_rate, 1e-12) - 1):+.1f} %")
        aps = " | ".join(f"{100 * r.ap[n]:.2f}" + ("" if r is base else
                                                   f" ({100 * (r.ap[n] - base.ap[n]):+.2f})")
                         for n in names)
        lines.append(f"| {r.case} | {r.flips} / {r.stable} | {r.flip_rate:.4f} | {change} | "
                     f"{aps} |")
    return "\n".join(lines)


def to_json(results: List[TemporalResult], meta: Dict) -> Dict:
    return {"meta": meta, "results": [
        {"case": r.case, "settings": r.settings, "flips": r.flips, "stable": r.stable,
         "flip_rate": r.flip_rate, "ap": r.ap, "tracks": r.tracks} for r in results]}
