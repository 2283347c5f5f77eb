#!/usr/bin/env python
"""Build a TensorRT engine (argument parsing and logic: amanet.deploy.cli_trt)."""
import sys
from pathlib import Path

# Run from a checkout (`python export/to_trt.py ...`) even when another amanet is installed:
# the repository root comes first on the import path.
_ROOT = str(Path(__file__).resolve().parent.parent)
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

from amanet.deploy.cli_trt import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
