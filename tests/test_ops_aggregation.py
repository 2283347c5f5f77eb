"""amanet::adaptive_aggregation: fused CPU op vs the plain-PyTorch reference, autograd, edge
cases, input checks, TorchScript, ONNX, and the AMA head's group sums (training: G1+G2, G3+G4;
inference: none)."""
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
    # sums over p in order). G is always bit-exact; S and pair sums too for the model's P <= 4
    # (torch's own sum over more paths regroups the additions, so there it is equal up to rounding).
    f, g = _inputs(*shape, dtype=dtype)
    paths = shape[1]
    ref_g, ref_s = adaptive_aggregation_reference(f, g)
    gated, summed = op(f, g, 1)
    empty, summed_only = op(f, g, 0)
    assert empty.shape == (0,) and empty.dtype == dtype
    assert torch.equal(gated, ref_g) and torch.equal(summed_only, summed)
    if paths <= 4:
        assert torch.equal(summed, ref_s)
    else:
        torch.testing.assert_close(summed, ref_s)
    for group_size in range(2, paths + 1):
        if paths % group_size:
            continue
        groups, summed_g = op(f, g, group_size)
        ref_r, _ = adaptive_aggregation_reference(f, g, group_size)
        assert groups.shape == (shape[0], paths // group_size) + shape[2:]
        assert torch.equal(summed_g, summed)
        # the gated paths added in path order, as the published predictor writes G1 + G2: exact
        explicit = torch.stack([_ordered_sum(ref_g[:, k:k + group_size])
                                for k in range(0, paths, group_size)], 1)
        assert torch.equal(groups, explicit)
        if group_size == 2:
            assert torch.equal(groups, ref_r)
        else:  # torch's sum over more paths may regroup the additions
            torch.testing.assert_close(groups, ref_r)


def _ordered_sum(paths):
    out = paths[:, 0].clone()
    for j in range(1, paths.shape[1]):
        out = out + paths[:, j]
    return out


def test_dispatch_and_group_size_contract():
    f, g = _inputs(2, 4, 3, 5, 5)
    for name in ("fused", "reference"):
        with library.backend(name):
            none, summed = adaptive_aggregation(f, g, 0)
            assert none.shape == (0,) and summed.shape == (2, 3, 5, 5)
            gated, _ = adaptive_aggregation(f, g)
            assert gated.shape == f.shape
            pairs, _ = adaptive_aggregation(f, g, 2)
            assert pairs.shape == (2, 2, 3, 5, 5)
            torch.testing.assert_close(pairs[:, 1], gated[:, 2] + gated[:, 3])
            for bad in (3, -1, 5):
                with pytest.raises((RuntimeError, ValueError),
                                   match="group_size must be 0 .* or divide the number of paths P = 4"):
                    adaptive_aggregation(f, g, bad)


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
        gated, summed = op(ff, gg, 1)
        torch.testing.assert_close(gated, ref_g, rtol=0, atol=0)
        torch.testing.assert_close(summed, ref_s, rtol=0, atol=0)


@pytest.mark.parametrize("shape", [(0, 4, 8, 5, 5), (2, 4, 8, 0, 5), (2, 0, 8, 5, 5), (2, 4, 0, 5, 5)])
@pytest.mark.parametrize("group_size", [1, 2])
def test_empty_shapes(shape, group_size):
    if shape[1] == 0 and group_size == 2:
        group_size = 1  # P = 0: any group size divides it; 1 is enough
    f, g = _inputs(*shape, dtype=torch.float64, requires_grad=True)
    groups, summed = op(f, g, group_size)
    ref_r, ref_s = adaptive_aggregation_reference(f, g, group_size)
    assert groups.shape == ref_r.shape and torch.equal(summed, ref_s)
    (summed.sum() + groups.sum()).backward()
    assert f.grad.shape == f.shape and g.grad.shape == g.shape
    assert torch.all(g.grad == 0)


# --- backward ------------------------------------------------------------------------------------

@pytest.mark.parametrize("paths, group_size", [(3, 0), (3, 1), (3, 3), (4, 2), (6, 3)])
def test_gradcheck_float64(paths, group_size):
    f, g = _inputs(2, paths, 4, 3, 5, dtype=torch.float64, requires_grad=True)
    if group_size:
        assert torch.autograd.gradcheck(lambda a, b: op(a, b, group_size), (f, g))
        assert torch.autograd.gradcheck(lambda a, b: op(a, b, group_size)[0], (f, g))  # dR only
    assert torch.autograd.gradcheck(lambda a, b: op(a, b, group_size)[1], (f, g))  # dS only


@pytest.mark.parametrize("group_size", [1, 2])
@pytest.mark.parametrize("which", ["summed", "groups", "both"])
def test_backward_float32_realistic_vs_reference(which, group_size):
    f, g = _inputs(2, 4, 64, 64, 64, requires_grad=True, seed=1)
    gen = torch.Generator().manual_seed(2)
    d_s = torch.randn(2, 64, 64, 64, generator=gen)
    d_r = torch.randn(2, 4 // group_size, 64, 64, 64, generator=gen)

    def run(fn):
        groups, summed = fn(f, g, group_size)
        outs, grads = [], []
        if which in ("summed", "both"):
            outs.append(summed), grads.append(d_s)
        if which in ("groups", "both"):
            outs.append(groups), grads.append(d_r)
        return torch.autograd.grad(outs, (f, g), grads)

    fused = run(op)
    ref = run(adaptive_aggregation_reference)
    torch.testing.assert_close(fused[0], ref[0], rtol=1e-5, atol=1e-6)
    # dg sums H*W = 4096 products: compare at the scale of the sum
    scale = ref[1].abs().max().item()
    torch.testing.assert_close(fused[1], ref[1], rtol=1e-5, atol=1e-5 * scale)


def test_backward_op_direct_and_double_backward_refused():
    f, g = _inputs(2, 3, 4, 5, 5)
    d_s = torch.randn(2, 4, 5, 5)
    grad_f, grad_g = torch.ops.amanet.adaptive_aggregation_backward(None, d_s, f, g, 0)
    torch.testing.assert_close(grad_f, g[..., None, None] * d_s[:, None])
    torch.testing.assert_close(grad_g, (f * d_s[:, None]).sum((3, 4)))
    zf, zg = torch.ops.amanet.adaptive_aggregation_backward(None, None, f, g, 1)
    assert torch.all(zf == 0) and torch.all(zg == 0)
    fr, gr = f.clone().requires_grad_(), g.clone().requires_grad_()
    _, summed = op(fr, gr, 0)
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
        op(features, gates, 1)


def test_bad_gradient_shapes_raise():
    f, g = _inputs(2, 3, 4, 5, 5)
    backward = torch.ops.amanet.adaptive_aggregation_backward
    with pytest.raises(RuntimeError, match="grad_summed .* must be"):
        backward(None, torch.randn(2, 4, 5, 4), f, g, 1)
    with pytest.raises(RuntimeError, match=r"grad_groups .* must be \[N, P / group_size, C, H, W\] = \[2, 3, 4, 5, 5\]"):
        backward(torch.randn(2, 3, 4, 5, 4), None, f, g, 1)
    with pytest.raises(RuntimeError, match=r"grad_groups .* = \[2, 1, 4, 5, 5\]"):
        backward(torch.randn(2, 3, 4, 5, 5), None, f, g, 3)
    with pytest.raises(RuntimeError, match="grad_groups given but group_size is 0"):
        backward(torch.randn(2, 3, 4, 5, 5), None, f, g, 0)
    with pytest.raises(RuntimeError, match="group_size must be 0 .* or divide"):
        backward(None, torch.randn(2, 4, 5, 5), f, g, 2)


# --- TorchScript, the AMA head, ONNX -------------------------------------------------------------

class _Agg(torch.nn.Module):
    def forward(self, features: torch.Tensor, gates: torch.Tensor):
        pairs, summed = torch.ops.amanet.adaptive_aggregation(features, gates, 2)
        return pairs * 2.0, summed


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


def test_ama_head_stage_sums_and_inference_path():
    head = _small_head()
    x = _head_inputs(3)
    with torch.no_grad():
        out, stages = head(x)
        out_inf, no_stages = head(x, return_stages=False)
        with library.backend("reference"):
            out_ref, stages_ref = head(x)
        u = head.upsampled_paths(x)
        gated, _ = adaptive_aggregation_reference(u, head.path_gates(u), 1)
    assert no_stages == [] and len(stages) == 2
    torch.testing.assert_close(out_inf, out)
    torch.testing.assert_close(out_ref, out)
    # the stages are G1 + G2 and G3 + G4, the intermediate-supervision inputs
    torch.testing.assert_close(stages[0], gated[:, 0] + gated[:, 1])
    torch.testing.assert_close(stages[1], gated[:, 2] + gated[:, 3])
    for a, b in zip(stages, stages_ref):
        torch.testing.assert_close(a, b)


def test_ama_head_training_gradients_fused_vs_reference():
    head = _small_head().train()
    x = [t.requires_grad_() for t in _head_inputs(2)]
    gen = torch.Generator().manual_seed(5)

    def run():
        out, stages = head(x)
        loss = (out * torch.randn(out.shape, generator=gen.manual_seed(5))).sum()
        for k, s in enumerate(stages):
            loss = loss + (s * torch.randn(s.shape, generator=gen.manual_seed(6 + k))).sum()
        return torch.autograd.grad(loss, x + list(head.parameters()))

    fused = run()
    with library.backend("reference"):
        ref = run()
    for a, b in zip(fused, ref):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5 * max(1.0, b.abs().max().item()))


@pytest.mark.parametrize("n", [0, 3])
def test_ama_head_path_layout_backward_is_one_node(n):
    # U [N, 4, D, H, W] is cut out of the path-major deconv output. Slicing it would give each
    # path its own SliceBackward, which zero-fills a gradient the size of the whole batch; the
    # four paths must come from one split whose backward is a single cat.
    head = _small_head().train()
    x = [t.requires_grad_() for t in _head_inputs(n)]
    u = head.upsampled_paths(x)
    assert tuple(u.shape[:2]) == (n, 4)
    feeders = {id(fn): type(fn).__name__ for fn, _ in u.grad_fn.next_functions}
    assert len(feeders) == 1 and "Slice" not in next(iter(feeders.values())), feeders
    # and the layout is right: path p of RoI i is the deconv output row p * N + i
    with torch.no_grad():
        t = [head._tower(x[0]), head.deconv_p2(head._tower(torch.cat(x[1:3]))),
             head.deconv_p2(head.deconv_p1(head._tower(x[3])))]
        path_major = head.deconv_p3(torch.cat(t))
    torch.testing.assert_close(u.detach(), path_major.view(4, n, *path_major.shape[1:]).transpose(0, 1))


def test_ama_head_scripts_with_either_backend(tmp_path):
    x = _head_inputs(2)
    head = _small_head()
    with torch.no_grad():
        eager, eager_stages = head(x)
    with library.backend("reference"):
        ref_scripted = torch.jit.script(head)
    fused_scripted = torch.jit.script(head)
    assert "amanet::adaptive_aggregation" not in str(ref_scripted.forward.graph)
    assert "amanet::adaptive_aggregation" in str(fused_scripted.forward.graph)
    fused_scripted.save(str(tmp_path / "head.pt"))
    loaded = torch.jit.load(str(tmp_path / "head.pt"))
    with torch.no_grad():
        for m in (ref_scripted, loaded):
            out, stages = m(x, False)
            assert stages == []
            torch.testing.assert_close(out, eager)
            out, stages = m(x, True)
            torch.testing.assert_close(out, eager)
            for a, b in zip(stages, eager_stages):
                torch.testing.assert_close(a, b)


@pytest.mark.parametrize("group_size", [0, 1, 2, 4])
def test_onnx_export_matches_eager(group_size):
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    from amanet.ops.onnx_lowering import register_onnx_symbolics
    register_onnx_symbolics()
    register_onnx_symbolics()  # idempotent

    class Agg(torch.nn.Module):
        def __init__(self, group_size):
            super().__init__()
            self.group_size = group_size

        def forward(self, features, gates):
            return torch.ops.amanet.adaptive_aggregation(features, gates, self.group_size)

    f, g = _inputs(2, 4, 8, 6, 7)
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(Agg(group_size), (f, g), buf, dynamo=False, opset_version=17,
                          input_names=["features", "gates"], output_names=["groups", "summed"],
                          dynamic_axes={"features": {0: "n"}, "gates": {0: "n"}})
    model = onnx.load_from_string(buf.getvalue())
    onnx.checker.check_model(model, full_check=True)
    assert all(node.domain in ("", "ai.onnx") for node in model.graph.node)
    sess = ort.InferenceSession(buf.getvalue(), providers=["CPUExecutionProvider"])
    for n in (2, 3, 0):
        ff, gg = _inputs(n, 4, 8, 6, 7, seed=n)
        groups, summed = sess.run(None, {"features": ff.numpy(), "gates": gg.numpy()})
        ref_r, ref_s = op(ff, gg, group_size)
        torch.testing.assert_close(torch.from_numpy(summed), ref_s, rtol=1e-6, atol=1e-6)
        assert tuple(groups.shape) == tuple(ref_r.shape)
        if group_size:
            torch.testing.assert_close(torch.from_numpy(groups), ref_r, rtol=1e-6, atol=1e-6)


# --- CUDA ----------------------------------------------------------------------------------------

def _need_cuda():
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device: the CUDA kernels are compiled (test_build) but cannot run here")
    if "cuda" not in library.build_info():
        pytest.skip("amanet._C was built without CUDA kernels")


@pytest.mark.parametrize("group_size", [1, 2])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
def test_cuda_matches_cpu(dtype, group_size):
    _need_cuda()
    f, g = _inputs(2, 4, 16, 32, 32, dtype=torch.float64, requires_grad=True)
    fc = f.detach().to("cuda", dtype).requires_grad_()
    gc = g.detach().to("cuda", dtype).requires_grad_()
    groups, summed = op(fc, gc, group_size)
    ref_r, ref_s = adaptive_aggregation_reference(f, g, group_size)
    tol = {torch.float16: 2e-2, torch.bfloat16: 1e-1}.get(dtype, 1e-5)
    torch.testing.assert_close(summed.double().cpu(), ref_s.detach(), rtol=tol, atol=tol)
    torch.testing.assert_close(groups.double().cpu(), ref_r.detach(), rtol=tol, atol=tol)
    d_s, d_r = torch.randn_like(ref_s), torch.randn_like(ref_r)
    for outs, ref_outs, upstream in (((summed,), (ref_s,), (d_s,)),
                                     ((summed, groups), (ref_s, ref_r), (d_s, d_r))):
        grads = torch.autograd.grad(outs, (fc, gc), [d.to("cuda", dtype) for d in upstream])
        ref = torch.autograd.grad(ref_outs, (f, g), upstream)
        for a, b in zip(grads, ref):
            torch.testing.assert_close(a.double().cpu(), b, rtol=tol, atol=tol * max(1.0, b.abs().max().item()))


def test_cuda_device_mismatch_raises():
    _need_cuda()
    f, g = _inputs(2, 4, 3, 5, 5)
    with pytest.raises(RuntimeError, match="gates are on cpu but features are on cuda"):
        op(f.cuda(), g, 1)
