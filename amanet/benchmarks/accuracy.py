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


DEFAULT_CALIBRATION = ("synthetic_train_32",)


def case_predictor(weights: str, backend: str, precision: str, work_dir: Path, threads: int = 2,
                   calibration: Sequence[str] = DEFAULT_CALIBRATION,
                   calibration_images: int = 32, whole_image_iuv: bool = False):
    """A Predictor for one (backend, precision) case over a checkpoint with its config
    embedded: eager, or its ONNX export written into ``work_dir`` once (``model.onnx``; for
    int8 ``model_int8.onnx``, calibrated on ``calibration``: keep it apart from the images
    scored)."""
    from ..checkpoint import config_of_checkpoint, load_weights
    from ..deploy.onnx import export_onnx
    from ..deploy.quantize import calibration_images as load_calibration
    from ..modeling.model import build_model
    from ..runtime import Predictor

    if backend == "eager":
        return Predictor(None, weights, precision=precision, threads=threads,
                         whole_image_iuv=whole_image_iuv)
    path = Path(work_dir) / ("model_int8.onnx" if precision == "int8" else "model.onnx")
    if not path.is_file():
        cfg = config_of_checkpoint(weights)
        if cfg is None:
            raise ValueError(f"{weights} has no embedded config: export it first")
        model = build_model(cfg)
        load_weights(model, weights)
        images = (load_calibration(calibration, cfg, calibration_images)
                  if precision == "int8" else None)
        export_onnx(model, path, precision="int8" if images else "fp32", calibration=images)
    return Predictor.from_export(str(path), backend=backend, precision=precision,
                                 threads=threads, whole_image_iuv=whole_image_iuv)


def run_accuracy(weights: str, dataset: str, cases: Sequence[Tuple[str, str]], work_dir: Path,
                 threads: int = 2, progress: bool = True,
                 calibration: Sequence[str] = DEFAULT_CALIBRATION,
                 calibration_images: int = 32) -> List[AccuracyResult]:
    """``cases``: (backend, precision) pairs, e.g. ``[("eager", "fp32"), ("openvino", "bf16")]``
    (:func:`case_predictor`: export cases share one export per precision)."""
    from ..data.registry import load_dataset
    from ..engine.inference import predict_with, score_results

    records, spec = load_dataset(dataset)
    out = []
    for backend, precision in cases:
        predictor = case_predictor(weights, backend, precision, work_dir, threads, calibration,
                                   calibration_images)
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
