"""amanet::adaptive_aggregation: fused CPU op vs the plain-PyTorch reference, autograd, edge
cases, input checks, TorchScript, ONNX, and the AMA head's inference path (need_gated=False)."""
from __future__ import annotations

import io
import warnings

import pytest
import torch

from amanet.ops import library
from amanet.ops.aggregation import adaptive_aggregation, adaptive_aggregation_reference

pytestmark = pytest.mark.skipif(not library.load_library(), reason="amanet._C is not built")

op = torch.ops.amanet.adaptive_aggregation if library.load_library() else None


def _inputs(n, p, c, h, w, dtype=torch.float32, seed=0, requires_grad=False):
    gen = torch.Generator().manual_seed(seed)
    f = torch.randn(n, p, c, h, w, generator=gen, dtype=dtype)
    g = torch.rand(n, p, c, generator=gen, dtype=dtype)
    return f.requires_grad_(requires_grad), g.requires_grad_(requires_grad)


# --- forward -------------------------------------------------------------------------------------

@pytest.mark.parametrize("shape", [(3, 4, 5, 6, 7), (2, 4, 64, 64, 64), (2, 1, 3, 4, 4), (1, 7, 1, 5, 3),
                                   (2, 3, 9, 1, 1)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_forward_matches_reference(shape, dtype):
    # The CPU kernel runs the shared header math in the reference's operation order (G = F * g,
    # S summed over p in order). G is always bit-exact; S too for the model's P <= 4 (torch's own
    # sum over more paths regroups the additions, so there it is equal up to rounding).
    f, g = _inputs(*shape, dtype=dtype)
    ref_g, ref_s = adaptive_aggregation_reference(f, g)
    gated, summed = op(f, g, True)
    empty, summed_only = op(f, g, False)
    assert empty.shape == (0,) and empty.dtype == dtype
    assert torch.equal(gated, ref_g) and torch.equal(summed_only, summed)
    if shape[1] <= 4:
        assert torch.equal(summed, ref_s)
    else:
        torch.testing.assert_close(summed, ref_s)


def test_dispatch_and_need_gated_contract():
    f, g = _inputs(2, 4, 3, 5, 5)
    for name in ("fused", "reference"):
        with library.backend(name):
            gated, summed = adaptive_aggregation(f, g, need_gated=False)
            assert gated.shape == (0,) and summed.shape == (2, 3, 5, 5)
            gated, summed = adaptive_aggregation(f, g)
            assert gated.shape == f.shape


def test_non_contiguous_inputs():
    f, g = _inputs(2, 4, 6, 8, 10)
    f_nc = f.permute(0, 1, 2, 4, 3).contiguous().permute(0, 1, 2, 4, 3)  # [.., H, W] transposed in memory
    g_nc = g.transpose(1, 2).contiguous().transpose(1, 2)
    big = torch.randn(2, 4, 12, 8, 20)
    f_slice = big[:, :, ::2, :, ::2]
    f_bcast = torch.randn(1, 4, 6, 8, 10).expand(2, 4, 6, 8, 10)  # stride 0 over N
    g_bcast = torch.rand(1, 4, 6).expand(2, 4, 6)
    for ff, gg in ((f_nc, g_nc), (f_slice, g), (f_bcast, g_bcast)):
        assert not ff.is_contiguous()
        ref_g, ref_s = adaptive_aggregation_reference(ff, gg)
        gated, summed = op(ff, gg, True)
        torch.testing.assert_close(gated, ref_g, rtol=0, atol=0)
        torch.testing.assert_close(summed, ref_s, rtol=0, atol=0)


@pytest.mark.parametrize("shape", [(0, 4, 8, 5, 5), (2, 4, 8, 0, 5), (2, 0, 8, 5, 5), (2, 4, 0, 5, 5)])
def test_empty_shapes(shape):
    f, g = _inputs(*shape, dtype=torch.float64, requires_grad=True)
    gated, summed = op(f, g, True)
    ref_g, ref_s = adaptive_aggregation_reference(f, g)
    assert gated.shape == ref_g.shape and torch.equal(summed, ref_s)
    (summed.sum() + gated.sum()).backward()
    assert f.grad.shape == f.shape and g.grad.shape == g.shape
    assert torch.all(g.grad == 0)


# --- backward ------------------------------------------------------------------------------------

@pytest.mark.parametrize("need_gated", [True, False])
def test_gradcheck_float64(need_gated):
    f, g = _inputs(2, 3, 4, 3, 5, dtype=torch.float64, requires_grad=True)
    if need_gated:
        assert torch.autograd.gradcheck(lambda a, b: op(a, b, True), (f, g))
        assert torch.autograd.gradcheck(lambda a, b: op(a, b, True)[0], (f, g))  # dG only
    assert torch.autograd.gradcheck(lambda a, b: op(a, b, need_gated)[1], (f, g))  # dS only


@pytest.mark.parametrize("which", ["summed", "gated", "both"])
def test_backward_float32_realistic_vs_reference(which):
    f, g = _inputs(2, 4, 64, 64, 64, requires_grad=True, seed=1)
    gen = torch.Generator().manual_seed(2)
    d_s = torch.randn(2, 64, 64, 64, generator=gen)
    d_g = torch.randn(f.shape, generator=gen)

    def run(fn):
        gated, summed = fn(f, g)
        outs, grads = [], []
        if which in ("summed", "both"):
            outs.append(summed), grads.append(d_s)
        if which in ("gated", "both"):
            outs.append(gated), grads.append(d_g)
        return torch.autograd.grad(outs, (f, g), grads)

    fused = run(lambda a, b: op(a, b, True))
    ref = run(adaptive_aggregation_reference)
    torch.testing.assert_close(fused[0], ref[0], rtol=1e-5, atol=1e-6)
    # dg sums H*W = 4096 products: compare at the scale of the sum
    scale = ref[1].abs().max().item()
    torch.testing.assert_close(fused[1], ref[1], rtol=1e-5, atol=1e-5 * scale)


def test_backward_op_direct_and_double_backward_refused():
    f, g = _inputs(2, 3, 4, 5, 5)
    d_s = torch.randn(2, 4, 5, 5)
    grad_f, grad_g = torch.ops.amanet.adaptive_aggregation_backward(None, d_s, f, g)
    torch.testing.assert_close(grad_f, g[..., None, None] * d_s[:, None])
    torch.testing.assert_close(grad_g, (f * d_s[:, None]).sum((3, 4)))
    zf, zg = torch.ops.amanet.adaptive_aggregation_backward(None, None, f, g)
    assert torch.all(zf == 0) and torch.all(zg == 0)
    fr, gr = f.clone().requires_grad_(), g.clone().requires_grad_()
    _, summed = op(fr, gr, False)
    (gf,) = torch.autograd.grad(summed.sum(), fr, create_graph=True)
    with pytest.raises(RuntimeError, match="double backward is not supported"):
        gf.sum().backward()


# --- input checks --------------------------------------------------------------------------------

@pytest.mark.parametrize("features, gates, message", [
    (torch.randn(2, 4, 3, 5), torch.rand(2, 4, 3), r"features must be \[N, P, C, H, W\]"),
    (torch.randn(2, 4, 3, 5, 5), torch.rand(2, 4), r"gates must be \[N, P, C\]"),
    (torch.randn(2, 4, 3, 5, 5), torch.rand(2, 3, 3), r"do not match features"),
    (torch.randn(2, 4, 3, 5, 5), torch.rand(2, 4, 3, dtype=torch.float64), "gates dtype Double must match"),
    (torch.randint(0, 5, (2, 4, 3, 5, 5)), torch.randint(0, 5, (2, 4, 3)), "must be a floating tensor"),
])
def test_bad_inputs_raise_clear_errors(features, gates, message):
    with pytest.raises(RuntimeError, match=message):
        op(features, gates, True)


def test_bad_gradient_shapes_raise():
    f, g = _inputs(2, 3, 4, 5, 5)
    with pytest.raises(RuntimeError, match="grad_summed .* must be"):
        torch.ops.amanet.adaptive_aggregation_backward(None, torch.randn(2, 4, 5, 4), f, g)
    with pytest.raises(RuntimeError, match="grad_gated .* must match features"):
        torch.ops.amanet.adaptive_aggregation_backward(torch.randn(2, 3, 4, 5, 4), None, f, g)


# --- TorchScript, the AMA head, ONNX -------------------------------------------------------------

class _Agg(torch.nn.Module):
    def forward(self, features: torch.Tensor, gates: torch.Tensor):
        gated, summed = torch.ops.amanet.adaptive_aggregation(features, gates, True)
        return gated * 2.0, summed


def test_torchscript_save_load_and_backward(tmp_path):
    scripted = torch.jit.script(_Agg())
    scripted.save(str(tmp_path / "agg.pt"))
    loaded = torch.jit.load(str(tmp_path / "agg.pt"))
    assert "amanet::adaptive_aggregation" in str(loaded.graph)
    f, g = _inputs(2, 4, 3, 6, 6, dtype=torch.float64, requires_grad=True)
    eager = _Agg()(f, g)
    out = loaded(f, g)
    for a, b in zip(out, eager):
        assert torch.equal(a, b)
    grads = torch.autograd.grad(out[0].sum() + (out[1] ** 2).sum(), (f, g))
    ref = torch.autograd.grad(eager[0].sum() + (eager[1] ** 2).sum(), (f, g))
    for a, b in zip(grads, ref):
        torch.testing.assert_close(a, b)


def _small_head():
    from amanet.config.schema import amanet_config
    from amanet.modeling.heads.ama import AMAHead
    cfg = amanet_config().densepose
    cfg.conv_head_dim = 8
    cfg.num_stacked_convs = 2
    torch.manual_seed(0)
    return AMAHead(cfg, in_channels=4).eval()


def _head_inputs(n):
    return [torch.randn(n, 4, s, s) for s in (8, 4, 4, 2)]


def test_ama_head_inference_path_skips_gated():
    head = _small_head()
    x = _head_inputs(3)
    with torch.no_grad():
        out, gated = head(x)
        out_inf, no_gated = head(x, return_gated=False)
        with library.backend("reference"):
            out_ref, gated_ref = head(x)
    assert no_gated == [] and len(gated) == 4
    torch.testing.assert_close(out_inf, out)
    torch.testing.assert_close(out_ref, out)
    for a, b in zip(gated, gated_ref):
        torch.testing.assert_close(a, b)


def test_ama_head_scripts_with_either_backend(tmp_path):
    x = _head_inputs(2)
    head = _small_head()
    with torch.no_grad():
        eager, _ = head(x)
    with library.backend("reference"):
        ref_scripted = torch.jit.script(head)
    fused_scripted = torch.jit.script(head)
    assert "amanet::adaptive_aggregation" not in str(ref_scripted.forward.graph)
    assert "amanet::adaptive_aggregation" in str(fused_scripted.forward.graph)
    fused_scripted.save(str(tmp_path / "head.pt"))
    loaded = torch.jit.load(str(tmp_path / "head.pt"))
    with torch.no_grad():
        for m in (ref_scripted, loaded):
            out, gated = m(x, False)
            assert gated == []
            torch.testing.assert_close(out, eager)


def test_onnx_export_matches_eager():
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    from amanet.ops.onnx_lowering import register_onnx_symbolics
    register_onnx_symbolics()
    register_onnx_symbolics()  # idempotent

    class Agg(torch.nn.Module):
        def __init__(self, need_gated):
            super().__init__()
            self.need_gated = need_gated

        def forward(self, features, gates):
            return torch.ops.amanet.adaptive_aggregation(features, gates, self.need_gated)

    f, g = _inputs(2, 4, 8, 6, 7)
    for need_gated in (True, False):
        buf = io.BytesIO()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(Agg(need_gated), (f, g), buf, dynamo=False, opset_version=17,
                              input_names=["features", "gates"], output_names=["gated", "summed"],
                              dynamic_axes={"features": {0: "n"}, "gates": {0: "n"}})
        model = onnx.load_from_string(buf.getvalue())
        onnx.checker.check_model(model, full_check=True)
        assert all(node.domain in ("", "ai.onnx") for node in model.graph.node)
        sess = ort.InferenceSession(buf.getvalue(), providers=["CPUExecutionProvider"])
        for n in (2, 3):
            ff, gg = _inputs(n, 4, 8, 6, 7, seed=n)
            gated, summed = sess.run(None, {"features": ff.numpy(), "gates": gg.numpy()})
            ref_g, ref_s = op(ff, gg, need_gated)
            torch.testing.assert_close(torch.from_numpy(summed), ref_s, rtol=1e-6, atol=1e-6)
            assert tuple(gated.shape) == tuple(ref_g.shape)
            if need_gated:
                torch.testing.assert_close(torch.from_numpy(gated), ref_g)


# --- CUDA ----------------------------------------------------------------------------------------

def _need_cuda():
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device: the CUDA kernels are compiled (test_build) but cannot run here")
    if "cuda" not in library.build_info():
        pytest.skip("amanet._C was built without CUDA kernels")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
def test_cuda_matches_cpu(dtype):
    _need_cuda()
    f, g = _inputs(2, 4, 16, 32, 32, dtype=torch.float64, requires_grad=True)
    fc = f.detach().to("cuda", dtype).requires_grad_()
    gc = g.detach().to("cuda", dtype).requires_grad_()
    gated, summed = op(fc, gc, True)
    ref_g, ref_s = adaptive_aggregation_reference(f, g)
    tol = {torch.float16: 2e-2, torch.bfloat16: 1e-1}.get(dtype, 1e-5)
    torch.testing.assert_close(summed.double().cpu(), ref_s.detach(), rtol=tol, atol=tol)
    torch.testing.assert_close(gated.double().cpu(), ref_g.detach(), rtol=tol, atol=tol)
    d_s = torch.randn_like(ref_s)
    grads = torch.autograd.grad(summed, (fc, gc), d_s.to("cuda", dtype))
    ref = torch.autograd.grad(ref_s, (f, g), d_s)
    for a, b in zip(grads, ref):
        torch.testing.assert_close(a.double().cpu(), b, rtol=tol, atol=tol * max(1.0, b.abs().max().item()))


def test_cuda_device_mismatch_raises():
    _need_cuda()
    f, g = _inputs(2, 4, 3, 5, 5)
    with pytest.raises(RuntimeError, match="gates are on cpu but features are on cuda"):
        op(f.cuda(), g, True)
