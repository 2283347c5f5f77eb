"""Inference over a test set and the evaluation hook (``--eval-only`` and ``TEST.EVAL_PERIOD``).

The model runs through :class:`amanet.runtime.Predictor` (test-time resize, post-processing,
IUV charts), results are written in the seed's DensePose-COCO results format
(``inference/<dataset>/densepose_results.json``) and scored by :mod:`amanet.engine.evaluate`
(GPS / GPSm / IoU AP and box AP) when that module is available.
"""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import torch
from torch import nn

from ..config import Config

logger = logging.getLogger(__name__)

__all__ = ["predict_records", "predict_with", "evaluate_model", "evaluate_predictor",
           "make_evaluator", "evaluate_checkpoint"]


def _predictor_for(model: nn.Module, cfg: Config, precision: str = "fp32"):
    """A :class:`~amanet.runtime.Predictor` around an in-memory ``model`` (in eval mode)."""
    from ..runtime import Predictor
    from ..runtime.backends import EagerBackend

    pred = Predictor.__new__(Predictor)   # no second model: set what __init__ would
    pred.cfg = cfg.clone()
    pred.device = next(model.parameters()).device
    pred.model = model
    pred.random_weights = False
    pred.whole_image_iuv = False
    pred.backend_name = "eager"
    pred.precision = precision
    pred.backend = EagerBackend(model, pred.device, precision)
    return pred


def predict_records(model: nn.Module, cfg: Config, records: List[Dict[str, Any]],
                    progress: bool = True, precision: str = "fp32") -> List[Dict[str, Any]]:
    """DensePose-COCO result entries (the seed's format) for every record's image."""
    return predict_with(_predictor_for(model, cfg, precision), records, progress)


def predict_with(predictor, records: List[Dict[str, Any]], progress: bool = True
                 ) -> List[Dict[str, Any]]:
    """:func:`predict_records` through any :class:`~amanet.runtime.Predictor` (any backend)."""
    from tqdm import tqdm

    from .evaluate import densepose_results

    results: List[Dict[str, Any]] = []
    with torch.no_grad():
        for rec in tqdm(records, desc="inference", unit="img", disable=not progress):
            pred = predictor(rec["file_name"])
            results.extend(densepose_results(pred, rec["image_id"], category_id=1))
    return results


def score_results(gt_json: str, results: List[Dict[str, Any]]) -> Dict[str, Any]:
    """DensePose AP (GPS, GPSm with the dataset's geodesic provider; IoU always) and box AP."""
    from . import evaluate as E

    metrics: Dict[str, Any] = {}
    geodesic = E.geodesic_for_dataset(gt_json)
    modes = ("GPS", "GPSm", "IOU") if geodesic is not None else ("IOU",)
    if geodesic is None:
        logger.warning("%s: no geodesic distances (SMPL files not found): GPS / GPSm AP are "
                       "skipped, IoU AP and box AP are reported", gt_json)
    for mode in modes:
        metrics[f"densepose_{mode}"] = E.evaluate_densepose(gt_json, results, geodesic, mode)
    metrics["bbox"] = E.evaluate_boxes(gt_json, results)
    for key, value in metrics.items():
        logger.info("%-16s %s", key, E.format_metrics(value))
    return metrics


def evaluate_predictor(predictor, dataset: str, progress: bool = True) -> Dict[str, Any]:
    """Predict and score one registered dataset with ``predictor`` (any backend / precision)."""
    from ..data.registry import load_dataset

    records, spec = load_dataset(dataset)
    return score_results(spec.json_path, predict_with(predictor, records, progress))


def evaluate_model(model: nn.Module, cfg: Config, output_dir: Optional[str] = None,
                   progress: bool = True) -> Dict[str, Any]:
    """Predict and score every ``DATASETS.TEST`` set; returns ``{dataset: metrics}``."""
    from ..data.registry import load_dataset

    out_root = Path(output_dir or cfg.output_dir) / "inference"
    model.eval()
    if hasattr(model, "roi_heads"):
        model.roi_heads.fold()
    summary: Dict[str, Any] = {}
    for name in cfg.datasets.test:
        records, spec = load_dataset(name)
        t0 = time.perf_counter()
        results = predict_records(model, cfg, records, progress)
        dt = time.perf_counter() - t0
        out_dir = out_root / name
        out_dir.mkdir(parents=True, exist_ok=True)
        with open(out_dir / "densepose_results.json", "w") as f:
            json.dump(results, f)
        metrics = score_results(spec.json_path, results)
        metrics["num_images"] = len(records)
        metrics["num_detections"] = len(results)
        metrics["seconds_per_image"] = dt / max(len(records), 1)
        with open(out_dir / "metrics.json", "w") as f:
            json.dump(metrics, f, indent=1, default=_jsonable)
        logger.info("%s: %s", name, json.dumps(metrics, default=_jsonable))
        summary[name] = metrics
    return summary


def _jsonable(obj: Any) -> Any:
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if hasattr(obj, "__dict__"):
        return obj.__dict__
    return str(obj)


def make_evaluator(cfg: Config) -> Callable[[nn.Module, int], Dict[str, Any]]:
    """The trainer's hook: evaluate on ``DATASETS.TEST``, results under
    ``<OUTPUT_DIR>/inference`` (``inference_<iter>`` for periodic evaluations)."""
    def run(model: nn.Module, iteration: int) -> Dict[str, Any]:
        final = iteration + 1 >= cfg.solver.max_iter
        sub = Path(cfg.output_dir) if final else Path(cfg.output_dir) / f"eval_{iteration:07d}"
        return evaluate_model(model, cfg, str(sub), progress=False)
    return run


def evaluate_checkpoint(cfg: Config, device: str = "cpu") -> Dict[str, Any]:
    """``--eval-only``: build the model, load ``MODEL.WEIGHTS`` strictly, evaluate."""
    from ..checkpoint import load_weights
    from ..modeling.model import build_model

    if not cfg.weights:
        raise ValueError("--eval-only needs MODEL.WEIGHTS <checkpoint>")
    model = build_model(cfg).to(device)
    load_weights(model, cfg.weights)
    return evaluate_model(model, cfg)
