"""Predictor API: input handling, typed results, zero detections, COCO JSON."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from amanet.assets import PHOTO
from amanet.errors import InputError
from amanet.runtime import Prediction, Predictor
from amanet.runtime.result import decode_png

SMALL = ["INPUT.MIN_SIZE_TEST", "320", "INPUT.MAX_SIZE_TEST", "480",
         "TEST.DETECTIONS_PER_IMAGE", "3"]


@pytest.fixture(scope="module")
def predictor():
    return Predictor("s1x", overrides=SMALL)


@pytest.fixture(scope="module")
def ama_predictor():
    return Predictor("amanet", overrides=SMALL)


@pytest.fixture(scope="module")
def photo():
    return np.asarray(Image.open(PHOTO))[:, :, ::-1].copy()


def check_prediction(pred: Prediction, hw):
    d = len(pred)
    assert pred.image_size == hw
    assert pred.boxes.dtype == np.float32 and pred.boxes.shape == (d, 4)
    assert pred.scores.dtype == np.float32 and pred.scores.shape == (d,)
    assert pred.classes.dtype == np.int64 and pred.classes.shape == (d,)
    assert pred.chart_boxes.shape == (d, 4) and len(pred.charts) == d
    assert pred.iuv.dtype == np.uint8 and pred.iuv.shape == (3, *hw)
    for chart, (x, y, w, h) in zip(pred.charts, pred.chart_boxes):
        assert chart.dtype == np.uint8 and chart.shape == (3, h, w)
        assert chart[0].max() <= 24
    if d:
        assert (pred.boxes[:, 0::2] <= hw[1]).all() and (pred.boxes[:, 1::2] <= hw[0]).all()
        assert (pred.boxes >= 0).all()


@pytest.mark.parametrize("family", ["s1x", "amanet"])
def test_photo_gives_typed_results_and_coco_json(family, predictor, ama_predictor, photo):
    p = predictor if family == "s1x" else ama_predictor
    pred = p(photo)
    check_prediction(pred, photo.shape[:2])
    assert len(pred) == 3
    assert (pred.iuv[0] > 0).any(), "smoke weights should paint some body parts"
    entries = pred.to_coco_json(image_id=7)
    assert len(entries) == 3
    e = json.loads(json.dumps(entries))[0]
    assert e["image_id"] == 7 and e["category_id"] == 1 and len(e["bbox"]) == 4
    shape, data = e["densepose"]
    assert np.array_equal(decode_png(shape, data), pred.charts[0])
    x1, y1, x2, y2 = pred.boxes[0]
    assert e["bbox"] == pytest.approx([x1, y1, x2 - x1, y2 - y1])


def test_path_and_array_inputs_agree(predictor, photo):
    a = predictor(str(PHOTO))
    b = predictor(photo)
    np.testing.assert_array_equal(a.boxes, b.boxes)


def test_zero_detections_are_empty_and_typed(photo):
    p = Predictor("s1x", overrides=SMALL + ["MODEL.ROI_HEADS.SCORE_THRESH_TEST", "1.0"])
    pred = p(photo)
    check_prediction(pred, photo.shape[:2])
    assert len(pred) == 0 and pred.charts == [] and not pred.iuv.any()
    assert pred.densepose["fine_segm"].shape == (0, 25, 112, 112)
    assert pred.to_coco_json() == []


def _same_people(a, b):
    """Two predictions of the same pixels: equal boxes, scores and whole-image IUV."""
    assert len(a) == len(b) > 0
    np.testing.assert_array_equal(a.boxes, b.boxes)
    np.testing.assert_array_equal(a.scores, b.scores)
    np.testing.assert_array_equal(a.iuv, b.iuv)


@pytest.mark.parametrize("mode", ["L", "RGBA", "I;16", "P"])
def test_image_modes_give_the_same_people_as_their_8bit_rgb(tmp_path, predictor, photo, mode):
    """Each file mode decodes to exactly the pixels of its 8-bit RGB equivalent, so the model
    sees the same image: gray (and its 16-bit x 257 form) as gray RGB, opaque RGBA as RGB, a
    palette image as its colours."""
    rgb = photo[:, :, ::-1]
    gray = np.asarray(Image.fromarray(rgb).convert("L"))
    if mode == "L":
        im, same = Image.fromarray(gray), np.repeat(gray[:, :, None], 3, axis=2)
    elif mode == "RGBA":
        im, same = Image.fromarray(rgb).convert("RGBA"), rgb
    elif mode == "P":
        im = Image.fromarray(rgb).convert("P")
        same = np.asarray(im.convert("RGB"))
    else:
        im = Image.fromarray(gray.astype(np.uint16) * 257)
        assert im.mode == "I;16"
        same = np.repeat(gray[:, :, None], 3, axis=2)
    path = tmp_path / f"img_{mode.replace(';', '')}.png"
    im.save(path)
    ref = tmp_path / "ref.png"
    Image.fromarray(np.ascontiguousarray(same)).save(ref)
    from amanet.data.image_io import read_image
    np.testing.assert_array_equal(read_image(path), read_image(ref))
    _same_people(predictor(str(path)), predictor(str(ref)))


def test_array_variants_give_the_same_people(predictor, photo):
    gray = photo[:, :, 1]
    _same_people(predictor(gray), predictor(np.repeat(gray[:, :, None], 3, axis=2)))
    rgba = np.concatenate([photo, np.full(photo.shape[:2] + (1,), 255, np.uint8)], axis=2)
    _same_people(predictor(rgba), predictor(photo))
    _same_people(predictor(photo.astype(np.uint16) * 257), predictor(photo))


def test_exif_orientation_is_applied(tmp_path, predictor, photo):
    """A JPEG stored sideways with EXIF orientation 6 (display: 90 degrees clockwise) is read
    upright: the same pixels as turning the stored ones, and the people found on them."""
    from amanet.data.image_io import read_image

    stored = np.ascontiguousarray(np.rot90(photo[:, :, ::-1], 1))      # RGB, turned left
    exif = Image.Exif()
    exif[0x0112] = 6
    path = tmp_path / "sideways.jpg"
    Image.fromarray(stored).save(path, exif=exif.tobytes(), quality=95)
    decoded = np.asarray(Image.open(path).convert("RGB"))                 # the stored pixels
    upright = read_image(path)
    assert upright.shape == photo.shape
    np.testing.assert_array_equal(upright, np.ascontiguousarray(np.rot90(decoded, -1)[:, :, ::-1]))
    _same_people(predictor(str(path)), predictor(np.ascontiguousarray(upright)))


@pytest.mark.parametrize("hw", [(16, 16), (4000, 6000)])
def test_tiny_and_large_images(predictor, hw):
    rng = np.random.default_rng(0)
    img = rng.integers(0, 255, size=(*hw, 3), dtype=np.uint8)
    check_prediction(predictor(img), hw)


@pytest.mark.parametrize("bad,match", [
    (np.zeros((10, 10, 3), np.float32), "uint8"),
    (np.zeros((10, 10, 5), np.uint8), "shape"),
    (np.zeros((0, 10, 3), np.uint8), "empty"),
    (np.zeros((2, 10, 10, 3), np.uint8), "shape"),
    ([[1, 2], [3, 4]], "numpy array"),
])
def test_bad_arrays_raise_clear_errors(predictor, bad, match):
    with pytest.raises(InputError, match=match):
        predictor(bad)


def test_bad_files_raise_clear_errors(predictor, tmp_path):
    with pytest.raises(InputError, match="not found"):
        predictor(str(tmp_path / "missing.jpg"))
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    with pytest.raises(InputError, match="empty"):
        predictor(str(empty))
    text = tmp_path / "notes.png"
    text.write_text("hello, not an image")
    with pytest.raises(InputError, match="not an image"):
        predictor(str(text))
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(PHOTO.read_bytes()[:2000])
    with pytest.raises(InputError, match="corrupt|truncated"):
        predictor(str(truncated))
    with pytest.raises(InputError, match="directory"):
        predictor(str(tmp_path))
