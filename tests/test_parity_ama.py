"""AMANet head + predictor: parity with the original code (fixture ama_head), plus module tests
that need no fixture (zero RoIs, TorchScript, folding after a weight reload).
"""
from __future__ import annotations

import pytest
import torch

from fixtures_path import fixture_dir, make_fixture_weights

from amanet.config.schema import DensePoseConfig, amanet_config
from amanet.modeling.heads.ama import AMAHead
from amanet.modeling.predictors.ama import AMAPredictor
from amanet.modeling.postprocess import iuv_charts_amanet
from amanet.ops.aggregation import adaptive_aggregation, adaptive_aggregation_reference
from scratch import scratch_dir

HEAD = "roi_heads.densepose_head."
PRED = "roi_heads.densepose_predictor."
BOX_KEYS = ("roi_heads.box_predictor.cls_score.weight", "roi_heads.box_predictor.bbox_pred.weight")
ATOL = RTOL = 1e-4
OUTPUT_KEYS = ("ann_index", "index_uv", "u", "v", "m", "k")
INTER_KEYS = ("ann_index", "index_uv", "u", "v", "body_mask")


def _strip(weights, prefix):
    return {k[len(prefix):]: v for k, v in weights.items() if k.startswith(prefix)}


def _stats_err(t: torch.Tensor, stats) -> float:
    """Max |t[pos] - value| over a STATS dict's 512 spot values (shape checked too)."""
    assert list(t.shape) == list(stats["shape"])
    picked = t[tuple(stats["positions"].T)]
    torch.testing.assert_close(picked, stats["values"], atol=ATOL, rtol=RTOL)
    return (picked - stats["values"]).abs().max().item()


# ---------------------------------------------------------------------------- fixture parity
@pytest.fixture(scope="session")
def ama_fixture(request, tmp_path_factory):
    root = fixture_dir("ama_head")
    weights_path = scratch_dir(request, tmp_path_factory, "ama_head") / "ama_head_weights.pt"
    make_fixture_weights(root, weights_path)
    weights = torch.load(weights_path, weights_only=True)
    weights_path.unlink()  # ~300 MB; everything needed is in memory now
    keys = [line.split("\t")[0] for line in (root / "keys.txt").read_text().splitlines() if line]
    return {"root": root, "weights": weights, "keys": keys,
            "ref": torch.load(root / "ama_outputs.pt", weights_only=True)}


@pytest.fixture(scope="module")
def ama_models(ama_fixture):
    cfg = amanet_config().densepose
    head, pred = AMAHead(cfg, 256).eval(), AMAPredictor(cfg, 256).eval()
    w = ama_fixture["weights"]
    head.load_state_dict(_strip(w, HEAD), strict=True)
    pred.load_state_dict(_strip(w, PRED), strict=True)
    bbox_params = torch.cat([w[k] for k in BOX_KEYS], dim=0)
    return head, pred, bbox_params


@pytest.fixture(scope="module")
def ama_run(ama_fixture, ama_models):
    """Everything computed once: head internals, unfolded/folded outputs, intermediate lists."""
    head, pred, bbox_params = ama_models
    x = [t.float() for t in ama_fixture["ref"]["inputs_fp16"]]
    with torch.no_grad():
        u = head.upsampled_paths(x)
        gates = head.path_gates(u)
        head_out, stages = head(x)
        gated, _ = adaptive_aggregation_reference(u, gates, 1)
        w_gen = pred.generate_surface_weights(bbox_params)
        unfolded = pred(head_out, stages, bbox_params, with_keypoints=True)
        inter = pred.forward_intermediate(head_out, stages, bbox_params)
        pred.fold(bbox_params)
        folded = pred(head_out, with_keypoints=True)
        pred.unfold()
    return {"u": u, "gates": gates, "head_out": head_out, "gated": gated.unbind(1), "stages": stages,
            "w_gen": w_gen,
            "unfolded": unfolded, "folded": folded, "inter": inter}


def test_state_dict_keys_match_checkpoint(ama_fixture, ama_models):
    head, pred, _ = ama_models
    keys = ama_fixture["keys"]
    assert list(head.state_dict()) == [k[len(HEAD):] for k in keys if k.startswith(HEAD)]
    assert list(pred.state_dict()) == [k[len(PRED):] for k in keys if k.startswith(PRED)]
    pred.fold(torch.zeros(6, 1024))
    try:  # the folded conv lives in non-persistent buffers
        assert list(pred.state_dict()) == [k[len(PRED):] for k in keys if k.startswith(PRED)]
    finally:
        pred.unfold()


def test_bbox_params(ama_fixture, ama_models):
    torch.testing.assert_close(ama_models[2], ama_fixture["ref"]["bbox_params"], atol=0, rtol=0)


def test_head_ungated_paths(ama_fixture, ama_run):
    for i, stats in enumerate(ama_fixture["ref"]["head"]["ungated_U_stats"]):
        _stats_err(ama_run["u"][:, i], stats)


