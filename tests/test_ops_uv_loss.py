"""amanet::uv_interp_loss: fused CPU op vs the unfused reference and vs independent transcriptions
of the AMANet and Detectron2 point rules; autograd, edge cases, input checks, TorchScript, ONNX."""
from __future__ import annotations

import io
import math
import warnings

import pytest
import torch
import torch.nn.functional as F

from amanet.ops import library
from amanet.ops.uv_loss import MODE_AMANET, MODE_DETECTRON2, uv_interp_loss, uv_interp_loss_reference

pytestmark = pytest.mark.skipif(not library.load_library(), reason="amanet._C is not built")

op = torch.ops.amanet.uv_interp_loss if library.load_library() else None


def _case(n=3, k=60, size=8, lo=-2.0, hi=None, dtype=torch.float64, seed=0, channels=25):
    gen = torch.Generator().manual_seed(seed)
    hi = size + 2.0 if hi is None else hi
    u = torch.randn(n, channels, size, size, generator=gen, dtype=dtype)
    v = torch.randn(n, channels, size, size, generator=gen, dtype=dtype)
    roi = torch.randint(0, max(n, 1), (k,), generator=gen)
    x = torch.rand(k, generator=gen, dtype=dtype) * (hi - lo) + lo
    y = torch.rand(k, generator=gen, dtype=dtype) * (hi - lo) + lo
    part = torch.randint(0, channels, (k,), generator=gen)
    tu = torch.rand(k, generator=gen, dtype=dtype)
    tv = torch.rand(k, generator=gen, dtype=dtype)
    return u, v, roi, x, y, part, tu, tv


def _grads(fn, u, v, *rest, mode, beta):
    u = u.detach().requires_grad_()
    v = v.detach().requires_grad_()
    loss = fn(u, v, *rest, mode, beta)
    return (loss.detach(), *torch.autograd.grad(loss, (u, v)))


# --- independent oracles: one point at a time, straight from the published rules ---------------

def _sl1(d, beta):
    d = abs(d)
    return d if beta == 0 else (0.5 * d * d / beta if d < beta else d - 0.5 * beta)


def _amanet_oracle(u, v, roi, x, y, part, tu, tv, beta):
    """DESIGN.md §3: lo = clamp(floor g, 0, S-1), hi = min(lo+1, S-1), w = min(hi, g) - lo."""
    size_h, size_w = u.shape[2], u.shape[3]

    def axis(g, size):
        lo = min(max(math.floor(g), 0), size - 1)
        hi = min(lo + 1, size - 1)
        return lo, hi, min(hi, g) - lo

    total = 0.0
    for k in range(len(roi)):
        if part[k] <= 0:
            continue
        xl, xh, wx = axis(float(x[k]), size_w)
        yl, yh, wy = axis(float(y[k]), size_h)
        for z, t in ((u, tu), (v, tv)):
            p = z[roi[k], part[k]]
            est = (p[yl, xl] * (1 - wx) * (1 - wy) + p[yl, xh] * wx * (1 - wy)
                   + p[yh, xl] * (1 - wx) * wy + p[yh, xh] * wx * wy)
            total += _sl1(float(est) - float(t[k]), beta)
    return total


