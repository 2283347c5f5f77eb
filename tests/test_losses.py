"""Training targets and losses on hand-made cases: matching and sampling, DensePose RoI
selection, point-to-grid mapping, mask resampling, keypoint heat-map targets, the loss terms,
and the per-image normalisation that makes data-parallel training equal to one process."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from amanet import losses as L
from amanet.modeling.training import (DensePoseTarget, ImageTargets, SampledProposals,
                                      label_and_sample_anchors, match, matched_iou,
                                      pack_densepose_targets, sample_proposals,
                                      select_densepose_rois, subsample_labels)
from amanet.config import s1x_config


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


# ----------------------------------------------------------------------------- matching
def test_match_thresholds_and_low_quality():
    # 2 GT x 4 predictions
    q = torch.tensor([[0.80, 0.50, 0.10, 0.20],
                      [0.10, 0.60, 0.25, 0.65]])
    idx, lab = match(q, (0.3, 0.7), (0, -1, 1), allow_low_quality=False)
    assert idx.tolist() == [0, 1, 1, 1]
    assert lab.tolist() == [1, -1, 0, -1]
    # low-quality: GT 1's best prediction (3, IoU .65) becomes positive; GT 0's best is 0
    _, lab = match(q, (0.3, 0.7), (0, -1, 1), allow_low_quality=True)
    assert lab.tolist() == [1, -1, 0, 1]
    # no GT: everything gets the first label
    idx, lab = match(torch.zeros(0, 5), (0.5,), (0, 1), False)
    assert lab.tolist() == [0] * 5 and idx.tolist() == [0] * 5


@pytest.mark.parametrize("num_pos,num_neg,num,frac,exp_pos,exp_neg", [
    (300, 700, 256, 0.5, 128, 128),     # RPN: half positive when there are enough
    (10, 990, 256, 0.5, 10, 246),       # few positives: negatives fill up
    (300, 20, 256, 0.5, 128, 20),       # few negatives: no refill with positives
    (200, 2000, 512, 0.25, 128, 384),   # box head: at most 25 % foreground
])
def test_subsample_fractions(num_pos, num_neg, num, frac, exp_pos, exp_neg):
    labels = torch.cat([torch.ones(num_pos), torch.zeros(num_neg), -torch.ones(50)]).long()
    labels = labels[torch.randperm(labels.numel(), generator=gen(1))]
    pos, neg = subsample_labels(labels, num, frac, 0, gen(2))
    assert (pos.numel(), neg.numel()) == (exp_pos, exp_neg)
    assert (labels[pos] == 1).all() and (labels[neg] == 0).all()
    assert len(set(pos.tolist())) == pos.numel()
    # reproducible from the generator's seed
    pos2, neg2 = subsample_labels(labels, num, frac, 0, gen(2))
    assert torch.equal(pos, pos2) and torch.equal(neg, neg2)


def test_rpn_anchor_labels():
    cfg = s1x_config().rpn
    cfg.batch_size_per_image = 8
    gt = torch.tensor([[10.0, 10.0, 50.0, 50.0]])
    anchors = torch.tensor([[10.0, 10.0, 50.0, 50.0],     # IoU 1
                            [12.0, 10.0, 52.0, 50.0],     # IoU ~0.905
                            [30.0, 10.0, 70.0, 50.0],     # IoU 1/3: ignored (0.3..0.7)
                            [100.0, 100.0, 140.0, 140.0],  # IoU 0: negative
                            [200.0, 0.0, 240.0, 40.0]])   # negative
    labels, matched = label_and_sample_anchors(anchors, gt, cfg, gen())
    assert labels.tolist() == [1, 1, -1, 0, 0]
    assert torch.equal(matched[0], gt[0])
    # a GT whose best anchor is below 0.7 still gets that anchor (low-quality match)
    gt2 = torch.tensor([[28.0, 10.0, 58.0, 50.0]])
    labels, _ = label_and_sample_anchors(anchors, gt2, cfg, gen())
    best = int(torch.argmax(torch.stack([matched_iou(a[None], gt2)[0] for a in anchors])))
    assert labels[best] == 1
    # no GT: all sampled anchors are negatives
    labels, _ = label_and_sample_anchors(anchors, torch.zeros(0, 4), cfg, gen())
    assert labels.tolist() == [0] * 5


def test_proposal_sampling_appends_gt_and_labels_background():
    cfg = s1x_config().roi_heads
    cfg.batch_size_per_image = 16
    gt = torch.tensor([[0.0, 0.0, 40.0, 40.0], [100.0, 100.0, 150.0, 160.0]])
    props = torch.tensor([[0.0, 0.0, 38.0, 40.0],       # fg of GT 0
                          [60.0, 60.0, 80.0, 80.0],     # bg
                          [100.0, 100.0, 150.0, 150.0],  # fg of GT 1 (IoU 0.83)
                          [120.0, 130.0, 170.0, 190.0]])  # IoU < 0.5: bg
    s = sample_proposals(props, gt, torch.tensor([0, 0]), cfg, gen())
    assert s.boxes.shape[0] == 6                 # 4 proposals + 2 appended GT boxes
    fg = s.gt_classes == 0
    assert int(fg.sum()) == 4 and int((s.gt_classes == 1).sum()) == 2
    # foreground rows come first; every GT box appears among them matched to itself
    assert fg[:4].all()
    for g in range(2):
        rows = (s.boxes == gt[g]).all(1)
        assert rows.any() and (s.matched[rows] == g).all()


def test_densepose_roi_selection_by_iou_and_annotation():
    dp = DensePoseTarget(torch.tensor([1.0]), torch.tensor([1.0]), torch.tensor([1]),
                         torch.tensor([0.5]), torch.tensor([0.5]))
    targets = ImageTargets(torch.tensor([[0.0, 0.0, 100.0, 100.0], [200.0, 0.0, 300.0, 100.0]]),
                           torch.tensor([0, 0]), [dp, None])
    boxes = torch.tensor([[0.0, 0.0, 100.0, 100.0],    # IoU 1, annotated: kept
                          [0.0, 0.0, 100.0, 80.0],     # IoU 0.8: kept
                          [0.0, 0.0, 100.0, 70.0],     # IoU 0.7: not > 0.7
                          [200.0, 0.0, 300.0, 100.0],  # GT without DensePose: dropped
                          [0.0, 0.0, 100.0, 100.0]])   # background: dropped
    s = SampledProposals(boxes, torch.tensor([0, 0, 0, 0, 1]), torch.tensor([0, 0, 0, 1, 0]))
    keep = select_densepose_rois(s, targets, num_classes=1, iou_threshold=0.7)
    assert keep.tolist() == [0, 1]
    assert select_densepose_rois(s, targets, 1, 0.65).tolist() == [0, 1, 2]


# ----------------------------------------------------------------------------- points
def test_point_grid_coords():
    # GT box x 10..110 (w 100); the point at 128/256 of it is at image x = 60
    norm = torch.tensor([128.0, 0.0, 256.0])
    g, inside = L.point_grid_coords(norm, torch.tensor(10.0), torch.tensor(100.0),
                                    torch.tensor(0.0), torch.tensor(200.0), 64)
    assert torch.allclose(g, torch.tensor([60 * 64 / 200, 10 * 64 / 200, 110 * 64 / 200]))
    assert inside.tolist() == [True, True, True]
    # a proposal starting at x = 70 misses the points at 60 and 10 but holds 110
    g, inside = L.point_grid_coords(norm, torch.tensor(10.0), torch.tensor(100.0),
                                    torch.tensor(70.0), torch.tensor(50.0), 64)
    assert inside.tolist() == [False, False, True]
    assert g[2].item() == pytest.approx(40 * 64 / 50)


def test_pack_densepose_targets_maps_points_into_each_proposal():
    x = torch.tensor([0.0, 64.0, 128.0, 255.0])
    y = torch.tensor([128.0, 128.0, 32.0, 200.0])
    dp = DensePoseTarget(x, y, torch.tensor([1, 2, 3, 4]), torch.rand(4), torch.rand(4),
                         torch.zeros(256, 256, dtype=torch.int64))
    gt = torch.tensor([[20.0, 40.0, 84.0, 168.0]])                 # w 64, h 128
    t = ImageTargets(gt, torch.tensor([0]), [dp])
    rois = [torch.tensor([[20.0, 40.0, 84.0, 168.0],               # the GT box itself
                          [52.0, 40.0, 116.0, 168.0]])]            # shifted right by 32
    out = pack_densepose_targets(rois, [torch.tensor([0, 0])], [t], size=32)
    # RoI 0: every point, g = norm * 32 / 256
    r0 = out["pt_roi"] == 0
    assert torch.allclose(out["pt_gx"][r0], x * 32 / 256)
    assert torch.allclose(out["pt_gy"][r0], y * 32 / 256)
    # RoI 1: image x = 20 + x/4 must be >= 52 -> only x_norm >= 128 survive
    r1 = out["pt_roi"] == 1
    assert out["pt_part"][r1].tolist() == [3, 4]
    img_x = 20 + x[2:] * 64 / 256
    assert torch.allclose(out["pt_gx"][r1], (img_x - 52) * 32 / 64)
    assert out["masks"].shape == (2, 32, 32) and out["mask_roi"].tolist() == [0, 1]


def test_resample_masks_identity_and_shift():
    m = torch.zeros(1, 256, 256, dtype=torch.int64)
    m[0, :, 128:] = 7                                # right half labelled 7
    box = torch.tensor([[0.0, 0.0, 100.0, 100.0]])
    same = L.resample_masks(m, box, box, 32)
    assert (same[0, :, :16] == 0).all() and (same[0, :, 16:] == 7).all()
    # a proposal over the right half of the GT box: all 7; one beyond the GT box: background
    right = L.resample_masks(m, box, torch.tensor([[50.0, 0.0, 100.0, 100.0]]), 32)
    assert (right == 7).all()
    outside = L.resample_masks(m, box, torch.tensor([[150.0, 0.0, 250.0, 100.0]]), 32)
    assert (outside == 0).all()


def test_keypoints_to_heatmap():
    rois = torch.tensor([[10.0, 20.0, 74.0, 84.0]])              # 64 x 64 -> 32 cells: 2 px each
    kp = torch.tensor([[[11.0, 21.0, 2.0],      # cell (0, 0)
                        [74.0, 84.0, 2.0],      # on the far edge -> last cell
                        [40.0, 50.0, 0.0],      # invisible
                        [5.0, 30.0, 2.0]]])     # outside the RoI
    idx, valid = L.keypoints_to_heatmap(kp, rois, 32)
    assert valid.tolist() == [[True, True, False, False]]
    assert idx[0, 0] == 0 and idx[0, 1] == 31 * 32 + 31


# ----------------------------------------------------------------------------- loss terms
def test_rpn_and_box_loss_normalisation():
    labels = torch.tensor([1, 0, -1, 0])
    logits = torch.tensor([2.0, -1.0, 5.0, 0.5])
    deltas = torch.tensor([[0.1, 0.2, 0.3, 0.4]] * 4)
    gt = torch.zeros(4, 4)
    out = L.rpn_losses_per_image(logits, deltas, labels, gt, 256, 0.0)
    bce = F.binary_cross_entropy_with_logits(logits[[0, 1, 3]], torch.tensor([1.0, 0.0, 0.0]),
                                             reduction="sum")
    assert out["loss_rpn_cls"].item() == pytest.approx(bce.item() / 256)
    assert out["loss_rpn_loc"].item() == pytest.approx(1.0 / 256)      # L1 of one positive row
    # box head: class-specific deltas of the GT class, divided by the number of samples
    logits = torch.randn(4, 3, generator=gen())
    deltas = torch.arange(32, dtype=torch.float32).view(4, 8) / 10
    classes = torch.tensor([1, 0, 2, 2])                 # K = 2: class 2 is background
    gt_d = torch.zeros(4, 4)
    out = L.box_losses_per_image(logits, deltas, classes, gt_d, 2, 0.0)
    assert out["loss_cls"].item() == pytest.approx(F.cross_entropy(logits, classes).item())
    expected = (deltas[0, 4:8].abs().sum() + deltas[1, 0:4].abs().sum()) / 4
    assert out["loss_box_reg"].item() == pytest.approx(expected.item())


def _stage_case(num_rois=3, size=16, seed=0):
    g = gen(seed)
    outputs = {"u": torch.rand(num_rois, 25, size, size, generator=g, requires_grad=True),
               "v": torch.rand(num_rois, 25, size, size, generator=g, requires_grad=True),
               "fine_segm": torch.randn(num_rois, 25, size, size, generator=g,
                                        requires_grad=True),
               "coarse": torch.randn(num_rois, 15, size, size, generator=g, requires_grad=True),
               "body_mask": torch.randn(num_rois, 2, size, size, generator=g,
                                        requires_grad=True)}
    k = 40
    roi = torch.randint(0, num_rois, (k,), generator=g)
    image = (roi >= 1).long()                   # RoI 0 in image 0, RoIs 1, 2 in image 1
    targets = {"pt_roi": roi, "pt_image": image,
               "pt_gx": torch.rand(k, generator=g) * size, "pt_gy": torch.rand(k, generator=g) * size,
               "pt_part": torch.randint(1, 25, (k,), generator=g), "pt_u": torch.rand(k, generator=g),
               "pt_v": torch.rand(k, generator=g),
               "masks": torch.randint(0, 15, (num_rois, size, size), generator=g),
               "mask_roi": torch.arange(num_rois), "mask_image": torch.tensor([0, 1, 1])}
    return outputs, targets


def _read_point(m: torch.Tensor, gx: float, gy: float) -> float:
    """``m [H, W]`` at grid point ``(gx, gy)``, one point in plain Python, by the rule as
    Detectron2's BilinearInterpolationHelper states it (not the code under test): per axis of
    size S, ``lo = clamp(floor g, 0, S - 1)``, ``hi = min(lo + 1, S - 1)``, ``w = min(hi, g) -
    lo``; four corners weighted ``(1 - w) / w``."""
    def axis(g, size):
        lo = min(max(math.floor(g), 0), size - 1)
        hi = min(lo + 1, size - 1)
        return lo, hi, min(hi, g) - lo
    (xl, xh, wx), (yl, yh, wy) = axis(gx, m.shape[1]), axis(gy, m.shape[0])
    at = lambda y, x: float(m[y, x])   # noqa: E731
    return (at(yl, xl) * (1 - wx) * (1 - wy) + at(yl, xh) * wx * (1 - wy)
            + at(yh, xl) * (1 - wx) * wy + at(yh, xh) * wx * wy)


def _points(t):
    return zip(t["pt_roi"].tolist(), t["pt_gx"].tolist(), t["pt_gy"].tolist(),
               t["pt_part"].tolist(), t["pt_u"].tolist(), t["pt_v"].tolist(), strict=True)


def _smooth_l1(d: float) -> float:
    return 0.5 * d * d if abs(d) < 1.0 else abs(d) - 0.5


def _edge_points(t, size):
    """Put points in the last grid cell on each axis, where ``hi`` clamps (``w`` stays 0)."""
    t["pt_gx"][:3] = torch.tensor([size - 0.25, size - 0.75, 3.5])
    t["pt_gy"][:3] = torch.tensor([2.5, size - 0.4, size - 0.01])


def test_densepose_stage_losses_match_hand_formulas():
    outputs, t = _stage_case()
    _edge_points(t, 16)
    w = {"point_regression": 0.1, "part": 0.3, "index": 2.0, "body_mask": 2.0}
    out = L.densepose_stage_losses(outputs, t, num_images=2, weights=w, uv_mode=L.MODE_AMANET,
                                   uv_scale=1.0, segm_classes=15, with_body_mask=True)
    u, v, fine = (outputs[k].detach() for k in ("u", "v", "fine_segm"))
    ref_uv = sum(_smooth_l1(_read_point(u[r, p], gx, gy) - tu)
                 + _smooth_l1(_read_point(v[r, p], gx, gy) - tv)
                 for r, gx, gy, p, tu, tv in _points(t))
    got_uv = out["loss_densepose_U"] + out["loss_densepose_V"]
    assert got_uv.item() == pytest.approx(ref_uv * 0.1 / 2, rel=1e-5)
    # I: CE of the bilinearly read 25 logits, mean per image, then mean over images
    ce = []
    for r, gx, gy, p, _, _ in _points(t):
        logits = [_read_point(fine[r, c], gx, gy) for c in range(25)]
        top = max(logits)
        ce.append(top + math.log(sum(math.exp(z - top) for z in logits)) - logits[p])
    ce = torch.tensor(ce, dtype=torch.float64)
    per_img = [ce[t["pt_image"] == i].mean() for i in range(2)]
    assert out["loss_densepose_I"].item() == pytest.approx(0.3 * sum(per_img).item() / 2, rel=1e-5)
    # S: 15-class pixel CE, pixel mean per image
    pix = F.cross_entropy(outputs["coarse"], t["masks"], reduction="none")
    s_img = [pix[0].mean(), pix[1:].mean()]
    assert out["loss_densepose_S"].item() == pytest.approx(2.0 * sum(s_img).item() / 2, rel=1e-5)
    pix = F.cross_entropy(outputs["body_mask"], t["masks"].clamp(0, 1), reduction="none")
    m_img = [pix[0].mean(), pix[1:].mean()]
    assert out["loss_densepose_M"].item() == pytest.approx(2.0 * sum(m_img).item() / 2, rel=1e-5)
    # gradients reach every output
    sum(out.values()).backward()
    for k in ("u", "v", "fine_segm", "coarse", "body_mask"):
        assert outputs[k].grad is not None and outputs[k].grad.abs().sum() > 0


def test_u_v_split_adds_up_to_the_fused_loss():
    outputs, t = _stage_case(seed=3)
    _edge_points(t, 16)
    w = {"point_regression": 1.0, "part": 1.0, "index": 1.0, "body_mask": 0.0}
    out = L.densepose_stage_losses(outputs, t, 1, w, L.MODE_DETECTRON2, 1.0, 2, False)
    u = outputs["u"].detach()
    su = sum(_smooth_l1(_read_point(u[r, p], gx, gy) - tu) for r, gx, gy, p, tu, _ in _points(t))
    assert out["loss_densepose_U"].item() == pytest.approx(su, rel=1e-5)
    # s1x: 2-class coarse segmentation from the part mask
    outputs["coarse"] = outputs["coarse"][:, :2].detach().requires_grad_(True)
    out = L.densepose_stage_losses(outputs, t, 1, w, L.MODE_DETECTRON2, 1.0, 2, False)
    pix = F.cross_entropy(outputs["coarse"], (t["masks"] > 0).long(), reduction="none")
    expected = (pix[0].mean() + pix[1:].mean())          # per image, images summed / 1
    assert out["loss_densepose_S"].item() == pytest.approx(expected.item(), rel=1e-5)


def test_keypoint_loss_is_per_image_mean_of_visible():
    g = gen(5)
    logits = torch.randn(3, 17, 8, 8, generator=g)
    idx = torch.randint(0, 64, (3, 17), generator=g)
    valid = torch.rand(3, 17, generator=g) > 0.5
    roi_image = torch.tensor([0, 0, 1])
    got = L.keypoint_losses(logits, idx, valid, roi_image, 2, 0.5)
    flat = logits.view(3, 17, 64)
    per = [[], []]
    for r in range(3):
        for k in range(17):
            if valid[r, k]:
                per[int(roi_image[r])].append(F.cross_entropy(flat[r, k][None], idx[r, k][None]))
    expected = 0.5 * sum(torch.stack(p).mean() for p in per) / 2
    assert got.item() == pytest.approx(expected.item(), rel=1e-5)


def test_per_image_mean_is_shard_invariant():
    """mean over N images == mean over P shards of their own per-image means (DDP's average)."""
    g = gen(9)
    values = torch.rand(30, generator=g)
    image = torch.sort(torch.randint(0, 4, (30,), generator=g)).values
    full = L.per_image_mean(values, image, 4)
    halves = [L.per_image_mean(values[(image // 2) == s], image[(image // 2) == s] - 2 * s, 2)
              for s in range(2)]
    assert full.item() == pytest.approx(sum(halves).item() / 2, rel=1e-6)


def test_smooth_l1_beta_zero_is_l1():
    a, b = torch.tensor([0.0, 0.3, -2.0]), torch.zeros(3)
    assert torch.allclose(L.smooth_l1(a, b, 0.0), a.abs())
    assert torch.allclose(L.smooth_l1(a, b, 1.0), F.smooth_l1_loss(a, b, reduction="none"))
    assert math.isclose(float(L.smooth_l1(a, b, 0.5)[2]), 2.0 - 0.25)
