#!/usr/bin/env python
"""Export a model to ONNX (argument parsing only; see amanet.deploy.cli)."""
import sys

from amanet.deploy.cli import main

if __name__ == "__main__":
    sys.exit(main(["onnx"] + sys.argv[1:]))