def _detectron2_loss(u, v, point_roi, x_norm, y_norm, part, tu, tv, boxes_gt, boxes_est):
    """A transcription of Detectron2 DensePose's BilinearInterpolationHelper.from_matches /
    extract_at_points / _linear_interpolation_utilities and the chart UV loss (smooth_l1, sum,
    beta 1, points with j_valid and a part > 0)."""
    zh, zw = u.shape[2], u.shape[3]

    def lin(v_norm, v0_src, size_src, v0_dst, size_dst, size_z):
        vv = v0_src + v_norm * size_src / 256.0
        j_valid = (vv - v0_dst >= 0) * (vv - v0_dst < size_dst)
        v_grid = (vv - v0_dst) * size_z / size_dst
        v_lo = v_grid.floor().long().clamp(min=0, max=size_z - 1)
        v_hi = (v_lo + 1).clamp(max=size_z - 1)
        v_grid = torch.min(v_hi.to(v_grid.dtype), v_grid)
        v_w = v_grid - v_lo.to(v_grid.dtype)
        return v_lo, v_hi, v_w, j_valid

    x0g, y0g, wg, hg = boxes_gt[point_roi].unbind(1)
    x0e, y0e, we, he = boxes_est[point_roi].unbind(1)
    x_lo, x_hi, x_w, jx = lin(x_norm, x0g, wg, x0e, we, zw)
    y_lo, y_hi, y_w, jy = lin(y_norm, y0g, hg, y0e, he, zh)
    j_valid_fg = jx * jy * (part > 0)

    def extract(z):
        return (z[point_roi, part, y_lo, x_lo] * (1.0 - x_w) * (1.0 - y_w)
                + z[point_roi, part, y_lo, x_hi] * x_w * (1.0 - y_w)
                + z[point_roi, part, y_hi, x_lo] * (1.0 - x_w) * y_w
                + z[point_roi, part, y_hi, x_hi] * x_w * y_w)

    return (F.smooth_l1_loss(extract(u)[j_valid_fg], tu[j_valid_fg], reduction="sum")
            + F.smooth_l1_loss(extract(v)[j_valid_fg], tv[j_valid_fg], reduction="sum"))


@pytest.mark.parametrize("beta", [1.0, 0.0, 0.3])
def test_amanet_mode_matches_rule_oracle(beta):
    case = _case(k=80, lo=-3.0, hi=11.0)
    expected = _amanet_oracle(*case, beta)
    assert abs(op(*case, MODE_AMANET, beta).item() - expected) <= 1e-9 * max(1.0, expected)
    assert abs(uv_interp_loss_reference(*case, MODE_AMANET, beta).item() - expected) <= 1e-9 * max(1.0, expected)


def test_detectron2_mode_matches_detectron2_formulation():
    gen = torch.Generator().manual_seed(3)
    n, k, size = 4, 300, 12
    u = torch.randn(n, 25, size, size, generator=gen, dtype=torch.float64)
    v = torch.randn(n, 25, size, size, generator=gen, dtype=torch.float64)
    xy = torch.rand(n, 2, generator=gen, dtype=torch.float64) * 50
    wh = torch.rand(n, 2, generator=gen, dtype=torch.float64) * 40 + 10
    boxes_gt = torch.cat([xy, wh], 1)
    # proposals overlap their GT boxes partly, so some points fall outside (j_valid = 0)
    boxes_est = torch.cat([xy + (torch.rand(n, 2, generator=gen, dtype=torch.float64) - 0.5) * 20,
                           wh * (0.6 + 0.8 * torch.rand(n, 2, generator=gen, dtype=torch.float64))], 1)
    roi = torch.randint(0, n, (k,), generator=gen)
    x_norm = torch.rand(k, generator=gen, dtype=torch.float64) * 256
    y_norm = torch.rand(k, generator=gen, dtype=torch.float64) * 256
    part = torch.randint(0, 25, (k,), generator=gen)
    tu = torch.rand(k, generator=gen, dtype=torch.float64)
    tv = torch.rand(k, generator=gen, dtype=torch.float64)
    expected = _detectron2_loss(u, v, roi, x_norm, y_norm, part, tu, tv, boxes_gt, boxes_est)
    # the op's input: grid coordinates in the estimated box, g = (px - x0_est) * S / w_est
    px = boxes_gt[roi, 0] + x_norm * boxes_gt[roi, 2] / 256.0
    py = boxes_gt[roi, 1] + y_norm * boxes_gt[roi, 3] / 256.0
    gx = (px - boxes_est[roi, 0]) * size / boxes_est[roi, 2]
    gy = (py - boxes_est[roi, 1]) * size / boxes_est[roi, 3]
    outside = ((gx < 0) | (gx >= size) | (gy < 0) | (gy >= size)).sum().item()
    assert 20 < outside < k - 20  # the case exercises j_valid
    got = op(u, v, roi, gx, gy, part, tu, tv, MODE_DETECTRON2, 1.0)
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)
    # mode 0 keeps the outside points, so it differs here
    assert abs(op(u, v, roi, gx, gy, part, tu, tv, MODE_AMANET, 1.0).item() - expected.item()) > 1e-3


# --- fused vs reference --------------------------------------------------------------------------

