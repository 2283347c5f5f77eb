"""The DensePose evaluation protocol: a hand-computed case, GT-as-prediction, perturbations,
box AP, the SMPL geodesic lookup on fake files, and the results format."""
import json
import math
import pickle
from pathlib import Path

import numpy as np
import pytest

from amanet.data import matfile
from amanet.data.densepose_coco import encode_dp_masks
from amanet.engine import evaluate as E
from scratch import scratch_dir

K_TORSO = 0.351                         # official k of parts 1, 2 (torso group)


class FakeGeodesics(E.GeodesicProvider):
    """d = |du| + |dv| on the same part, 10 m across parts, inf on background."""

    def distance(self, i_gt, u_gt, v_gt, i_pred, u_pred, v_pred):
        i_gt, i_pred = np.asarray(i_gt), np.asarray(i_pred)
        d = np.abs(np.asarray(u_gt) - u_pred) + np.abs(np.asarray(v_gt) - v_pred)
        d = np.where(i_gt == i_pred, d, 10.0)
        return np.where(i_pred == 0, np.inf, d)


# --------------------------------------------------------------------------- hand-made case
# Image 200 x 200. Two DensePose persons A, B with boxes of 51 x 51 px, so that a point's
# chart position is dp_x * 51 / 255 = dp_x / 5 (the official mapping divides by 255), and
# a plain person C (no DensePose points -> "ignore" in the DensePose protocol).
# Points (all part 2, torso, k = 0.351) at dp (50,50) (100,50) (150,150) (200,200)
#   -> chart pixels (x, y) = (10,10) (20,10) (30,30) (40,40).
# GT (U, V) * 255: (51,51) (102,51) (153,102) (51,204).
PTS = [(10, 10), (20, 10), (30, 30), (40, 40)]
GT_UV = [(51, 51), (102, 51), (153, 102), (51, 204)]
FULL_MASK = encode_dp_masks(np.ones((256, 256), np.uint8))   # coarse part 1 over the box


def _gt():
    dp = {"dp_x": [50.0, 100.0, 150.0, 200.0], "dp_y": [50.0, 50.0, 150.0, 200.0],
          "dp_I": [2.0] * 4, "dp_U": [u / 255 for u, _ in GT_UV],
          "dp_V": [v / 255 for _, v in GT_UV], "dp_masks": FULL_MASK}
    anns = [dict(id=1, image_id=1, category_id=1, iscrowd=0, bbox=[10, 10, 51, 51], area=2601.0,
                 **dp),
            dict(id=2, image_id=1, category_id=1, iscrowd=0, bbox=[110, 110, 51, 51],
                 area=2601.0, **dp),
            dict(id=3, image_id=1, category_id=1, iscrowd=0, bbox=[10, 150, 40, 40],
                 area=1600.0)]
    return {"images": [{"id": 1, "height": 200, "width": 200, "file_name": "x.jpg"}],
            "annotations": anns, "categories": [{"id": 1, "name": "person"}]}


def _chart(h, w, I=2):
    c = np.zeros((3, h, w), np.uint8)
    c[0] = I
    return c


def _dets():
    # dA (score .9) on A: p1, p2 exact; p3 predicted background; p4 U = 156 (GT 51):
    #   d4 = 105/255 = 0.411765, d4^2 / (2 k^2) = 0.169550 / 0.246402 = 0.688104,
    #   exp(-0.688104) = 0.502528  ->  GPS_A = (1 + 1 + 0 + 0.502528) / 4 = 0.625632
    a = _chart(51, 51)
    for (x, y), (u, v) in zip(PTS, GT_UV):
        a[1, y, x], a[2, y, x] = u, v
    a[0, 30, 30] = 0
    a[1, 40, 40] = 156
    # dB (score .8) on B: p1..p3 exact, p4 U = 156 -> GPS_B = (3 + 0.502528) / 4 = 0.875632;
    #   rows 45.. are background (mask IoU 45*51 / 51^2 = 0.882353)
    b = _chart(51, 51)
    for (x, y), (u, v) in zip(PTS, GT_UV):
        b[1, y, x], b[2, y, x] = u, v
    b[1, 40, 40] = 156
    b[0, 45:] = 0
    return [
        {"image_id": 1, "category_id": 1, "bbox": [150, 10, 30, 30], "score": 0.95,
         "densepose": _chart(30, 30)},                                  # false positive
        {"image_id": 1, "category_id": 1, "bbox": [10, 10, 51, 51], "score": 0.9, "densepose": a},
        {"image_id": 1, "category_id": 1, "bbox": [10, 150, 40, 40], "score": 0.85,
         "densepose": _chart(40, 40)},                                  # on the ignored C
        {"image_id": 1, "category_id": 1, "bbox": [110, 110, 51, 51], "score": 0.8,
         "densepose": b},
    ]


