"""Checkpoint reading: Detectron2 formats load strictly, bad files fail with named reasons."""
from __future__ import annotations

import os
import pickle

import numpy as np
import pytest
import torch

from amanet.checkpoint import (CheckpointError, config_of_checkpoint, load_weights,
                               read_checkpoint, save_checkpoint)
from amanet.config import amanet_config, s1x_config
from amanet.modeling.model import build_model


def small(cfg):
    """Same key names and shapes as the real model (the tests only need the structure)."""
    return cfg


@pytest.fixture(scope="module", params=["s1x", "amanet"])
def family_model(request):
    cfg = s1x_config() if request.param == "s1x" else amanet_config()
    torch.manual_seed(0)
    return build_model(cfg)


def d2_pickle(state, path, extra=None):
    model = {k: v.detach().cpu().numpy() for k, v in state.items()}
    if extra:
        model.update(extra)
    with open(path, "wb") as f:
        pickle.dump({"model": model, "__author__": "test"}, f)


def test_detectron2_pkl_and_pth_load_strictly(family_model, tmp_path):
    state = family_model.state_dict()
    pkl = tmp_path / "model.pkl"
    d2_pickle(state, pkl)
    fresh = build_model(family_model.cfg)
    load_weights(fresh, str(pkl))
    for k, v in fresh.state_dict().items():
        assert torch.equal(v, state[k]), k
    pth = tmp_path / "model.pth"
    torch.save({"model": state}, pth)
    fresh2 = build_model(family_model.cfg)
    load_weights(fresh2, str(pth))
    assert all(torch.equal(v, state[k]) for k, v in fresh2.state_dict().items())


def test_amanet_keypoint_head_entries_are_skipped(tmp_path, caplog):
    """The keypoint head's entries are dropped with a log line; every other weight loads."""
    import logging

    model = build_model(amanet_config())
    pkl = tmp_path / "ama_with_kpt.pkl"
    d2_pickle(model.state_dict(), pkl,
              extra={"roi_heads.keypoint_head.conv_fcn1.weight": np.zeros((4, 4), np.float32)})
    other = build_model(amanet_config())
    key = "roi_heads.densepose_head.body_conv_fcn1.weight"
    assert not torch.equal(other.state_dict()[key], model.state_dict()[key])
    with caplog.at_level(logging.INFO, logger="amanet.checkpoint"):
        load_weights(other, str(pkl))
    assert "ignoring 1 checkpoint entries" in caplog.text
    assert "roi_heads.keypoint_head.conv_fcn1.weight" in caplog.text
    for k, v in model.state_dict().items():
        assert torch.equal(other.state_dict()[k], v), k


def test_renamed_missing_misshaped_keys_are_named(tmp_path):
    model = build_model(s1x_config())
    state = dict(model.state_dict())
    w = state.pop("roi_heads.box_head.fc1.weight")
    state["roi_heads.box_head.fc_one.weight"] = w
    del state["backbone.fpn_output2.bias"]
    state["roi_heads.box_predictor.cls_score.bias"] = torch.zeros(3)
    pkl = tmp_path / "bad.pkl"
    d2_pickle(state, pkl)
    with pytest.raises(CheckpointError) as e:
        load_weights(build_model(s1x_config()), str(pkl))
    msg = str(e.value)
    for name in ("roi_heads.box_head.fc1.weight", "roi_heads.box_head.fc_one.weight",
                 "backbone.fpn_output2.bias", "roi_heads.box_predictor.cls_score.bias"):
        assert name in msg
    assert "missing" in msg and "unexpected" in msg and "mis-shaped" in msg


def test_wrong_family_checkpoint_fails(tmp_path):
    pkl = tmp_path / "s1x.pkl"
    d2_pickle(build_model(s1x_config()).state_dict(), pkl)
    with pytest.raises(CheckpointError, match="densepose_head"):
        load_weights(build_model(amanet_config()), str(pkl))


