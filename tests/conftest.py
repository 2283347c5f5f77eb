import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ci_mode import under_ci  # noqa: E402
# the CI skip allowlist's hooks (tests/ci_mode.py)
from ci_mode import pytest_runtest_logreport, pytest_sessionfinish  # noqa: E402,F401

torch.set_num_threads(int(os.environ.get("AMANET_TEST_THREADS", "2")))


def pytest_sessionstart(session):
    """Under CI the op library must be built: tests that skip without it must not skip there."""
    if under_ci():
        from amanet.ops.library import load_library

        ops = ("roi_align", "nms", "iuv_paste", "adaptive_aggregation", "uv_interp_loss")
        if not load_library() or not all(hasattr(torch.ops.amanet, o) for o in ops):
            raise RuntimeError("CI=true but amanet._C (with all its ops) is not built/loaded")

