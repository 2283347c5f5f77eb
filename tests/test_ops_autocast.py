"""Autocast kernels of every amanet:: op (torch.autocast on the CPU; the CUDA registrations are
the same template, checked where a GPU exists), and the bf16 / fp16 CPU aggregation kernel.

Policy under test (csrc/ops/autocast/autocast.h): nms, roi_align, iuv_paste and the UV loss
compute in float32 from whatever dtype arrives; the aggregation op runs in the autocast dtype
with float32 accumulation. Expected values are computed independently: the same inputs widened
to float32 by hand and the op called outside autocast, or the gated sum written out in float.
"""
from __future__ import annotations

import pytest
import torch

from amanet.ops import library

pytestmark = pytest.mark.skipif(not library.load_library(), reason="amanet._C is not built")

ops = torch.ops.amanet
BF16 = torch.bfloat16


def cpu_autocast(dtype=BF16):
    return torch.autocast("cpu", dtype=dtype)


def _boxes(n, seed=0, scale=800.0):
    gen = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=gen) * scale
    wh = torch.rand(n, 2, generator=gen) * scale / 4 + 1
    return torch.cat([xy, xy + wh], 1), torch.rand(n, generator=gen)


def test_nms_computes_in_float32_under_autocast():
    boxes, scores = _boxes(300)
    b16, s16 = boxes.to(BF16), scores.to(BF16)
    with cpu_autocast():
        kept = ops.nms(b16, s16, 0.5)
    # same bf16 values, widened by hand: the autocast kernel must give exactly this
    assert torch.equal(kept, ops.nms(b16.float(), s16.float(), 0.5))
    # a float32 call under autocast is untouched (no narrowing of coordinates)
    with cpu_autocast():
        assert torch.equal(ops.nms(boxes, scores, 0.5), ops.nms(boxes, scores, 0.5))


def test_roi_align_samples_in_float32_and_returns_the_feature_dtype():
    gen = torch.Generator().manual_seed(1)
    feats = torch.randn(2, 16, 50, 76, generator=gen).to(BF16)
    boxes, _ = _boxes(12, seed=2, scale=300.0)
    rois = torch.cat([torch.randint(0, 2, (12, 1), generator=gen).float(), boxes], 1)
    expected = ops.roi_align(feats.float(), rois, 0.25, 14, 14, 2, True)
    with cpu_autocast():
        out = ops.roi_align(feats, rois, 0.25, 14, 14, 2, True)
    assert out.dtype == BF16
    assert torch.equal(out, expected.to(BF16))
    # float32 rois keep sub-pixel coordinates a bf16 copy would round (800 px: steps of 4)
    assert (rois[:, 1:].to(BF16).float() - rois[:, 1:]).abs().max() > 0.5


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_roi_align_takes_float32_rois_with_reduced_precision_features(dtype):
    gen = torch.Generator().manual_seed(10)
    feats = torch.randn(1, 8, 40, 60, generator=gen).to(dtype)
    rois = torch.tensor([[0.0, 100.3, 20.7, 170.9, 130.1], [0.0, 3.0, 4.0, 9.5, 150.25]])
    out = ops.roi_align(feats, rois, 0.25, 7, 7, 0, False)
    assert out.dtype == dtype
    assert torch.equal(out, ops.roi_align(feats.float(), rois, 0.25, 7, 7, 0, False).to(dtype))
    # the same rois rounded to the features' dtype land elsewhere: float32 rois matter
    assert not torch.equal(out, ops.roi_align(feats, rois.to(dtype), 0.25, 7, 7, 0, False))
    with pytest.raises(RuntimeError, match="rois dtype Double must match the input dtype "
                                           ".*or be float32 for float16 / bfloat16 input"):
        ops.roi_align(feats, rois.double(), 0.25, 7, 7, 0, False)


def test_roi_align_backward_under_autocast_gives_the_feature_dtype():
    gen = torch.Generator().manual_seed(3)
    feats = torch.randn(1, 4, 20, 20, generator=gen).to(BF16).requires_grad_()
    rois = torch.tensor([[0.0, 3.3, 2.1, 40.7, 50.2], [0.0, 10.0, 10.0, 70.0, 60.0]])
    with cpu_autocast():
        out = ops.roi_align(feats, rois, 0.25, 7, 7, 2, True)
    out.float().sum().backward()
    ref = feats.detach().float().requires_grad_()
    ops.roi_align(ref, rois, 0.25, 7, 7, 2, True).sum().backward()
    assert feats.grad.dtype == BF16
    assert torch.equal(feats.grad, ref.grad.to(BF16))


def test_iuv_paste_post_processes_in_float32():
    gen = torch.Generator().manual_seed(4)
    n, s = 3, 112
    fine, gate = torch.randn(n, 25, s, s, generator=gen), torch.randn(n, 2, s, s, generator=gen)
    u, v = torch.rand(n, 25, s, s, generator=gen), torch.rand(n, 25, s, s, generator=gen)
    boxes = torch.tensor([[10, 20, 60, 90], [0, 0, 33, 41], [50, 5, 17, 80]])
    scores = torch.tensor([0.9, 0.8, 0.7])
    low = [t.to(BF16) for t in (fine, gate, u, v)]
    expected = ops.iuv_paste(*[t.float() for t in low], boxes, scores, 0, 0.0, 120, 160, True)
    with cpu_autocast():
        got = ops.iuv_paste(*low, boxes, scores.to(BF16), 0, 0.0, 120, 160, True)
    for a, b in zip(expected, got):
        assert torch.equal(a, b)