GPS_P4 = math.exp(-((105 / 255) ** 2) / (2 * K_TORSO ** 2))
GPS_A = (2 + GPS_P4) / 4
GPS_B = (3 + GPS_P4) / 4


def test_hand_computed_gps_and_ap():
    m = E.evaluate_densepose(_gt(), _dets(), FakeGeodesics(), "GPS", return_details=True)
    assert GPS_P4 == pytest.approx(0.502528, abs=1e-6)
    gps = m["details"][(1, 1)]["gps"]            # rows: dets by score; columns: GT A, B, C
    np.testing.assert_allclose(gps, [[0, 0, 0], [GPS_A, 0, 0], [0, 0, 0], [0, GPS_B, 0]],
                               atol=1e-12)
    # Detections by score: FP (.95), dA (.90), dC (.85, box IoU 1 with the ignored C: ignored
    # by the box fallback), dB (.80).
    # t = .50, .55, .60: dA->A (.626), dB->B (.876): FP, TP, TP -> precision 1/2 at recall
    #   .5 and 2/3 at recall 1; interpolated: 2/3 at all 101 recall points -> AP_t = 2/3.
    # t = .65 .. .85 (5 thresholds): only dB: FP, FP, TP -> 1/3 up to recall .5 (51 of 101
    #   points) -> AP_t = 51/303 = 0.168317.   t = .90, .95: nothing matches -> 0.
    # AP = (3 * 2/3 + 5 * 51/303) / 10 = 0.284158
    assert m["AP"] == pytest.approx((3 * 2 / 3 + 5 * 51 / 303) / 10, abs=1e-9)
    assert m["AP50"] == pytest.approx(2 / 3, abs=1e-9)
    assert m["AP75"] == pytest.approx(51 / 303, abs=1e-9)
    # medium (32^2..96^2): the FP box is 30 x 30 = 900 px, outside the range and unmatched,
    # so it is ignored: t <= .60: TP, TP -> 1; t = .65...85: FP, TP -> 1/2 up to recall .5
    # -> 51/202; APm = (3 + 5 * 51/202) / 10 = 0.426238.  No large GT -> -1.
    assert m["APm"] == pytest.approx((3 + 5 * 51 / 202) / 10, abs=1e-9)
    assert m["APl"] == -1 and m["ARl"] == -1
    # recall: 1 for t <= .60, 1/2 for .65...85, 0 above -> AR = (3 + 2.5) / 10 = 0.55
    assert m["AR"] == pytest.approx(0.55, abs=1e-9)
    assert m["AR50"] == pytest.approx(1.0) and m["AR75"] == pytest.approx(0.5)
    assert m["ARm"] == pytest.approx(0.55, abs=1e-9)


def test_hand_computed_gpsm_and_iou_modes():
    # mask IoU: A: chart foreground everywhere but the background point -> 2600/2601;
    # B: 45 of 51 rows -> 2295/2601 = 0.882353 (GT masks: the full boxes)
    iou_a, iou_b = 2600 / 2601, 2295 / 2601
    m = E.evaluate_densepose(_gt(), _dets(), FakeGeodesics(), "GPSm", return_details=True)
    gpsm = m["details"][(1, 1)]["scores"]
    # GPSm = sqrt(GPS * IoU): A = sqrt(0.625632 * 0.999616) = 0.790817,
    #                         B = sqrt(0.875632 * 0.882353) = 0.878986
    assert gpsm[1, 0] == pytest.approx(math.sqrt(GPS_A * iou_a), abs=1e-9)
    assert gpsm[3, 1] == pytest.approx(math.sqrt(GPS_B * iou_b), abs=1e-9)
    # both match for t <= .75 (6 thresholds: 2/3), only B for .80, .85 (51/303), none above
    assert m["AP"] == pytest.approx((6 * 2 / 3 + 2 * 51 / 303) / 10, abs=1e-9)
    assert m["AP75"] == pytest.approx(2 / 3, abs=1e-9)
    m = E.evaluate_densepose(_gt(), _dets(), None, "IOU")
    # IoU: A .9996 matches at every threshold, B .8824 up to .85 (8 thresholds: 2/3);
    # at .90, .95: FP, TP, FP -> 1/2 up to recall .5 -> 51/202
    assert m["AP"] == pytest.approx((8 * 2 / 3 + 2 * 51 / 202) / 10, abs=1e-9)


