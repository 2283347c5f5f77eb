#!/usr/bin/env python
"""Temporal stability of `amanet video --smooth` on moving synthetic people, with ground truth.

    .venv/bin/python bench/temporal.py --clips 4 --frames 32 64 --out bench_temporal
    .venv/bin/python bench/temporal.py --quick --out /tmp/t          # CI smoke mode

Writes temporal.json, temporal.md (tables, CPU model) and temporal_<frames>.png (the first
clip's labels over six frames, flips in red) into --out.
"""
import argparse
import json
import logging
import platform
import sys
from pathlib import Path

from amanet.assets import DEMO_MODEL
from amanet.benchmarks import temporal as T
from amanet.benchmarks.cli import parse_size
from amanet.benchmarks.latency import cpu_info


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--weights", default=str(DEMO_MODEL),
                   help="a checkpoint with its config embedded (default: the demo model)")
    p.add_argument("--clips", type=int, default=4)
    p.add_argument("--frames", type=int, nargs="+", default=[32, 64],
                   help="frames per clip; each person's motion spans the clip, so more frames "
                   "= slower motion (32 at 30 frames/s: a brisk dance)")
    p.add_argument("--size", type=parse_size, default=(256, 256), help="HxW of the clips")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--backend", default="eager", choices=["eager", "openvino", "onnxruntime"],
                   help="how the model runs (exports are made from --weights; int8 calibrated "
                   "on synthetic_train_32)")
    p.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "int8"])
    p.add_argument("--out", default="bench_temporal")
    p.add_argument("--quick", action="store_true", help="one clip of 4 small frames")
    args = p.parse_args(argv)
    if args.quick:
        args.clips, args.frames, args.size = 1, [4], (128, 128)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    cpu = cpu_info()
    tables, runs = [], []
    for frames in args.frames:
        results = T.run_temporal(args.weights, out / f"work_{frames}", args.clips, frames,
                                 args.size, None, args.seed, args.threads,
                                 figure=out / f"temporal_{frames}.png", backend=args.backend,
                                 precision=args.precision)
        header = (f"CPU: {cpu.get('model', platform.processor())}; "
                  f"{Path(args.weights).name} ({args.backend} {args.precision}), "
                  f"{args.clips} clips x {frames} frames of "
                  f"{args.size[0]}x{args.size[1]}, world seed {args.seed}")
        tables.append(T.markdown_table(results, header))
        runs.append(T.to_json(results, {"frames": frames}))
    table = "\n\n".join(tables)
    (out / "temporal.md").write_text(table + "\n")
    (out / "temporal.json").write_text(json.dumps({"cpu": cpu, "args": vars(args), "runs": runs},
                                                  indent=1, default=str))
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
