"""DensePose-COCO reading/validation, the flip and multi-scale resize transforms, MAT files."""
import copy
import io
import json
import logging
import math
import struct
from pathlib import Path

import numpy as np
import pytest

from amanet.data import augment as A
from amanet.data import matfile
from amanet.data.densepose_coco import (FLIP_MASK_MAP, FLIP_PART_MAP, KEYPOINT_FLIP_MAP,
                                        DensePoseAnnotation, decode_dp_masks, encode_dp_masks,
                                        load_densepose_coco)

# The flip tables, written out (Detectron2's DensePoseTransformData POINT_LABEL_SYMMETRIES /
# MASK_LABEL_SYMMETRIES; COCO's keypoint left/right pairs): the tests index these, not the
# tables of the code under test.
PART_FLIP = np.array([0, 1, 2, 4, 3, 6, 5, 8, 7, 10, 9, 12, 11, 14, 13, 16, 15, 18, 17, 20, 19,
                      22, 21, 24, 23])
MASK_FLIP = np.array([0, 1, 3, 2, 5, 4, 7, 6, 9, 8, 11, 10, 13, 12, 14])
KEYPOINT_FLIP = np.array([0, 2, 1, 4, 3, 6, 5, 8, 7, 10, 9, 12, 11, 14, 13, 16, 15])


def test_flip_tables_are_detectron2s():
    np.testing.assert_array_equal(FLIP_PART_MAP, PART_FLIP)
    np.testing.assert_array_equal(FLIP_MASK_MAP, MASK_FLIP)
    np.testing.assert_array_equal(KEYPOINT_FLIP_MAP, KEYPOINT_FLIP)
from amanet.data.synthetic import generate_dataset, synthetic_symmetry, synthetic_uv_flip
from amanet.data.transforms import resized_shape
from scratch import scratch_dir

SIZE = (128, 176)


@pytest.fixture(scope="module")
def dataset(request, tmp_path_factory):
    out = scratch_dir(request, tmp_path_factory, "dp")
    path = generate_dataset(str(out), 3, seed=4, image_size=SIZE, people=(2, 3))
    return Path(path), out


def test_reader_round_trip(dataset):
    path, root = dataset
    data = json.loads(path.read_text())
    records = load_densepose_coco(path, root)                 # plain call: records only
    assert isinstance(records, list) and [r["image_id"] for r in records] == [1, 2, 3]
    by_id = {a["id"]: a for a in data["annotations"]}
    n = 0
    for rec in records:
        assert Path(rec["file_name"]).is_file()
        assert (rec["height"], rec["width"]) == SIZE
        for ann in rec["annotations"]:
            src = by_id[ann["id"]]
            x, y, w, h = src["bbox"]
            np.testing.assert_allclose(ann["bbox"], [x, y, x + w, y + h])
            assert ann["bbox"].dtype == np.float32
            assert ann["category_id"] == 1 and ann["iscrowd"] == 0
            kp = np.asarray(src["keypoints"], np.float32).reshape(17, 3)
            np.testing.assert_allclose(ann["keypoints"][:, :2], kp[:, :2] + 0.5)
            dp = ann["dp"]
            if "dp_x" not in src:
                assert dp is None
                continue
            n += 1
            assert dp.x.dtype == np.float32 and dp.i.dtype == np.int64
            np.testing.assert_allclose(dp.x, src["dp_x"], rtol=1e-6)
            np.testing.assert_array_equal(dp.i, np.asarray(src["dp_I"], int))
            assert dp.masks.shape == (256, 256) and dp.masks.dtype == np.uint8
            assert encode_dp_masks(dp.masks) == src["dp_masks"]   # RLE round trip
            assert dp.has_masks
    assert n >= 3
    # eager decoding gives the same arrays (lazy keeps only the RLEs in memory)
    eager = load_densepose_coco(path, root, lazy_masks=False)
    for r1, r2 in zip(records, eager):
        for a1, a2 in zip(r1["annotations"], r2["annotations"]):
            if a1["dp"] is not None:
                assert a2["dp"]._masks is not None and a1["dp"]._masks is None
                np.testing.assert_array_equal(a1["dp"].masks, a2["dp"].masks)