# Output heights n (from 256 rows) for which scipy.ndimage.zoom(order=1, prefilter=False),
# as Detectron2's evaluator calls it on the 256 x 256 GT mask, leaves the last row zero: the
# row's coordinate (n - 1) * (255 / (n - 1)) rounds past 255 and SciPy's default
# mode="constant" gives it cval. Read off SciPy 1.17.1 for n = 2..400.
SCIPY_ZERO_LAST_ROW = [12, 14, 23, 27, 32, 45, 53, 56, 62, 63, 82, 89, 105, 108, 111, 114, 123,
                       125, 156, 163, 174, 177, 190, 200, 202, 209, 215, 216, 221, 227, 228, 245,
                       248, 249, 250, 270, 311, 325, 347, 353, 356, 360, 368, 376, 379, 380, 390,
                       399]


def test_gt_mask_resize_is_scipys_zoom():
    m = np.arange(12, dtype=float).reshape(3, 4) % 5
    # scipy.ndimage.zoom(m, (7 / 3, 5 / 4), order=1, prefilter=False), SciPy 1.17.1
    expected = np.array([
        [0.0, 0.75, 1.5, 2.25, 3.0],
        [4 / 3, 0.83333333, 1.16666667, 1.91666667, 2.66666667],
        [8 / 3, 0.91666667, 0.83333333, 1.58333333, 2.33333333],
        [4.0, 1.0, 0.5, 1.25, 2.0],
        [3.66666667, 1.91666667, 1.0, 0.91666667, 1.66666667],
        [3.33333333, 2.83333333, 1.5, 0.58333333, 1.33333333],
        [3.0, 3.75, 2.0, 0.25, 1.0]])
    np.testing.assert_allclose(E._zoom_bilinear(m, 7, 5), expected, atol=1e-8)
    ones = np.ones((256, 256))
    zero_last = [n for n in range(2, 401) if E._zoom_bilinear(ones, n, 1)[-1, 0] == 0]
    assert zero_last == SCIPY_ZERO_LAST_ROW
    for n in (12, 13, 51):     # every other row and column stays whole
        z = E._zoom_bilinear(ones, n, n)
        assert z[:-1, :-1].min() == 1.0


def test_mask_iou_uses_detectron2s_gt_mask():
    # a 51 x 12 person: Detectron2's GT mask loses its last row (12 is in the list above), so a
    # detection covering the whole box has IoU 11/12, not 1 (the IOU-mode AP gap of issue 13)
    gt = {"id": 1, "bbox": [10.0, 20.0, 51.0, 12.0], "dp_masks": FULL_MASK, "iscrowd": 0}
    det = E._Det(1, 1, 1, [10.0, 20.0, 51.0, 12.0], 0.9, 612.0, None,
                 np.ones((3, 12, 51), np.uint8))
    assert E._mask_iou_matrix([gt], [det], 100, 100)[0, 0] == pytest.approx(11 / 12, abs=1e-12)
    gt13 = dict(gt, bbox=[10.0, 20.0, 51.0, 13.0])
    det13 = E._Det(1, 1, 1, [10.0, 20.0, 51.0, 13.0], 0.9, 663.0, None,
                   np.ones((3, 13, 51), np.uint8))
    assert E._mask_iou_matrix([gt13], [det13], 100, 100)[0, 0] == pytest.approx(1.0, abs=1e-12)


def test_box_fallback_ignores_detections_on_ignored_people():
    dets = _dets()
    dets[2]["bbox"] = [10, 150, 25, 40]         # box IoU with C = 0.625 < 0.8: now a FP
    dets[2]["densepose"] = _chart(40, 25)
    m = E.evaluate_densepose(_gt(), dets, FakeGeodesics(), "GPS")
    # t <= .60: FP, TP, FP, TP -> precision 1/2 at recall .5 and 1 -> 1/2
    assert m["AP50"] == pytest.approx(0.5, abs=1e-9)


