"""`amanet doctor`: the report's facts (versions, op library, CPU, optional pieces with a hint
when missing), the GPU-arch rule, and `import amanet._C` as a process's first import."""
from __future__ import annotations

import json
import subprocess
import sys

from amanet.cli import main
from amanet.doctor import OPTIONAL, _arch_list, collect, format_report, runs_on


def test_arch_rule():
    archs = _arch_list("cpu+cuda13.0(sm_75,sm_80,sm_86,sm_89,sm_90)")
    assert archs == ["sm_75", "sm_80", "sm_86", "sm_89", "sm_90"]
    assert runs_on(archs, 8, 6) and runs_on(archs, 8, 7)      # sm_86 image runs on 8.7
    assert runs_on(archs, 9, 0)
    assert not runs_on(archs, 10, 0) and not runs_on(archs, 12, 0)   # Blackwell: no image
    assert not runs_on(["sm_80"], 7, 5)
    assert runs_on(["sm_90", "compute_90"], 12, 0)                   # PTX JIT-compiles up
    assert not runs_on(["compute_90"], 8, 9)
    assert _arch_list("cpu") == []


def test_report_states_what_this_install_has():
    import torch

    r = collect()
    assert r["torch"] == torch.__version__
    assert r["op_library"]["built"] is True
    assert set(r["op_library"]["ops"]) == {"roi_align", "nms", "iuv_paste",
                                           "adaptive_aggregation", "uv_interp_loss"}
    assert r["gpus"] == ([] if not torch.cuda.is_available() else r["gpus"])
    assert r["cpu"]["cores"] >= 1 and isinstance(r["cpu"]["isa"], list)
    assert set(r["optional"]) == set(OPTIONAL)
    for name, o in r["optional"].items():
        if o["available"]:
            assert "hint" not in o
        else:
            assert o["hint"].startswith("pip install "), o
    assert r["optional"]["onnxruntime"]["available"]
    assert "CPUExecutionProvider" in r["optional"]["onnxruntime"]["providers"]
    assert "CPU" in r["optional"]["openvino"]["devices"]
    text = format_report(r)
    assert f"torch {torch.__version__}" in text and "op library: cpu" in text
    assert "ISA:" in text and "int8 on this CPU: " in text


def test_int8_line_follows_the_isa():
    from amanet.doctor import int8_speed

    assert int8_speed({"amx_int8", "avx512_vnni"}) == "AMX-INT8 (fast)"
    assert int8_speed({"avx512f", "avx512_vnni"}).startswith("VNNI (an int8 conv ran 3.5x")
    assert int8_speed({"avx2", "avx_vnni"}).startswith("VNNI")
    assert int8_speed({"avx2", "fma"}).startswith("no VNNI (not measured")


def test_missing_pieces_are_named_with_their_install_line(monkeypatch):
    import importlib

    real = importlib.import_module

    def no_openvino(name, *a, **k):
        if name == "openvino":
            raise ModuleNotFoundError("No module named 'openvino'")
        return real(name, *a, **k)

    monkeypatch.setattr(importlib, "import_module", no_openvino)
    text = format_report(collect())
    line = next(x for x in text.splitlines() if x.startswith("openvino"))
    assert line.startswith("openvino: no") and "pip install openvino" in line


def test_cli_text_and_json(capsys):
    assert main(["doctor"]) == 0
    assert "op library:" in capsys.readouterr().out
    assert main(["doctor", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["op_library"]["built"] is True


def test_the_op_library_imports_first_in_a_fresh_process():
    """``import amanet._C`` before torch used to fail with "libc10.so: cannot open shared
    object file"."""
    r = subprocess.run([sys.executable, "-c", "import amanet._C, torch; "
                        "print(torch.ops.amanet.build_info())"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("cpu")