def _corrupt(data, kind):
    """Break the first DensePose annotation of image 1 in one way; returns its id."""
    ann = next(a for a in data["annotations"] if a["image_id"] == 1 and "dp_x" in a)
    if kind == "dp_length_mismatch":
        ann["dp_U"] = ann["dp_U"][:-1]
    elif kind == "dp_part_out_of_range":
        ann["dp_I"][0] = 25.0
    elif kind == "dp_part_zero":
        ann["dp_I"][3] = 0.0
    elif kind == "dp_uv_out_of_range":
        ann["dp_V"][1] = 1.25
    elif kind == "bad_bbox":
        ann["bbox"][2] = 0.0
    elif kind == "bbox_nan":
        ann["bbox"][1] = float("nan")
    elif kind == "dp_point_out_of_frame":
        ann["dp_x"][2] = 300.0
    elif kind == "dp_mask_undecodable":
        k = next(j for j, m in enumerate(ann["dp_masks"]) if m)
        ann["dp_masks"][k] = {"size": [256, 256], "counts": [5, 7]}   # runs don't fill it
    elif kind == "dp_mask_wrong_size":
        k = next(j for j, m in enumerate(ann["dp_masks"]) if m)
        ann["dp_masks"][k] = {"size": [10, 10], "counts": [100]}
    elif kind == "dp_incomplete":
        del ann["dp_V"]
    elif kind == "dp_not_finite":
        ann["dp_U"][0] = float("nan")
    elif kind == "bad_keypoints":
        ann["keypoints"] = ann["keypoints"][:-3]
    return ann["id"]


EXPECTED_KIND = {"dp_part_zero": "dp_part_out_of_range", "bbox_nan": "bad_bbox",
                 "dp_mask_wrong_size": "dp_mask_undecodable"}


@pytest.mark.parametrize("kind", ["dp_length_mismatch", "dp_part_out_of_range", "dp_part_zero",
                                  "dp_uv_out_of_range", "bad_bbox", "bbox_nan",
                                  "dp_point_out_of_frame", "dp_mask_undecodable",
                                  "dp_mask_wrong_size", "dp_incomplete", "dp_not_finite",
                                  "bad_keypoints"])
def test_corrupt_annotation_is_reported_and_skipped(dataset, tmp_path, caplog, kind):
    path, root = dataset
    data = json.loads(path.read_text())
    n_ann = len(data["annotations"])
    bad_id = _corrupt(data, kind)
    bad_json = tmp_path / "bad.json"
    bad_json.write_text(json.dumps(data))
    with caplog.at_level(logging.WARNING, logger="amanet.data.densepose_coco"):
        records, report = load_densepose_coco(bad_json, root, report=True)
    want = EXPECTED_KIND.get(kind, kind)
    assert report.problems == {want: 1}
    assert report.skipped_annotations == 1 and report.skipped_images == 0
    assert report.num_annotations == n_ann - 1
    kept = [a["id"] for r in records for a in r["annotations"]]
    assert bad_id not in kept and len(kept) == n_ann - 1
    msgs = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(f"image 1, annotation {bad_id}" in m for m in msgs)
    assert report.details[0][:3] == (1, bad_id, want)


def test_missing_image_file_skips_the_image(dataset, tmp_path, caplog):
    path, root = dataset
    data = json.loads(path.read_text())
    data["images"][1]["file_name"] = "images/does_not_exist.jpg"
    bad = tmp_path / "missing.json"
    bad.write_text(json.dumps(data))
    with caplog.at_level(logging.WARNING):
        records, report = load_densepose_coco(bad, root, report=True)
    assert [r["image_id"] for r in records] == [1, 3]
    assert report.problems == {"missing_image": 1} and report.skipped_images == 1
    assert any("image 2" in r.getMessage() and "not found" in r.getMessage()
               for r in caplog.records)


# --------------------------------------------------------------------------- flip
def _random_dp(rng, n=40):
    masks = rng.integers(0, 15, (256, 256)).astype(np.uint8)
    return DensePoseAnnotation(x=rng.uniform(0, 256, n).astype(np.float32),
                               y=rng.uniform(0, 256, n).astype(np.float32),
                               i=rng.integers(1, 25, n), u=rng.random(n).astype(np.float32),
                               v=rng.random(n).astype(np.float32), masks=masks)


def _ann(rng):
    kp = np.concatenate([rng.uniform(0, 100, (17, 2)), rng.integers(0, 3, (17, 1))], 1)
    return {"bbox": np.array([10.0, 20.0, 60.0, 90.0], np.float32), "category_id": 1,
            "iscrowd": 0, "dp": _random_dp(rng), "keypoints": kp.astype(np.float32),
            "segmentation": [[10.0, 20.0, 60.0, 20.0, 60.0, 90.0]]}


