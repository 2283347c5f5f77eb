"""amanet::iuv_paste (fused chart post-processing): fused op vs the reference built from
amanet.modeling.postprocess, edge cases, input checks, TorchScript, ONNX (standard ops) + ONNX
Runtime, CUDA (skipped without a GPU), and the Predictor's use of it.
"""
from __future__ import annotations

import io

import numpy as np
import pytest
import torch

from amanet.modeling import postprocess as pp
from amanet.ops import library
from amanet.ops.iuv_paste import (
    MODE_AMANET,
    MODE_S1X,
    iuv_paste,
    iuv_paste_fused,
    iuv_paste_reference,
    mode_for_family,
    unpack_charts,
)
from iuv_agreement import assert_iuv_agree

pytestmark = pytest.mark.skipif(not library.load_library(), reason="amanet._C is not built")

# The fused op replicates ATen's AVX2-build CPU arithmetic (see csrc/ops/common/iuv_paste.h);
# under another ATen CPU capability the reference rounds differently by an ulp.
EXACT = torch.backends.cpu.get_cpu_capability() == "AVX2"
NEEDS_CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
S_OF_MODE = {MODE_S1X: 112, MODE_AMANET: 64}


def make_inputs(sizes, mode, image_hw=(240, 320), seed=0, dtype=torch.float32, positions=None,
                scores=None, tie_prone=False):
    """Random RoI outputs for boxes of the given (w, h); positions default to random (may stick out)."""
    g = torch.Generator().manual_seed(seed)
    n, s = len(sizes), S_OF_MODE[mode]
    fine = torch.randn(n, 25, s, s, generator=g) * 2
    if tie_prone:
        fine = fine.round()  # many exactly equal logits: exercises the first-max rule
    gate = torch.randn(n, 2, s, s, generator=g) * 2
    u = torch.rand(n, 25, s, s, generator=g) * 1.2 - 0.1  # some values clamp at 0 and 255
    v = torch.rand(n, 25, s, s, generator=g) * 1.2 - 0.1
    if positions is None:
        h_img, w_img = image_hw
        xs = torch.randint(-40, w_img, (n,), generator=g)
        ys = torch.randint(-40, h_img, (n,), generator=g)
    else:
        xs = torch.tensor([p[0] for p in positions])
        ys = torch.tensor([p[1] for p in positions])
    wh = torch.tensor(sizes, dtype=torch.int64).reshape(-1, 2)
    boxes = torch.stack([xs, ys, wh[:, 0], wh[:, 1]], 1).long()
    if scores is None:
        scores = torch.randint(0, 4, (n,), generator=g).float() / 4  # ties on purpose
    else:
        scores = torch.as_tensor(scores, dtype=torch.float32)
    return [t.to(dtype) for t in (fine, gate, u, v)] + [boxes, scores]


def compare(ref, fused, exact=EXACT):
    """Labels >= 99.9 % equal; U/V codes equal where labels agree (+-1 off the AVX2 build)."""
    ref_charts, ref_image = ref
    charts, image = fused
    assert len(charts) == len(ref_charts)
    same = total = 0
    for a, b in zip(ref_charts, charts, strict=True):
        assert b.dtype == torch.uint8 and b.shape == a.shape
        eq = a[0] == b[0]
        same += int(eq.sum())
        total += eq.numel()
        diff = (a[1:].int() - b[1:].int()).abs()[:, eq]
        assert diff.numel() == 0 or diff.max() <= (0 if exact else 1)
    if total:
        assert same / total >= (1.0 if exact else 0.999)
    if ref_image is not None:
        assert image.shape == ref_image.shape and image.dtype == torch.uint8
        assert (image == ref_image).float().mean() >= (1.0 if exact else 0.999)


# ---------------------------------------------------------------------------- equality
RANDOM_SIZES = [(37, 120), (150, 90), (5, 3), (64, 64), (112, 112), (112, 40), (20, 108),
                (20, 109), (1, 200), (200, 1), (300, 150)]