@pytest.mark.parametrize("mode", [MODE_AMANET, MODE_DETECTRON2])
@pytest.mark.parametrize("beta", [1.0, 0.0, 0.25])
def test_gradcheck_float64(mode, beta):
    u, v, *rest = _case(n=2, k=30, size=5)
    u.requires_grad_()
    v.requires_grad_()
    assert torch.autograd.gradcheck(lambda a, b: op(a, b, *rest, mode, beta), (u, v))


@pytest.mark.parametrize("mode", [MODE_AMANET, MODE_DETECTRON2])
def test_float32_realistic_vs_reference(mode):
    # 32 RoIs x 196 points on 64x64 maps, coordinates spilling over the grid on every side
    case = _case(n=32, k=32 * 196, size=64, lo=-4.0, hi=68.0, dtype=torch.float32, seed=5)
    fused = _grads(op, *case, mode=mode, beta=1.0)
    ref = _grads(uv_interp_loss_reference, *case, mode=mode, beta=1.0)
    torch.testing.assert_close(fused[0], ref[0], rtol=1e-5, atol=1e-5)
    for a, b in zip(fused[1:], ref[1:]):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_dispatching_wrapper_follows_backend():
    case = _case()
    with library.backend("fused"):
        fused = uv_interp_loss(*case, mode=MODE_DETECTRON2, beta=0.5)
    with library.backend("reference"):
        ref = uv_interp_loss(*case, mode=MODE_DETECTRON2, beta=0.5)
    torch.testing.assert_close(fused, ref, rtol=1e-12, atol=1e-12)


# --- edge cases ----------------------------------------------------------------------------------

@pytest.mark.parametrize("n", [3, 0])
def test_zero_points_and_zero_rois(n):
    u, v, roi, x, y, part, tu, tv = _case(n=n, k=0)
    for mode in (MODE_AMANET, MODE_DETECTRON2):
        fused = _grads(op, u, v, roi, x, y, part, tu, tv, mode=mode, beta=1.0)
        ref = _grads(uv_interp_loss_reference, u, v, roi, x, y, part, tu, tv, mode=mode, beta=1.0)
        assert fused[0].item() == 0.0 and ref[0].item() == 0.0
        assert fused[1].shape == u.shape and torch.all(fused[1] == 0) and torch.all(fused[2] == 0)


def test_points_on_every_border_and_outside():
    size = 6
    edge = [0.0, -0.0, 1e-7, 0.5, size - 1.0, size - 1.0 + 1e-6, size - 0.5, float(size), size + 1e-4,
            -1e-6, -0.5, -3.7, size + 2.3, 100.0, -100.0, 2.0, 3.999999]
    xs, ys = torch.meshgrid(torch.tensor(edge, dtype=torch.float64), torch.tensor(edge, dtype=torch.float64),
                            indexing="ij")
    k = xs.numel()
    gen = torch.Generator().manual_seed(9)
    u = torch.randn(2, 25, size, size, generator=gen, dtype=torch.float64)
    v = torch.randn(2, 25, size, size, generator=gen, dtype=torch.float64)
    roi = torch.arange(k) % 2
    part = torch.arange(k) % 24 + 1
    tu = torch.rand(k, generator=gen, dtype=torch.float64)
    tv = torch.rand(k, generator=gen, dtype=torch.float64)
    case = (u, v, roi, xs.flatten(), ys.flatten(), part, tu, tv)
    for mode in (MODE_AMANET, MODE_DETECTRON2):
        for beta in (1.0, 0.0):
            fused = _grads(op, *case, mode=mode, beta=beta)
            ref = _grads(uv_interp_loss_reference, *case, mode=mode, beta=beta)
            for a, b in zip(fused, ref):
                torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    expected = _amanet_oracle(*case, 1.0)
    assert abs(op(*case, MODE_AMANET, 1.0).item() - expected) <= 1e-9 * expected


