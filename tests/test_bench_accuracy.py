"""bench/accuracy.py runs (so it cannot rot): a tiny synthetic set, eager fp32 vs bf16."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_accuracy_bench_runs_and_prints_the_table(tmp_path):
    env = dict(os.environ, AMANET_CACHE=str(tmp_path / "cache"))
    res = subprocess.run([sys.executable, str(ROOT / "bench" / "accuracy.py"), "--dataset",
                          "synthetic_val_6_256x384", "--cases", "eager:fp32", "eager:bf16",
                          "--out", str(tmp_path / "acc.md")],
                         capture_output=True, text=True, timeout=600, env=env)
    assert res.returncode == 0, res.stderr[-3000:]
    table = (tmp_path / "acc.md").read_text()
    assert "| backend | precision | GPS AP | GPSm AP | IoU AP | box AP | s/img |" in table
    rows = [line for line in table.splitlines() if line.startswith("| eager")]
    assert len(rows) == 2 and rows[1].startswith("| eager | bf16 |") and "(" in rows[1]
    bad = subprocess.run([sys.executable, str(ROOT / "bench" / "accuracy.py"), "--cases", "tvm"],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "is not BACKEND:PRECISION" in bad.stderr


def test_accuracy_bench_scores_an_int8_export(tmp_path):
    """The int8 case: the export calibrated on another synthetic set than the one scored."""
    env = dict(os.environ, AMANET_CACHE=str(tmp_path / "cache"))
    res = subprocess.run([sys.executable, str(ROOT / "bench" / "accuracy.py"), "--dataset",
                          "synthetic_val_4_256x384", "--cases", "eager:fp32", "openvino:int8",
                          "--calibration", "synthetic_train_3_256x384", "--calibration-images",
                          "2", "--out", str(tmp_path / "acc.md")],
                         capture_output=True, text=True, timeout=600, env=env)
    assert res.returncode == 0, res.stderr[-3000:]
    rows = [line for line in (tmp_path / "acc.md").read_text().splitlines()
            if line.startswith("| openvino")]
    assert len(rows) == 1 and rows[0].startswith("| openvino | int8 |") and "(" in rows[0]