@pytest.mark.parametrize("mode", [MODE_S1X, MODE_AMANET])
@pytest.mark.parametrize("tie_prone", [False, True])
def test_fused_matches_reference(mode, tie_prone):
    # Sizes cover ATen's generic kernel (h + w > 128), its channels-last kernel (<= 128, incl.
    # the scalar-tail channels), identity axes (h or w == S) and 1-pixel axes.
    args = make_inputs(RANDOM_SIZES, mode, seed=mode, tie_prone=tie_prone)
    ref = iuv_paste_reference(*args, mode, 0.3, (240, 320))
    fused = iuv_paste_fused(*args, mode, 0.3, (240, 320))
    compare(ref, fused)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_other_input_dtypes_compute_in_float(dtype):
    args = make_inputs([(40, 70), (130, 100)], MODE_AMANET, seed=3, dtype=dtype)
    compare(iuv_paste_reference(*args, MODE_AMANET, 0.3, (200, 200)),
            iuv_paste_fused(*args, MODE_AMANET, 0.3, (200, 200)))


def test_boxes_partly_and_fully_outside_the_image():
    sizes = [(80, 60), (80, 60), (80, 60), (80, 60), (50, 50), (30, 30)]
    positions = [(-40, -20), (100, 90), (-200, 10), (10, 400), (130, -49), (150, 100)]
    args = make_inputs(sizes, MODE_S1X, image_hw=(120, 160), positions=positions, seed=4)
    ref = iuv_paste_reference(*args, MODE_S1X, 0.3, (120, 160))
    fused = iuv_paste_fused(*args, MODE_S1X, 0.3, (120, 160))
    compare(ref, fused)
    assert [tuple(c.shape) for c in fused[0]] == [(3, h, w) for w, h in sizes]


def test_one_pixel_boxes():
    sizes = [(1, 1), (1, 1), (1, 5), (5, 1)]
    positions = [(0, 0), (9, 9), (3, 2), (-2, 4)]
    for mode in (MODE_S1X, MODE_AMANET):
        args = make_inputs(sizes, mode, image_hw=(10, 10), positions=positions, seed=5)
        ref = iuv_paste_reference(*args, mode, 0.3, (10, 10))
        fused = iuv_paste_fused(*args, mode, 0.3, (10, 10))
        compare(ref, fused)


def test_zero_boxes():
    empty = torch.zeros(0, 25, 112, 112)
    boxes = torch.zeros(0, 4, dtype=torch.int64)
    charts, offsets, image = torch.ops.amanet.iuv_paste(
        empty, torch.zeros(0, 2, 112, 112), empty, empty, boxes, torch.zeros(0), 0, 0.3, 7, 9, True)
    assert charts.shape == (0,) and offsets.tolist() == [0]
    assert image.shape == (3, 7, 9) and image.dtype == torch.uint8 and image.sum() == 0
    charts, image = iuv_paste(empty, torch.zeros(0, 2, 112, 112), empty, empty, boxes,
                              torch.zeros(0), MODE_S1X, 0.3, (7, 9))
    assert charts == [] and image.shape == (3, 7, 9) and image.sum() == 0
    _, image = iuv_paste(empty, torch.zeros(0, 2, 112, 112), empty, empty, boxes,
                         torch.zeros(0), MODE_S1X, 0.3, (7, 9), whole_image=False)
    assert image is None


def test_overlaps_higher_score_wins_ties_lower_index():
    # Box i is foreground everywhere with part label i + 1 (a constant logit map).
    n, s = 4, 16
    fine = torch.zeros(n, 25, s, s)
    for i in range(n):
        fine[i, i + 1] = 5.0
    gate = torch.zeros(n, 2, s, s)
    gate[:, 1] = 5.0
    u = torch.full((n, 25, s, s), 0.5)
    boxes = torch.tensor([[0, 0, 10, 10], [5, 5, 10, 10], [5, 0, 10, 10], [0, 5, 10, 10]])
    scores = torch.tensor([0.5, 0.9, 0.9, 0.95])
    for mode in (MODE_S1X, MODE_AMANET):
        charts, image = iuv_paste_fused(fine, gate, u, u, boxes, scores, mode, 0.3, (20, 20))
        labels = image[0]
        assert labels[2, 2] == 1                 # only box 0
        assert labels[7, 7] == 4                 # all four overlap: box 3 has the top score
        assert labels[2, 7] == 3                 # boxes 0 and 2: 0.9 beats 0.5
        assert labels[12, 12] == 2               # only box 1
        assert labels[7, 12] == 2                # boxes 1 and 2 tie at 0.9: the lower index
        assert labels[12, 2] == 4
        assert labels[17, 17] == 0 and image[:, 17, 17].sum() == 0
        ref = iuv_paste_reference(fine, gate, u, u, boxes, scores, mode, 0.3, (20, 20))
        assert torch.equal(ref[1], image)