def test_part_zero_points_are_ignored():
    u, v, roi, x, y, part, tu, tv = _case(k=100)
    part[::3] = 0
    base = _grads(op, u, v, roi, x, y, part, tu, tv, mode=MODE_AMANET, beta=1.0)
    tu2, tv2, x2 = tu.clone(), tv.clone(), x.clone()
    tu2[::3] += 7.0
    tv2[::3] -= 3.0
    x2[::3] = 1e6  # far outside: would change the loss if read
    moved = _grads(op, u, v, roi, x2, y, part, tu2, tv2, mode=MODE_AMANET, beta=1.0)
    for a, b in zip(base, moved):
        assert torch.equal(a, b)
    keep = part > 0
    only = _grads(op, u, v, roi[keep], x[keep], y[keep], part[keep], tu[keep], tv[keep], mode=MODE_AMANET,
                  beta=1.0)
    for a, b in zip(base, only):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_non_contiguous_inputs_and_mixed_coordinate_dtype():
    u, v, roi, x, y, part, tu, tv = _case(n=4, k=90, size=7, dtype=torch.float32)
    big = torch.randn(4, 50, 14, 7)
    u_nc = big[:, ::2, ::2, :]                                   # strided slice
    v_nc = v.permute(0, 1, 3, 2).contiguous().permute(0, 1, 3, 2)  # transposed memory
    v_bcast = torch.randn(1, 25, 7, 7).expand(4, 25, 7, 7)         # stride 0 over N
    pts = torch.stack([x, y, tu, tv], 1)                          # columns: non-contiguous [K]
    roi2 = torch.stack([roi, roi], 1)[:, 0]
    for uu, vv in ((u_nc, v_nc), (u, v_bcast)):
        args = (uu, vv, roi2, pts[:, 0], pts[:, 1], part, pts[:, 2], pts[:, 3])
        fused = _grads(op, *args, mode=MODE_AMANET, beta=1.0)
        ref = _grads(uv_interp_loss_reference, *[a.contiguous() for a in args], mode=MODE_AMANET, beta=1.0)
        for a, b in zip(fused, ref):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    # float64 coordinates with float32 maps are computed in float32, like the reference
    fused = op(u, v, roi, x.double(), y.double(), part, tu.double(), tv.double(), MODE_AMANET, 1.0)
    assert fused.dtype == torch.float32
    torch.testing.assert_close(fused, op(u, v, roi, x, y, part, tu, tv, MODE_AMANET, 1.0))


def test_only_the_maps_that_need_grad_get_one():
    u, v, *rest = _case()
    u.requires_grad_()
    zero = torch.zeros(()).double().expand_as(v)  # e.g. a loss that holds V at zero
    (du,) = torch.autograd.grad(op(u, zero, *rest, MODE_AMANET, 1.0), (u,))
    ref = torch.autograd.grad(uv_interp_loss_reference(u, zero, *rest, MODE_AMANET, 1.0), (u,))[0]
    torch.testing.assert_close(du, ref)
    grads = torch.ops.amanet.uv_interp_loss_backward(torch.tensor(1.0, dtype=torch.float64), u.detach(), v,
                                                     *rest, MODE_AMANET, 1.0, [True, False])
    assert grads[1] is None and grads[0].shape == u.shape


@pytest.mark.parametrize("n, size, dtype, mask", [
    (900, 7, torch.float32, (True, True)),   # 7x7 float planes: the streamed stores start unaligned
    (40, 64, torch.float64, (True, True)),
    (48, 64, torch.float32, (True, False)),  # one map alone above the streaming size
    (48, 64, torch.float32, (False, True)),
])
def test_large_gradients_are_streamed_out_exactly(n, size, dtype, mask):
    # From 8 MB of gradient on, the CPU backward builds each plane in scratch memory and streams
    # it out (planes without points: streamed zeros) instead of filling dU/dV in place.
    u, v, roi, x, y, part, tu, tv = _case(n=n, k=4000, size=size, dtype=dtype, seed=3)
    assert sum(mask) * u.numel() * u.element_size() >= 8 << 20
    grad = torch.tensor(0.7, dtype=dtype)

    def backward(u, v, roi, x, y, part, tu, tv):
        return torch.ops.amanet.uv_interp_loss_backward(grad, u, v, roi, x, y, part, tu, tv, MODE_AMANET, 1.0,
                                                        list(mask))
    big = backward(u, v, roi, x, y, part, tu, tv)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        big_1 = backward(u, v, roi, x, y, part, tu, tv)
    finally:
        torch.set_num_threads(threads)
    # the same points on the first 4 RoIs alone (kB of gradient: filled in place) give the same bits
    keep = roi < 4
    small = backward(u[:4], v[:4], roi[keep], x[keep], y[keep], part[keep], tu[keep], tv[keep])
    ref_u, ref_v = (t.detach().requires_grad_(m) for t, m in zip((u, v), mask))
    loss = 0.7 * uv_interp_loss_reference(ref_u, ref_v, roi, x, y, part, tu, tv, MODE_AMANET, 1.0)
    ref = torch.autograd.grad(loss, [t for t in (ref_u, ref_v) if t.requires_grad])
    ref = iter(ref)
    for wanted, g, g1, g_small in zip(mask, big, big_1, small):
        if not wanted:
            assert g is None
            continue
        assert torch.equal(g, g1)
        assert torch.equal(g[:4], g_small)
        torch.testing.assert_close(g, next(ref))


