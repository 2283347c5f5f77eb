#!/usr/bin/env python
"""Export a model to TorchScript (argument parsing only; see amanet.deploy.cli)."""
import sys

from amanet.deploy.cli import main

if __name__ == "__main__":
    sys.exit(main(["torchscript"] + sys.argv[1:]))