def test_non_contiguous_inputs():
    args = make_inputs([(50, 70), (90, 40), (3, 3)], MODE_AMANET, seed=6)
    fine, gate, u, v, boxes, scores = args
    nc = [
        torch.repeat_interleave(fine, 2, dim=1)[:, ::2],         # strided channels
        gate.permute(0, 1, 3, 2).contiguous().permute(0, 1, 3, 2),  # transposed storage
        u.contiguous(memory_format=torch.channels_last),
        v,
        boxes.t().contiguous().t(),
        torch.stack([scores, scores], 1)[:, 0],
    ]
    assert not any(t.is_contiguous() for t in (nc[0], nc[1], nc[4], nc[5]))
    expected = iuv_paste_fused(*args, MODE_AMANET, 0.3, (240, 320))
    got = iuv_paste_fused(*nc, MODE_AMANET, 0.3, (240, 320))
    for a, b in zip(expected[0], got[0], strict=True):
        assert torch.equal(a, b)
    assert torch.equal(expected[1], got[1])


def test_packed_layout_and_views():
    args = make_inputs([(4, 3), (2, 5), (1, 1)], MODE_S1X, seed=7)
    charts, offsets, image = torch.ops.amanet.iuv_paste(*args, MODE_S1X, 0.3, 240, 320, False)
    assert offsets.tolist() == [0, 12, 22, 23] and charts.shape == (3 * 23,)
    assert image.shape == (0,)
    views = unpack_charts(charts, offsets, args[4])
    for i, (view, (w, h)) in enumerate(zip(views, [(4, 3), (2, 5), (1, 1)], strict=True)):
        assert view.shape == (3, h, w) and view.is_contiguous()
        assert view.data_ptr() == charts.data_ptr() + 3 * int(offsets[i])
    fused, none = iuv_paste_fused(*args, MODE_S1X, 0.3, (240, 320), whole_image=False)
    assert none is None
    for a, b in zip(views, fused, strict=True):
        assert torch.equal(a, b)


def test_dispatch_follows_the_backend_switch():
    args = make_inputs([(60, 50), (20, 30)], MODE_AMANET, seed=8)
    with library.backend("reference"):
        ref = iuv_paste(*args, MODE_AMANET, 0.3, (240, 320))
    with library.backend("fused"):
        fused = iuv_paste(*args, MODE_AMANET, 0.3, (240, 320))
        base = fused[0][0]._base
        assert base is not None and all(c._base is base for c in fused[0])  # one packed tensor
    compare(ref, fused)
    assert mode_for_family("s1x") == MODE_S1X == 0 and mode_for_family("amanet") == MODE_AMANET == 1
    from amanet.modeling.families import GATE_COARSE_ARGMAX, GATE_MASK_SOFTMAX
    assert (GATE_COARSE_ARGMAX, GATE_MASK_SOFTMAX) == (MODE_S1X, MODE_AMANET)


def test_under_autograd_with_requires_grad_inputs():
    args = make_inputs([(30, 20), (10, 10)], MODE_S1X, seed=9)
    grads = [t.clone().requires_grad_(True) for t in args[:4]] + args[4:]
    charts, offsets, image = torch.ops.amanet.iuv_paste(*grads, MODE_S1X, 0.3, 50, 60, True)
    assert not charts.requires_grad and not image.requires_grad
    plain = torch.ops.amanet.iuv_paste(*args, MODE_S1X, 0.3, 50, 60, True)
    assert torch.equal(charts, plain[0]) and torch.equal(image, plain[2])


# ---------------------------------------------------------------------------- input checks
def _base_args():
    return make_inputs([(10, 10), (5, 6)], MODE_S1X, seed=10)


