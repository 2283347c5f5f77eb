"""Picture rules that the zoo fixtures do not reach: U/V codes that wrap like torch's uint8
cast, a chart crossing the image border, a zero-size box, AMANet outputs, bad style names."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from amanet.runtime.result import Prediction
from amanet.viz import STYLES, parse_styles, render
from amanet.viz.detectron2 import chart_iuv_arrays, draw_matrix

S = 16


def _prediction(boxes, gate="coarse_segm", seed=0, image_size=(40, 60)):
    g = torch.Generator().manual_seed(seed)
    n = len(boxes)
    dp = {gate: torch.randn(n, 2, S, S, generator=g), "fine_segm": torch.randn(n, 25, S, S,
                                                                              generator=g),
          "u": torch.rand(n, 25, S, S, generator=g) * 3 - 1,
          "v": torch.rand(n, 25, S, S, generator=g) * 3 - 1}
    dp[gate][:, 1] += 3.0  # mostly foreground
    b = torch.tensor(boxes, dtype=torch.float32)
    from amanet.modeling.postprocess import xyxy_to_xywh_int
    xywh = xyxy_to_xywh_int(b)
    charts = []
    for i in range(n):
        from amanet.modeling import postprocess as pp
        if gate == "coarse_segm":
            charts.append(pp.iuv_chart_s1x_uint8(dp[gate][i], dp["fine_segm"][i], dp["u"][i],
                                                 dp["v"][i], xywh[i]).numpy())
        else:
            charts.append(pp.iuv_chart_amanet(dp["fine_segm"][i], dp["u"][i], dp["v"][i],
                                              dp[gate][i], xywh[i]).numpy())
    return Prediction(image_size=image_size, boxes=b.numpy(), scores=np.linspace(0.9, 0.5, n,
                                                                                 dtype=np.float32),
                      classes=np.zeros(n, np.int64),
                      densepose={k: v.numpy() for k, v in dp.items()}, charts=charts,
                      chart_boxes=xywh.numpy())


def test_uv_codes_wrap_like_torchs_uint8_cast():
    pred = _prediction([[2.0, 3.0, 30.5, 33.9]])
    iuv = chart_iuv_arrays(pred)[0]
    from amanet.modeling import postprocess as pp
    dp = {k: torch.from_numpy(v) for k, v in pred.densepose.items()}
    labels, uv = pp.iuv_chart_s1x(dp["coarse_segm"][0], dp["fine_segm"][0], dp["u"][0],
                                  dp["v"][0], pred.chart_boxes[0])
    reference = torch.cat((labels[None].type(torch.float32), uv * 255.0)).type(torch.uint8)
    assert (uv > 1.01).any() and (uv < 0).any(), "the case must reach both wraps"
    np.testing.assert_array_equal(iuv, reference.numpy())


def test_chart_crossing_the_border_is_cropped_and_zero_boxes_skipped():
    image = np.full((20, 30, 3), 100, np.uint8)
    mask = np.ones((10, 12), np.uint8)
    matrix = np.full((10, 12), 200, np.uint8)
    draw_matrix(image, mask, matrix, (25, 15, 12, 10), 12, 1.0, 0.5)   # crosses right + bottom
    assert (image[15:, 25:] != 100).all() and (image[:15] == 100).all()
    before = image.copy()
    draw_matrix(image, mask, matrix, (3, 3, 0, 10), 12, 1.0, 0.5)
    draw_matrix(image, mask, matrix, (40, 3, 12, 10), 12, 1.0, 0.5)    # fully outside
    np.testing.assert_array_equal(image, before)


@pytest.mark.parametrize("gate", ["coarse_segm", "body_mask"])
def test_every_style_draws_for_both_families(gate):
    pred = _prediction([[2.0, 3.0, 30.5, 33.9], [20.0, 5.0, 59.0, 39.0]], gate=gate)
    image = np.random.default_rng(0).integers(0, 255, (40, 60, 3), dtype=np.uint8)
    for style in STYLES:
        pic = render(image, pred, style)
        assert pic.dtype == np.uint8 and pic.shape[:2] == (40, 60), style
    parts = render(image, pred, "parts")
    seg = render(image, pred, "dp_segm")
    fg = parts > 0
    assert fg.any() and (seg[~fg][:, 0] == seg[~fg][:, 1]).all()   # gray off the people
    # alpha is honoured: opaque colours replace the blend
    assert not np.array_equal(render(image, pred, "dp_segm", alpha=1.0), seg)
    # later people are drawn over earlier ones: where both charts cover a pixel, the picture
    # equals the one drawn from the second person alone
    second = _prediction([[2.0, 3.0, 30.5, 33.9], [20.0, 5.0, 59.0, 39.0]], gate=gate)
    only = Prediction(image_size=second.image_size, boxes=second.boxes[1:],
                      scores=second.scores[1:], classes=second.classes[1:],
                      densepose={k: v[1:] for k, v in second.densepose.items()},
                      charts=second.charts[1:], chart_boxes=second.chart_boxes[1:])
    alone = render(image, only, "dp_segm", alpha=1.0)
    both = render(image, pred, "dp_segm", alpha=1.0)
    iuv2 = chart_iuv_arrays(only)[0]
    x, y, w, h = (int(v) for v in only.chart_boxes[0])
    cover = np.zeros((40, 60), bool)
    cover[y:y + h, x:x + w] = iuv2[0][:40 - y, :60 - x] > 0
    cover[:, 31:] = False
    assert cover.any()
    np.testing.assert_array_equal(both[cover], alone[cover])


def test_style_names_are_checked():
    assert parse_styles("dp_segm, bbox") == ["dp_segm", "bbox"]
    with pytest.raises(ValueError, match="dp_contour"):
        parse_styles("dp_segm,dp_contour")
    with pytest.raises(ValueError, match="unknown colormap"):
        render(np.zeros((4, 4, 3), np.uint8), _prediction([[0.0, 0.0, 3.0, 3.0]]), "dp_u",
               cmap="rainbow")


def test_one_frame_in_several_styles_converts_its_outputs_once(monkeypatch):
    """dp_segm, dp_u, dp_v and magicanimate of one prediction: Detectron2's chart conversion runs
    once per person; another prediction or gate threshold converts again, with its own
    result."""
    from amanet.modeling import postprocess as pp
    calls = []
    real = pp.iuv_chart_s1x

    def counted(*args):
        calls.append(1)
        return real(*args)

    image = np.zeros((40, 60, 3), np.uint8)
    pred = _prediction([[2.0, 3.0, 30.5, 33.9], [10.0, 5.0, 50.0, 38.0]])
    other = _prediction([[2.0, 3.0, 30.5, 33.9], [10.0, 5.0, 50.0, 38.0]], seed=1)
    monkeypatch.setattr(pp, "iuv_chart_s1x", counted)
    first = [render(image, pred, s) for s in ("dp_segm", "dp_u", "dp_v", "magicanimate")]
    assert len(calls) == 2
    assert not np.array_equal(render(image, other, "dp_u"), first[1])
    assert len(calls) == 4
    np.testing.assert_array_equal(render(image, pred, "dp_u"), first[1])
    assert len(calls) == 6
    chart_iuv_arrays(pred, gate_threshold=0.5)
    assert len(calls) == 8
