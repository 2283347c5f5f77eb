#!/usr/bin/env python
"""Fused csrc ops vs their plain-PyTorch reference (argument parsing only; the timing logic and
the case registry are in amanet/ops/benchmark.py).

    .venv/bin/python bench/ops.py                          # all groups, realistic sizes, 2 threads
    .venv/bin/python bench/ops.py --only aggregation --repeats 11
    .venv/bin/python bench/ops.py --quick --only aggregation,uv_loss   # CI smoke: tiny, 1 repeat
    AMANET_MALLOC=system .venv/bin/python bench/ops.py     # glibc default: fresh memory is faulted in
    THP_MEM_ALLOC_ENABLE=1 .venv/bin/python bench/ops.py   # torch allocations on huge pages

Prints a markdown table (median ms, speed-up, achieved GB/s against the op's byte minimum and
against memcpy measured in the same run); --out also writes it to a file.
"""
import argparse
import sys
from pathlib import Path

from amanet.ops import benchmark


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--only", default="", help=f"comma-separated groups (default: all of {sorted(benchmark.CASES)})")
    p.add_argument("--quick", action="store_true", help="tiny sizes, 1 repeat (CI smoke mode)")
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", help="also write the markdown table here")
    args = p.parse_args(argv)
    groups = [g.strip() for g in args.only.split(",") if g.strip()]
    try:
        report = benchmark.run(groups, quick=args.quick, repeats=args.repeats, warmup=args.warmup,
                               threads=args.threads)
    except ValueError as e:
        p.error(str(e))
    text = report.markdown()
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
