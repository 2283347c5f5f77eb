"""tools/gpu_check.sh: parses (bash -n) and is shellcheck-clean (shellcheck comes with `make
cpp-deps`, which `make test` runs; missing fails) and its --dry-run passes here:
every step is listed, the steps that can run without a GPU (torch, doctor, collecting the CUDA
tests, the latency benchmark's command line) do, and nothing needs the network."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "tools" / "gpu_check.sh"
STEPS = ("gpu", "torch", "build", "doctor", "cuda_tests", "sanitizer_memcheck",
         "sanitizer_racecheck", "latency", "video")


def test_script_parses_and_is_shellcheck_clean():
    assert os.access(SCRIPT, os.X_OK), "tools/gpu_check.sh must be executable"
    subprocess.run(["bash", "-n", str(SCRIPT)], check=True)
    # make test installs shellcheck (make cpp-deps), so missing it is a failure everywhere
    assert shutil.which("shellcheck"), "shellcheck is missing (make cpp-deps installs it)"
    r = subprocess.run(["shellcheck", str(SCRIPT), str(ROOT / ".ci" / "run")],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stdout


def test_dry_run_checks_every_step(tmp_path):
    env = dict(os.environ, OUT=str(tmp_path / "out"), PYTHON=sys.executable)
    r = subprocess.run(["bash", str(SCRIPT), "--dry-run"], capture_output=True, text=True,
                       env=env, cwd=tmp_path, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
    summary = (tmp_path / "out" / "summary.md").read_text()
    assert "(dry run)" in summary
    rows = {line.split("|")[1].strip(): line.split("|")[2].strip()
            for line in summary.splitlines() if line.startswith("| ") and "---" not in line}
    for step in STEPS:
        assert step in rows, (step, summary)
    for step in ("torch", "doctor", "cuda_tests", "latency", "video"):
        assert rows[step] == "pass", (step, rows[step])
    collected = (tmp_path / "out" / "cuda_tests.log").read_text()
    assert "test_cuda.py::test_cuda_fp32_equals_cpu" in collected
    assert "test_amp_training_on_cuda" in collected
    assert "test_cuda.py::test_cuda_batch_of_frames_equals_one_at_a_time" in collected
    assert "test_gpu_first_contact.py::test_cuda_atomic_backwards_alert_in_deterministic_mode" in collected


def test_unknown_argument_is_refused():
    r = subprocess.run(["bash", str(SCRIPT), "--frobnicate"], capture_output=True, text=True)
    assert r.returncode == 2 and "usage:" in r.stderr
