"""The bundled demo model: it ships, loads, and sees the people of the bundled synthetic image.

The image is a held-out render of the synthetic world whose exact labels
:func:`amanet.assets.synthetic_image_truth` reproduces, so "visibly right" is checked against
the truth: every person found with a tight box, their silhouettes, a good share of their pixels
given the right one of 24 body parts and, there, nearly the right U, V. Thresholds sit below what the committed model measures (the
README's demo section gives the measured values) so that a broken pipeline fails them and
float rounding does not.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from amanet.assets import DEMO_MODEL, SYNTHETIC_IMAGE, synthetic_image_truth
from amanet.checkpoint import read_checkpoint
from amanet.cli import main
from amanet.config import load_config
from amanet.runtime import Predictor

DEMO_YAML = "demo_AMA_R_18_FPN_synthetic.yaml"


def _iou(a, b):
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


@pytest.fixture(scope="module")
def prediction():
    predictor = Predictor(None, weights=str(DEMO_MODEL))
    return predictor, predictor(str(SYNTHETIC_IMAGE))


@pytest.fixture(scope="module")
def truth():
    return synthetic_image_truth()


def test_demo_model_ships_small_with_its_config():
    assert DEMO_MODEL.is_file(), f"{DEMO_MODEL} is missing"
    assert DEMO_MODEL.stat().st_size <= 25 * 2 ** 20
    state, cfg_dict = read_checkpoint(str(DEMO_MODEL))
    assert cfg_dict is not None
    from amanet.config import config_from_dict
    shipped = config_from_dict(cfg_dict)
    recipe = load_config(DEMO_YAML)
    for group in ("input", "backbone", "rpn", "roi_heads", "densepose"):
        assert getattr(shipped, group) == getattr(recipe, group), group


def test_bundled_image_matches_its_truth():
    img = np.asarray(Image.open(SYNTHETIC_IMAGE))[:, :, ::-1]
    t = synthetic_image_truth()
    assert img.shape == t.image.shape
    diff = np.abs(img.astype(int) - t.image.astype(int))
    assert np.median(diff) <= 2 and diff.mean() < 6     # JPEG (quality 92) rounding only


def test_demo_model_finds_every_person(prediction, truth):
    predictor, pred = prediction
    assert predictor.random_weights is False
    gt = [[x, y, x + w, y + h] for x, y, w, h in (a["bbox"] for a in truth.annotations)]
    assert len(pred) == len(gt), (pred.boxes, gt)
    for g in gt:
        best = max(_iou(g, b) for b in pred.boxes)
        assert best >= 0.7, (g, pred.boxes)
    assert (pred.scores >= 0.8).all(), pred.scores


def test_demo_model_body_parts_and_uv(prediction, truth):
    _, pred = prediction
    i_pred, u_pred, v_pred = (c.astype(np.float64) for c in pred.iuv)
    fg = truth.I > 0
    found = i_pred > 0
    # foreground found where the people are
    assert (found & fg).sum() / fg.sum() >= 0.8                   # measured 0.92
    assert (found & ~fg).sum() / max(1, found.sum()) <= 0.2       # measured 0.10
    # the right one of 24 parts on a good share of it (chance: ~0.04); the misses are mostly
    # front/back confusions (torso 1 vs 2, upper legs 7 vs 8)
    same = fg & (i_pred == truth.I)
    assert same.sum() / fg.sum() >= 0.35                          # measured 0.46
    # and U, V close where the part is right (truth in 0..1, prediction in 0..255)
    du = np.abs(u_pred[same] / 255 - truth.U[same])
    dv = np.abs(v_pred[same] / 255 - truth.V[same])
    # measured 0.10 and 0.04
    assert np.median(du) <= 0.15 and np.median(dv) <= 0.15, (np.median(du), np.median(dv))


def test_cli_demo_uses_the_demo_model(tmp_path, capsys):
    assert main(["predict", "--demo", "--out", str(tmp_path), "-q"]) == 0
    doc = json.loads((tmp_path / "synthetic_people.json").read_text())
    assert doc["random_weights"] is False and doc["family"] == "amanet"
    assert doc["num_detections"] == len(synthetic_image_truth().annotations)
    for suffix in ("_iuv.png", "_overlay.png"):
        assert (tmp_path / f"synthetic_people{suffix}").stat().st_size > 0
    assert "RANDOM" not in capsys.readouterr().err
