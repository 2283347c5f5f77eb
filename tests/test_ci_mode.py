"""CI honesty: `.ci/run` exports CI=true, CI is parsed in one place, and under CI a skip whose
reason is not on the allowlist fails the run (an allowed one does not)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from ci_mode import allowed_skip, under_ci

TESTS = Path(__file__).resolve().parent


def test_ci_run_exports_ci():
    text = (TESTS.parent / ".ci" / "run").read_text()
    assert "export CI=true" in text and "make test" in text


@pytest.mark.parametrize("value,want", [("true", True), ("TRUE", True), ("1", True),
                                        ("yes", True), ("", False), ("false", False),
                                        ("0", False)])
def test_ci_parsing(monkeypatch, value, want):
    monkeypatch.setenv("CI", value)
    assert under_ci() is want


def test_allowlist():
    assert allowed_skip("no CUDA device: the CUDA kernels are compiled but cannot run here")
    assert allowed_skip("TensorRT not installed / no GPU")
    assert not allowed_skip("parity fixture 'd2_s1x' not found at /x")
    assert not allowed_skip("OpenCV C++ (libopencv-dev) is not installed")


def _run(tmp_path, reason, ci):
    (tmp_path / "test_one.py").write_text(
        "import pytest\n\n"
        f"def test_skipped():\n    pytest.skip({reason!r})\n\n"
        "def test_passes():\n    assert True\n")
    env = dict(os.environ, CI=ci, PYTHONPATH=str(TESTS))
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "ci_mode",
                           "-p", "no:cacheprovider", str(tmp_path / "test_one.py")],
                          capture_output=True, text=True, env=env, cwd=tmp_path)


def test_a_disallowed_skip_fails_ci(tmp_path):
    r = _run(tmp_path, "some tool is missing", "true")
    assert r.returncode == 1, r.stdout + r.stderr
    assert "skip(s) with a reason CI does not allow" in r.stderr
    assert "some tool is missing" in r.stderr


def test_allowed_skips_and_local_runs_pass(tmp_path):
    assert _run(tmp_path, "no CUDA device", "true").returncode == 0
    assert _run(tmp_path, "some tool is missing", "").returncode == 0
