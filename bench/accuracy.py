#!/usr/bin/env python
"""Accuracy of each backend x precision against eager fp32 on a dataset with ground truth
(argument parsing only; the logic is in amanet/benchmarks/accuracy.py).

    .venv/bin/python bench/accuracy.py                                   # demo model, 100 images
    .venv/bin/python bench/accuracy.py --dataset synthetic_val_400_256x384
    .venv/bin/python bench/accuracy.py --cases eager:fp32 eager:bf16 openvino:bf16 --out acc.md
    .venv/bin/python bench/accuracy.py --cases eager:fp32 openvino:int8 onnxruntime:int8

Prints a markdown table: GPS / GPSm / IoU / box AP x100 per case and the difference to the
first case; --out also writes it to a file.
"""
import argparse
import logging
import sys
import tempfile
from pathlib import Path

from amanet.assets import DEMO_MODEL
from amanet.benchmarks.accuracy import markdown_table, run_accuracy

DEFAULT_CASES = ["eager:fp32", "eager:bf16", "openvino:fp32", "openvino:bf16"]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--weights", default=str(DEMO_MODEL),
                   help="a checkpoint with its config embedded (default: the bundled demo model)")
    p.add_argument("--dataset", default="synthetic_val_100_256x384",
                   help="a registered dataset with ground truth (default: the demo's held-out set)")
    p.add_argument("--cases", nargs="+", default=DEFAULT_CASES, metavar="BACKEND:PRECISION",
                   help="the first is the reference of the differences (default: %(default)s)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--calibration", nargs="+", default=["synthetic_train_32"],
                   help="int8 cases: calibration images, folders or a dataset name, apart from "
                   "--dataset (default: %(default)s)")
    p.add_argument("--calibration-images", type=int, default=32)
    p.add_argument("--out", help="also write the markdown table here")
    args = p.parse_args(argv)
    cases = []
    for c in args.cases:
        backend, _, precision = c.partition(":")
        if backend not in ("eager", "onnxruntime", "openvino") or not precision:
            p.error(f"--cases: {c!r} is not BACKEND:PRECISION with BACKEND eager, onnxruntime "
                    "or openvino")
        cases.append((backend, precision))
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory() as work:
        results = run_accuracy(args.weights, args.dataset, cases, Path(work), args.threads,
                               calibration=args.calibration,
                               calibration_images=args.calibration_images)
    text = markdown_table(results)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
