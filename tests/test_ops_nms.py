"""amanet::nms and amanet.ops.batched_nms: identical results to torchvision (ties, IoU at the
threshold, both batched strategies), input checks, TorchScript in a torchvision-free process,
ONNX NonMaxSuppression lowering run in onnxruntime."""
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

from amanet.ops import batched_nms, batched_nms_fused, library, nms, nms_fused

REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.skipif(not library.load_library(),
                                reason="amanet._C is not built (python setup.py build_ext --inplace)")
requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(),
                                   reason="no CUDA device: the CUDA kernels are compiled but cannot run here")


def random_boxes(n, seed=0, size=200.0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g) * size
    wh = torch.rand(n, 2, generator=g) * size * 0.3 + 1
    return torch.cat([xy, xy + wh], 1).to(dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("threshold", [0.0, 0.3, 0.5, 0.7, 1.0])
def test_nms_equals_torchvision_random(dtype, threshold):
    for seed, n in ((0, 1), (1, 50), (2, 1500)):
        boxes = random_boxes(n, seed, dtype=dtype)
        scores = torch.rand(n, generator=torch.Generator().manual_seed(seed + 100), dtype=dtype)
        keep = torch.ops.amanet.nms(boxes, scores, threshold)
        assert keep.dtype == torch.int64
        assert torch.equal(keep, torchvision.ops.nms(boxes, scores, threshold))


def test_nms_exact_score_ties():
    # few distinct scores -> many exact ties: visited by increasing index (stable sort), as torchvision
    for seed in range(5):
        boxes = random_boxes(600, seed, size=80.0)
        scores = torch.randint(0, 4, (600,), generator=torch.Generator().manual_seed(seed)).float()
        for thr in (0.2, 0.5):
            assert torch.equal(torch.ops.amanet.nms(boxes, scores, thr),
                               torchvision.ops.nms(boxes, scores, thr))
    # all scores equal, identical boxes
    boxes = torch.tensor([[0.0, 0, 10, 10]]).repeat(40, 1)
    scores = torch.ones(40)
    keep = torch.ops.amanet.nms(boxes, scores, 0.5)
    assert keep.numel() == 1 and torch.equal(keep, torchvision.ops.nms(boxes, scores, 0.5))


def test_nms_iou_exactly_at_threshold_is_kept():
    # IoU(0, 1) = 0.5 exactly, IoU(0, 2) = 0.5, IoU(1, 2) = 0: suppression needs IoU > threshold
    boxes = torch.tensor([[0.0, 0, 4, 1], [0, 0, 2, 1], [2, 0, 4, 1], [0, 0, 4, 1.0000001]])
    scores = torch.tensor([0.9, 0.8, 0.7, 0.6])
    for dtype in (torch.float32, torch.float64):
        b, s = boxes.to(dtype), scores.to(dtype)
        for thr in (0.5, 0.25, 0.4999999):
            assert torch.equal(torch.ops.amanet.nms(b, s, thr), torchvision.ops.nms(b, s, thr))
        assert torch.ops.amanet.nms(b, s, 0.5)[:3].tolist() == [0, 1, 2]
    # IoU 7/10 rounds to float 0.699999988: thresholds around it (double vs float comparison)
    boxes = torch.tensor([[0.0, 0, 10, 1], [0, 0, 7, 1]])
    scores = torch.tensor([0.9, 0.8])
    f07 = float(torch.tensor(0.7))  # 0.699999988079071
    for thr in (0.7, f07, f07 - 1e-12, f07 + 1e-12, 0.6999999, 0.69999998):
        for dtype in (torch.float32, torch.float64):
            b, s = boxes.to(dtype), scores.to(dtype)
            assert torch.equal(torch.ops.amanet.nms(b, s, thr), torchvision.ops.nms(b, s, thr)), (thr, dtype)


def test_nms_degenerate_and_empty():
    assert torch.ops.amanet.nms(torch.zeros(0, 4), torch.zeros(0), 0.5).shape == (0,)
    assert torch.ops.amanet.nms(torch.zeros(0, 4), torch.zeros(0), 0.5).dtype == torch.int64
    boxes = torch.tensor([[5.0, 5, 5, 5], [5, 5, 5, 5], [0, 0, 10, 10], [10, 10, 0, 0], [1, 1, 9, 9]])
    scores = torch.tensor([0.9, 0.8, 0.7, 0.6, 0.5])
    assert torch.equal(torch.ops.amanet.nms(boxes, scores, 0.5), torchvision.ops.nms(boxes, scores, 0.5))


def test_nms_non_contiguous():
    boxes = random_boxes(300, 3)
    scores = torch.rand(300, 2)[:, 1]
    wide = torch.cat([boxes, torch.zeros(300, 4)], 1)[:, :4]
    assert not wide.is_contiguous() and not scores.is_contiguous()
    assert torch.equal(torch.ops.amanet.nms(wide, scores, 0.5),
                       torchvision.ops.nms(boxes, scores.contiguous(), 0.5))


def test_nms_bad_inputs_raise_clear_errors():
    b, s = random_boxes(5), torch.rand(5)
    with pytest.raises(RuntimeError, match=r"boxes must be a \[N, 4\] tensor"):
        torch.ops.amanet.nms(b[:, :3], s, 0.5)
    with pytest.raises(RuntimeError, match=r"scores must be a 1-D \[N\] tensor"):
        torch.ops.amanet.nms(b, s[:, None], 0.5)
    with pytest.raises(RuntimeError, match="same length, got 5 boxes and 4 scores"):
        torch.ops.amanet.nms(b, s[:4], 0.5)
    with pytest.raises(RuntimeError, match="scores dtype Double must match the boxes dtype Float"):
        torch.ops.amanet.nms(b, s.double(), 0.5)
    with pytest.raises(RuntimeError, match="boxes must be a floating tensor"):
        torch.ops.amanet.nms(b.long(), s.long(), 0.5)
    with pytest.raises(RuntimeError, match="CPU boxes must be float32 or float64"):
        torch.ops.amanet.nms(b.half(), s.half(), 0.5)


def _categories(n, k, seed):
    return torch.randint(0, k, (n,), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("n", [0, 1, 300, 1000, 1001, 5000])
def test_batched_nms_equals_torchvision(n):
    # torchvision switches from the offset trick to per-category NMS at boxes.numel() > 4000
    # (> 1000 boxes) on the CPU; both strategies are mirrored, so set and order are the same
    boxes = random_boxes(n, n, size=400.0)
    scores = torch.rand(n, generator=torch.Generator().manual_seed(n + 1))
    for k in (1, 3, 80):
        idxs = _categories(n, k, n + 2)
        expected = torchvision.ops.batched_nms(boxes, scores, idxs, 0.5)
        with library.backend("fused"):
            assert torch.equal(batched_nms(boxes, scores, idxs, 0.5), expected)
        with library.backend("reference"):
            assert torch.equal(batched_nms(boxes, scores, idxs, 0.5), expected)
        assert torch.equal(batched_nms_fused(boxes, scores, idxs, 0.5), expected)


def test_batched_nms_ties_large():
    n = 4500
    boxes = random_boxes(n, 7, size=300.0)
    scores = torch.randint(0, 10, (n,), generator=torch.Generator().manual_seed(8)).float() / 10
    idxs = _categories(n, 5, 9)
    assert torch.equal(batched_nms_fused(boxes, scores, idxs, 0.6),
                       torchvision.ops.batched_nms(boxes, scores, idxs, 0.6))


def test_nms_wrapper_switch():
    boxes, scores = random_boxes(200, 11), torch.rand(200)
    expected = torchvision.ops.nms(boxes, scores, 0.4)
    for name in ("fused", "reference"):
        with library.backend(name):
            assert torch.equal(nms(boxes, scores, 0.4), expected)


class _Suppress(torch.nn.Module):
    def forward(self, boxes: torch.Tensor, scores: torch.Tensor, idxs: torch.Tensor):
        return nms(boxes, scores, 0.5), batched_nms(boxes, scores, idxs, 0.5)


_CHILD = textwrap.dedent("""
    import sys
    import torch
    import amanet._C  # the op library only: no torchvision, no amanet.ops
    model = torch.jit.load(sys.argv[1])
    results = [list(model(*inputs)) for inputs in torch.load(sys.argv[2])]
    assert "torchvision" not in sys.modules, "torchvision was imported"
    assert "amanet.ops" not in sys.modules
    torch.save(results, sys.argv[3])
""")


def test_torchscript_roundtrip_without_torchvision(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scripted = torch.jit.script(_Suppress())
    graph = str(scripted.inlined_graph)
    assert "amanet::nms" in graph and "torchvision" not in graph
    cases = []
    for n in (0, 200, 1500):  # 1500 boxes: the per-category strategy inside the scripted graph
        cases.append((random_boxes(n, n), torch.rand(n), _categories(n, 4, n)))
    scripted.save(str(tmp_path / "nms.pt"))
    torch.save(cases, tmp_path / "inputs.pt")
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.run([sys.executable, "-c", _CHILD, str(tmp_path / "nms.pt"),
                           str(tmp_path / "inputs.pt"), str(tmp_path / "out.pt")],
                          cwd=str(tmp_path), env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for (b, s, i), (keep, keep_batched) in zip(cases, torch.load(tmp_path / "out.pt")):
        assert torch.equal(keep, torchvision.ops.nms(b, s, 0.5))
        assert torch.equal(keep_batched, torchvision.ops.batched_nms(b, s, i, 0.5))


def _session(model, args, names, dynamic_axes):
    ort = pytest.importorskip("onnxruntime")
    from amanet.ops.onnx_lowering import register_onnx_symbolics
    register_onnx_symbolics()
    f = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, args, f, opset_version=17, dynamo=False, input_names=names,
                          output_names=["keep"], dynamic_axes=dynamic_axes)
    return ort.InferenceSession(f.getvalue(), providers=["CPUExecutionProvider"]), f.getvalue()


class _Nms(torch.nn.Module):
    def forward(self, boxes, scores):
        return nms_fused(boxes, scores, 0.5)


class _Batched(torch.nn.Module):
    def forward(self, boxes, scores, idxs):
        return batched_nms(boxes, scores, idxs, 0.5)


def test_onnx_nms_matches_eager():
    onnx = pytest.importorskip("onnx")
    dyn = {"boxes": {0: "N"}, "scores": {0: "N"}}
    # exported from a zero-box example: the graph has no size assumption
    sess, model_bytes = _session(_Nms(), (torch.zeros(0, 4), torch.zeros(0)), ["boxes", "scores"], dyn)
    assert "NonMaxSuppression" in [n.op_type for n in onnx.load_from_string(model_bytes).graph.node]
    for n in (0, 1, 100, 2000):  # continuous random scores: no ties
        boxes, scores = random_boxes(n, n + 5), torch.rand(n)
        keep = sess.run(None, {"boxes": boxes.numpy(), "scores": scores.numpy()})[0]
        assert keep.dtype.name == "int64" and keep.shape == (len(keep),)
        assert torch.equal(torch.from_numpy(keep), nms_fused(boxes, scores, 0.5))
    # exact score ties: ONNX Runtime also visits equal scores by increasing index
    for seed in range(3):
        boxes = random_boxes(400, seed, size=80.0)
        scores = torch.randint(0, 4, (400,), generator=torch.Generator().manual_seed(seed)).float()
        keep = sess.run(None, {"boxes": boxes.numpy(), "scores": scores.numpy()})[0]
        assert torch.equal(torch.from_numpy(keep), nms_fused(boxes, scores, 0.5))
    # IoU exactly at the threshold: kept by both
    boxes = torch.tensor([[0.0, 0, 4, 1], [0, 0, 2, 1], [2, 0, 4, 1]])
    keep = sess.run(None, {"boxes": boxes.numpy(), "scores": torch.tensor([0.9, 0.8, 0.7]).numpy()})[0]
    assert keep.tolist() == [0, 1, 2]


def test_onnx_batched_nms_matches_eager():
    dyn = {"boxes": {0: "N"}, "scores": {0: "N"}, "idxs": {0: "N"}}
    n = 60
    sess, _ = _session(_Batched(), (random_boxes(n), torch.rand(n), _categories(n, 3, 0)),
                       ["boxes", "scores", "idxs"], dyn)
    for n in (0, 60, 700):
        boxes, scores, idxs = random_boxes(n, n + 1), torch.rand(n), _categories(n, 3, n)
        keep = sess.run(None, {"boxes": boxes.numpy(), "scores": scores.numpy(), "idxs": idxs.numpy()})[0]
        assert torch.equal(torch.from_numpy(keep), torchvision.ops.batched_nms(boxes, scores, idxs, 0.5))


@requires_cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16])
def test_cuda_matches_torchvision_cuda(dtype):
    for n in (0, 1, 64, 65, 3000):
        boxes = random_boxes(n, n).to("cuda", dtype)
        scores = torch.rand(n).to("cuda", dtype)
        for thr in (0.3, 0.5, 0.7):
            assert torch.equal(torch.ops.amanet.nms(boxes, scores, thr).cpu(),
                               torchvision.ops.nms(boxes, scores, thr).cpu())
    boxes = random_boxes(30000, 1).cuda()
    scores, idxs = torch.rand(30000, device="cuda"), torch.randint(0, 5, (30000,), device="cuda")
    assert torch.equal(batched_nms_fused(boxes, scores, idxs, 0.5),
                       torchvision.ops.batched_nms(boxes, scores, idxs, 0.5))
