"""The ``amanet`` command: help, predict on the bundled image, errors, zero detections."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from amanet.assets import PHOTO
from amanet.cli import main, split_overrides

FAST = ["INPUT.MIN_SIZE_TEST", "320", "INPUT.MAX_SIZE_TEST", "480",
        "TEST.DETECTIONS_PER_IMAGE", "3"]


def test_help_lists_every_subcommand():
    exe = Path(sys.executable).parent / "amanet"
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "amanet.cli"]
    res = subprocess.run(cmd + ["--help"], capture_output=True, text=True, check=True)
    for sub in ("predict", "video", "convert", "train", "export", "bench"):
        assert sub in res.stdout


def test_split_overrides():
    paths, ov = split_overrides(["a.jpg", "dir/", "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.5",
                                 "OUTPUT_DIR", "x"])
    assert paths == ["a.jpg", "dir/"]
    assert ov == ["MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.5", "OUTPUT_DIR", "x"]


@pytest.mark.parametrize("config", ["amanet", "s1x"])
def test_predict_demo_writes_three_files(tmp_path, capsys, config):
    """Default pictures: iuv and overlay."""
    assert main(["predict", "--demo", "--config", config, "--out", str(tmp_path), *FAST]) == 0
    iuv = np.asarray(Image.open(tmp_path / "astronaut_iuv.png"))
    overlay = np.asarray(Image.open(tmp_path / "astronaut_overlay.png"))
    doc = json.loads((tmp_path / "astronaut.json").read_text())
    photo = np.asarray(Image.open(PHOTO))
    assert iuv.shape == overlay.shape == photo.shape
    assert doc["num_detections"] == len(doc["results"]) == 3 and doc["random_weights"] is True
    fg = iuv[:, :, 0] > 0
    assert fg.mean() > 0.001, "some pixels get a body part"
    # parts are coloured over the photo where the IUV says so, and only there (plus boxes)
    changed = np.abs(overlay.astype(int) - photo.astype(int)).sum(axis=2) > 30
    assert changed[fg].mean() > 0.9
    assert "RANDOM" in capsys.readouterr().err


def test_predict_writes_every_picture_asked_for(tmp_path, capsys):
    styles = ["dp_segm", "dp_u", "dp_v", "bbox", "magicanimate", "parts", "iuv", "overlay"]
    assert main(["predict", "--demo", "--config", "s1x", "--out", str(tmp_path), "--quiet",
                 "--vis", ",".join(styles), *FAST]) == 0
    photo = np.asarray(Image.open(PHOTO))
    pictures = {s: np.asarray(Image.open(tmp_path / f"astronaut_{s}.png")) for s in styles}
    for s, pic in pictures.items():
        assert pic.shape[:2] == photo.shape[:2] and pic.dtype == np.uint8, s
    assert pictures["parts"].ndim == 2 and 0 < pictures["parts"].max() <= 24
    np.testing.assert_array_equal(pictures["parts"], pictures["iuv"][:, :, 0])
    # the Detectron2 pictures are drawn on the gray photo: off the people, R = G = B
    off = pictures["parts"] == 0
    seg = pictures["dp_segm"]
    assert (seg[off][:, 0] == seg[off][:, 1]).all() and (seg[~off][:, 0] != seg[~off][:, 2]).any()
    # --cmap / --alpha change the Detectron2 pictures
    other = tmp_path / "viridis"
    assert main(["predict", "--demo", "--config", "s1x", "--out", str(other), "--quiet",
                 "--vis", "dp_segm", "--cmap", "viridis", "--alpha", "1.0", *FAST]) == 0
    assert not np.array_equal(np.asarray(Image.open(other / "astronaut_dp_segm.png")), seg)


def test_predict_unknown_picture_or_colormap_is_one_line(tmp_path, capsys):
    assert main(["predict", "--demo", "--config", "s1x", "--out", str(tmp_path),
                 "--vis", "dp_segm,dp_contour"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "dp_contour" in err[0] and "dp_segm" in err[0], err
    assert main(["predict", "--demo", "--config", "s1x", "--out", str(tmp_path),
                 "--cmap", "rainbow"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "rainbow" in err[0], err
    assert not list(tmp_path.iterdir()), "nothing written"


def test_predict_writes_confidences_for_a_confidence_model(tmp_path):
    """A WC2M zoo model: the JSON names an npz holding every person's confidence charts, each
    the size of its chart; a model without confidences writes none."""
    assert main(["predict", "--demo", "--config", "densepose_rcnn_R_50_FPN_DL_WC2M_s1x",
                 "--out", str(tmp_path), "--quiet", *FAST]) == 0
    doc = json.loads((tmp_path / "astronaut.json").read_text())
    assert doc["confidences"] == "astronaut_confidences.npz"
    npz = np.load(tmp_path / doc["confidences"])
    boxes = npz["chart_boxes"]
    assert boxes.shape == (3, 4)
    fields = ["sigma_2", "kappa_u", "kappa_v", "fine_segm_confidence", "coarse_segm_confidence"]
    assert sorted(npz.files) == sorted(["chart_boxes"] + [f"{f}_{i}" for f in fields
                                                          for i in range(3)])
    for i, (_, _, w, h) in enumerate(boxes):
        for f in fields:
            assert npz[f"{f}_{i}"].shape == (h, w) and npz[f"{f}_{i}"].dtype == np.float32
        # segmentation confidences are softplus + epsilon: positive everywhere
        assert (npz[f"coarse_segm_confidence_{i}"] > 0.01).all()
    out = tmp_path / "plain"
    assert main(["predict", "--demo", "--config", "s1x", "--out", str(out), "--quiet",
                 *FAST]) == 0
    assert "confidences" not in json.loads((out / "astronaut.json").read_text())
    assert not list(out.glob("*.npz"))


def test_predict_zero_detections_and_bad_files(tmp_path):
    good = tmp_path / "in" / "photo.jpg"
    good.parent.mkdir()
    shutil.copy(PHOTO, good)
    (tmp_path / "in" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    out = tmp_path / "out"
    code = main(["predict", str(tmp_path / "in"), "--config", "s1x", "--out", str(out), *FAST,
                 "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "1.0"])
    assert code == 1, "a failed image makes the exit code non-zero"
    doc = json.loads((out / "photo.json").read_text())
    assert doc["num_detections"] == 0 and doc["results"] == []
    assert not np.asarray(Image.open(out / "photo_iuv.png")).any()
    assert not (out / "broken.json").exists()


def test_predict_in_batches_writes_what_one_at_a_time_writes(tmp_path, capsys):
    """--batch 2 over three photos (two of one size) and a broken file: the same people and
    pictures as --batch 1, the broken file one error (exit 1); --batch 0 is one line."""
    src = tmp_path / "in"
    src.mkdir()
    photo = Image.open(PHOTO).convert("RGB")
    photo.save(src / "a.png")
    photo.transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(src / "b.png")
    (src / "c_broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    photo.resize((photo.width // 2, photo.height // 2)).save(src / "d_small.png")
    runs = {}
    for batch in ("1", "2"):
        out = tmp_path / f"out{batch}"
        assert main(["predict", str(src), "--demo", "--out", str(out), "--batch", batch,
                     "--vis", "parts", "-q"]) == 1
        runs[batch] = out
    for stem in ("a", "b", "d_small"):
        one = json.loads((runs["1"] / f"{stem}.json").read_text())
        two = json.loads((runs["2"] / f"{stem}.json").read_text())
        assert one["num_detections"] == two["num_detections"] > 0
        np.testing.assert_allclose([r["bbox"] for r in two["results"]],
                                   [r["bbox"] for r in one["results"]], atol=0.01)
        parts = [np.asarray(Image.open(r / f"{stem}_parts.png")) for r in runs.values()]
        assert (parts[0] == parts[1]).mean() > 0.999
    assert not (runs["2"] / "c_broken.json").exists()
    capsys.readouterr()
    assert main(["predict", str(src), "--out", str(tmp_path / "o"), "--batch", "0"]) == 2
    err = _error_lines(capsys)
    assert len(err) == 1 and "--batch must be a whole number >= 1" in err[0], err


def _error_lines(capsys):
    """stderr lines that are not the tool's notes (random weights, demo model)."""
    return [ln for ln in capsys.readouterr().err.strip().splitlines()
            if ln and not ln.startswith("note:")]