@pytest.mark.parametrize("mutate, message", [
    (lambda a: a.__setitem__(0, a[0][0]), r"fine must be a 4-D \[N, C, S_h, S_w\] tensor"),
    (lambda a: a.__setitem__(2, a[2][:, :24]), r"u .* must have the shape of fine"),
    (lambda a: a.__setitem__(1, a[1][:, :1]), r"gate must have 2\.\.16 channels"),
    (lambda a: a.__setitem__(1, a[1][:, :, :50]), r"gate .* must be \[N, Cg, S_h, S_w\]"),
    (lambda a: a.__setitem__(3, a[3].double()), r"fine, gate, u and v must have one dtype"),
    (lambda a: a.__setitem__(0, a[0].long()), r"fine must be a floating tensor"),
    (lambda a: a.__setitem__(4, a[4].float()), r"boxes must be int64 XYWH"),
    (lambda a: a.__setitem__(4, a[4][:, :3]), r"boxes must be \[N, 4\]"),
    (lambda a: a.__setitem__(5, a[5][:1]), r"scores must be \[N\]"),
    (lambda a: a[4].__setitem__((1, 2), 0), r"box 1 has size 0 x 6; integer boxes must have w, h >= 1"),
])
def test_bad_inputs_raise_clear_errors(mutate, message):
    args = _base_args()
    mutate(args)
    with pytest.raises(RuntimeError, match=message):
        torch.ops.amanet.iuv_paste(*args, MODE_S1X, 0.3, 20, 20, True)


def test_bad_mode_and_image_size():
    args = _base_args()
    with pytest.raises(RuntimeError, match=r"mode must be 0 \(s1x.*or 1 \(AMANet"):
        torch.ops.amanet.iuv_paste(*args, 2, 0.3, 20, 20, True)
    with pytest.raises(RuntimeError, match=r"image size must be >= 0"):
        torch.ops.amanet.iuv_paste(*args, 0, 0.3, -1, 20, True)


