"""TorchScript and ONNX exports of every family and head kind match eager PyTorch (ONNX in ONNX
Runtime and in OpenVINO); zero detections work. Head kinds: V1ConvX + decoder (s1x), AMANet,
DeepLab head with every confidence output (DL_WC2M), legacy (no decoder, FPN-level pooling,
15 coarse channels, 56x56)."""
from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from amanet.config import load_config
from amanet.deploy.graph import DeployGraph, output_names
from amanet.modeling.model import build_model
from amanet.modeling.smoke_init import smoke_init_
from amanet.ops.library import load_library
from amanet.runtime.backends import (EagerBackend, OnnxRuntimeBackend, OpenVINOBackend,
                                     TorchScriptBackend, flat_outputs)
from iuv_agreement import assert_iuv_agree
from scratch import scratch_dir

pytestmark = pytest.mark.skipif(not load_library() or not hasattr(torch.ops.amanet, "nms"),
                                reason="amanet._C with roi_align/nms is not built")

DETS = 2  # the AMANet head costs ~25 GFLOP per RoI: keep CPU tests small


def overrides(score_thresh="0.05"):
    return ["TEST.DETECTIONS_PER_IMAGE", str(DETS), "MODEL.ROI_HEADS.SCORE_THRESH_TEST",
            score_thresh, "INPUT.MIN_SIZE_TEST", "160", "INPUT.MAX_SIZE_TEST", "256"]


def make_model(family, score_thresh="0.05"):
    cfg = load_config(family, overrides(score_thresh))
    return smoke_init_(build_model(cfg), seed=0).eval()


def image(h, w, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(3, h, w, generator=g) * 255


DL_WC2M = "densepose_rcnn_R_50_FPN_DL_WC2M_s1x"
LEGACY = "densepose_rcnn_R_50_FPN_s1x_legacy"
#: preset -> (has a decoder, number of graph outputs), literal
KINDS = {"s1x": (True, 7), "amanet": (False, 7), DL_WC2M: (True, 12), LEGACY: (False, 7)}


@pytest.fixture(scope="module", params=list(KINDS))
def exported(request, tmp_path_factory):
    from amanet.deploy.onnx import export_onnx
    from amanet.deploy.torchscript import export_torchscript

    preset = request.param
    model = make_model(preset)
    d = scratch_dir(request, tmp_path_factory, f"export_{preset}")
    ts = export_torchscript(model, d / "model.ts")
    ox = export_onnx(model, d / "model.onnx", example_hw=(160, 224))
    return {"preset": preset, "family": model.cfg.family, "model": model, "ts": str(ts),
            "onnx": str(ox), "dir": d}


def pair_and_compare(ref, out, box_atol=0.05, score_atol=1e-4, rel=1e-3):
    """Detections are paired by box (order may flip on near-tied scores)."""
    assert ref["boxes"].shape == out["boxes"].shape
    n = ref["boxes"].shape[0]
    if n == 0:
        return
    dist = torch.cdist(ref["boxes"].double(), out["boxes"].double())
    match = dist.argmin(dim=1)
    assert sorted(match.tolist()) == list(range(n))
    torch.testing.assert_close(out["boxes"][match], ref["boxes"], atol=box_atol, rtol=0)
    torch.testing.assert_close(out["scores"][match], ref["scores"], atol=score_atol, rtol=0)
    assert sorted(out) == sorted(ref)
    for key in [k for k in ref if k not in ("boxes", "scores", "classes")]:
        a, b = ref[key], out[key][match]
        scale = a.abs().max().clamp(min=1e-6)
        assert ((a - b).abs().max() / scale) <= rel, key


@pytest.mark.parametrize("hw", [(160, 224), (224, 288)])  # export size and another
def test_torchscript_onnxruntime_and_openvino_match_eager(exported, hw):
    eager = EagerBackend(exported["model"], torch.device("cpu"))
    img = image(*hw)
    ref = eager(img)
    assert ref["boxes"].shape[0] == DETS
    for backend in (TorchScriptBackend(exported["ts"], torch.device("cpu")),
                    OnnxRuntimeBackend(exported["onnx"], ["CPUExecutionProvider"]),
                    OpenVINOBackend(exported["onnx"], "fp32", threads=2)):
        pair_and_compare(ref, backend(img))


def test_zero_detections_in_every_backend(exported, tmp_path):
    from amanet.deploy.onnx import export_onnx
    from amanet.deploy.torchscript import export_torchscript

    model = make_model(exported["preset"], score_thresh="1.0")
    ts = export_torchscript(model, tmp_path / "zero.ts")
    ox = export_onnx(model, tmp_path / "zero.onnx", example_hw=(128, 160))
    img = image(160, 192)
    s = model.cfg.densepose.heatmap_size
    for backend in (EagerBackend(model, torch.device("cpu")),
                    TorchScriptBackend(str(ts), torch.device("cpu")),
                    OnnxRuntimeBackend(str(ox), ["CPUExecutionProvider"]),
                    OpenVINOBackend(str(ox), "fp32", threads=2),
                    EagerBackend(model, torch.device("cpu"), "bf16"),
                    OpenVINOBackend(str(ox), "bf16", threads=2)):
        out = backend(img)
        assert out["boxes"].shape == (0, 4), backend.name
        channels = list(model.densepose_channels().values())
        assert list(out) == output_names(model.cfg), backend.name
        for key, c in zip(output_names(model.cfg)[3:], channels):
            assert out[key].shape == (0, c, s, s), (backend.name, key)


def test_onnx_uses_standard_ops_only(exported):
    from amanet.deploy.onnx import op_types, read_metadata

    ops = op_types(exported["onnx"])
    assert all("::" not in op for op in ops), ops
    assert "RoiAlign" in ops and "NonMaxSuppression" in ops
    # with a decoder, zero detections skip the DensePose branch (and its whole-image decoder)
    # through an If; without one the branch costs nothing without boxes and stays plain
    assert ("If" in ops) == KINDS[exported["preset"]][0]
    meta = read_metadata(exported["onnx"])
    assert meta["family"] == exported["family"]


def test_onnx_roialign_mode_follows_the_family(exported):
    import onnx

    proto = onnx.load(exported["onnx"])
    modes = {a.s.decode() for n in proto.graph.node if n.op_type == "RoiAlign"
             for a in n.attribute if a.name == "coordinate_transformation_mode"}
    assert modes == {"output_half_pixel"}, modes  # both presets pool with aligned=False


def test_torchscript_loads_without_python_model_code_or_torchvision(exported):
    code = textwrap.dedent(f"""
        import sys, torch
        import amanet._C  # our op library only
        m = torch.jit.load({exported['ts']!r})
        out = m(torch.rand(3, 96, 128) * 255)
        assert "torchvision" not in sys.modules, "torchvision was imported"
        assert "amanet.modeling" not in sys.modules
        print(len(out), tuple(out[0].shape))
    """)
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.startswith(f"{KINDS[exported['preset']][1]} ")


def test_graph_eager_equals_model_exactly(exported):
    """The batched model forward (training-side evaluation, stage benchmarks) and the deploy
    graph the Predictor runs give the same tensors."""
    model = exported["model"]
    graph = DeployGraph(model).eval()
    img = image(192, 256, seed=3)
    with torch.no_grad():
        ref = flat_outputs(model([img])[0], list(model.densepose_channels()))
        out = graph(img)
    names = output_names(exported["model"].cfg)
    assert len(out) == len(names) == KINDS[exported["preset"]][1] == len(ref)
    for key, t in zip(names, out):
        assert torch.equal(ref[key], t), key


def test_a_batch_of_images_gives_what_each_gives_alone(exported):
    """DeployGraph.forward_many (video frames in one batch, eager only) against forward, image
    by image: same detections and DensePose outputs (fp32 batched convolutions round
    differently: 1e-4 relative), also when no image has a detection; one size only; the
    exports' backends refuse a batch."""
    from amanet.runtime import Predictor

    graph = DeployGraph(exported["model"]).eval()
    images = [image(160, 224, seed=s) for s in (4, 5, 6)]
    with torch.no_grad():
        alone = [graph(im) for im in images]
        together = graph.forward_many(images)
        assert len(together) == 3
        for one, batched in zip(alone, together, strict=True):
            assert len(one) == len(batched) == KINDS[exported["preset"]][1]
            assert one[0].shape[0] == DETS
            torch.testing.assert_close(batched[2], one[2], rtol=0, atol=0)       # classes
            for a, b in zip(one[:2] + one[3:], batched[:2] + batched[3:]):
                torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-3)
        graph.score_threshold.fill_(2.0)                 # nothing passes: zero detections
        empty = graph.forward_many(images[:2])
        graph.score_threshold.fill_(0.05)
        for out in empty:
            assert [tuple(t.shape[1:]) for t in out[3:]] == [tuple(t.shape[1:])
                                                             for t in alone[0][3:]]
            assert all(t.shape[0] == 0 for t in out)
        with pytest.raises(ValueError, match="images of one size"):
            graph.forward_many([image(160, 224), image(160, 256)])
    with pytest.raises(ValueError, match="batch size > 1 needs backend eager"):
        Predictor.from_export(exported["ts"]).predict_many([np.zeros((8, 8, 3), np.uint8)], 2)


