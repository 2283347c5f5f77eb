"""Chart post-processing: Detectron2 s1x rule vs fixture d2_s1x, AMANet rule vs fixture ama_head
(from the stored predictor outputs), and synthetic tests of the size rule and of paste_iuv.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from fixtures_path import fixture_dir

from amanet.modeling.postprocess import (
    iuv_chart_amanet,
    iuv_chart_s1x,
    iuv_chart_s1x_uint8,
    iuv_charts_amanet,
    paste_iuv,
    uv_to_uint8,
    xyxy_to_xywh_int,
)


# ---------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def d2():
    root = fixture_dir("d2_s1x")
    out = torch.load(root / "d2_outputs.pt", weights_only=True)
    return {"out": out, "iuv": dict(np.load(root / "d2_iuv.npz"))}


def test_s1x_box_rule_matches_detectron2(d2):
    boxes = xyxy_to_xywh_int(d2["out"]["detections"]["pred_boxes"])
    assert boxes.dtype == torch.int64
    for i in range(int(d2["iuv"]["num_detections"])):
        assert boxes[i].tolist() == d2["iuv"][f"box_xywh_int_{i}"].tolist()


def test_s1x_charts_match_detectron2(d2):
    dp = d2["out"]["densepose"]
    boxes = xyxy_to_xywh_int(d2["out"]["detections"]["pred_boxes"][:4])
    for i in range(4):
        labels, uv = iuv_chart_s1x(dp["coarse_segm"][i], dp["fine_segm"][i], dp["u"][i], dp["v"][i], boxes[i])
        ref_labels = torch.from_numpy(d2["iuv"][f"labels_{i}"])
        ref_uv = torch.from_numpy(d2["iuv"][f"uv_{i}"])
        assert labels.dtype == torch.uint8 and labels.shape == ref_labels.shape
        assert uv.dtype == torch.float32 and uv.shape == ref_uv.shape
        same = labels == ref_labels
        assert same.float().mean().item() >= 0.995
        torch.testing.assert_close(uv[:, same], ref_uv[:, same], atol=1e-3, rtol=0)

        chart = iuv_chart_s1x_uint8(dp["coarse_segm"][i], dp["fine_segm"][i], dp["u"][i], dp["v"][i], boxes[i])
        assert chart.dtype == torch.uint8 and torch.equal(chart[0], labels)
        assert torch.equal(chart[1:], uv_to_uint8(uv))


def test_amanet_charts_from_stored_outputs():
    ref = torch.load(fixture_dir("ama_head") / "ama_outputs.pt", weights_only=True)
    out, post = ref["outputs"], ref["postprocess"]
    charts = iuv_charts_amanet(out["index_uv"], out["u"], out["v"], out["m"], post["boxes_xywh"],
                               post["gate_threshold"])
    for chart, expected in zip(charts, post["iuv_uint8"], strict=True):
        expected = torch.as_tensor(expected)
        assert chart.dtype == torch.uint8 and chart.shape == expected.shape
        same = chart[0] == expected[0]
        assert same.float().mean().item() >= 0.995
        assert (chart[1:].int() - expected[1:].int()).abs()[:, same].max().item() <= 1


# ---------------------------------------------------------------------------- synthetic rules
def _identity_sized_inputs(h: int, w: int):
    """Outputs already at box size (resize is then the identity) with known labels and U/V."""
    fine = torch.zeros(25, h, w)
    fine[3] = 1.0                       # part 3 everywhere ...
    fine[0, :, 0] = 5.0                 # ... except column 0: background
    u = torch.full((25, h, w), 0.5)
    u[3, 0, 1] = 1.2                    # clamps to 255
    u[3, 1, 1] = -0.3                   # clamps to 0
    v = torch.full((25, h, w), 0.999)   # 254.745 truncates to 254
    return fine, u, v


def test_amanet_label_gate_and_uv_codes():
    h, w = 3, 4
    fine, u, v = _identity_sized_inputs(h, w)
    m = torch.zeros(2, h, w)
    m[1, 2, :] = -5.0                   # softmax fg ~0.007 < 0.3 on the last row
    chart = iuv_chart_amanet(fine, u, v, m, (10.0, 20.0, float(w), float(h)))
    expected_labels = torch.full((h, w), 3, dtype=torch.uint8)
    expected_labels[:, 0] = 0
    expected_labels[2, :] = 0
    assert torch.equal(chart[0], expected_labels)
    fg = expected_labels > 0
    assert chart[1, 0, 1] == 255 and chart[1, 1, 1] == 0
    assert (chart[1][fg & (torch.arange(w) > 1)] == 127).all()     # 127.5 truncates
    assert (chart[2][fg] == 254).all()
    assert (chart[1:, ~fg] == 0).all()


def test_amanet_gate_threshold_is_strict():
    fine, u, v = _identity_sized_inputs(2, 2)
    m = torch.zeros(2, 2, 2)            # fg probability exactly 0.5
    assert iuv_chart_amanet(fine, u, v, m, (0, 0, 2, 2), gate_threshold=0.5)[0].sum() == 0
    assert iuv_chart_amanet(fine, u, v, m, (0, 0, 2, 2), gate_threshold=0.49)[0, 0, 1] == 3


def test_s1x_coarse_gate():
    h, w = 2, 3
    fine, u, v = _identity_sized_inputs(h, w)
    coarse = torch.zeros(2, h, w)
    coarse[1] = 1.0
    coarse[0, 1, 2] = 2.0               # background by the coarse argmax
    labels, uv = iuv_chart_s1x(coarse, fine, u, v, (0.0, 0.0, float(w), float(h)))
    assert labels.tolist() == [[0, 3, 3], [0, 3, 0]]
    assert uv[0, 0, 1].item() == pytest.approx(1.2) and uv[1, 0, 1].item() == pytest.approx(0.999)
    assert (uv[:, labels == 0] == 0).all()


def test_ties_go_to_the_first_channel_as_in_argmax():
    """Labels come from ``max(0).indices`` (faster than ``argmax(0)``): on tie-heavy outputs
    the same channel wins as with argmax, and a coarse tie is background."""
    from amanet.modeling.postprocess import _channel_argmax

    g = torch.Generator().manual_seed(0)
    for c in (2, 3, 25):
        x = torch.randint(0, 3, (c, 31, 17), generator=g).float()
        assert torch.equal(_channel_argmax(x), x.argmax(0))
    h, w = 2, 3
    fine, u, v = _identity_sized_inputs(h, w)
    fine[:, 0, 1] = 1.0                 # every part ties at (0, 1): part 0 wins -> label 0
    coarse = torch.ones(2, h, w)        # coarse ties everywhere: background
    labels, _ = iuv_chart_s1x(coarse, fine, u, v, (0.0, 0.0, float(w), float(h)))
    assert labels.sum() == 0
    coarse[1] += 1e-6
    labels, _ = iuv_chart_s1x(coarse, fine, u, v, (0.0, 0.0, float(w), float(h)))
    assert labels.tolist() == [[0, 0, 3], [0, 3, 3]]


@pytest.mark.parametrize("w_box", [0.0, 0.6, 1.0, 1.9])
def test_single_column_rule(w_box):
    torch.manual_seed(0)
    s = 8
    fine, u, v, m = torch.randn(25, s, s), torch.rand(25, s, s), torch.rand(25, s, s), torch.randn(2, s, s)
    chart = iuv_chart_amanet(fine, u, v, m, torch.tensor([3.0, 4.0, w_box, 37.9]))
    assert chart.shape == (3, 37, 1)
    labels, uv = iuv_chart_s1x(m, fine, u, v, (3.0, 4.0, w_box, 0.4))
    assert labels.shape == (1, 1) and uv.shape == (2, 1, 1)
    # a one-column resize samples the input between its two middle columns
    col = 0.5 * (fine[:, :, s // 2 - 1] + fine[:, :, s // 2])
    col = torch.nn.functional.interpolate(col[None, :, :, None], (37, 1), mode="bilinear",
                                          align_corners=False)[0, :, :, 0]
    fg = torch.softmax(torch.nn.functional.interpolate(
        (0.5 * (m[:, :, s // 2 - 1] + m[:, :, s // 2]))[None, :, :, None], (37, 1), mode="bilinear",
        align_corners=False)[0, :, :, 0], 0)[1] > 0.3
    assert torch.equal(chart[0, :, 0].long(), col.argmax(0) * fg)


def test_xyxy_to_xywh_int_truncates_and_clamps():
    boxes = torch.tensor([[0.9, 1.5, 3.2, 2.0], [-0.5, 2.0, 10.0, 12.99]])
    assert xyxy_to_xywh_int(boxes).tolist() == [[0, 1, 2, 1], [0, 2, 10, 10]]


def test_uv_to_uint8():
    assert uv_to_uint8(torch.tensor([-1.0, 0.0, 0.5, 0.999, 1.0, 3.0])).tolist() == [0, 0, 127, 254, 255, 255]


# ---------------------------------------------------------------------------- paste_iuv
def _chart(label: int, h: int, w: int, code: int = 7) -> torch.Tensor:
    c = torch.empty(3, h, w, dtype=torch.uint8)
    c[0], c[1], c[2] = label, code, code + 1
    return c


def test_paste_overlap_higher_score_wins():
    low, high = _chart(1, 4, 4, code=10), _chart(2, 4, 4, code=20)
    high[:, 0, 0] = 0                   # a background pixel of the winner does not erase the loser
    for charts, boxes, scores in [([low, high], [(0, 0, 4, 4), (2, 2, 4, 4)], [0.5, 0.9]),
                                  ([high, low], [(2, 2, 4, 4), (0, 0, 4, 4)], [0.9, 0.5])]:
        img = paste_iuv(charts, boxes, torch.tensor(scores), (8, 8))
        assert img.shape == (3, 8, 8) and img.dtype == torch.uint8
        assert img[:, 3, 3].tolist() == [2, 20, 21]         # overlap: high score
        assert img[:, 2, 2].tolist() == [1, 10, 11]         # winner's background: loser shows
        assert img[:, 0, 0].tolist() == [1, 10, 11]
        assert img[:, 5, 5].tolist() == [2, 20, 21]
        assert img[:, 7, 0].tolist() == [0, 0, 0]


def test_paste_equal_scores_first_wins():
    img = paste_iuv([_chart(4, 2, 2), _chart(5, 2, 2)], [(0, 0, 2, 2), (1, 1, 2, 2)], [0.7, 0.7], (3, 3))
    assert img[0].tolist() == [[4, 4, 0], [4, 4, 5], [0, 5, 5]]


def test_paste_clips_at_borders():
    chart = _chart(3, 4, 5)
    chart[0, 0, 0] = 9                  # marks the chart's top-left pixel
    img = paste_iuv([chart], [(-2, -1, 5, 4)], [1.0], (6, 6))
    assert img[0, :3, :3].eq(3).all() and img[0, 3:, :].eq(0).all() and img[0, :, 3:].eq(0).all()
    img = paste_iuv([chart], [(4, 3, 5, 4)], [1.0], (6, 6))
    assert img[0, 3, 4] == 9 and img[0, 3:, 4:].ne(0).all() and img[0].ne(0).sum() == 6
    img = paste_iuv([chart], [(10, 10, 5, 4)], [1.0], (6, 6))   # fully outside
    assert img.eq(0).all()


def test_paste_one_pixel_box_and_empty():
    img = paste_iuv([_chart(7, 1, 1, code=200)], [(2, 1, 1, 1)], [0.3], (3, 4))
    assert img[:, 1, 2].tolist() == [7, 200, 201] and img[0].ne(0).sum() == 1
    assert paste_iuv([], [], [], (2, 3)).shape == (3, 2, 3)