def test_box_ap_with_pycocotools_on_the_same_case():
    m = E.evaluate_boxes(_gt(), _dets())
    # In box AP, C is an ordinary person: dets FP, A, C, B -> F, T, T, T, precision 3/4 at
    # recall 1 (the envelope everywhere) at every IoU threshold (matched boxes are exact).
    assert m["AP"] == pytest.approx(0.75, abs=1e-6)
    assert m["AP50"] == pytest.approx(0.75, abs=1e-6)
    # medium: the 30 x 30 FP (900 px) is small and ignored -> T, T, T -> 1
    assert m["APm"] == pytest.approx(1.0, abs=1e-6)
    assert m["APs"] == -1


def test_points_outside_the_detection_score_zero():
    dets = [dict(_dets()[1])]
    dets[0]["bbox"] = [10, 10, 40, 51]          # width 40: p4 (x = 40) falls outside
    dets[0]["densepose"] = dets[0]["densepose"][:, :, :40].copy()
    m = E.evaluate_densepose(_gt(), dets, FakeGeodesics(), "GPS", return_details=True)
    assert m["details"][(1, 1)]["gps"][0, 0] == pytest.approx(2 / 4)
    with pytest.raises(ValueError, match="int\\(h\\), int\\(w\\)"):
        bad = [dict(dets[0], densepose=_chart(51, 51))]
        E.evaluate_densepose(_gt(), bad, FakeGeodesics(), "GPS")


# --------------------------------------------------------------------------- synthetic data
@pytest.fixture(scope="module")
def synth(request, tmp_path_factory):
    from amanet.data import synthetic as S
    out = scratch_dir(request, tmp_path_factory, "ev")
    size = (192, 256)
    path = S.generate_dataset(str(out), 6, seed=21, image_size=size)
    gt = json.loads(Path(path).read_text())
    charts = []                                  # GT rendered as predictions
    for img in gt["images"]:
        s = S.render_sample(21, img["id"], size)
        iuv = s.iuv_uint8()
        for a in s.annotations:
            x, y, w, h = (int(v) for v in a["bbox"])
            c = iuv[:, y:y + h, x:x + w].copy()
            c[:, s.person[y:y + h, x:x + w] != a["_person_index"]] = 0
            charts.append({"image_id": img["id"], "category_id": 1, "bbox": a["bbox"],
                           "score": 0.5 + 0.4 * (len(charts) % 5) / 5, "densepose": c})
    return path, charts


def test_ground_truth_as_predictions_scores_ap_1(synth):
    path, res = synth
    geo = E.geodesic_for_dataset(path)
    assert type(geo).__name__ == "SyntheticGeodesics"
    m = E.evaluate_densepose(path, res, geo, "GPS", return_details=True)
    for k in ("AP", "AP50", "AP75", "AR", "AR50", "AR75"):
        assert m[k] == 1.0, (k, m[k])
    # per-person GPS of the charts on their own GT: near 1 (uint8 U/V, the /255 point rule)
    diag = [d["gps"][i, j] for d in m["details"].values()
            for i, j in zip(*np.nonzero(d["gps"] > 0.5))]
    assert min(diag) > 0.97
    gpsm = E.evaluate_densepose(path, res, geo, "GPSm")
    assert gpsm["AP50"] == 1.0 and gpsm["AP"] > 0.9
    assert E.evaluate_boxes(path, res)["AP"] == pytest.approx(1.0)


def test_perturbed_predictions_lower_ap(synth):
    path, res = synth
    geo = E.geodesic_for_dataset(path)
    base = E.evaluate_densepose(path, res, geo, "GPS")["AP"]
    aps = []
    for shift in (40, 60, 120):                 # U and V moved by shift / 255
        pert = []
        for r in res:
            c = r["densepose"].copy()
            fg = c[0] > 0
            for ch in (1, 2):
                c[ch][fg] = ((c[ch][fg].astype(int) + shift) % 256).astype(np.uint8)
            pert.append(dict(r, densepose=c))
        aps.append(E.evaluate_densepose(path, pert, geo, "GPS")["AP"])
    assert base == 1.0 and base > aps[0] >= aps[1] >= aps[2] and aps[2] < 0.5, aps
    # wrong parts everywhere: left/right swapped
    from amanet.data.densepose_coco import FLIP_PART_MAP
    swapped = [dict(r, densepose=np.stack([FLIP_PART_MAP[r["densepose"][0]].astype(np.uint8),
                                           r["densepose"][1], r["densepose"][2]]))
               for r in res]
    assert E.evaluate_densepose(path, swapped, geo, "GPS")["AP"] < 0.9