def test_predict_errors_are_one_line(tmp_path, capsys, caplog):
    # a bad image among the inputs: one logged error line for it, the run goes on (exit 1)
    assert main(["predict", str(tmp_path / "nope.jpg"), "--out", str(tmp_path)]) == 1
    errors = [r for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1 and "nope.jpg" in errors[0].getMessage()
    assert "\n" not in errors[0].getMessage() and not _error_lines(capsys)
    assert main(["predict", "--out", str(tmp_path)]) == 2
    err = _error_lines(capsys)
    assert len(err) == 1 and "no input images" in err[0], err
    assert main(["predict", "--demo", "--config", "s1x", "--out", str(tmp_path),
                 "MODEL.NOT_A_KEY", "1"]) == 2
    err = _error_lines(capsys)
    assert len(err) == 1 and "MODEL.NOT_A_KEY" in err[0], err


def test_convert_roundtrip(tmp_path):
    import pickle

    import torch

    from amanet.config import s1x_config
    from amanet.modeling.model import build_model
    state = build_model(s1x_config()).state_dict()
    src = tmp_path / "d2.pkl"
    with open(src, "wb") as f:
        pickle.dump({"model": {k: v.numpy() for k, v in state.items()}}, f)
    dst = tmp_path / "ours.pth"
    assert main(["convert", str(src), str(dst), "--config", "s1x"]) == 0
    from amanet.checkpoint import config_of_checkpoint, load_weights
    cfg = config_of_checkpoint(str(dst))
    assert cfg.family == "s1x"
    model = build_model(cfg)
    load_weights(model, str(dst))
    sd = model.state_dict()  # (a Predictor's model is inference-prepared: FrozenBN folded)
    assert all(torch.equal(sd[k], v) for k, v in state.items())


def test_convert_half_from_embedded_config(tmp_path, capsys):
    import torch

    from amanet.checkpoint import load_weights, read_checkpoint, save_checkpoint
    from amanet.modeling.model import build_model
    from amanet.runtime import Predictor
    from train_fixtures import tiny_config

    cfg = tiny_config("amanet")
    model = build_model(cfg)
    src = tmp_path / "train.pth"
    save_checkpoint(model, cfg, str(src), extra={"optimizer": {"state": {}}, "iteration": 3})
    dst = tmp_path / "half.pth"
    assert main(["convert", str(src), str(dst), "--half"]) == 0
    state, cfg_dict = read_checkpoint(str(dst))
    assert cfg_dict is not None
    floats = [v for v in state.values() if v.is_floating_point()]
    assert floats and all(v.dtype == torch.float16 for v in floats)
    assert "optimizer" not in torch.load(dst, weights_only=True)
    assert dst.stat().st_size < 0.6 * src.stat().st_size
    p = Predictor(None, weights=str(dst))               # config from the file, float32 model
    assert p.cfg.family == "amanet"
    loaded = build_model(p.cfg)                          # (p.model is inference-prepared)
    load_weights(loaded, str(dst))
    for k, v in model.state_dict().items():
        got = loaded.state_dict()[k]
        assert got.dtype == v.dtype
        if v.is_floating_point():
            torch.testing.assert_close(got, v.half().float())
    # overrides without a config are refused with a clear message
    assert main(["convert", str(src), str(dst), "--opts", "SEED", "1"]) == 2
    assert "--opts needs --config" in capsys.readouterr().err