def test_head_gates(ama_fixture, ama_run):
    for i, ref in enumerate(ama_fixture["ref"]["head"]["gates"]):
        torch.testing.assert_close(ama_run["gates"][:, i], ref, atol=ATOL, rtol=RTOL)


def test_head_gated_paths_and_output(ama_fixture, ama_run):
    ref = ama_fixture["ref"]["head"]
    assert len(ama_run["gated"]) == 4
    for g, stats in zip(ama_run["gated"], ref["gated_G_stats"], strict=True):
        _stats_err(g, stats)
    g = ama_run["gated"]
    _stats_err(g[0] + g[1] + g[2] + g[3], ref["gated_sum_stats"])
    # the head's own outputs for the intermediate stages: G1 + G2, G3 + G4
    assert len(ama_run["stages"]) == 2
    _stats_err(ama_run["stages"][0], ref["inter_features_stats"][0])
    _stats_err(ama_run["stages"][1], ref["inter_features_stats"][1])
    _stats_err(ama_run["head_out"], ref["output_stats"])


def test_generated_surface_weights(ama_fixture, ama_run):
    ref = ama_fixture["ref"]["predictor_internals"]["surface_weight"]
    torch.testing.assert_close(ama_run["w_gen"], ref, atol=ATOL, rtol=RTOL)


@pytest.mark.parametrize("mode", ["unfolded", "folded"])
def test_predictor_outputs(ama_fixture, ama_run, mode):
    out, ref = ama_run[mode], ama_fixture["ref"]["outputs"]
    assert set(out) == set(OUTPUT_KEYS)
    for key in OUTPUT_KEYS:
        torch.testing.assert_close(out[key], ref[key], atol=ATOL, rtol=RTOL, msg=f"{mode} {key}")


def test_folded_matches_unfolded(ama_run):
    for key in OUTPUT_KEYS:
        diff = (ama_run["folded"][key] - ama_run["unfolded"][key]).abs().max().item()
        assert diff <= 1e-4, (key, diff)


def test_intermediate_outputs(ama_fixture, ama_run):
    inter = ama_run["inter"]
    assert len(inter) == 2
    for j, stage in enumerate(inter, start=1):
        assert set(stage) == set(INTER_KEYS)
        for key in INTER_KEYS:
            _stats_err(stage[key], ama_fixture["ref"][f"inter_out{j}_stats"][key])
            fp16 = ama_fixture["ref"][f"inter_out{j}_fp16"][key].float()
            torch.testing.assert_close(stage[key], fp16, atol=3e-3, rtol=0)


def test_iuv_from_our_outputs(ama_fixture, ama_run):
    post = ama_fixture["ref"]["postprocess"]
    out = ama_run["folded"]
    charts = iuv_charts_amanet(out["index_uv"], out["u"], out["v"], out["m"], post["boxes_xywh"],
                               post["gate_threshold"])
    for chart, ref in zip(charts, post["iuv_uint8"], strict=True):
        ref = torch.as_tensor(ref)
        assert chart.dtype == torch.uint8 and chart.shape == ref.shape
        same = chart[0] == ref[0]
        assert same.float().mean().item() >= 0.995
        code_diff = (chart[1:].int() - ref[1:].int()).abs()[:, same]
        assert code_diff.numel() == 0 or code_diff.max().item() <= 1


# ---------------------------------------------------------------------------- no fixture needed
def _small_cfg() -> DensePoseConfig:
    cfg = amanet_config().densepose
    cfg.conv_head_dim = 16
    cfg.num_stacked_convs = 2
    return cfg


SMALL_IN, SMALL_FC = 8, 32  # head input channels, box FC width


def _small_models(seed: int):
    torch.manual_seed(seed)
    cfg = _small_cfg()
    head = AMAHead(cfg, SMALL_IN).eval()
    pred = AMAPredictor(cfg, cfg.conv_head_dim, box_fc_dim=SMALL_FC).eval()
    for p in pred.parameters():  # the default init makes W_gen tiny; make it matter
        p.data.normal_(0, 0.2)
    return head, pred, torch.randn(6, SMALL_FC)


def _small_inputs(n: int):
    # sizes s, s/2, s/2, s/4 all reach 2s through the shared deconvs
    return [torch.randn(n, SMALL_IN, s, s) for s in (8, 4, 4, 2)]


def test_adaptive_aggregation_reference():
    feats, gates = torch.randn(3, 4, 5, 6, 7), torch.rand(3, 4, 5)
    g, s = adaptive_aggregation_reference(feats, gates)
    assert g.shape == feats.shape and s.shape == (3, 5, 6, 7)
    torch.testing.assert_close(g[1, 2, 3], feats[1, 2, 3] * gates[1, 2, 3])
    torch.testing.assert_close(s, sum(feats[:, i] * gates[:, i, :, None, None] for i in range(4)))
    g2, s2 = adaptive_aggregation(feats, gates)
    assert torch.equal(g, g2) and torch.equal(s, s2)