def test_flip_remaps_parts_uv_masks_boxes_keypoints():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 255, (100, 120, 3)).astype(np.uint8)
    ann = _ann(rng)
    sym = synthetic_symmetry()
    fimg, (fa,) = A.hflip(img, [ann], sym)
    assert np.array_equal(fimg, img[:, ::-1])
    np.testing.assert_allclose(fa["bbox"], [120 - 60, 20, 120 - 10, 90])
    dp, fdp = ann["dp"], fa["dp"]
    np.testing.assert_allclose(fdp.x, 256 - dp.x)
    np.testing.assert_array_equal(fdp.y, dp.y)
    np.testing.assert_array_equal(fdp.i, PART_FLIP[dp.i])
    u, v = synthetic_uv_flip(dp.i, dp.u, dp.v)
    np.testing.assert_allclose(fdp.u, u)
    np.testing.assert_allclose(fdp.v, v)
    # a hand point (part 3) wraps: u -> (1 - u) mod 1, a leg half point: u -> 1 - u
    np.testing.assert_allclose(synthetic_uv_flip(np.array([3, 9]), np.array([0.0, 0.2]),
                                                 np.array([0.4, 0.4]))[0], [0.0, 0.8], atol=1e-7)
    np.testing.assert_array_equal(fdp.masks, MASK_FLIP[dp.masks[:, ::-1]])
    kp = ann["keypoints"]
    np.testing.assert_allclose(fa["keypoints"][:, 0], 120 - kp[KEYPOINT_FLIP, 0])
    np.testing.assert_allclose(fa["keypoints"][:, 2], kp[KEYPOINT_FLIP, 2])
    assert fa["segmentation"][0][0::2] == [110.0, 60.0, 60.0]
    # inputs untouched
    assert ann["dp"] is dp and ann["bbox"][0] == 10.0


def test_flip_twice_is_identity():
    rng = np.random.default_rng(1)
    img = rng.integers(0, 255, (50, 70, 3)).astype(np.uint8)
    ann = _ann(rng)
    exact = synthetic_symmetry()
    ut, vt = exact.tables()                                 # Detectron2-style 256x256 tables
    table = A.FlipSymmetry(u_table=ut, v_table=vt)
    for sym, tol in ((exact, 1e-6), (table, 2.0 / 255)):
        i2, (a2,) = A.hflip(*A.hflip(img, [ann], sym), sym)
        assert np.array_equal(i2, img)
        np.testing.assert_allclose(a2["bbox"], ann["bbox"])
        np.testing.assert_allclose(a2["keypoints"], ann["keypoints"], atol=1e-4)
        d0, d2 = ann["dp"], a2["dp"]
        np.testing.assert_allclose(d2.x, d0.x, atol=1e-4)
        np.testing.assert_array_equal(d2.i, d0.i)
        du = np.abs(d2.u - d0.u)
        du = np.where(np.isin(d0.i, [3, 4, 5, 6]), np.minimum(du, 1 - du), du)
        assert du.max() <= tol and np.abs(d2.v - d0.v).max() <= tol
        np.testing.assert_array_equal(d2.masks, d0.masks)


def test_flip_tables_use_detectron2_lookup_and_load_from_mat(tmp_path):
    # table value at [part - 1, int(255 v), int(255 u)]
    ut = np.zeros((24, 256, 256), np.float32)
    vt = np.zeros((24, 256, 256), np.float32)
    ut[6, 51, 102] = 0.123                  # part 7, v = 0.2 -> row 51, u = 0.4 -> column 102
    vt[6, 51, 102] = 0.456
    sym = A.FlipSymmetry(u_table=ut, v_table=vt)
    u, v = sym.remap_uv(np.array([7]), np.array([0.4]), np.array([0.2]))
    assert u[0] == pytest.approx(0.123) and v[0] == pytest.approx(0.456)
    # the UV_symmetry_transforms.mat layout: 1 x 24 cells of 256 x 256 tables
    cells_u = np.empty((1, 24), object)
    cells_v = np.empty((1, 24), object)
    for k in range(24):
        cells_u[0, k], cells_v[0, k] = ut[k].astype(np.float64), vt[k].astype(np.float64)
    for compress in (False, True):
        p = tmp_path / f"uv_{compress}.mat"
        matfile.savemat(p, {"U_transforms": cells_u, "V_transforms": cells_v}, compress=compress)
        loaded = A.FlipSymmetry.from_mat(p)
        np.testing.assert_array_equal(loaded.u_table, ut)
        np.testing.assert_array_equal(loaded.v_table, vt)
        np.testing.assert_array_equal(loaded.part_map, PART_FLIP)


