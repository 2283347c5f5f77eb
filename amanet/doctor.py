"""``amanet doctor``: what this install can do, in one report to paste into a bug report.

Versions (Python, torch, torchvision, CUDA), the op library (which kernels, for which GPU
architectures), the GPUs torch sees (and whether the library has a kernel for each), the
inference backends that import (ONNX Runtime and its providers, OpenVINO and its devices,
TensorRT), the video and evaluation libraries, and the CPU's model and reduced-precision ISA.
Every probe is guarded: a missing or broken piece is reported, never raised.
"""
from __future__ import annotations

import contextlib
import importlib
import platform
import re
import sys
from typing import Any, Callable, Dict, List

from .extras import OPTIONAL_MODULES

#: optional pieces: import name -> (what it is for, the pip requirement that brings it)
OPTIONAL = {name: (purpose, pip_name)
            for name, (_, purpose, pip_name, _) in OPTIONAL_MODULES.items()}


def _probe(fn: Callable[[], Any]) -> Any:
    try:
        return fn()
    except Exception as e:  # noqa: BLE001 - a report, never a crash
        return {"error": f"{type(e).__name__}: {e}".strip()}


def _torch() -> Dict[str, Any]:
    import torch
    import torchvision

    return {"torch": torch.__version__, "torchvision": torchvision.__version__,
            "cuda_build": torch.version.cuda, "cudnn": (torch.backends.cudnn.version()
                                                        if torch.backends.cudnn.is_available()
                                                        else None),
            "threads": torch.get_num_threads()}


def _arch_list(info: str) -> List[str]:
    """``"cpu+cuda13.0(sm_75,sm_80)"`` -> ``["sm_75", "sm_80"]``."""
    m = re.search(r"\(([^)]*)\)", info)
    return [a.strip() for a in m.group(1).replace(";", ",").split(",") if a.strip()] if m else []


def _ops() -> Dict[str, Any]:
    import torch

    from .ops import library

    if not library.load_library():
        return {"built": False, "error": library._load_error}
    info = library.build_info()
    ops = sorted(n for n in ("roi_align", "nms", "iuv_paste", "adaptive_aggregation",
                             "uv_interp_loss") if hasattr(torch.ops.amanet, n))
    return {"built": True, "kernels": info, "cuda": "cuda" in info,
            "cuda_archs": _arch_list(info), "ops": ops}


def runs_on(archs, major: int, minor: int) -> bool:
    """Whether a library built for ``archs`` (``sm_XY`` kernel images, ``compute_XY`` PTX) has
    code for a GPU of compute capability ``major.minor``: an ``sm_XY`` image runs on the same
    major version with a minor >= Y; PTX is compiled by the driver for any newer GPU."""
    for a in archs:
        m = re.fullmatch(r"(sm|compute)_(\d+)(\d)a?", a)
        if not m:
            continue
        a_major, a_minor = int(m.group(2)), int(m.group(3))
        if m.group(1) == "sm" and a_major == major and a_minor <= minor:
            return True
        if m.group(1) == "compute" and (a_major, a_minor) <= (major, minor):
            return True
    return False


def _gpus(ops: Dict[str, Any]) -> List[Dict[str, Any]]:
    import torch

    if not torch.cuda.is_available():
        return []
    archs = set(ops.get("cuda_archs", []))
    out = []
    for i in range(torch.cuda.device_count()):
        p = torch.cuda.get_device_properties(i)
        out.append({"index": i, "name": p.name, "capability": f"sm_{p.major}{p.minor}",
                    "memory_gib": round(p.total_memory / 2 ** 30, 1),
                    "bf16": bool(torch.cuda.is_bf16_supported()),
                    "amanet_kernels": bool(ops.get("cuda")) and runs_on(archs, p.major, p.minor)})
    return out


def _optional(name: str) -> Dict[str, Any]:
    purpose, pip_name = OPTIONAL[name]
    try:
        mod = importlib.import_module(name)
    except Exception as e:  # noqa: BLE001
        return {"available": False, "for": purpose,
                "hint": f"pip install {pip_name}  ({type(e).__name__}: {e})"}
    version = getattr(mod, "__version__", None)
    if version is None:
        from importlib.metadata import PackageNotFoundError, version as dist_version
        with contextlib.suppress(PackageNotFoundError):
            version = dist_version(pip_name)
    out: Dict[str, Any] = {"available": True, "for": purpose, "version": version}
    if name == "onnxruntime":
        out["providers"] = _probe(mod.get_available_providers)
    elif name == "openvino":
        out["devices"] = _probe(lambda: mod.Core().available_devices)
        out["version"] = _probe(mod.get_version) if out["version"] is None else out["version"]
    return out


