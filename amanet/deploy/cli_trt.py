"""Command line of ``export/to_trt.py``: ONNX export for TensorRT, compatibility check, engine.

Without ``--check-only`` TensorRT is required and checked first, before the (slow) export:
when it is missing the command prints one ``error:`` line and exits with 2. With
``--check-only`` nothing needs TensorRT: the TensorRT-targeted ONNX (fixed
``--max-detections`` rows) is exported and checked, exit 0 when compatible, else the problems
are printed and the exit code is 1.
"""
from __future__ import annotations

import argparse
import logging
import sys
import tempfile
from pathlib import Path
from typing import List, Optional, Sequence

from ..errors import AmanetError

logger = logging.getLogger(__name__)
DEFAULT_MAX_DETECTIONS = 100


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="to_trt.py", description="Build a TensorRT 10 engine of an amanet model (via ONNX).")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--weights", help="checkpoint to export (without it and without --onnx the "
                     "weights are RANDOM: smoke tests only)")
    src.add_argument("--onnx", help="start from an existing amanet ONNX export instead")
    p.add_argument("--config", default=None, help="preset name or Detectron2-style YAML "
                   "(default: the one embedded in --weights, else amanet)")
    p.add_argument("--opts", nargs="+", default=[], metavar="KEY VALUE",
                   help="Detectron2-style config overrides")
    p.add_argument("--out", help="engine file to write (required unless --check-only); its "
                   "metadata goes to <out>.json")
    p.add_argument("--onnx-out", help="where to keep the exported ONNX (default <out>.onnx; a "
                   "temporary file with --check-only and no --out)")
    p.add_argument("--precision", choices=("fp32", "fp16", "int8"), default="fp32")
    p.add_argument("--calib-dir", help="folder of images for INT8 calibration")
    p.add_argument("--calib-cache", help="INT8 calibration cache (default <out>.calib; reused "
                   "when it exists)")
    p.add_argument("--calib-limit", type=int, default=500,
                   help="use at most this many calibration images (default 500)")
    for name in ("min", "opt", "max"):
        p.add_argument(f"--{name}-hw", type=int, nargs=2, metavar=("H", "W"),
                       help=f"{name} input size of the optimization profile (default from the "
                       "config's test resize)")
    p.add_argument("--max-detections", type=int, default=None,
                   help=f"fixed number of output rows, zero padded, + num_detections "
                   f"(default {DEFAULT_MAX_DETECTIONS}; 0 = data-dependent outputs)")
    p.add_argument("--opset", type=int, default=17)
    p.add_argument("--workspace-gb", type=float, default=4.0,
                   help="TensorRT builder workspace limit in GiB (default 4)")
    p.add_argument("--check-only", action="store_true",
                   help="export + TensorRT compatibility check only (no TensorRT needed)")
    p.add_argument("--fp16-boxes", action="store_true",
                   help="with fp16/int8, let TensorRT run box/score math in reduced precision "
                   "too (default: kept in FP32)")
    p.add_argument("--force", action="store_true",
                   help="build even if the compatibility check reports problems")
    p.add_argument("-v", "--verbose", action="store_true", help="debug + TensorRT verbose log")
    return p


def _validate(p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if not args.check_only and not args.out:
        p.error("--out ENGINE is required (unless --check-only)")
    if args.precision == "int8" and not args.check_only and not args.calib_dir:
        cache = Path(args.calib_cache) if args.calib_cache else (
            Path(args.out + ".calib") if args.out else None)
        if cache is None or not cache.is_file():
            p.error("--precision int8 needs --calib-dir (or an existing --calib-cache)")
    if args.max_detections is not None and args.max_detections < 0:
        p.error("--max-detections must be >= 0")
    if args.onnx and (args.opts or args.config):
        p.error("--config/--opts apply to a new export, not to an existing --onnx file")


def _onnx_for(args: argparse.Namespace, tmp: Optional[str]) -> Path:
    """The ONNX to check/build: --onnx as given, else a fresh export."""
    if args.onnx:   # no model code needed: the checker reads the file only
        from .tensorrt import read_onnx_metadata

        path = Path(args.onnx)
        if not path.is_file():
            raise FileNotFoundError(f"ONNX file not found: {path}")
        have = int(read_onnx_metadata(path).get("max_detections", 0))
        if args.max_detections is not None and args.max_detections != have:
            raise AmanetError(f"{path} was exported with max_detections={have}, not "
                              f"{args.max_detections}; re-export or drop --max-detections")
        return path
    from .cli import build_for_export
    from .onnx import export_onnx

    if args.onnx_out:
        path = Path(args.onnx_out)
    elif args.out:
        path = Path(args.out).with_suffix(".onnx")
    else:
        path = Path(tmp) / "model_trt.onnx"   # type: ignore[arg-type]
    model = build_for_export(args)
    m = DEFAULT_MAX_DETECTIONS if args.max_detections is None else args.max_detections
    export_onnx(model, path, args.opset, m)
    print(f"exported {path} (max_detections={m}, opset {args.opset})")
    return path


def _report(problems: List[str], path: Path, stream) -> None:
    from .tensorrt import TRT_DOC_VERSION

    print(f"TensorRT compatibility of {path}: {len(problems)} problem(s) "
          f"(rules: onnx-tensorrt operator table, TensorRT {TRT_DOC_VERSION})", file=stream)
    for pr in problems:
        print(f"  - {pr}", file=stream)


def run(args: argparse.Namespace) -> int:
    from .tensorrt import build_engine, check_trt_compatibility, require_tensorrt, side_file

    if not args.check_only:
        require_tensorrt()   # fail fast (one line) before a minute of export
    with tempfile.TemporaryDirectory(prefix="amanet_trt_") as tmp:
        onnx_path = _onnx_for(args, tmp)
        problems = check_trt_compatibility(onnx_path)
        if args.check_only:
            if problems:
                _report(problems, onnx_path, sys.stdout)
                return 1
            print(f"OK: {onnx_path} is compatible with TensorRT 10 (no problems found)")
            return 0
        if problems:
            _report(problems, onnx_path, sys.stderr)
            if not args.force:
                print("error: not building (use --force to build anyway)", file=sys.stderr)
                return 1
        engine = build_engine(onnx_path, args.out, args.precision, args.min_hw, args.opt_hw,
                              args.max_hw, args.calib_dir, args.workspace_gb, args.calib_cache,
                              args.calib_limit, args.verbose,
                              box_math_fp32=not args.fp16_boxes)
    print(f"wrote {engine} and {side_file(engine)}")
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = build_parser()
    args = p.parse_args(argv)
    _validate(p, args)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        return run(args)
    except (AmanetError, ValueError, RuntimeError, FileNotFoundError, OSError) as e:
        # TensorRTUnavailable and the other user-facing errors: one line, no traceback.
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        print(f"error: {msg}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