def test_matfile_reads_a_hand_packed_v5_file(tmp_path):
    """Bytes laid out by hand from the MAT v5 spec (independent of our writer)."""
    def el(typ, payload):
        pad = (-len(payload)) % 8
        return struct.pack("<II", typ, len(payload)) + payload + b"\0" * pad
    flags = struct.pack("<II", 6, 0)                          # mxDOUBLE_CLASS
    dims = struct.pack("<ii", 2, 3)
    name = el(1, b"index")                                     # miINT8
    data = el(2, bytes([1, 2, 3, 4, 5, 6]))                    # stored as miUINT8
    body = el(6, flags) + el(5, dims) + name + data
    header = b"MATLAB 5.0 MAT-file".ljust(116, b" ") + b"\0" * 8 + struct.pack("<H", 0x0100) \
        + b"IM"
    p = tmp_path / "hand.mat"
    p.write_bytes(header + el(14, body))
    out = matfile.loadmat(p)
    # column-major: [[1, 3, 5], [2, 4, 6]], class double
    np.testing.assert_array_equal(out["index"], [[1, 3, 5], [2, 4, 6]])
    assert out["index"].dtype == np.float64
    # small-element form of a short name ('ab'), big-endian file
    name_be = struct.pack(">I", (2 << 16) | 1) + b"ab\0\0"
    body_be = (struct.pack(">II", 6, 8) + struct.pack(">II", 6, 0)
               + struct.pack(">II", 5, 8) + struct.pack(">ii", 1, 1) + name_be
               + struct.pack(">II", 9, 8) + struct.pack(">d", 2.5))
    header_be = header[:126] + b"MI"
    p2 = tmp_path / "be.mat"
    p2.write_bytes(header_be + struct.pack(">II", 14, len(body_be)) + body_be)
    assert matfile.loadmat(p2)["ab"][0, 0] == 2.5


# --------------------------------------------------------------------------- resize
def test_shortest_edge_rule_matches_detectron2():
    # 240 x 320, short side 200: scale 200/240 -> (200, 266.67) -> (200, 267)
    assert resized_shape(240, 320, 200, 1333) == (200, 267)
    # long side capped at 260: (200, 266.67) * 260/266.67 = (195, 260)
    assert resized_shape(240, 320, 200, 260) == (195, 260)
    # 300 x 500, short 240: (240, 400) -> capped at 333: (199.8, 333) -> int(x + .5) = (200, 333)
    assert resized_shape(300, 500, 240, 333) == (200, 333)
    # portrait 400 x 300, short 150 -> (200, 150)
    assert resized_shape(400, 300, 150, 1000) == (200, 150)


def test_random_resize_scales_boxes_not_densepose():
    rng = np.random.default_rng(0)
    img = np.zeros((240, 320, 3), np.uint8)
    ann = _ann(rng)
    sizes = (96, 120, 144)
    seen = set()
    for seed in range(20):
        r = np.random.default_rng(seed)
        want = sizes[int(np.random.default_rng(seed).integers(3))]   # the same draw
        out, (a,) = A.random_resize(img, [ann], sizes, 1000, r)
        nh, nw = resized_shape(240, 320, want, 1000)
        assert out.shape == (nh, nw, 3)
        seen.add(nh)
        sx, sy = nw / 320, nh / 240
        np.testing.assert_allclose(a["bbox"], ann["bbox"] * np.array([sx, sy, sx, sy]),
                                   rtol=1e-6)
        np.testing.assert_allclose(a["keypoints"][:, 0], ann["keypoints"][:, 0] * sx, rtol=1e-6)
        assert a["dp"] is ann["dp"]                          # box-relative: unchanged
        assert a["segmentation"][0][1] == pytest.approx(20.0 * sy)
    assert seen == set(sizes)
    # "range" sampling draws integers in [lo, hi]
    draws = {A.choose_short_edge((100, 104), np.random.default_rng(s), "range") for s in range(60)}
    assert draws == {100, 101, 102, 103, 104}
    with pytest.raises(ValueError):
        A.choose_short_edge((1, 2, 3), rng, "range")


def test_dp_masks_decoding_rules():
    m = np.zeros((256, 256), np.uint8)
    m[10:20, 10:20] = 3
    m[15:30, 15:30] = 14
    enc = encode_dp_masks(m)
    assert len(enc) == 14 and enc[0] == [] and enc[2] and enc[13]
    np.testing.assert_array_equal(decode_dp_masks(enc), m)   # later masks win on overlap