def test_small_model_shapes_and_zero_rois():
    head, pred, bbox_params = _small_models(0)
    for n in (2, 0):
        with torch.no_grad():
            head_out, stages = head(_small_inputs(n))
            out = pred(head_out, stages, bbox_params, with_keypoints=True)
            inter = pred.forward_intermediate(head_out, stages, bbox_params)
        assert head_out.shape == (n, 16, 16, 16)
        assert [tuple(s.shape) for s in stages] == [(n, 16, 16, 16)] * 2
        channels = {"ann_index": 15, "index_uv": 25, "u": 25, "v": 25, "m": 2, "k": 17}
        assert {k: tuple(v.shape) for k, v in out.items()} == {k: (n, c, 16, 16) for k, c in channels.items()}
        assert [tuple(s["body_mask"].shape) for s in inter] == [(n, 2, 16, 16)] * 2
    assert "k" not in pred(head_out, bbox_params=bbox_params)


def test_forward_train_matches_forward(tmp_path):
    head, pred, bbox_params = _small_models(1)
    with torch.no_grad():
        head_out, stages = head(_small_inputs(2))
        main, inter = pred.forward_train(head_out, stages, bbox_params)
        ref_main = pred(head_out, bbox_params=bbox_params, with_keypoints=True)
        ref_inter = pred.forward_intermediate(head_out, stages, bbox_params)
    for k in ref_main:
        torch.testing.assert_close(main[k], ref_main[k])
    for stage, ref_stage in zip(inter, ref_inter, strict=True):
        for k in ref_stage:
            torch.testing.assert_close(stage[k], ref_stage[k])


def test_unfolded_without_bbox_params_raises():
    head, pred, _ = _small_models(2)
    with pytest.raises(RuntimeError, match="not folded"):
        pred(torch.randn(1, 16, 16, 16))


def test_torchscript_roundtrip(tmp_path):
    head, pred, bbox_params = _small_models(3)
    with torch.no_grad():
        x = _small_inputs(2)
        head_out, gated = head(x)
        eager_unfolded = pred(head_out, bbox_params=bbox_params, with_keypoints=True)
        pred.fold(bbox_params)
        eager = pred(head_out, with_keypoints=True)
    torch.jit.script(head).save(str(tmp_path / "head.pt"))
    torch.jit.script(pred).save(str(tmp_path / "pred.pt"))
    s_head = torch.jit.load(str(tmp_path / "head.pt"))
    s_pred = torch.jit.load(str(tmp_path / "pred.pt"))
    with torch.no_grad():
        s_out, s_gated = s_head(x)
        torch.testing.assert_close(s_out, head_out)
        for a, b in zip(s_gated, gated, strict=True):
            torch.testing.assert_close(a, b)
        s_res = s_pred(s_out, None, None, True)
        for k in eager:
            torch.testing.assert_close(s_res[k], eager[k])
        # folding reorders the sums: compare at the output's scale
        scale = eager_unfolded["index_uv"].abs().max().item()
        assert (s_res["index_uv"] - eager_unfolded["index_uv"]).abs().max().item() <= 1e-5 * scale
        # zero RoIs through the scripted modules
        z_out, z_gated = s_head(_small_inputs(0))
        z_res = s_pred(z_out, None, None, False)
    assert z_out.shape == (0, 16, 16, 16) and len(z_gated) == 2
    assert z_res["index_uv"].shape == (0, 25, 16, 16) and "k" not in z_res


def test_scripted_unfolded_path_needs_and_uses_bbox_params():
    head, pred, bbox_params = _small_models(4)
    s_pred = torch.jit.script(pred)
    feat = torch.randn(1, 16, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(s_pred(feat, None, bbox_params, False)["index_uv"],
                                   pred(feat, bbox_params=bbox_params)["index_uv"])
    with pytest.raises(Exception, match="not folded"):
        s_pred(feat, None, None, False)


def test_refold_after_loading_new_weights():
    _, pred, bbox_params = _small_models(5)
    _, other, _ = _small_models(6)
    feat = torch.randn(2, 16, 16, 16)
    with torch.no_grad():
        pred.fold(bbox_params)
        old = pred(feat)["index_uv"]
        pred.load_state_dict(other.state_dict(), strict=True)
        assert not pred.folded  # stale folded weights are discarded on load
        with pytest.raises(RuntimeError, match="not folded"):
            pred(feat)
        pred.fold(bbox_params)
        new = pred(feat)["index_uv"]
        expected = other(feat, bbox_params=bbox_params)["index_uv"]
    assert (new - expected).abs().max().item() <= 1e-5 * expected.abs().max().item()
    assert (new - old).abs().max().item() > 1e-2
