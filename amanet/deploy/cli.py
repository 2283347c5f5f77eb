"""Command lines of ``export/to_torchscript.py`` and ``export/to_onnx.py`` (``amanet export``)."""
from __future__ import annotations

import argparse
import logging
import sys
from typing import Optional, Sequence

from ..errors import AmanetError

logger = logging.getLogger(__name__)


def add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", default=None,
                   help="preset name or Detectron2-style YAML (default: the one embedded in "
                   "--weights, else amanet)")
    p.add_argument("--weights", help="checkpoint; without it the weights are random (smoke "
                   "test exports only)")
    p.add_argument("--out", required=True, help="output file")
    p.add_argument("--max-detections", type=int, default=0,
                   help="fixed number of output rows, zero padded, + num_detections "
                   "(TensorRT style); 0 = dynamic (default)")
    p.add_argument("--opts", nargs="+", default=[], metavar="KEY VALUE",
                   help="Detectron2-style config overrides")


def build_for_export(args: argparse.Namespace):
    from ..checkpoint import config_of_checkpoint, load_weights
    from ..config import load_config, merge_overrides
    from ..modeling.model import build_model
    from ..modeling.smoke_init import smoke_init_

    cfg = None
    if args.config is None and args.weights:
        cfg = config_of_checkpoint(args.weights)
    if cfg is None:
        cfg = load_config(args.config or "amanet")
    if args.opts:
        merge_overrides(cfg, args.opts)
    model = build_model(cfg)
    if args.weights:
        load_weights(model, args.weights)
    else:
        smoke_init_(model)
        print("note: no --weights: exporting RANDOM (smoke-initialised) weights",
              file=sys.stderr)
    return model.eval()


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="amanet export",
                                description="Export the deployable graph (flat outputs)")
    sub = p.add_subparsers(dest="format", required=True)
    ts = sub.add_parser("torchscript", help="scripted module (+ amanet.json metadata)")
    add_model_args(ts)
    ts.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "fp16"],
                    help="compute precision of the convs / linear layers (bf16: CPU with "
                    "AVX512-BF16 or AMX, CUDA sm80+; fp16: CUDA); outputs stay float32")
    ox = sub.add_parser("onnx", help="ONNX with standard ops only (opset >= 17)")
    add_model_args(ox)
    ox.add_argument("--opset", type=int, default=17)
    ox.add_argument("--example-hw", type=int, nargs=2, default=(320, 480), metavar=("H", "W"))
    ox.add_argument("--static-hw", action="store_true", help="fix H, W to --example-hw")
    ox.add_argument("--precision", default="fp32", choices=["fp32", "int8"],
                    help="fp32 (default; OpenVINO also runs it in bf16), or int8: post-training "
                    "quantized convolutions and linear layers (needs --calibration); the "
                    "prediction layers, box decoding and NMS stay fp32")
    ox.add_argument("--calibration", nargs="+", metavar="IMAGES",
                    help="int8 only: images, folders of images or a dataset name "
                    "(synthetic_train_32 for the demo model) like those the model will see, "
                    "with people in them")
    ox.add_argument("--calibration-images", type=int, default=32, metavar="N",
                    help="use at most N calibration images (default 32)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        if args.format == "onnx" and (args.precision == "int8") != bool(args.calibration):
            raise ValueError("--precision int8 and --calibration IMAGES go together")
        model = build_for_export(args)
        if args.format == "torchscript":
            from .torchscript import export_torchscript
            path = export_torchscript(model, args.out, args.max_detections, args.precision)
        else:
            from .onnx import export_onnx
            images = None
            if args.precision == "int8":
                from .quantize import calibration_images
                images = calibration_images(args.calibration, model.cfg,
                                            args.calibration_images)
            path = export_onnx(model, args.out, args.opset, args.max_detections,
                               args.example_hw, args.static_hw, args.precision, images)
    except (AmanetError, ValueError, RuntimeError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {path}")
    return 0