def test_cpu_is_deterministic_and_thread_count_independent():
    case = _case(n=8, k=5000, size=16, dtype=torch.float32, seed=11)
    threads = torch.get_num_threads()
    try:
        results = []
        for t in (1, 2, 1):
            torch.set_num_threads(t)
            results.append(_grads(op, *case, mode=MODE_AMANET, beta=1.0))
    finally:
        torch.set_num_threads(threads)
    for other in results[1:]:
        for a, b in zip(results[0], other):
            assert torch.equal(a, b)


# --- input checks --------------------------------------------------------------------------------

def _bad(**changes):
    u, v, roi, x, y, part, tu, tv = _case(n=2, k=10, size=4)
    args = dict(u=u, v=v, roi=roi, x=x, y=y, part=part, tu=tu, tv=tv, mode=0, beta=1.0)
    args.update(changes)
    return list(args.values())


@pytest.mark.parametrize("changes, message", [
    (dict(u=torch.randn(2, 25, 4)), r"u must be \[N, C, H, W\]"),
    (dict(v=torch.randn(2, 25, 4, 5, dtype=torch.float64)), "must have the shape of u"),
    (dict(v=torch.randn(2, 25, 4, 4)), "v dtype Float must match u dtype Double"),
    (dict(u=torch.randint(0, 3, (2, 25, 4, 4)), v=torch.randint(0, 3, (2, 25, 4, 4))), "u must be a floating"),
    (dict(roi=torch.zeros(10, dtype=torch.int32)), "roi_index must be int64"),
    (dict(part=torch.ones(10, dtype=torch.float64)), "part must be int64"),
    (dict(x=torch.zeros(9, dtype=torch.float64)), "x has 9 points but roi_index has 10"),
    (dict(tv=torch.zeros(10, 1, dtype=torch.float64)), r"target_v must be a 1-D tensor"),
    (dict(y=torch.zeros(10, dtype=torch.int64)), "y must be a floating tensor"),
    (dict(roi=torch.full((10,), 2)), r"roi_index\[0\] = 2 is out of range for 2 RoIs"),
    (dict(roi=torch.full((10,), -1)), r"roi_index\[0\] = -1 is out of range"),
    (dict(part=torch.full((10,), 25)), r"part\[0\] = 25 is out of range \[0, 25\)"),
    (dict(mode=2), "mode must be 0 .AMANet. or 1 .Detectron2."),
    (dict(beta=-1.0), "beta must be >= 0"),
    (dict(u=torch.zeros(2, 25, 0, 4, dtype=torch.float64), v=torch.zeros(2, 25, 0, 4, dtype=torch.float64)),
     "the grid must not be empty"),
])
def test_bad_inputs_raise_clear_errors(changes, message):
    with pytest.raises(RuntimeError, match=message):
        op(*_bad(**changes))


def test_differentiating_point_data_is_refused():
    u, v, roi, x, y, part, tu, tv = _case()
    with pytest.raises(RuntimeError, match="target_u requires grad.*differentiable in u and v only"):
        op(u, v, roi, x, y, part, tu.requires_grad_(), tv, 0, 1.0)


