"""Every family / head kind builds from its preset and runs on CPU; output shapes follow
DESIGN.md and Detectron2's field names (literal tables, not read from the code under test)."""
from __future__ import annotations

import pytest
import torch

from amanet.config import load_config
from amanet.modeling.model import build_model
from amanet.modeling.smoke_init import smoke_init_

_CHART = {"coarse_segm": 2, "fine_segm": 25, "u": 25, "v": 25}
EXPECTED = {
    "s1x": (112, _CHART),
    "amanet": (64, {"body_mask": 2, "fine_segm": 25, "u": 25, "v": 25}),
    "densepose_rcnn_R_50_FPN_DL_s1x": (112, _CHART),
    "densepose_rcnn_R_50_FPN_WC1_s1x": (112, {**_CHART, "sigma_2": 25}),
    "densepose_rcnn_R_50_FPN_DL_WC2M_s1x": (112, {
        **_CHART, "sigma_2": 25, "kappa_u": 25, "kappa_v": 25, "fine_segm_confidence": 1,
        "coarse_segm_confidence": 1}),
    "densepose_rcnn_R_50_FPN_s1x_legacy": (56, {"coarse_segm": 15, "fine_segm": 25, "u": 25,
                                                "v": 25}),
}


def make(name, detections=3):
    cfg = load_config(name)
    cfg.roi_heads.detections_per_image = detections
    model = smoke_init_(build_model(cfg), seed=0)
    model.preset = name
    return model


@pytest.fixture(scope="module", params=list(EXPECTED))
def model(request):
    return make(request.param)


@pytest.mark.parametrize("hw", [(320, 480), (800, 1216)])
def test_forward_shapes(model, hw):
    torch.manual_seed(1)
    img = torch.rand(3, *hw) * 255
    with torch.no_grad():
        out = model([img])[0]
    d = out["boxes"].shape[0]
    assert out["boxes"].shape == (d, 4) and out["scores"].shape == (d,)
    assert out["classes"].dtype == torch.int64
    size, channels = EXPECTED[model.preset]
    assert list(out["densepose"]) == list(channels)  # the gate first, Detectron2's order
    for k, c in channels.items():
        assert out["densepose"][k].shape == (d, c, size, size), k
    assert d == 3, "smoke-initialised weights give detections (capped at 3 here)"
    assert (out["boxes"][:, 0::2] <= hw[1]).all() and (out["boxes"][:, 1::2] <= hw[0]).all()


def test_zero_detections_give_empty_typed_outputs(model):
    model.cfg.roi_heads.score_thresh_test = 1.0
    model.roi_heads.cfg.roi_heads.score_thresh_test = 1.0
    try:
        with torch.no_grad():
            out = model([torch.zeros(3, 64, 96)])[0]
    finally:
        model.cfg.roi_heads.score_thresh_test = 0.05
        model.roi_heads.cfg.roi_heads.score_thresh_test = 0.05
    size, channels = EXPECTED[model.preset]
    assert out["boxes"].shape == (0, 4) and out["scores"].shape == (0,)
    assert out["classes"].shape == (0,)
    assert (out["boxes"].dtype, out["scores"].dtype, out["classes"].dtype) == (
        torch.float32, torch.float32, torch.int64)
    assert list(out["densepose"]) == list(channels)
    for k, c in channels.items():
        assert out["densepose"][k].shape == (0, c, size, size)
        assert out["densepose"][k].dtype == torch.float32, k


def test_batch_of_two_images_matches_single(model):
    # Same padded size: a batch pads every image to the largest, and padding changes the
    # features near the border (as in Detectron2), so only equal sizes are comparable.
    torch.manual_seed(2)
    a, b = torch.rand(3, 96, 128) * 255, torch.rand(3, 90, 120) * 255
    with torch.no_grad():
        both = model([a, b])
        single = model([b])[0]
    torch.testing.assert_close(both[1]["boxes"], single["boxes"], atol=1e-3, rtol=0)
    torch.testing.assert_close(both[1]["densepose"]["fine_segm"],
                               single["densepose"]["fine_segm"], atol=1e-4, rtol=1e-4)


def test_amanet_folded_equals_unfolded():
    model = make("amanet", detections=2)
    torch.manual_seed(3)
    img = torch.rand(3, 160, 224) * 255
    with torch.no_grad():
        folded = model([img])[0]["densepose"]
        unfolded = model([img], unfolded=True)[0]["densepose"]
    assert folded["fine_segm"].shape[0] == 2
    for k in folded:
        torch.testing.assert_close(folded[k], unfolded[k], atol=1e-4, rtol=1e-4)


def test_load_state_dict_refolds_amanet():
    a, b = make("amanet", 1), make("amanet", 1)
    with torch.no_grad():
        for p in b.parameters():
            p.add_(0.01 * torch.randn_like(p))
    b.roi_heads.fold()
    stale = a.roi_heads.densepose_predictor.folded_i_weight.clone()
    a.load_state_dict(b.state_dict())
    assert not torch.allclose(stale, a.roi_heads.densepose_predictor.folded_i_weight)
    torch.testing.assert_close(a.roi_heads.densepose_predictor.folded_i_weight,
                               b.roi_heads.densepose_predictor.folded_i_weight)
