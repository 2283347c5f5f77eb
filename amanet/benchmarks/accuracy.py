"""Accuracy of each backend x precision against eager fp32, on a dataset with ground truth.

The default is the bundled demo model on its held-out synthetic set (exact synthetic
geodesics, so GPS / GPSm / IoU / box AP are all real): the model is exported to ONNX once and
every (backend, precision) case predicts the same images through the
:class:`~amanet.runtime.Predictor` (test-time resize and chart post-processing included).
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

logger = logging.getLogger(__name__)

METRICS = (("GPS AP", "densepose_GPS", "AP"), ("GPSm AP", "densepose_GPSm", "AP"),
           ("IoU AP", "densepose_IOU", "AP"), ("box AP", "bbox", "AP"))


@dataclass
class AccuracyResult:
    backend: str
    precision: str
    seconds_per_image: float
    ap: Dict[str, float] = field(default_factory=dict)   # name -> AP (fraction)


def _predictor(backend: str, precision: str, weights: str, exports: Dict[str, Path],
               threads: int):
    from ..runtime import Predictor

    if backend == "eager":
        return Predictor(None, weights, precision=precision, threads=threads,
                         whole_image_iuv=False)
    return Predictor.from_export(str(exports["int8" if precision == "int8" else "fp32"]),
                                 backend=backend, precision=precision, threads=threads,
                                 whole_image_iuv=False)


def run_accuracy(weights: str, dataset: str, cases: Sequence[Tuple[str, str]], work_dir: Path,
                 threads: int = 2, progress: bool = True,
                 calibration: Sequence[str] = ("synthetic_train_32",),
                 calibration_images: int = 32) -> List[AccuracyResult]:
    """``cases``: (backend, precision) pairs, e.g. ``[("eager", "fp32"), ("openvino", "bf16")]``.
    Export cases run the fp32 ONNX export, or for ``int8`` the int8 export calibrated on
    ``calibration`` (images, folders or a dataset name: keep it apart from ``dataset``)."""
    from ..checkpoint import config_of_checkpoint, load_weights
    from ..data.registry import load_dataset
    from ..deploy.onnx import export_onnx
    from ..deploy.quantize import calibration_images as load_calibration
    from ..engine.inference import predict_with, score_results
    from ..modeling.model import build_model

    records, spec = load_dataset(dataset)
    exports: Dict[str, Path] = {}
    if any(b != "eager" for b, _ in cases):
        cfg = config_of_checkpoint(weights)
        if cfg is None:
            raise ValueError(f"{weights} has no embedded config: export it first")
        model = build_model(cfg)
        load_weights(model, weights)
        exports["fp32"] = export_onnx(model, Path(work_dir) / "model.onnx")
        if any(p == "int8" for _, p in cases):
            images = load_calibration(calibration, cfg, calibration_images)
            exports["int8"] = export_onnx(model, Path(work_dir) / "model_int8.onnx",
                                          precision="int8", calibration=images)
    out = []
    for backend, precision in cases:
        predictor = _predictor(backend, precision, weights, exports, threads)
        t0 = time.perf_counter()
        results = predict_with(predictor, records, progress)
        dt = (time.perf_counter() - t0) / max(len(records), 1)
        metrics = score_results(spec.json_path, results)
        ap = {name: float(metrics[key][col]) for name, key, col in METRICS if key in metrics}
        out.append(AccuracyResult(backend, precision, dt, ap))
        logger.info("%s %s: %s", backend, precision, ap)
    return out


def markdown_table(results: List[AccuracyResult]) -> str:
    """AP x100 per case and its difference to the first case (eager fp32)."""
    names = [n for n, _, _ in METRICS if n in results[0].ap]
    base = results[0]
    head = "| backend | precision | " + " | ".join(names) + " | s/img |"
    lines = [head, "|" + "---|" * (len(names) + 3)]
    for r in results:
        cells = []
        for n in names:
            d = 100 * (r.ap[n] - base.ap[n])
            cells.append(f"{100 * r.ap[n]:.2f}" + ("" if r is base else f" ({d:+.2f})"))
        lines.append(f"| {r.backend} | {r.precision} | " + " | ".join(cells)
                     + f" | {r.seconds_per_image:.3f} |")
    return "\n".join(lines)
