"""What would fail on first contact with a GPU (issue 14), checked on the CPU where it can be:
bad RoI / point indices are range-checked on the host by the same function on both devices (a
Python error, not a device-side assert that poisons the CUDA context); the CUDA backwards that
scatter with atomics alert under ``torch.use_deterministic_algorithms(True)`` while the CPU's
(deterministic) do not; the half / bfloat16 UV-loss backward accumulates in float. The CUDA
halves are skipped with the reason where there is no GPU (tools/gpu_check.sh runs them)."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from amanet.ops import library

pytestmark = pytest.mark.skipif(not library.load_library(), reason="amanet._C is not built")

CUDA_DIR = Path(__file__).resolve().parents[1] / "csrc" / "ops" / "cuda"
needs_cuda = pytest.mark.skipif(
    not torch.cuda.is_available() or "cuda" not in (library.build_info() or ""),
    reason="no CUDA device (or a build without CUDA kernels): tools/gpu_check.sh runs this")


def _roi_case(device="cpu", dtype=torch.float32):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 12, 12, generator=gen, dtype=dtype)
    rois = torch.tensor([[0, 1.0, 1, 9, 9], [1, 2.0, 0, 11, 7], [0, 0.5, 3, 6, 11]], dtype=dtype)
    return x.to(device), rois.to(device)


def _uv_case(device="cpu", dtype=torch.float32, n=2, k=400, size=4, seed=0):
    gen = torch.Generator().manual_seed(seed)
    u = torch.randn(n, 25, size, size, generator=gen)
    v = torch.randn(n, 25, size, size, generator=gen)
    roi = torch.randint(0, n, (k,), generator=gen)
    x = torch.rand(k, generator=gen) * size
    y = torch.rand(k, generator=gen) * size
    part = torch.randint(1, 3, (k,), generator=gen)     # few planes: many points per pixel
    tu, tv = torch.rand(k, generator=gen) * 4, torch.rand(k, generator=gen) * 4
    return [u.to(device, dtype), v.to(device, dtype)] + [t.to(device) for t in
                                                         (roi, x, y, part, tu, tv)]


@pytest.fixture
def deterministic():
    before = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    yield
    torch.use_deterministic_algorithms(before)


def _roi_backward(x, rois):
    x = x.detach().requires_grad_()
    torch.ops.amanet.roi_align(x, rois, 1.0, 3, 3, 2, True).sum().backward()
    return x.grad


def _uv_backward(u, v, *rest):
    u, v = u.detach().requires_grad_(), v.detach().requires_grad_()
    torch.ops.amanet.uv_interp_loss(u, v, *rest, 0, 1.0).backward()
    return u.grad, v.grad


# ------------------------------------------------------------------------------------- CPU side
def test_cpu_backwards_run_and_repeat_exactly_in_deterministic_mode(deterministic):
    x, rois = _roi_case()
    assert torch.equal(_roi_backward(x, rois), _roi_backward(x, rois))
    case = _uv_case()
    a, b = _uv_backward(*case), _uv_backward(*case)
    assert all(torch.equal(p, q) for p, q in zip(a, b, strict=True))


def test_index_checks_are_shared_host_checks():
    """The range checks are tensor ops run on the host before any kernel (the same functions
    on both devices): the CPU raising these errors is the CUDA path raising them too."""
    x, rois = _roi_case()
    bad = rois.clone()
    bad[2, 0] = 2
    with pytest.raises(RuntimeError, match=r"roi_align: rois\[2, 0\] = 2 is not a batch index"):
        torch.ops.amanet.roi_align(x, bad, 1.0, 3, 3, 2, True)
    u, v, roi, xs, ys, part, tu, tv = _uv_case()
    roi = roi.clone()
    roi[7] = 5
    with pytest.raises(RuntimeError, match=r"uv_interp_loss: roi_index\[7\] = 5 is out of range"):
        torch.ops.amanet.uv_interp_loss(u, v, roi, xs, ys, part, tu, tv, 0, 1.0)
    sources = {f.name: f.read_text() for f in CUDA_DIR.glob("*.cu")}
    assert len(re.findall(r"check_batch_indices\(", sources["roi_align.cu"])) == 2
    assert len(re.findall(r"check_point_indices\(", sources["uv_interp_loss.cu"])) == 2


def test_every_cuda_kernel_file_with_atomics_alerts_nondeterminism():
    users = [f for f in CUDA_DIR.glob("*.cu") if re.search(r"\b(gpu)?[aA]tomicAdd\(", f.read_text())]
    assert {f.name for f in users} >= {"roi_align.cu", "uv_interp_loss.cu"}
    for f in users:
        assert "alertNotDeterministic(" in f.read_text(), f"{f.name} scatters with atomics"


# ------------------------------------------------------------------------------------ CUDA side
@needs_cuda
def test_cuda_bad_indices_raise_and_leave_the_context_usable():
    x, rois = _roi_case("cuda")
    bad = rois.clone()
    bad[1, 0] = -3
    with pytest.raises(RuntimeError, match=r"rois\[1, 0\] = -3 is not a batch index"):
        torch.ops.amanet.roi_align(x, bad, 1.0, 3, 3, 2, True)
    u, v, roi, xs, ys, part, tu, tv = _uv_case("cuda")
    part = part.clone()
    part[3] = 25
    with pytest.raises(RuntimeError, match=r"part\[3\] = 25 is out of range \[0, 25\)"):
        torch.ops.amanet.uv_interp_loss(u, v, roi, xs, ys, part, tu, tv, 0, 1.0)
    # a device-side assert would make every later CUDA call fail: this one must work
    out = torch.ops.amanet.roi_align(x, rois, 1.0, 3, 3, 2, True)
    torch.cuda.synchronize()
    cpu = torch.ops.amanet.roi_align(x.cpu(), rois.cpu(), 1.0, 3, 3, 2, True)
    torch.testing.assert_close(out.cpu(), cpu, rtol=1e-5, atol=1e-6)


@needs_cuda
def test_cuda_atomic_backwards_alert_in_deterministic_mode(deterministic):
    x, rois = _roi_case("cuda")
    with pytest.raises(RuntimeError, match="roi_align_backward \\(CUDA\\) does not have a "
                                           "deterministic implementation"):
        _roi_backward(x, rois)
    with pytest.raises(RuntimeError, match="uv_interp_loss_backward \\(CUDA\\) does not have a "
                                           "deterministic implementation"):
        _uv_backward(*_uv_case("cuda"))


@needs_cuda
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_cuda_reduced_precision_uv_backward_accumulates_in_float(dtype):
    """~50 points per pixel: 16-bit atomics would round every partial sum; float accumulation
    rounds once, so the result is CPU float32's on the same rounded inputs to ~one ulp."""
    case = _uv_case("cuda", dtype, k=4000)
    got = _uv_backward(*case)
    ref_case = [t.cpu().float() if t.is_floating_point() and t.dim() == 4 else t.cpu()
                for t in case]
    ref = _uv_backward(*ref_case)
    eps = torch.finfo(dtype).eps
    for g, r in zip(got, ref, strict=True):
        assert g.dtype == dtype
        torch.testing.assert_close(g.cpu().float(), r, rtol=2 * eps,
                                   atol=2 * eps * r.abs().max().item())
