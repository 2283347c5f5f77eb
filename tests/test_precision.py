"""Reduced precision end to end: the precision switch, its errors, the inference preparation
(FrozenBN folding, channels-last), float32 islands under autocast, and bf16 accuracy against
fp32 (s1x fixture photo; the demo model's held-out synthetic set).

Measured tolerances are stated where they are pinned; the accuracy numbers of the README table
come from ``bench/accuracy.py``.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from fixtures_path import fixture_dir, make_fixture_weights

from amanet.assets import PHOTO
from amanet.config import load_config
from amanet.modeling.inference_prep import fold_frozen_batchnorm, to_channels_last
from amanet.modeling.layers import FrozenBatchNorm2d
from amanet.modeling.model import build_model
from amanet.modeling.poolers import rois_like
from amanet.modeling.smoke_init import smoke_init_
from amanet.ops.library import load_library
from amanet.runtime import Predictor
from amanet.runtime.precision import PrecisionError, autocast, check_precision, cpu_isa
from scratch import scratch_dir

pytestmark = pytest.mark.skipif(not load_library(), reason="amanet._C is not built")

SMALL = ["TEST.DETECTIONS_PER_IMAGE", "3", "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0",
         "INPUT.MIN_SIZE_TEST", "160", "INPUT.MAX_SIZE_TEST", "256"]


def smoke_model(family):
    return smoke_init_(build_model(load_config(family, SMALL)), seed=0).eval()


def image(h=160, w=224, seed=0):
    return torch.rand(3, h, w, generator=torch.Generator().manual_seed(seed)) * 255


# --- the switch and its errors ------------------------------------------------------------------

@pytest.mark.parametrize("precision, device, message", [
    ("fp16", "cpu", "precision fp16 needs a CUDA device (on the CPU use bf16 or fp32)"),
    ("fp8", "cpu", "precision 'fp8' is not supported; choose from fp32, bf16, fp16, int8"),
])
def test_a_precision_the_device_cannot_run_is_one_clear_error(precision, device, message):
    with pytest.raises(PrecisionError) as e:
        check_precision(precision, torch.device(device))
    assert str(e.value) == message
    with pytest.raises(PrecisionError, match="precision"):
        Predictor("s1x", precision=precision, device=device)


@pytest.mark.parametrize("backend, hint", [
    ("onnxruntime", "backend openvino runs it in bf16"),
    ("tensorrt", "export/to_trt.py --precision"),
])
def test_export_backends_refuse_a_precision_they_cannot_run(tmp_path, backend, hint):
    # refused before the file is even opened: the error names the precision and the way out
    with pytest.raises(PrecisionError, match=f"precision bf16 is not available with backend "
                                             f"{backend}: .*{hint}"):
        Predictor.from_export(str(tmp_path / "model.onnx"), backend=backend, precision="bf16")


def test_cli_precision_error_is_one_line_and_exit_2(tmp_path, capsys):
    from amanet.cli import main

    assert main(["predict", "--demo", "--precision", "fp16", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: precision fp16 needs a CUDA device (on the CPU use bf16 or fp32)"]
    assert not any(tmp_path.iterdir())  # nothing written


def test_cpu_isa_report_matches_torch():
    isa = cpu_isa()
    assert set(isa) == {"avx512_bf16", "amx_bf16", "avx512_fp16"}
    assert isa["avx512_bf16"] == torch.cpu._is_avx512_bf16_supported()


# --- inference preparation ------------------------------------------------------------------------

def test_folding_frozen_bn_keeps_the_backbone_output():
    model = smoke_model("s1x")
    # non-trivial statistics, so a wrong fold cannot pass by accident
    gen = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, FrozenBatchNorm2d):
            m.weight.uniform_(0.5, 1.5, generator=gen)
            m.bias.uniform_(-0.5, 0.5, generator=gen)
            m.running_mean.uniform_(-0.3, 0.3, generator=gen)
            m.running_var.uniform_(0.5, 2.0, generator=gen)
    x = model.preprocess([image()])[0]
    with torch.no_grad():
        ref = model.backbone(x)
        assert fold_frozen_batchnorm(model) == 53  # ResNet-50: stem + 16 x 3 + 4 shortcuts
        assert not any(isinstance(m, FrozenBatchNorm2d) for m in model.modules())
        out = model.backbone(x)
        to_channels_last(model)
        out_cl = model.backbone(x)
    for k in ref:
        torch.testing.assert_close(out[k], ref[k], rtol=1e-4, atol=1e-4 * ref[k].abs().max())
        torch.testing.assert_close(out_cl[k], out[k], rtol=1e-5, atol=1e-5 * ref[k].abs().max())


@pytest.mark.parametrize("family", ["s1x", "amanet"])
def test_detection_math_stays_float32_under_autocast(family):
    model = smoke_model(family)
    seen = {}

    def record(name):
        def hook(_module, _inputs, output):
            seen[name] = [t.dtype for t in (output if isinstance(output, tuple) else [output])
                          if torch.is_tensor(t)]
        return hook

    model.proposal_generator.rpn_head.objectness_logits.register_forward_hook(record("rpn_conv"))
    model.roi_heads.box_predictor.register_forward_hook(record("box_predictor"))
    model.roi_heads.box_head.register_forward_hook(record("box_head"))
    with torch.no_grad(), autocast("bf16", torch.device("cpu")):
        logits, deltas = model.proposal_generator.rpn_head(
            [torch.randn(1, 256, 8, 8, dtype=torch.bfloat16)])
        det = model([image()])[0]
    assert seen["rpn_conv"] == [torch.bfloat16]              # the conv itself runs in bf16 ...
    assert logits[0].dtype == deltas[0].dtype == torch.float32  # ... its outputs are widened
    assert seen["box_head"] == [torch.bfloat16]
    assert seen["box_predictor"] == [torch.float32, torch.float32]
    assert det["boxes"].dtype == det["scores"].dtype == torch.float32
    assert det["boxes"].shape[0] == 3
    assert {v.dtype for v in det["densepose"].values()} == {torch.float32}
    rois = rois_like([det["boxes"]], torch.zeros(1, 1, 2, 2, dtype=torch.bfloat16))
    assert rois.dtype == torch.float32


# --- accuracy ---------------------------------------------------------------------------------------

def _iou(a, b):
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(-1)
    area = lambda z: (z[:, 2] - z[:, 0]) * (z[:, 3] - z[:, 1])  # noqa: E731
    return inter / (area(a)[:, None] + area(b)[None] - inter)


@pytest.fixture(scope="module")
def s1x_fixture(request, tmp_path_factory):
    root = fixture_dir("d2_s1x")
    pkl = scratch_dir(request, tmp_path_factory, "d2w") / "d2_s1x_weights.pkl"
    make_fixture_weights(root, pkl)
    return root, str(pkl), np.load(root / "input_bgr_uint8.npy")


def test_bf16_on_the_s1x_fixture_photo(s1x_fixture):
    """Detections, then the DensePose branch on the same boxes, bf16 vs fp32.

    The fixture's weights are deterministic but untrained: all ten scores sit within 0.02 of
    each other, so the tenth place may go to another box (measured: 9 of 10 detections equal
    within 0.01 px and 0.003 in score, the tenth replaced by a box scoring 0.87 vs 0.88). The
    chart labels are compared on fp32's boxes, which isolates the DensePose head's precision
    (measured: 98.3-99.7 % of each chart's labels equal).
    """
    root, weights, img = s1x_fixture
    cfg = str(root / "config_effective.yaml")
    fp32 = Predictor(cfg, weights=weights)
    bf16 = Predictor(cfg, weights=weights, precision="bf16")
    a, b = fp32(img), bf16(img)
    assert len(a) == len(b) == 10
    iou = _iou(a.boxes, b.boxes)
    matched = iou.max(1) > 0.97
    assert matched.sum() >= 9
    match = iou.argmax(1)[matched]
    assert len(set(match.tolist())) == len(match)
    np.testing.assert_allclose(b.boxes[match], a.boxes[matched], atol=0.1)
    np.testing.assert_allclose(b.scores[match], a.scores[matched], atol=0.01)
    # the DensePose branch on fp32's boxes, each precision
    from amanet.data.transforms import resize_shortest_edge
    from amanet.ops.iuv_paste import iuv_paste, mode_for_family
    from amanet.modeling import postprocess as pp

    resized = resize_shortest_edge(img, 800, 1333)
    x = torch.from_numpy(np.ascontiguousarray(resized.transpose(2, 0, 1))).float()
    scale = torch.tensor([resized.shape[1] / img.shape[1], resized.shape[0] / img.shape[0]] * 2)
    boxes = torch.from_numpy(a.boxes) * scale
    charts = {}
    for name, pred in (("fp32", fp32), ("bf16", bf16)):
        with torch.no_grad(), autocast(pred.precision, torch.device("cpu")):
            m = pred.model
            feats = m.backbone(m.preprocess([x])[0])
            dp = m.roi_heads.densepose(feats, [boxes])
        xywh = pp.xyxy_to_xywh_int(torch.from_numpy(a.boxes))
        charts[name], _ = iuv_paste(dp["fine_segm"], dp["coarse_segm"], dp["u"], dp["v"], xywh,
                                    torch.from_numpy(a.scores), mode_for_family("s1x"), 0.0,
                                    img.shape[:2], whole_image=False)
    for i, (c32, c16) in enumerate(zip(charts["fp32"], charts["bf16"])):
        same = (c32[0] == c16[0]).float().mean().item()
        assert same >= 0.98, f"chart {i}: {same:.4f} of labels equal"


def test_bf16_ap_on_the_demo_models_held_out_set(tmp_path):
    """GPS / GPSm / IoU / box AP of eager bf16 and OpenVINO bf16 against eager fp32 (and
    OpenVINO fp32, which must equal it), on the demo model's 100 held-out synthetic images.

    Measured here: eager bf16 within 0.24 points of fp32 in every column; OpenVINO bf16 within
    0.24, except box AP -0.83 (one score flip moves box AP ~0.5 on 204 people; on 400 images
    every column of both is within 0.2 points: README). Pinned: 0.5 points for eager bf16 (the
    issue's target), 1.0 for OpenVINO bf16 on this small set.
    """
    from amanet.assets import DEMO_MODEL
    from amanet.benchmarks.accuracy import run_accuracy

    cases = [("eager", "fp32"), ("eager", "bf16"), ("openvino", "fp32"), ("openvino", "bf16")]
    res = {(r.backend, r.precision): r.ap
           for r in run_accuracy(str(DEMO_MODEL), "synthetic_val_100_256x384", cases, tmp_path,
                                 progress=False)}
    base = res[("eager", "fp32")]
    assert set(base) == {"GPS AP", "GPSm AP", "IoU AP", "box AP"}
    assert base["GPS AP"] > 0.4 and base["box AP"] > 0.5  # the model works at all
    for name, value in base.items():
        assert abs(res[("openvino", "fp32")][name] - value) < 1e-3, name
        assert abs(res[("eager", "bf16")][name] - value) <= 0.005, name
        assert abs(res[("openvino", "bf16")][name] - value) <= 0.010, name


# --- bf16 TorchScript export ---------------------------------------------------------------------

@pytest.mark.parametrize("family", ["s1x", "amanet"])
def test_bf16_torchscript_export_equals_eager_bf16(family, tmp_path):
    """The scripted bf16 graph runs the same kernels in the same dtypes as eager under autocast
    (convs / linear layers in bf16, detection math and outputs in float32): equal results."""
    from amanet.deploy.torchscript import export_torchscript
    from amanet.modeling.inference_prep import prepare_for_inference
    from amanet.runtime.backends import EagerBackend, TorchScriptBackend

    model = smoke_model(family)
    path = export_torchscript(model, tmp_path / "model.ts", precision="bf16")
    ts = TorchScriptBackend(str(path), torch.device("cpu"))
    assert ts.meta["precision"] == "bf16"
    weights = {n: p.dtype for n, p in ts.module.named_parameters()}
    assert torch.bfloat16 in set(weights.values())
    assert model.backbone.bottom_up.stem.conv1.weight.dtype == torch.float32  # model untouched
    eager = EagerBackend(prepare_for_inference(smoke_model(family)), torch.device("cpu"), "bf16")
    img = image(192, 256, seed=4)
    a, b = ts(img), eager(img)
    assert b["boxes"].shape[0] == 3
    for key in ("boxes", "scores", "classes", "gate", "fine_segm", "u", "v"):
        assert a[key].dtype == b[key].dtype, key
        torch.testing.assert_close(a[key], b[key], rtol=1e-3, atol=1e-3, msg=key)


def test_predictor_runs_a_torchscript_export_in_its_own_precision(tmp_path):
    from amanet.deploy.torchscript import export_torchscript

    path = str(export_torchscript(smoke_model("s1x"), tmp_path / "m.ts", precision="bf16"))
    assert Predictor.from_export(path).precision == "bf16"
    assert Predictor.from_export(path, precision="bf16").precision == "bf16"
    with pytest.raises(PrecisionError, match="m.ts computes in bf16"):
        Predictor.from_export(path, precision="fp32")
    fp32 = str(export_torchscript(smoke_model("s1x"), tmp_path / "f.ts"))
    assert Predictor.from_export(fp32).precision == "fp32"


def test_export_cli_writes_a_bf16_torchscript(tmp_path, capsys):
    from amanet.deploy.cli import main as export_main
    from amanet.deploy.torchscript import load_torchscript

    out = tmp_path / "s1x_bf16.ts"
    assert export_main(["torchscript", "--config", "s1x", "--out", str(out),
                        "--precision", "bf16", "--opts", *SMALL]) == 0
    _, meta = load_torchscript(out)
    assert meta["precision"] == "bf16"


# --- OpenVINO backend: cache, threads, missing runtime -------------------------------------------

@pytest.fixture(scope="module")
def s1x_onnx(request, tmp_path_factory):
    from amanet.deploy.onnx import export_onnx

    return export_onnx(smoke_model("s1x"), scratch_dir(request, tmp_path_factory, "ov") / "s1x.onnx",
                       example_hw=(160, 224))


def test_openvino_caches_the_compiled_model_next_to_the_export(s1x_onnx):
    from amanet.runtime.backends import OpenVINOBackend

    cache = Path(str(s1x_onnx) + ".ovcache")
    first = OpenVINOBackend(str(s1x_onnx), "fp32", threads=1)
    blobs = sorted(p.name for p in cache.iterdir())
    assert blobs, "no compiled blob in the cache folder"
    second = OpenVINOBackend(str(s1x_onnx), "fp32", threads=1)  # loads the blob
    assert sorted(p.name for p in cache.iterdir()) == blobs      # nothing compiled anew
    assert int(first.compiled.get_property("INFERENCE_NUM_THREADS")) == 1
    img = image()
    a, b = first(img), second(img)
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_openvino_bf16_is_what_it_says(s1x_onnx):
    from amanet.runtime.backends import OpenVINOBackend

    ov16 = OpenVINOBackend(str(s1x_onnx), "bf16", threads=2, cache=False)
    assert ov16.compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name() == "bf16"
    runtime = ov16.compiled.get_runtime_model()
    convs = [op.get_rt_info()["runtimePrecision"].astype(str) for op in runtime.get_ordered_ops()
             if op.get_rt_info()["layerType"].astype(str) == "Convolution"]
    assert convs and set(convs) == {"bf16"}
    out = ov16(image())
    assert out["boxes"].dtype == torch.float32 and out["boxes"].shape[0] == 3


def test_missing_openvino_is_one_clear_error(s1x_onnx, monkeypatch, tmp_path, capsys):
    from amanet.cli import main
    from amanet.runtime.backends import BackendUnavailable

    monkeypatch.setitem(sys.modules, "openvino", None)  # import openvino -> ImportError
    with pytest.raises(BackendUnavailable, match="backend openvino needs the openvino package"):
        Predictor.from_export(str(s1x_onnx), backend="openvino")
    code = main(["predict", str(PHOTO), "--backend", "openvino", "--weights", str(s1x_onnx),
                 "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("error: backend openvino needs")
