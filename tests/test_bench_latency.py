"""bench/latency.py runs in its short mode (so it cannot rot) and writes its three reports."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from amanet.ops.library import load_library

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(not load_library() or not hasattr(torch.ops.amanet, "nms"),
                    reason="amanet._C with roi_align/nms is not built")
def test_latency_quick_mode(tmp_path):
    out = tmp_path / "bench"
    res = subprocess.run([sys.executable, str(ROOT / "bench" / "latency.py"), "--quick",
                          "--families", "s1x", "--backends", "eager", "torchscript",
                          "onnxruntime", "openvino", "--precisions", "fp32", "bf16", "int8",
                          "--out", str(out)],
                         capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stderr[-3000:]
    doc = json.loads((out / "latency.json").read_text())
    assert doc["meta"]["malloc"] in ("retained", "unsupported")  # the Predictor's memory policy
    cases = {(r["case"]["backend"], r["case"]["precision"]) for r in doc["results"]}
    # each backend runs the precisions it can; ONNX Runtime has no bf16 row, int8 is ONNX only
    assert cases == {("eager", "fp32"), ("eager", "bf16"), ("torchscript", "fp32"),
                     ("torchscript", "bf16"), ("onnxruntime", "fp32"), ("openvino", "fp32"),
                     ("openvino", "bf16"), ("onnxruntime", "int8"), ("openvino", "int8")}
    for r in doc["results"]:
        assert r["median_ms"] > 0 and r["detections_found"] == r["case"]["detections"]
        assert r["gflops"] > 0
    eager = [r for r in doc["results"] if r["case"]["backend"] == "eager"][0]
    assert set(eager["stages_ms"]) == {"backbone", "rpn", "box_head", "densepose", "postprocess"}
    assert eager["stage_gflops"]["backbone"] > 0
    peak = doc["meta"]["conv_peak_tflops"]
    assert peak["fp32"] > 0 and peak["bf16"] > 0 and peak["int8"] > 0
    assert doc["meta"]["cpu"]["model"] and isinstance(doc["meta"]["cpu"]["isa"], list)
    assert (out / "latency.png").stat().st_size > 1000
    table = (out / "latency.md").read_text()
    assert table.startswith("CPU: ")
    assert "| s1x | openvino | bf16 |" in table and "| s1x | eager | fp32 |" in table
    assert "| s1x | openvino | int8 |" in table and "int8 (OpenVINO)" in table
    eager_row = [line for line in table.splitlines() if "| s1x | eager | fp32 |" in line][0]
    assert "| 1.00x |" in eager_row  # the reference row's ratio to itself
    cmp = subprocess.run([sys.executable, str(ROOT / "bench" / "latency.py"), "--quick",
                          "--families", "s1x", "--backends", "eager", "--out",
                          str(tmp_path / "b2"), "--compare", str(out / "latency.json")],
                         capture_output=True, text=True, timeout=600)
    assert cmp.returncode == 0, cmp.stderr[-2000:]
    assert "other/this" in cmp.stdout


@pytest.mark.parametrize("args,msg", [(["--precisions", "fp16"], "needs --device cuda"),
                                      (["--device", "cuda"], "no CUDA device")])
def test_cases_this_machine_cannot_run_are_one_line(tmp_path, capsys, monkeypatch, args, msg):
    from amanet.cli import main

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)   # as on a CPU-only machine
    assert main(["bench", "--quick", "--out", str(tmp_path), *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and msg in err[0], err
