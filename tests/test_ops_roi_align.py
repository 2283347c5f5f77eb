"""amanet::roi_align: torchvision parity (forward bit-exact, backward), autograd, input checks,
TorchScript in a torchvision-free process, ONNX RoiAlign lowering run in onnxruntime."""
import io
import os
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import pytest
import torch
import torchvision

from amanet.ops import library
from amanet.ops import roi_align as ops_roi_align
from amanet.ops import roi_align_fused, roi_align_reference

REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.skipif(not library.load_library(),
                                reason="amanet._C is not built (python setup.py build_ext --inplace)")
requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(),
                                   reason="no CUDA device: the CUDA kernels are compiled but cannot run here")


def make_rois(k, batch, height, width, scale, seed=0, dtype=torch.float32):
    """Boxes in image coordinates: inside, partly outside, fully outside and degenerate."""
    g = torch.Generator().manual_seed(seed)
    img_w, img_h = width / scale, height / scale
    x1 = torch.rand(k, generator=g) * img_w * 1.2 - 0.1 * img_w
    y1 = torch.rand(k, generator=g) * img_h * 1.2 - 0.1 * img_h
    w = torch.rand(k, generator=g) * img_w * 0.6
    h = torch.rand(k, generator=g) * img_h * 0.6
    boxes = torch.stack([x1, y1, x1 + w, y1 + h], 1)
    if k >= 6:
        boxes[0] = torch.tensor([5.0, 5.0, 5.0, 5.0])                       # zero size
        boxes[1] = torch.tensor([10.0, 10.0, 10.5, 30.0])                    # thinner than a pixel
        boxes[2] = torch.tensor([-50.0, -40.0, -20.0, -10.0])                # fully outside (top-left)
        boxes[3] = torch.tensor([img_w + 5, img_h + 5, img_w + 60, img_h + 90])  # outside (bottom-right)
        boxes[4] = torch.tensor([-8.0, -8.0, img_w + 8, img_h + 8])          # covers the whole map
        boxes[5] = torch.tensor([30.0, 20.0, 12.0, 8.0])                     # x2 < x1, y2 < y1
    idx = torch.randint(0, batch, (k, 1), generator=g).float()
    return torch.cat([idx, boxes], 1).to(dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("aligned", [False, True])
@pytest.mark.parametrize("sampling_ratio", [0, 2, -1])
def test_forward_backward_bit_exact_vs_torchvision(dtype, aligned, sampling_ratio):
    torch.manual_seed(1)
    x = torch.randn(2, 6, 23, 31, dtype=dtype)
    for scale, out in ((0.25, (7, 7)), (1.0, (5, 3))):
        rois = make_rois(40, 2, 23, 31, scale, dtype=dtype)
        xa = x.clone().requires_grad_()
        xb = x.clone().requires_grad_()
        a = torch.ops.amanet.roi_align(xa, rois, scale, out[0], out[1], sampling_ratio, aligned)
        b = torchvision.ops.roi_align(xb, rois, out, scale, sampling_ratio, aligned)
        assert a.shape == (40, 6) + out
        assert torch.equal(a, b), (a - b).abs().max()
        grad = torch.randn_like(a)
        a.backward(grad)
        b.backward(grad)
        assert torch.equal(xa.grad, xb.grad), (xa.grad - xb.grad).abs().max()


def test_wrapper_switch_and_fused_entry():
    x = torch.randn(1, 4, 16, 16)
    rois = make_rois(10, 1, 16, 16, 0.5)
    expected = torchvision.ops.roi_align(x, rois, (4, 4), 0.5, 0, True)
    for name in ("fused", "reference"):
        with library.backend(name):
            assert torch.equal(ops_roi_align(x, rois, (4, 4), 0.5, 0, True), expected)
            assert torch.equal(ops_roi_align(x, rois, 4, 0.5, 0, True), expected)  # int size
    assert torch.equal(roi_align_fused(x, rois, 4, 0.5, 0, True), expected)
    assert torch.equal(roi_align_reference(x, rois, 4, 0.5, 0, True), expected)


def test_gradcheck_float64():
    torch.manual_seed(0)
    x = torch.randn(2, 2, 7, 8, dtype=torch.float64, requires_grad=True)
    # boxes away from sample points landing exactly on pixel borders (bilinear kinks)
    rois = torch.tensor([[0, 1.3, 0.7, 5.9, 6.1], [1, -1.6, 2.2, 4.1, 8.3], [1, 0.4, 0.45, 0.6, 3.3]],
                        dtype=torch.float64)
    for aligned in (False, True):
        for sr in (0, 2):
            assert torch.autograd.gradcheck(
                lambda t: torch.ops.amanet.roi_align(t, rois, 1.0, 3, 2, sr, aligned), (x,))


def test_zero_rois():
    x = torch.randn(2, 5, 10, 12, requires_grad=True)
    rois = torch.zeros(0, 5)
    out = torch.ops.amanet.roi_align(x, rois, 0.5, 7, 6, 0, True)
    assert out.shape == (0, 5, 7, 6)
    out.sum().backward()
    assert x.grad.shape == x.shape and torch.count_nonzero(x.grad) == 0
    assert ops_roi_align(x, rois, (7, 6), 0.5, 0, True).shape == (0, 5, 7, 6)


def test_non_contiguous_inputs():
    torch.manual_seed(2)
    x = torch.randn(2, 20, 30, 8).permute(0, 3, 1, 2)                # [2, 8, 20, 30] strided
    xc = x.contiguous(memory_format=torch.channels_last)
    big = make_rois(30, 2, 20, 30, 0.5)
    rois = torch.cat([big, torch.zeros(30, 3)], 1)[:, :5]              # non-contiguous view
    assert not x.is_contiguous() and not rois.is_contiguous()
    expected = torchvision.ops.roi_align(x.contiguous(), rois.contiguous(), (4, 5), 0.5, 2, True)
    assert torch.equal(torch.ops.amanet.roi_align(x, rois, 0.5, 4, 5, 2, True), expected)
    assert torch.equal(torch.ops.amanet.roi_align(xc, rois, 0.5, 4, 5, 2, True), expected)
    # non-contiguous incoming gradient
    xa = x.detach().clone().requires_grad_()
    xb = x.detach().clone().requires_grad_()
    g = torch.randn(30, 8, 5, 4).transpose(2, 3)
    torch.ops.amanet.roi_align(xa, rois, 0.5, 4, 5, 2, True).backward(g)
    torchvision.ops.roi_align(xb, rois, (4, 5), 0.5, 2, True).backward(g)
    assert torch.equal(xa.grad, xb.grad)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_low_precision_cpu(dtype):
    """fp16 / bf16 maps and boxes: the kernel computes in fp32 and rounds once, so it equals
    torchvision's fp32 op on the same (rounded) inputs to half an ulp of ``dtype`` forward, and
    to one ulp (of gradients ~1) backward, where it accumulates in ``dtype``."""
    torch.manual_seed(3)
    x = torch.randn(1, 4, 16, 16).to(dtype)
    rois = make_rois(12, 1, 16, 16, 1.0).to(dtype)
    eps = torch.finfo(dtype).eps
    ref = torchvision.ops.roi_align(x.float(), rois.float(), 3, 1.0, 2, True)
    out = torch.ops.amanet.roi_align(x, rois, 1.0, 3, 3, 2, True)
    assert out.dtype == dtype
    torch.testing.assert_close(out.float(), ref, atol=1e-6, rtol=eps / 2)
    xg = x.clone().requires_grad_()
    xr = x.float().requires_grad_()
    g = torch.randn(12, 4, 3, 3).to(dtype)
    torch.ops.amanet.roi_align(xg, rois, 1.0, 3, 3, 2, True).backward(g)
    torchvision.ops.roi_align(xr, rois.float(), 3, 1.0, 2, True).backward(g.float())
    assert xg.grad.dtype == dtype
    assert xr.grad.abs().max() > 1.0          # gradients of order 1: eps is an ulp there
    torch.testing.assert_close(xg.grad.float(), xr.grad, atol=eps, rtol=eps)


def test_bad_inputs_raise_clear_errors():
    x = torch.randn(2, 3, 8, 8)
    rois = torch.tensor([[0, 1.0, 1, 5, 5]])
    op = torch.ops.amanet.roi_align
    with pytest.raises(RuntimeError, match=r"input must be a \[N, C, H, W\] tensor"):
        op(x[0], rois, 1.0, 2, 2, 0, True)
    with pytest.raises(RuntimeError, match=r"rois must be a \[K, 5\] tensor"):
        op(x, rois[:, 1:], 1.0, 2, 2, 0, True)
    with pytest.raises(RuntimeError, match=r"rois must be a \[K, 5\] tensor"):
        op(x, rois[0], 1.0, 2, 2, 0, True)
    with pytest.raises(RuntimeError, match="rois dtype Double must match the input dtype Float"):
        op(x, rois.double(), 1.0, 2, 2, 0, True)
    with pytest.raises(RuntimeError, match="input must be float32, float64, float16 or bfloat16"):
        op(x.int(), rois, 1.0, 2, 2, 0, True)
    with pytest.raises(RuntimeError, match="rois must be a floating tensor"):
        op(x, rois.long(), 1.0, 2, 2, 0, True)
    with pytest.raises(RuntimeError, match="output size must be positive"):
        op(x, rois, 1.0, 0, 2, 0, True)
    with pytest.raises(RuntimeError, match=r"rois\[0, 0\] = 2 is not a batch index"):
        op(x, torch.tensor([[2, 1.0, 1, 5, 5]]), 1.0, 2, 2, 0, True)
    with pytest.raises(RuntimeError, match="is not a batch index"):
        op(x, torch.tensor([[float("nan"), 1.0, 1, 5, 5]]), 1.0, 2, 2, 0, True)
    with pytest.raises(RuntimeError, match=r"grad must be \[K, C, pooled_height, pooled_width\]"):
        torch.ops.amanet.roi_align_backward(torch.zeros(1, 3, 2, 3), rois, 1.0, 2, 2, 2, 3, 8, 8, 0, True)


def test_double_backward_is_refused():
    x = torch.randn(1, 2, 6, 6, dtype=torch.float64, requires_grad=True)
    rois = torch.tensor([[0, 0.5, 0.5, 4.0, 4.0]], dtype=torch.float64)
    out = torch.ops.amanet.roi_align(x, rois, 1.0, 2, 2, 2, True)
    (g,) = torch.autograd.grad(out.pow(2).sum(), x, create_graph=True)
    with pytest.raises(RuntimeError, match="double backward is not supported"):
        g.sum().backward()


class _Pool(torch.nn.Module):
    def forward(self, x: torch.Tensor, rois: torch.Tensor):
        a = ops_roi_align(x, rois, (7, 7), 0.25, 0, True)
        b = ops_roi_align(x, rois, 5, 0.25, 2, False)
        return a, b


_CHILD = textwrap.dedent("""
    import sys
    import torch
    import amanet._C  # the op library only: no torchvision, no amanet.ops
    model = torch.jit.load(sys.argv[1])
    x, rois = torch.load(sys.argv[2])
    x.requires_grad_()
    outs = model(x, rois)
    sum(o.sum() for o in outs).backward()  # autograd registered in C++
    assert "torchvision" not in sys.modules, "torchvision was imported"
    assert "amanet.ops" not in sys.modules
    torch.save([o.detach() for o in outs] + [x.grad], sys.argv[3])
""")


def test_torchscript_roundtrip_without_torchvision(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scripted = torch.jit.script(_Pool())
    graph = str(scripted.inlined_graph)
    assert "amanet::roi_align" in graph and "torchvision" not in graph
    x = torch.randn(2, 4, 30, 40)
    rois = make_rois(12, 2, 30, 40, 0.25)
    scripted.save(str(tmp_path / "pool.pt"))
    torch.save((x, rois), tmp_path / "inputs.pt")
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.run([sys.executable, "-c", _CHILD, str(tmp_path / "pool.pt"),
                           str(tmp_path / "inputs.pt"), str(tmp_path / "out.pt")],
                          cwd=str(tmp_path), env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    a, b, grad = torch.load(tmp_path / "out.pt")
    xr = x.clone().requires_grad_()
    ea = torchvision.ops.roi_align(xr, rois, 7, 0.25, 0, True)
    eb = torchvision.ops.roi_align(xr, rois, 5, 0.25, 2, False)
    (ea.sum() + eb.sum()).backward()
    assert torch.equal(a, ea) and torch.equal(b, eb)
    torch.testing.assert_close(grad, xr.grad, rtol=0, atol=1e-6)


def test_scripted_graph_calls_amanet_op():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fn = torch.jit.script(ops_roi_align)
    graph = str(fn.inlined_graph)
    assert "amanet::roi_align" in graph and "torchvision" not in graph


def _export(model, args, names, dynamic_axes, opset=17):
    from amanet.ops.onnx_lowering import register_onnx_symbolics
    register_onnx_symbolics()
    f = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, args, f, opset_version=opset, dynamo=False, input_names=names,
                          output_names=["out"], dynamic_axes=dynamic_axes)
    return f.getvalue()


class _Fused(torch.nn.Module):
    def __init__(self, sampling_ratio, aligned):
        super().__init__()
        self.sampling_ratio, self.aligned = sampling_ratio, aligned

    def forward(self, x, rois):
        return roi_align_fused(x, rois, (7, 5), 0.25, self.sampling_ratio, self.aligned)


@pytest.mark.parametrize("aligned", [False, True])
@pytest.mark.parametrize("sampling_ratio", [0, 2, -1])
def test_onnx_roialign_matches_eager(aligned, sampling_ratio):
    ort = pytest.importorskip("onnxruntime")
    onnx = pytest.importorskip("onnx")
    x = torch.randn(2, 8, 30, 40)
    rois = make_rois(50, 2, 30, 40, 0.25)
    model_bytes = _export(_Fused(sampling_ratio, aligned), (x, rois), ["x", "rois"],
                          {"x": {0: "N", 2: "H", 3: "W"}, "rois": {0: "K"}})
    graph = onnx.load_from_string(model_bytes).graph
    node = [n for n in graph.node if n.op_type == "RoiAlign"][0]
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    assert attrs["coordinate_transformation_mode"] == (b"half_pixel" if aligned else b"output_half_pixel")
    assert attrs["sampling_ratio"] == max(sampling_ratio, 0)
    sess = ort.InferenceSession(model_bytes, providers=["CPUExecutionProvider"])
    for r in (rois, rois[:1], rois[:0]):  # incl. K = 0
        out = sess.run(None, {"x": x.numpy(), "rois": r.numpy()})[0]
        expected = roi_align_fused(x, r, (7, 5), 0.25, sampling_ratio, aligned)
        assert out.shape == tuple(expected.shape)
        torch.testing.assert_close(torch.from_numpy(out), expected, rtol=0, atol=1e-5)


def test_onnx_export_with_zero_rois_example_and_old_opset():
    ort = pytest.importorskip("onnxruntime")
    x = torch.randn(1, 3, 12, 12)
    model_bytes = _export(_Fused(0, True), (x, torch.zeros(0, 5)), ["x", "rois"], {"rois": {0: "K"}})
    sess = ort.InferenceSession(model_bytes, providers=["CPUExecutionProvider"])
    rois = torch.tensor([[0, 3.0, 3, 30, 40]])
    out = sess.run(None, {"x": x.numpy(), "rois": rois.numpy()})[0]
    torch.testing.assert_close(torch.from_numpy(out), roi_align_fused(x, rois, (7, 5), 0.25, 0, True),
                               rtol=0, atol=1e-5)
    # opset < 16 has no half_pixel RoiAlign: aligned=True must not be exported silently wrong
    with pytest.raises(Exception, match="needs ONNX opset >= 16"):
        _export(_Fused(0, True), (x, rois), ["x", "rois"], {"rois": {0: "K"}}, opset=13)
    _export(_Fused(0, False), (x, rois), ["x", "rois"], {"rois": {0: "K"}}, opset=13)


@requires_cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
def test_cuda_matches_cpu(dtype):
    x = torch.randn(2, 6, 23, 31)
    rois = make_rois(40, 2, 23, 31, 0.25)
    for aligned in (False, True):
        ref = torchvision.ops.roi_align(x.cuda(), rois.cuda(), 7, 0.25, 0, aligned).float().cpu()
        xc = x.to("cuda", dtype).requires_grad_()
        out = torch.ops.amanet.roi_align(xc, rois.to("cuda", dtype), 0.25, 7, 7, 0, aligned)
        tol = 1e-5 if dtype in (torch.float32, torch.float64) else 5e-2
        torch.testing.assert_close(out.float().cpu(), ref, rtol=tol, atol=tol)
        out.float().sum().backward()
        xt = x.cuda().requires_grad_()
        torchvision.ops.roi_align(xt, rois.cuda(), 7, 0.25, 0, aligned).sum().backward()
        torch.testing.assert_close(xc.grad.float().cpu(), xt.grad.cpu(), rtol=tol, atol=tol)
    assert torch.ops.amanet.roi_align(x.cuda(), torch.zeros(0, 5, device="cuda"), 1.0, 2, 2, 0,
                                      True).shape == (0, 6, 2, 2)
