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
    assert [(r["mode"], r["precision"], r["keyframe_interval"], r["smooth"], r["batch_size"])
            for r in rows] == [("loop", "fp32", 1, False, 1), ("amanet", "fp32", 1, False, 1),
                               ("amanet", "fp32", 2, False, 1), ("amanet", "fp32", 1, True, 1),
                               ("amanet", "fp32", 1, False, 2), ("amanet", "int8", 2, False, 1)]
    assert all(r["frames"] == 2 and r["fps"] > 0 for r in rows)
    assert rows[0]["speedup"] == 1.0 and rows[1]["speedup"] == pytest.approx(
        rows[1]["fps"] / rows[0]["fps"])
    table = (tmp_path / "video.md").read_text()
    assert table.startswith("CPU: ") and "ISA:" in table and "| loop |" in table
    assert "| every 2 | no | 1 |" in table and "| all | yes | 1 |" in table
    assert "| openvino | int8 | every 2 |" in table
    assert (tmp_path / "video.png").stat().st_size > 1000


@pytest.mark.parametrize("text,case", [("eager", ("eager", "fp32", 1, False, 1)),
                                       ("openvino:bf16", ("openvino", "bf16", 1, False, 1)),
                                       ("openvino:int8:k4", ("openvino", "int8", 4, False, 1)),
                                       ("eager:bf16:k3", ("eager", "bf16", 3, False, 1)),
                                       ("eager:bf16:smooth", ("eager", "bf16", 1, True, 1)),
                                       ("eager:bf16:b4", ("eager", "bf16", 1, False, 4)),
                                       ("eager:fp32:k6:b2", ("eager", "fp32", 6, False, 2))])
def test_case_syntax(text, case):
    assert runpy.run_path(str(ROOT / "bench" / "video.py"))["parse_case"](text) == case


@pytest.mark.parametrize("text", ["eager:bf16:3", "eager:bf16:k0", "eager:bf16:k2:x",
                                  "eager:bf16:smoothly", "eager:bf16:b0", "eager:bf16:k2:k3",
                                  "eager:bf16:bb"])
def test_bad_case_is_refused(text):
    import argparse
    with pytest.raises(argparse.ArgumentTypeError, match="backend"):
        runpy.run_path(str(ROOT / "bench" / "video.py"))["parse_case"](text)
