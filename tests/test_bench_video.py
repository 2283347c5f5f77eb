"""bench/video.py in its quick mode: the loop baseline and amanet video run on the same clip,
and the outputs (table with the CPU line, JSON, chart) are written."""
from __future__ import annotations

import json
import runpy
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_quick_run_writes_table_json_and_chart(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["video.py", "--quick", "--out", str(tmp_path)])
    with pytest.raises(SystemExit) as done:
        runpy.run_path(str(ROOT / "bench" / "video.py"), run_name="__main__")
    assert done.value.code == 0
    doc = json.loads((tmp_path / "video.json").read_text())
    rows = doc["results"]
    assert [r["mode"] for r in rows] == ["loop", "amanet"]
    assert all(r["frames"] == 2 and r["fps"] > 0 for r in rows)
    assert rows[0]["speedup"] == 1.0 and rows[1]["speedup"] == pytest.approx(
        rows[1]["fps"] / rows[0]["fps"])
    table = (tmp_path / "video.md").read_text()
    assert table.startswith("CPU: ") and "ISA:" in table and "| loop |" in table
    assert (tmp_path / "video.png").stat().st_size > 1000