def int8_speed(isa) -> str:
    """What an int8 export (``amanet export onnx --precision int8``) gains with these ISA flags."""
    if "amx_int8" in isa:
        return "AMX-INT8 (fast)"
    if "avx512_vnni" in isa or "avx_vnni" in isa:
        return "VNNI (an int8 conv ran 3.5x fp32, 1.7x bf16 on a Zen 4)"
    return "no VNNI (not measured on such a CPU: bench/latency.py --precisions fp32 int8)"


def _cpu() -> Dict[str, Any]:
    from .benchmarks.latency import cpu_info

    info = cpu_info()
    info["machine"] = platform.machine()
    return info


def collect() -> Dict[str, Any]:
    """The whole report as a dict (what ``amanet doctor --json`` prints)."""
    from . import __version__

    report: Dict[str, Any] = {"amanet": __version__, "python": sys.version.split()[0],
                              "platform": platform.platform()}
    report.update(_probe(_torch))
    report["op_library"] = _probe(_ops)
    ops = report["op_library"] if isinstance(report["op_library"], dict) else {}
    report["gpus"] = _probe(lambda: _gpus(ops))
    report["cpu"] = _probe(_cpu)
    report["optional"] = {name: _optional(name) for name in OPTIONAL}
    return report


def format_report(r: Dict[str, Any]) -> str:
    """The report as text, one fact per line."""
    lines = [f"amanet {r.get('amanet')}  python {r.get('python')}  {r.get('platform')}"]
    if "torch" in r:
        lines.append(f"torch {r['torch']}  torchvision {r['torchvision']}  CUDA build "
                     f"{r.get('cuda_build') or 'none (CPU-only torch)'}  cuDNN {r.get('cudnn')}"
                     f"  threads {r.get('threads')}")
    else:
        lines.append(f"torch: {r.get('error', 'not importable')}")
    ops = r.get("op_library", {})
    if ops.get("built"):
        lines.append(f"op library: {ops['kernels']}  ops: {', '.join(ops['ops'])}")
    else:
        lines.append(f"op library: NOT BUILT ({ops.get('error')}); the reference ops run instead")
    gpus = r.get("gpus")
    if isinstance(gpus, dict):
        lines.append(f"GPUs: {gpus.get('error')}")
    elif not gpus:
        lines.append("GPUs: none visible to torch")
    for g in gpus if isinstance(gpus, list) else []:
        note = "" if g["amanet_kernels"] else \
            "  (NO amanet kernel for this GPU: rebuild with its arch in AMANET_CUDA_ARCHS)"
        lines.append(f"GPU {g['index']}: {g['name']} {g['capability']} {g['memory_gib']} GiB "
                     f"bf16={g['bf16']}{note}")
    cpu = r.get("cpu", {})
    if "model" in cpu:
        lines.append(f"CPU: {cpu['model']} ({cpu.get('cores')} cores, {cpu.get('machine')}); "
                     f"ISA: {' '.join(cpu.get('isa', [])) or 'none of interest'}")
        isa = set(cpu.get("isa", []))
        lines.append("  bf16 on this CPU: " + (
            "AMX (fast)" if "amx_bf16" in isa else
            "AVX512-BF16 (about 2x fp32 on convs)" if "avx512_bf16" in isa else
            "emulated (slower than fp32: use fp32)"))
        lines.append("  int8 on this CPU: " + int8_speed(isa))
    for name, o in r.get("optional", {}).items():
        if o.get("available"):
            extra = ""
            if "providers" in o:
                extra = f"  providers: {o['providers']}"
            if "devices" in o:
                extra = f"  devices: {o['devices']}"
            lines.append(f"{name} {o.get('version')}: yes ({o['for']}){extra}")
        else:
            lines.append(f"{name}: no ({o['for']}) -> {o['hint']}")
    return "\n".join(lines)
