"""The op library is built and loaded, with CUDA kernels whenever the toolchain is present."""
from __future__ import annotations

import os
import shutil

import pytest
import torch

from amanet.ops import library


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
