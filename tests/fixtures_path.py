"""Where the shared parity fixtures live, and what a test does when they are missing.

The fixtures are not part of the repository: they sit in ``../shared/fixtures`` next to the
repo root. A missing fixture fails the test on CI (``CI=true``) and skips it elsewhere.
"""
from __future__ import annotations

from pathlib import Path

import pytest
from ci_mode import under_ci

FIXTURES_ROOT = Path(__file__).resolve().parents[1].parent / "shared" / "fixtures"


def fixture_dir(name: str) -> Path:
    """The fixture folder ``name`` (e.g. ``"ama_head"``); fails on CI / skips locally if missing."""
    path = FIXTURES_ROOT / name
    if not path.is_dir():
        reason = f"parity fixture {name!r} not found at {path}"
        if under_ci():
            pytest.fail(reason)
        pytest.skip(reason)
    return path


def make_fixture_weights(root: Path, dest: Path) -> Path:
    """Regenerate a fixture's deterministic weights into ``dest`` with its own make_weights.py."""
    import subprocess
    import sys

    subprocess.run([sys.executable, str(root / "make_weights.py"), str(dest)], check=True,
                   stdout=subprocess.DEVNULL)
    return dest
