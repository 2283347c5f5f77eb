#!/usr/bin/env python
"""End-to-end latency per backend x image size x threads (argument parsing only).

    .venv/bin/python bench/latency.py --sizes 800x1216 --detections 5 20 --runs 10 --out bench_out
    .venv/bin/python bench/latency.py --quick --out /tmp/b      # CI: tiny sizes, 1 run
    .venv/bin/python bench/latency.py ... --compare old/latency.json

Writes latency.json, latency.md (tables) and latency.png (bar chart) into --out.
"""
import sys

from amanet.benchmarks.cli import main

if __name__ == "__main__":
    try:
        sys.exit(main())
    except ValueError as e:   # a case this machine cannot run: one line, as `amanet bench` says
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
