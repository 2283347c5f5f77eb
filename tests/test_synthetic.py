"""The synthetic DensePose world: determinism, exact annotations, rendering, symmetry, geodesics."""
import json
import math
from pathlib import Path

import cv2
import numpy as np
import pytest

from amanet.data import synthetic as S
from amanet.data.densepose_coco import (FINE_TO_COARSE, FLIP_PART_MAP, MASK_SIZE,
                                        load_densepose_coco)
from scratch import scratch_dir

SIZE = (160, 224)


@pytest.fixture(scope="module")
def dataset(request, tmp_path_factory):
    out = scratch_dir(request, tmp_path_factory, "synth")
    path = S.generate_dataset(str(out), 4, seed=11, image_size=SIZE)
    return Path(path), out


def test_generator_is_deterministic(dataset, tmp_path):
    path, out = dataset
    again = Path(S.generate_dataset(str(tmp_path / "b"), 4, seed=11, image_size=SIZE))
    assert path.read_bytes() == again.read_bytes()
    for img in json.loads(path.read_text())["images"]:
        assert (out / img["file_name"]).read_bytes() == \
            (tmp_path / "b" / img["file_name"]).read_bytes()
    other = Path(S.generate_dataset(str(tmp_path / "c"), 1, seed=12, image_size=SIZE))
    assert json.loads(other.read_text())["annotations"] != \
        [a for a in json.loads(path.read_text())["annotations"] if a["image_id"] == 1]


def test_dataset_reads_back_and_points_match_the_rendering(dataset):
    path, out = dataset
    records, report = load_densepose_coco(path, out, report=True)
    assert report.num_skipped == 0 and report.num_images == 4
    assert report.num_densepose >= 4
    n_points = 0
    for rec in records:
        sample = S.render_sample(11, rec["image_id"], SIZE)
        assert (rec["height"], rec["width"]) == SIZE
        for ann in rec["annotations"]:
            dp = ann["dp"]
            if dp is None:
                continue
            x0, y0, x1, y1 = ann["bbox"]
            # points -> image pixels (x = x0 + dp_x * w / 256) carry exactly the stored I, U, V
            px = np.floor(x0 + dp.x * (x1 - x0) / MASK_SIZE).astype(int)
            py = np.floor(y0 + dp.y * (y1 - y0) / MASK_SIZE).astype(int)
            assert np.array_equal(sample.I[py, px], dp.i)
            np.testing.assert_allclose(sample.U[py, px], dp.u, atol=2e-6)
            np.testing.assert_allclose(sample.V[py, px], dp.v, atol=2e-6)
            # the coarse masks agree with the points' parts
            mx = np.clip(dp.x.astype(int), 0, 255)
            my = np.clip(dp.y.astype(int), 0, 255)
            agree = dp.masks[my, mx] == FINE_TO_COARSE[dp.i]
            assert agree.mean() > 0.95
            assert set(np.unique(dp.masks)) <= set(range(15))
            n_points += len(dp)
            assert ann["keypoints"].shape == (17, 3)
    assert n_points > 200


def test_rendering_puts_parts_where_the_projection_says(tmp_path):
    rng = np.random.default_rng(1)
    H, W, k, off = 240, 240, 120.0, (120.0, 70.0)
    checked = 0
    for _ in range(4):
        pose = S.sample_pose(rng)
        person = S.pose_body(pose)
        lab = S.render_pose(pose, (H, W), k, off)
        for part in range(7, 23):
            for u in (0.25, 0.5, 0.75):
                for v in (0.3, 0.5, 0.7):
                    X, n = S.limb_surface_point(person, part, u, v)
                    if n[2] < 0.3:
                        continue                         # facing away
                    c, r = int(math.floor(off[0] + X[0] * k)), int(math.floor(off[1] - X[1] * k))
                    if not (0 <= r < H and 0 <= c < W) or abs(lab["z"][r, c] - X[2]) > 0.01:
                        continue                         # outside or occluded
                    checked += 1
                    assert lab["I"][r, c] == part
                    assert abs(lab["U"][r, c] - u) < 0.12 and abs(lab["V"][r, c] - v) < 0.06
    assert checked > 100


def test_debug_overlay_and_image_statistics(tmp_path):
    from amanet.viz import part_palette

    pal = part_palette(24)
    seen = set()
    tiles = []
    for image_id in range(1, 7):
        s = S.render_sample(5, image_id, (192, 256))
        fg = s.I > 0
        assert s.image.shape == (192, 256, 3) and s.image.dtype == np.uint8
        assert 0.005 < fg.mean() < 0.9
        assert np.array_equal(fg, s.person >= 0)
        assert s.U[fg].min() >= 0 and s.U[fg].max() <= 1 and s.V[fg].max() <= 1
        # people are not flat: foreground differs from the background and is shaded
        assert s.image[fg].std() > 10
        seen |= set(np.unique(s.I[fg]).tolist())
        over = s.image.copy()
        over[fg] = (0.6 * pal[s.I[fg]] + 0.4 * over[fg]).astype(np.uint8)
        tiles.append(np.concatenate([s.image, over], axis=1))
    assert len(seen) >= 22                                  # nearly every part shows up
    png = tmp_path / "synthetic_iuv_overlay.png"
    cv2.imwrite(str(png), np.concatenate(tiles, axis=0))
    assert png.stat().st_size > 10_000