def test_fixed_max_detections_pads_and_counts(exported):
    graph = torch.jit.script(DeployGraph(exported["model"], max_detections=10).eval())
    with torch.no_grad():
        out = graph(image(160, 224))
    assert out[0].shape == (10, 4) and int(out[-1][0]) == DETS
    assert not out[0][DETS:].any()
    np.testing.assert_array_equal(out[4].shape, (10, 25, *out[4].shape[2:]))


def test_predictor_over_every_backend_gives_the_same_people(exported):
    from amanet.assets import PHOTO
    from amanet.runtime import Predictor

    eager = Predictor(exported["preset"], overrides=overrides())(str(PHOTO))
    assert len(eager) == DETS
    for path, backend in ((exported["ts"], None), (exported["onnx"], None),
                          (exported["onnx"], "openvino")):
        pred = Predictor.from_export(path, backend=backend)(str(PHOTO))
        dist = np.abs(pred.boxes[:, None, :] - eager.boxes[None, :, :]).sum(-1)
        match = dist.argmin(axis=0)
        np.testing.assert_allclose(pred.boxes[match], eager.boxes, atol=0.05)
        np.testing.assert_allclose(pred.scores[match], eager.scores, atol=1e-4)
        assert eager.iuv[0].any()
        assert_iuv_agree(pred.iuv, eager.iuv, what=str(path))
        for i, j in enumerate(match):
            assert pred.charts[j].shape == eager.charts[i].shape
        assert sorted(pred.densepose) == sorted(eager.densepose)
        assert len(pred.chart_confidences) == len(eager.chart_confidences)
        for i, j in enumerate(match[:len(eager.chart_confidences)]):
            for name, conf in eager.chart_confidences[i].items():
                agree = pred.charts[j][0] == eager.charts[i][0]
                np.testing.assert_allclose(pred.chart_confidences[j][name][agree], conf[agree],
                                           rtol=1e-3, atol=1e-3, err_msg=name)