def test_wrong_zoo_config_checkpoint_names_the_right_config(tmp_path):
    """A DL_WC2M checkpoint given to the V1ConvX config: one short message naming the config
    its keys belong to (it used to be 4 KB of key names)."""
    from amanet.config import load_config

    pkl = tmp_path / "dl_wc2m.pkl"
    d2_pickle(build_model(load_config("densepose_rcnn_R_50_FPN_DL_WC2M_s1x")).state_dict(), pkl)
    with pytest.raises(CheckpointError) as info:
        load_weights(build_model(s1x_config()), str(pkl))
    msg = str(info.value)
    assert "densepose_rcnn_R_50_FPN_DL_WC2M_s1x" in msg and "--config" in msg
    assert "DeepLab head" in msg and "\n" not in msg and len(msg) < 900, (len(msg), msg)


@pytest.mark.parametrize("name", [
    "densepose_rcnn_R_50_FPN_s1x", "densepose_rcnn_R_101_FPN_DL_s1x",
    "densepose_rcnn_R_50_FPN_WC1_s1x", "densepose_rcnn_R_101_FPN_WC2_s1x",
    "densepose_rcnn_R_50_FPN_DL_WC1M_s1x", "densepose_rcnn_R_101_FPN_s1x_legacy",
    "densepose_AMA_R_50_FPN_s1x"])
def test_guess_config_reads_the_zoo_layout_from_keys(name):
    from amanet.checkpoint import guess_config
    from amanet.config import load_config

    state = build_model(load_config(name)).state_dict()
    assert guess_config(state)[0] == name
    assert guess_config({"backbone.bottom_up.stem.conv1.weight": torch.zeros(1)}) is None


class _Evil:
    def __reduce__(self):
        return (os.system, (f"touch {_Evil.marker}",))


def test_pickle_with_code_is_refused_without_running_it(tmp_path):
    _Evil.marker = str(tmp_path / "pwned")
    path = tmp_path / "evil.pkl"
    with open(path, "wb") as f:
        pickle.dump({"model": {"a": np.zeros(2, np.float32), "b": _Evil()}}, f)
    with pytest.raises(CheckpointError, match="refusing to load"):
        read_checkpoint(str(path))
    assert not os.path.exists(_Evil.marker)


def test_torch_file_with_code_is_refused(tmp_path):
    _Evil.marker = str(tmp_path / "pwned2")
    path = tmp_path / "evil.pth"
    torch.save({"model": {"a": torch.zeros(2)}, "x": _Evil()}, path)
    with pytest.raises(CheckpointError, match="safe loader"):
        read_checkpoint(str(path))
    assert not os.path.exists(_Evil.marker)


@pytest.mark.parametrize("content,match", [
    (b"", "empty"),
    (b"this is not a checkpoint", "not a readable"),
])
def test_empty_and_garbage_files(tmp_path, content, match):
    path = tmp_path / "ckpt.pkl"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match=match):
        read_checkpoint(str(path))


def test_missing_file_and_non_array_entries(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        read_checkpoint(str(tmp_path / "nope.pkl"))
    path = tmp_path / "strings.pkl"
    with open(path, "wb") as f:
        pickle.dump({"model": {"a": "hello"}}, f)
    with pytest.raises(CheckpointError, match="not an array"):
        read_checkpoint(str(path))


def test_own_format_round_trip_embeds_config(tmp_path):
    cfg = s1x_config()
    cfg.roi_heads.score_thresh_test = 0.42
    model = build_model(cfg)
    path = tmp_path / "ours.pth"
    save_checkpoint(model, cfg, str(path))
    got = config_of_checkpoint(str(path))
    assert got is not None and got.roi_heads.score_thresh_test == 0.42 and got.family == "s1x"
    fresh = build_model(got)
    load_weights(fresh, str(path))
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in fresh.state_dict().items())