def test_flip_symmetry_is_the_true_mirror_of_the_body():
    """Rendering the mirrored pose == flipping the rendering and remapping its labels."""
    rng = np.random.default_rng(5)
    H, W = 160, 160
    total = 0
    for _ in range(3):
        pose = S.sample_pose(rng)
        a = S.render_pose(pose, (H, W), 80, (70, 50))
        b = S.render_pose(S.mirror_pose(pose), (H, W), 80, (W - 70, 50))
        ia = a["I"][:, ::-1]
        assert np.array_equal(FLIP_PART_MAP[ia], b["I"])
        fg = b["I"] > 0
        u, v = S.synthetic_uv_flip(ia[fg], a["U"][:, ::-1][fg], a["V"][:, ::-1][fg])
        du = np.abs(u - b["U"][fg])
        du = np.minimum(du, 1 - du)                         # hands/feet: u wraps around
        assert du.max() < 1e-5 and np.abs(v - b["V"][fg]).max() < 1e-5
        total += fg.sum()
    assert total > 1000


# --------------------------------------------------------------------------- geodesics
@pytest.fixture(scope="module")
def geo():
    return S.template_geodesics()


def test_geodesics_exact_inside_a_piece(geo):
    s = S.BodyShape()
    r, L = s.hand
    vc = s.end_v("hand")
    # two points on the right hand's tube (part 3, v <= vc): unrolled cylinder distance
    u1, v1, u2, v2 = 0.1, 0.2 * vc, 0.35, 0.9 * vc
    dth = 2 * math.pi * (u2 - u1)
    want = math.hypot(r * dth, (v2 - v1) / vc * L)
    d = geo.distance([3], [u1], [v1], [3], [u2], [v2])[0]
    assert d == pytest.approx(want, abs=1e-12)
    # along a generator across the knee (node at theta = 0 exactly): slant lengths add up
    ul, ll = s.upper_leg, s.lower_leg
    want = 0.5 * math.hypot(ul[2], ul[1] - ul[0]) + 0.5 * math.hypot(ll[2], ll[1] - ll[0])
    # part 9 = upper leg right front, theta = -pi/2 + pi u -> u = 0.5 is theta = 0
    d = geo.distance([9], [0.5], [0.5], [13], [0.5], [0.5])[0]
    assert d == pytest.approx(want, abs=1e-9)
    # points on a junction circle belong to both sides: the knee circle at any angle
    # (upper leg v = 1 == lower leg v = 0), and onward along the lower leg exactly
    u = np.array([0.13, 0.41, 0.77])
    np.testing.assert_allclose(geo.distance([7] * 3, u, [1.0] * 3, [11] * 3, u, [0.0] * 3), 0,
                               atol=1e-12)
    np.testing.assert_allclose(geo.distance([7] * 3, u, [1.0] * 3, [11] * 3, u, [0.5] * 3),
                               0.5 * math.hypot(ll[2], ll[1] - ll[0]), atol=1e-12)


def test_geodesic_metric_properties_and_precision(geo):
    rng = np.random.default_rng(0)
    n = 300
    i = rng.integers(1, 25, (3, n))
    u, v = rng.random((3, n)), rng.random((3, n))
    dab = geo.distance(i[0], u[0], v[0], i[1], u[1], v[1])
    dba = geo.distance(i[1], u[1], v[1], i[0], u[0], v[0])
    np.testing.assert_allclose(dab, dba, atol=1e-12)
    assert np.abs(geo.distance(i[0], u[0], v[0], i[0], u[0], v[0])).max() < 1e-6
    dbc = geo.distance(i[1], u[1], v[1], i[2], u[2], v[2])
    dac = geo.distance(i[0], u[0], v[0], i[2], u[2], v[2])
    assert np.all(dac <= dab + dbc + 0.02)                  # up to the node spacing
    assert np.all(np.isfinite(dab)) and dab.max() < 3.0
    # mirror invariance: the template is left-right symmetric
    mi = FLIP_PART_MAP[i]
    mu0, mv0 = S.synthetic_uv_flip(i[0], u[0], v[0])
    mu1, mv1 = S.synthetic_uv_flip(i[1], u[1], v[1])
    np.testing.assert_allclose(geo.distance(mi[0], mu0, mv0, mi[1], mu1, mv1), dab, atol=1e-6)
    # scale: top of the head to a fingertip / a toe tip are body-length paths
    d_toe = geo.distance([24], [0.5], [1.0], [5], [0.0], [1.0])[0]
    assert 1.5 < d_toe < 2.3
    # discretisation: a coarse sampling vs 2.5x finer stays within about the node spacing
    coarse = S.TemplateGeodesics(density=50)
    est = coarse.precision_estimate(finer=2.5, num_pairs=200)
    assert est["max_abs"] < 0.02 and est["mean_abs"] < 0.004


def test_synthetic_geodesics_provider_conventions():
    g = S.SyntheticGeodesics()
    d = g.distance([2, 2, 0], [0.5, 0.5, 0.5], [0.5, 0.5, 0.5], [2, 0, 2], [0.5, 0.5, 0.5],
                   [0.5, 0.5, 0.5])
    assert d[0] == pytest.approx(0.0, abs=1e-9)
    assert np.isinf(d[1])                                  # predicted background
    assert np.isnan(d[2])                                  # invalid GT point


def test_cli_writes_a_dataset(tmp_path):
    assert S.main([str(tmp_path), "--num-images", "1", "--seed", "2", "--height", "96",
                   "--width", "128", "--format", "png"]) == 0
    data = json.loads((tmp_path / "annotations.json").read_text())
    assert data["info"]["body_model"] == S.BODY_MODEL_TAG
    assert (tmp_path / data["images"][0]["file_name"]).is_file()