def test_uv_loss_in_float32_and_gradients_in_the_input_dtype():
    gen = torch.Generator().manual_seed(5)
    n, k, s = 4, 80, 16
    u = torch.randn(n, 25, s, s, generator=gen).to(BF16)
    v = torch.randn(n, 25, s, s, generator=gen).to(BF16)
    roi = torch.randint(0, n, (k,), generator=gen)
    x, y = torch.rand(k, generator=gen) * s, torch.rand(k, generator=gen) * s
    part = torch.randint(0, 25, (k,), generator=gen)
    tu, tv = torch.rand(k, generator=gen), torch.rand(k, generator=gen)
    uw, vw = u.float().requires_grad_(), v.float().requires_grad_()
    expected = ops.uv_interp_loss(uw, vw, roi, x, y, part, tu, tv, 1, 1.0)
    expected.backward()
    ul, vl = u.clone().requires_grad_(), v.clone().requires_grad_()
    with cpu_autocast():
        loss = ops.uv_interp_loss(ul, vl, roi, x, y, part, tu, tv, 1, 1.0)
    assert loss.dtype == torch.float32
    assert torch.equal(loss, expected)
    loss.backward()
    assert ul.grad.dtype == BF16
    assert torch.equal(ul.grad, uw.grad.to(BF16)) and torch.equal(vl.grad, vw.grad.to(BF16))


# --- aggregation: native reduced precision, float32 accumulation -----------------------------

def _gated_sums_in_float(f, g, group_size):
    """S and group sums from the reduced values, widened, added in path order, rounded once."""
    gated = [f[:, p].float() * g[:, p].float()[:, :, None, None] for p in range(f.shape[1])]
    s = gated[0]
    for t in gated[1:]:
        s = s + t
    groups = []
    for k in range(0, len(gated), max(group_size, 1)):
        r = gated[k]
        for t in gated[k + 1:k + group_size]:
            r = r + t
        groups.append(r)
    return torch.stack(groups, 1).to(f.dtype), s.to(f.dtype)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("group_size", [0, 1, 2, 4])
def test_aggregation_reduced_precision_accumulates_in_float32(dtype, group_size):
    gen = torch.Generator().manual_seed(6)
    f = torch.randn(3, 4, 24, 9, 11, generator=gen).to(dtype)
    g = torch.rand(3, 4, 24, generator=gen).to(dtype)
    groups, summed = ops.adaptive_aggregation(f, g, group_size)
    exp_groups, exp_summed = _gated_sums_in_float(f, g, group_size)
    assert summed.dtype == dtype and torch.equal(summed, exp_summed)
    if group_size:
        assert torch.equal(groups, exp_groups)
    else:
        assert groups.numel() == 0


def test_aggregation_reduced_precision_backward():
    gen = torch.Generator().manual_seed(7)
    f = torch.randn(2, 4, 16, 8, 8, generator=gen).to(BF16)
    g = torch.rand(2, 4, 16, generator=gen).to(BF16)
    ds = torch.randn(2, 16, 8, 8, generator=gen).to(BF16)
    dr = torch.randn(2, 2, 16, 8, 8, generator=gen).to(BF16)
    df, dg = ops.adaptive_aggregation_backward(dr, ds, f, g, 2)
    t = ds.float()[:, None] + dr.float().repeat_interleave(2, dim=1)  # upstream of each path
    assert torch.equal(df, (t * g.float()[..., None, None]).to(BF16))
    exp_dg = (f.double() * t.double()).sum((3, 4))
    torch.testing.assert_close(dg.double(), exp_dg, rtol=8e-3, atol=1e-2)  # one bf16 rounding


def test_aggregation_under_autocast_runs_in_the_autocast_dtype():
    gen = torch.Generator().manual_seed(8)
    f = torch.randn(2, 4, 8, 6, 6, generator=gen)  # float32 features, float32 gates
    g = torch.rand(2, 4, 8, generator=gen)
    with cpu_autocast():
        groups, summed = ops.adaptive_aggregation(f, g, 2)
    assert summed.dtype == BF16 and groups.dtype == BF16
    exp_groups, exp_summed = _gated_sums_in_float(f.to(BF16), g.to(BF16), 2)
    assert torch.equal(summed, exp_summed) and torch.equal(groups, exp_groups)
    # and autograd flows back through the casts to the float32 leaves
    f.requires_grad_()
    g.requires_grad_()
    with cpu_autocast():
        _, summed = ops.adaptive_aggregation(f, g, 0)
    summed.float().sum().backward()
    assert f.grad.dtype == torch.float32 and g.grad.dtype == torch.float32
    torch.testing.assert_close(f.grad, g.detach()[..., None, None].expand_as(f), rtol=8e-3, atol=0)


def test_float64_is_never_narrowed_by_autocast():
    gen = torch.Generator().manual_seed(9)
    f = torch.randn(1, 4, 3, 4, 4, generator=gen, dtype=torch.float64)
    g = torch.rand(1, 4, 3, generator=gen, dtype=torch.float64)
    with cpu_autocast():
        _, summed = ops.adaptive_aggregation(f, g, 0)
    assert summed.dtype == torch.float64