# ---------------------------------------------------------------------------- TorchScript
def _planes(charts: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """The op's packed charts ``[3 * P]`` as ``[3, P]``: every chart's I, U and V planes."""
    return np.concatenate([charts[3 * a:3 * b].reshape(3, b - a)
                           for a, b in zip(offsets[:-1].tolist(), offsets[1:].tolist())], axis=1)


class _PasteModule(torch.nn.Module):
    def __init__(self, mode: int, threshold: float):
        super().__init__()
        self.mode = mode
        self.threshold = threshold

    def forward(self, fine, gate, u, v, boxes, scores, image):
        return torch.ops.amanet.iuv_paste(fine, gate, u, v, boxes, scores, self.mode, self.threshold,
                                          image.shape[1], image.shape[2], True)


def test_torchscript_script_save_load(tmp_path):
    args = make_inputs([(40, 30), (25, 60)], MODE_AMANET, seed=11)
    image = torch.zeros(3, 90, 110, dtype=torch.uint8)
    scripted = torch.jit.script(_PasteModule(MODE_AMANET, 0.3))
    path = tmp_path / "paste.pt"
    scripted.save(str(path))
    loaded = torch.jit.load(str(path))
    got = loaded(*args, image)
    expected = torch.ops.amanet.iuv_paste(*args, MODE_AMANET, 0.3, 90, 110, True)
    for a, b in zip(got, expected, strict=True):
        assert torch.equal(a, b)
    assert "amanet::iuv_paste" in loaded.graph.str() or "amanet::iuv_paste" in str(loaded.inlined_graph)


# ---------------------------------------------------------------------------- ONNX
def _onnx_ops(model):
    ops = set()

    def walk(graph):
        for node in graph.node:
            ops.add((node.domain, node.op_type))
            for attr in node.attribute:
                if attr.g is not None and len(attr.g.node):
                    walk(attr.g)
    walk(model.graph)
    return ops


@pytest.mark.parametrize("mode", [MODE_S1X, MODE_AMANET])
def test_onnx_export_standard_ops_and_onnxruntime(mode):
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    from amanet.ops.onnx_lowering import register_onnx_symbolics
    register_onnx_symbolics()
    names = ["fine", "gate", "u", "v", "boxes", "scores", "image"]
    module = _PasteModule(mode, 0.3)
    # Scripted, so that the image size stays symbolic (aten::size); tracing would bake it in.
    scripted = torch.jit.script(module)
    args = make_inputs(RANDOM_SIZES[:6], mode, seed=12)
    image = torch.zeros(3, 240, 320, dtype=torch.uint8)
    buf = io.BytesIO()
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(scripted, (*args, image), buf, opset_version=17, dynamo=False,
                          input_names=names, output_names=["charts", "offsets", "iuv"],
                          dynamic_axes={**{k: {0: "N"} for k in names[:6]},
                                        "image": {1: "H", 2: "W"}})
    model = onnx.load_from_string(buf.getvalue())
    ops = _onnx_ops(model)
    assert {d for d, _ in ops} <= {"", "ai.onnx"}, ops      # standard ops only
    assert ("", "Loop") in ops
    sess = ort.InferenceSession(buf.getvalue(), providers=["CPUExecutionProvider"])
    # Another box count and image size than at export, and zero boxes.
    for sizes, hw, seed in [(RANDOM_SIZES, (200, 260), 13), ([(7, 9)], (30, 40), 14), ([], (30, 40), 15)]:
        args = make_inputs(sizes, mode, image_hw=hw, seed=seed)
        if not sizes:
            args = [t.reshape(0, *t.shape[1:]) if t.dim() > 1 else t.reshape(0) for t in args[:4]] + \
                   [torch.zeros(0, 4, dtype=torch.int64), torch.zeros(0)]
        image = torch.zeros(3, *hw, dtype=torch.uint8)
        feeds = {k: t.numpy() for k, t in zip(names, [*args, image])}
        charts, offsets, iuv = sess.run(None, feeds)
        e_charts, e_offsets, e_iuv = module(*args, image)
        assert np.array_equal(offsets, e_offsets.numpy())
        assert iuv.shape == tuple(e_iuv.shape)
        assert_iuv_agree(iuv, e_iuv.numpy(), what=f"iuv {sizes}")
        assert charts.shape == tuple(e_charts.shape)
        if charts.size:
            assert_iuv_agree(_planes(charts, offsets), _planes(e_charts.numpy(), offsets),
                             what=f"charts {sizes}")


@pytest.mark.parametrize("mode", [MODE_S1X, MODE_AMANET])
def test_onnx_tensorrt_profile_static_shapes(mode, tmp_path):
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    from amanet.ops.iuv_paste_onnx import onnx_profile
    from amanet.ops.onnx_lowering import register_onnx_symbolics
    register_onnx_symbolics()
    names = ["fine", "gate", "u", "v", "boxes", "scores", "image"]
    module = _PasteModule(mode, 0.3)
    args = make_inputs(RANDOM_SIZES[:4], mode, image_hw=(60, 70), seed=19)
    image = torch.zeros(3, 60, 70, dtype=torch.uint8)
    path = tmp_path / "paste_trt.onnx"
    import warnings
    with warnings.catch_warnings(), onnx_profile("tensorrt"):
        warnings.simplefilter("ignore")
        torch.onnx.export(torch.jit.script(module), (*args, image), str(path), opset_version=17,
                          dynamo=False, input_names=names, output_names=["charts", "offsets", "iuv"],
                          dynamic_axes={**{k: {0: "N"} for k in names[:6]},
                                        "image": {1: "H", 2: "W"}})
    model = onnx.load(str(path))
    assert {d for d, _ in _onnx_ops(model)} <= {"", "ai.onnx"}
    try:
        from amanet.deploy.tensorrt import check_trt_compatibility
    except ImportError:
        check_trt_compatibility = None
    if check_trt_compatibility is not None:
        # Everything but the deploy graph's "one image input" rule must pass.
        problems = [p for p in check_trt_compatibility(path) if "exactly one input" not in p]
        assert problems == []
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for sizes, hw, seed in [(RANDOM_SIZES[:7], (50, 90), 20), ([], (20, 30), 21)]:
        args = make_inputs(sizes or [(1, 1)], mode, image_hw=hw, seed=seed)
        if not sizes:
            args = [t[:0] for t in args]
        image = torch.zeros(3, *hw, dtype=torch.uint8)
        charts, offsets, iuv = sess.run(None, {k: t.numpy() for k, t in zip(names, [*args, image])})
        _, e_offsets, e_iuv = module(*args, image)
        assert charts.shape == (0,)  # the static profile produces the whole image only
        assert np.array_equal(offsets, e_offsets.numpy())
        assert iuv.dtype == np.uint8 and iuv.shape == tuple(e_iuv.shape)
        assert_iuv_agree(iuv, e_iuv.numpy(), what=f"iuv {sizes}")


# ---------------------------------------------------------------------------- Predictor
def test_predictor_postprocess_uses_one_call_and_keeps_behaviour():
    from amanet.config import load_config
    from amanet.runtime.predictor import Predictor

    for preset, mode in (("s1x", MODE_S1X), ("amanet", MODE_AMANET)):
        pred = Predictor.__new__(Predictor)
        pred.cfg = load_config(preset)
        pred.whole_image_iuv = True
        fine, gate, u, v, _, _ = make_inputs([(1, 1)] * 5, mode, seed=16)
        boxes = torch.tensor([[10.3, 20.7, 110.9, 200.2], [50.0, 30.0, 51.5, 31.9],
                              [0.0, 0.0, 230.0, 180.0], [200.5, 100.5, 239.0, 179.5],
                              [5.0, 5.0, 5.0, 9.0]])
        det = {"boxes": boxes, "scores": torch.tensor([0.9, 0.8, 0.7, 0.7, 0.6]),
               "classes": torch.zeros(5, dtype=torch.int64), "gate": gate, "fine_segm": fine,
               "u": u, "v": v}
        with library.backend("fused"):
            fused = pred._postprocess(det, (180, 240), (180, 240))
        # The previous per-box implementation, spelled out.
        keep = fused.boxes.shape[0]
        xywh = torch.from_numpy(fused.chart_boxes)
        if mode == MODE_S1X:
            charts = pp.iuv_charts_s1x_uint8(gate[:keep], fine[:keep], u[:keep], v[:keep], xywh)
        else:
            charts = pp.iuv_charts_amanet(fine[:keep], u[:keep], v[:keep], gate[:keep], xywh,
                                          pred.cfg.densepose.mask_gate_threshold)
        iuv = pp.paste_iuv(charts, xywh.tolist(), fused.scores.tolist(), (180, 240)).numpy()
        assert keep == 4  # the empty box is dropped
        for a, b in zip(charts, fused.charts, strict=True):
            assert np.array_equal(a.numpy(), b) if EXACT else (a.numpy() == b).mean() > 0.999
        assert np.array_equal(iuv, fused.iuv) if EXACT else (iuv == fused.iuv).mean() > 0.999


# ---------------------------------------------------------------------------- CUDA
@NEEDS_CUDA
@pytest.mark.parametrize("mode", [MODE_S1X, MODE_AMANET])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_cuda_matches_cpu_reference(mode, dtype):
    # The CUDA kernel runs the same math (explicit FMAs, no contraction): bit-exact vs the CPU.
    args = make_inputs(RANDOM_SIZES, mode, seed=17, dtype=dtype)
    ref = iuv_paste_reference(*args, mode, 0.3, (240, 320))
    cuda = iuv_paste_fused(*[t.cuda() for t in args], mode, 0.3, (240, 320))
    compare(ref, ([c.cpu() for c in cuda[0]], cuda[1].cpu()))


@NEEDS_CUDA
def test_cuda_zero_boxes_overlaps_and_determinism():
    empty = torch.zeros(0, 25, 8, 8, device="cuda")
    charts, offsets, image = torch.ops.amanet.iuv_paste(
        empty, torch.zeros(0, 2, 8, 8, device="cuda"), empty, empty,
        torch.zeros(0, 4, dtype=torch.int64, device="cuda"), torch.zeros(0, device="cuda"),
        0, 0.3, 5, 6, True)
    assert charts.numel() == 0 and image.is_cuda and image.sum() == 0
    args = make_inputs([(80, 80)] * 8, MODE_AMANET, image_hw=(100, 100),
                       positions=[(i * 3, i * 2) for i in range(8)], seed=18)
    cuda_args = [t.cuda() for t in args]
    first = iuv_paste_fused(*cuda_args, MODE_AMANET, 0.3, (100, 100))[1]
    for _ in range(3):
        assert torch.equal(first, iuv_paste_fused(*cuda_args, MODE_AMANET, 0.3, (100, 100))[1])
    assert torch.equal(first.cpu(), iuv_paste_fused(*args, MODE_AMANET, 0.3, (100, 100))[1])
