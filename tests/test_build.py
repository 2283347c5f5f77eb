"""The op library is built and loaded, with CUDA kernels whenever the toolchain is present."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import torch

from amanet.ops import library

ROOT = Path(__file__).resolve().parents[1]


def test_op_library_loads():
    assert library.load_library(), "amanet._C must be built (python setup.py build_ext --inplace)"
    assert library.build_info().startswith("cpu")


@pytest.mark.skipif(os.environ.get("AMANET_CPU_ONLY", "0") not in ("", "0"),
                    reason="AMANET_CPU_ONLY build")
def test_cuda_kernels_compiled_when_toolchain_present():
    nvcc = shutil.which("nvcc") or os.path.exists("/usr/local/cuda/bin/nvcc")
    if not nvcc or torch.version.cuda is None:
        pytest.skip("no nvcc or a CPU-only torch: the CUDA kernels are not built here")
    info = library.build_info()
    assert "cuda" in info and "sm_75" in info, info


def test_backend_switch():
    with library.backend("reference"):
        assert not library.use_fused()
    with pytest.raises(ValueError):
        library.set_backend("bogus")


def test_cuda_arch_list_precedence_and_names():
    from amanet.ops.cuda_archs import DEFAULT_ARCHS, arch_names, resolve_arch_list

    assert resolve_arch_list({}) == DEFAULT_ARCHS
    assert resolve_arch_list({"TORCH_CUDA_ARCH_LIST": "8.0"}) == "8.0"   # the user's own kept
    assert resolve_arch_list({"TORCH_CUDA_ARCH_LIST": "8.0", "AMANET_CUDA_ARCHS": "9.0"}) == "9.0"
    assert arch_names(DEFAULT_ARCHS) == ["sm_75", "sm_80", "sm_86", "sm_89", "sm_90",
                                         "compute_90"]   # PTX: Blackwell JIT-compiles it
    assert arch_names("8.6 9.0a+PTX") == ["sm_86", "sm_90a", "compute_90a"]
    with pytest.raises(ValueError, match="X.Y"):
        arch_names("sm_90")


def test_setup_warns_when_torch_has_cuda_but_nvcc_is_missing(tmp_path, monkeypatch):
    """The CPU-only fallback is said out loud, not silent."""
    import contextlib
    import io
    import types

    monkeypatch.setenv("CUDA_HOME", str(tmp_path))          # no bin/nvcc there
    monkeypatch.delenv("AMANET_CPU_ONLY", raising=False)
    src = (ROOT / "setup.py").read_text()
    head = src[:src.index("\nsetup(")]                       # the helpers, not the setup() call
    mod = types.ModuleType("amanet_setup")
    mod.__file__ = str(ROOT / "setup.py")
    exec(compile(head, str(ROOT / "setup.py"), "exec"), mod.__dict__)
    fake_torch = types.SimpleNamespace(version=types.SimpleNamespace(cuda="13.0"))
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        assert mod._want_cuda(fake_torch) is False
    assert "nvcc was not found" in err.getvalue()