# --------------------------------------------------------------------------- SMPL lookup
def test_smpl_geodesics_on_fake_files(tmp_path):
    # 6 subdivided vertices: parts 1,1,1,2,2,3 at these (U, V); Pdist vertex of each
    # (1-based, 0 = none): 1, 2, 2, 3, 4, 0
    U = np.array([[0.1, 0.9, 0.5, 0.2, 0.8, 0.5]])
    V = np.array([[0.1, 0.1, 0.9, 0.2, 0.8, 0.5]])
    parts = np.array([[1, 1, 1, 2, 2, 3]], np.float64)
    index = np.array([[1], [2], [2], [3], [4], [0]], np.float64)
    matfile.savemat(tmp_path / "SMPL_subdiv.mat", {"U_subdiv": U, "V_subdiv": V,
                                                   "Part_ID_subdiv": parts}, compress=True)
    matfile.savemat(tmp_path / "SMPL_SUBDIV_TRANSFORM.mat", {"index": index})
    # condensed pdist of 4 vertices: (1,2) .11 (1,3) .12 (1,4) .13 (2,3) .23 (2,4) .24 (3,4) .34
    cond = np.array([[0.11], [0.12], [0.13], [0.23], [0.24], [0.34]])
    with open(tmp_path / "Pdist_matrix.pkl", "wb") as f:
        pickle.dump({"Pdist_matrix": cond}, f, protocol=2)
    g = E.SMPLGeodesics(tmp_path / "SMPL_subdiv.mat", tmp_path / "Pdist_matrix.pkl",
                        tmp_path / "SMPL_SUBDIV_TRANSFORM.mat")
    assert g.n == 4
    i_gt = [1, 1, 2, 1, 2, 3, 2]
    u_gt = [0.12, 0.5, 0.2, 0.9, 0.8, 0.5, 0.2]
    v_gt = [0.1, 0.8, 0.25, 0.0, 0.7, 0.5, 0.2]
    i_pr = [1, 2, 1, 1, 0, 1, 3]
    u_pr = [0.85, 0.75, 0.1, 0.45, 0.5, 0.1, 0.5]
    v_pr = [0.15, 0.9, 0.0, 0.95, 0.5, 0.1, 0.5]
    d = g.distance(i_gt, u_gt, v_gt, i_pr, u_pr, v_pr)
    # v1->P1 vs v2->P2: .11 | v3->P2 vs v5->P4: .24 | v4->P3 vs v1->P1: .12 | v2, v3 both P2: 0
    # background prediction: inf | GT vertex without a Pdist vertex: nan | pred v6 (none): inf
    np.testing.assert_allclose(d[:4], [0.11, 0.24, 0.12, 0.0])
    assert np.isinf(d[4]) and np.isnan(d[5]) and np.isinf(d[6])
    # the condensed index agrees with a brute-force enumeration of pairs i < j
    full = np.zeros((4, 4))
    k = 0
    for a in range(4):
        for b in range(a + 1, 4):
            full[a, b] = full[b, a] = cond[k, 0]
            k += 1
    va = g.vertices(i_gt[:4], u_gt[:4], v_gt[:4])
    vb = g.vertices(i_pr[:4], u_pr[:4], v_pr[:4])
    np.testing.assert_allclose(d[:4], full[va - 1, vb - 1])


# --------------------------------------------------------------------------- results format
def test_results_format_round_trip(tmp_path):
    from amanet.runtime.result import Prediction

    rng = np.random.default_rng(0)
    charts = [rng.integers(0, 255, (3, 7, 5)).astype(np.uint8),
              rng.integers(0, 255, (3, 4, 9)).astype(np.uint8)]
    pred = Prediction(image_size=(50, 60), boxes=np.array([[1, 2, 6.5, 9.9], [10, 10, 19.2, 14]],
                                                          np.float32),
                      scores=np.array([0.9, 0.4], np.float32), classes=np.zeros(2, np.int64),
                      charts=charts)
    seed_style = E.densepose_results(pred, image_id=7)
    E.write_results_json(tmp_path / "r.json", seed_style)
    back = json.loads((tmp_path / "r.json").read_text())
    assert back[0]["densepose"][1] == back[0]["bbox"]
    for entry, chart in zip(back, charts):
        np.testing.assert_array_equal(E.decode_chart(entry["densepose"]), chart)
    for entry, chart in zip(pred.to_coco_json(image_id=7), charts):   # Detectron2 style
        np.testing.assert_array_equal(E.decode_chart(entry["densepose"]), chart)
