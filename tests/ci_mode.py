"""CI mode, read in one place: ``CI`` set to 1 / true / yes (any case) — `.ci/run` exports it.

Under CI a missing fixture or tool fails instead of skipping, and the session fails on any skip
whose reason is not on :data:`ALLOWED_SKIPS` (what this CI machine really lacks: a GPU and
TensorRT), so nothing turns into a quiet skip.
"""
from __future__ import annotations

import os
import re
import sys

#: skip reasons CI accepts (regular expressions, matched at the reason's start)
ALLOWED_SKIPS = (r"no CUDA device", r"TensorRT not installed", r"no GPU")


def under_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def allowed_skip(reason: str) -> bool:
    return any(re.match(p, reason.strip()) for p in ALLOWED_SKIPS)


_SKIPS = []


def pytest_runtest_logreport(report):
    """(pytest hook) remember every skip and its reason."""
    if report.skipped and isinstance(report.longrepr, tuple):
        _SKIPS.append((report.nodeid, str(report.longrepr[2]).removeprefix("Skipped: ")))


def pytest_sessionfinish(session, exitstatus):
    """(pytest hook) under CI, a skip whose reason is not allowed fails the run."""
    if not under_ci():
        return
    bad = [(node, why) for node, why in _SKIPS if not allowed_skip(why)]
    if bad:
        lines = "\n".join(f"  {node}: {why}" for node, why in bad)
        sys.stderr.write(f"\nCI: {len(bad)} skip(s) with a reason CI does not allow "
                         f"(tests/ci_mode.py ALLOWED_SKIPS):\n{lines}\n")
        session.exitstatus = 1