def test_double_backward_refused():
    u, v, *rest = _case()
    u.requires_grad_()
    (du,) = torch.autograd.grad(op(u, v, *rest, 0, 1.0), u, create_graph=True)
    with pytest.raises(RuntimeError, match="double backward is not supported"):
        du.sum().backward()


# --- TorchScript, ONNX ---------------------------------------------------------------------------

class _Loss(torch.nn.Module):
    def __init__(self, mode: int, beta: float):
        super().__init__()
        self.mode = mode
        self.beta = beta

    def forward(self, u, v, roi, x, y, part, tu, tv):
        return torch.ops.amanet.uv_interp_loss(u, v, roi, x, y, part, tu, tv, self.mode, self.beta)


def test_torchscript_save_load_and_backward(tmp_path):
    torch.jit.script(_Loss(MODE_DETECTRON2, 0.5)).save(str(tmp_path / "loss.pt"))
    loaded = torch.jit.load(str(tmp_path / "loss.pt"))
    case = _case()
    assert "amanet::uv_interp_loss" in str(loaded.graph)
    fused = _grads(lambda *a: loaded(*a[:8]), *case, mode=None, beta=None)
    ref = _grads(op, *case, mode=MODE_DETECTRON2, beta=0.5)
    for a, b in zip(fused, ref):
        assert torch.equal(a, b)


def test_onnx_export_matches_eager():
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    from amanet.ops.onnx_lowering import register_onnx_symbolics
    register_onnx_symbolics()
    names = ["u", "v", "roi", "x", "y", "part", "tu", "tv"]
    case = _case(n=3, k=50, size=8, dtype=torch.float32)
    for mode in (MODE_AMANET, MODE_DETECTRON2):
        for beta in (1.0, 0.0):
            buf = io.BytesIO()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                torch.onnx.export(_Loss(mode, beta), case, buf, dynamo=False, opset_version=17, input_names=names,
                                  dynamic_axes={n: {0: "k"} for n in names[2:]} | {"u": {0: "n"}, "v": {0: "n"}})
            model = onnx.load_from_string(buf.getvalue())
            onnx.checker.check_model(model, full_check=True)
            assert all(node.domain in ("", "ai.onnx") for node in model.graph.node)
            sess = ort.InferenceSession(buf.getvalue(), providers=["CPUExecutionProvider"])
            for other in (case, _case(n=2, k=17, size=8, dtype=torch.float32, seed=4),
                          _case(n=2, k=0, size=8, dtype=torch.float32)):
                (got,) = sess.run(None, {n: t.numpy() for n, t in zip(names, other)})
                torch.testing.assert_close(torch.from_numpy(got), op(*other, mode, beta), rtol=1e-5, atol=1e-5)


# --- CUDA ----------------------------------------------------------------------------------------

def _need_cuda():
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device: the CUDA kernels are compiled (test_build) but cannot run here")
    if "cuda" not in library.build_info():
        pytest.skip("amanet._C was built without CUDA kernels")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("mode", [MODE_AMANET, MODE_DETECTRON2])
def test_cuda_matches_cpu(dtype, mode):
    _need_cuda()
    u, v, roi, x, y, part, tu, tv = _case(n=8, k=2000, size=16, lo=-2.0, hi=18.0, dtype=torch.float64)
    cpu = _grads(op, u, v, roi, x, y, part, tu, tv, mode=mode, beta=1.0)
    cuda_args = [u.to("cuda", dtype), v.to("cuda", dtype)] + [t.cuda() for t in (roi, x, y, part, tu, tv)]
    got = _grads(op, *cuda_args, mode=mode, beta=1.0)
    tol = {torch.float16: 1e-2, torch.bfloat16: 5e-2}.get(dtype, 1e-5)
    for a, b in zip(got, cpu):
        torch.testing.assert_close(a.double().cpu(), b, rtol=tol, atol=tol * max(1.0, b.abs().max().item()))


def test_cuda_device_mismatch_raises():
    _need_cuda()
    u, v, roi, x, y, part, tu, tv = _case()
    with pytest.raises(RuntimeError, match="x is on cpu but u is on cuda"):
        op(u.cuda(), v.cuda(), roi.cuda(), x, y.cuda(), part.cuda(), tu.cuda(), tv.cuda(), 0, 1.0)
