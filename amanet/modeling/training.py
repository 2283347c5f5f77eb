"""The training forward: targets, anchor/proposal matching and sampling, and the loss dict.

:class:`TrainingModel` wraps a :class:`~amanet.modeling.model.DensePoseRCNN` and runs its
submodules the way Detectron2's ``GeneralizedRCNN`` + ``DensePoseROIHeads`` (and the AMANet
fork's ``_forward_ama_densepose``) do in training:

1. backbone -> RPN raw outputs; anchors are labelled (IoU 0.3 / 0.7, every GT's best anchors
   positive), 256 sampled per image (at most half positive): objectness BCE and L1 deltas;
2. proposals (no gradient; train top-k), GT boxes appended, matched at IoU 0.5, 512 sampled per
   image (at most 25 % foreground): class CE and class-specific smooth-L1;
3. DensePose RoIs = the sampled foreground proposals whose IoU with their matched GT is above
   ``MODEL.ROI_DENSEPOSE_HEAD.FG_IOU_THRESHOLD`` and whose GT has DensePose data; the
   annotated points (in the GT box's 256 frame) are mapped into the proposal's S x S grid, the
   GT part masks resampled onto it; the family's DensePose losses (:mod:`amanet.losses`).

All random sampling of one image draws from a generator seeded by the caller per image
(``seeds``), so a sample does not depend on which process or batch slot holds the image: this
is what makes resumed and data-parallel runs reproduce single-process runs.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import Tensor, nn

from .. import losses as L
from ..config import FAMILY_AMANET, Config
from .box_ops import apply_deltas, get_deltas, pairwise_iou
from .rpn import find_top_proposals

__all__ = ["DensePoseTarget", "ImageTargets", "targets_from_annotations", "match",
           "subsample_labels", "label_and_sample_anchors", "sample_proposals",
           "matched_iou", "select_densepose_rois", "pack_densepose_targets", "TrainingModel"]


# ----------------------------------------------------------------------------------------------
# Targets
# ----------------------------------------------------------------------------------------------
@dataclass
class DensePoseTarget:
    """One person's DensePose annotation: points in the GT box's 256 x 256 frame."""
    x: Tensor                       # [P] float32, 0..256
    y: Tensor                       # [P] float32
    i: Tensor                       # [P] int64, 1..24
    u: Tensor                       # [P] float32
    v: Tensor                       # [P] float32
    masks: Optional[Tensor] = None  # [256, 256] int64, 0 (background) .. 14

    def to(self, device) -> "DensePoseTarget":
        return DensePoseTarget(self.x.to(device), self.y.to(device), self.i.to(device),
                               self.u.to(device), self.v.to(device),
                               None if self.masks is None else self.masks.to(device))


@dataclass
class ImageTargets:
    """Ground truth of one image, in the coordinates of the (resized, flipped) network input."""
    boxes: Tensor                                   # [G, 4] float32, XYXY
    classes: Tensor                                 # [G] int64, contiguous 0..K-1
    densepose: List[Optional[DensePoseTarget]] = field(default_factory=list)
    keypoints: Optional[Tensor] = None              # [G, num_keypoints, 3] (x, y, visibility)

    def __post_init__(self):
        if not self.densepose:
            self.densepose = [None] * int(self.boxes.shape[0])

    def to(self, device) -> "ImageTargets":
        return ImageTargets(self.boxes.to(device), self.classes.to(device),
                            [None if d is None else d.to(device) for d in self.densepose],
                            None if self.keypoints is None else self.keypoints.to(device))


def _tensor(a: Any, dtype: torch.dtype) -> Tensor:
    if isinstance(a, Tensor):
        return a.to(dtype)
    return torch.as_tensor(np.asarray(a), dtype=dtype)


def targets_from_annotations(annotations: Sequence[Mapping[str, Any]],
                             category_to_class: Optional[Mapping[int, int]] = None,
                             num_keypoints: int = 17) -> ImageTargets:
    """Record annotations (:mod:`amanet.data.densepose_coco` contract, already transformed) ->
    :class:`ImageTargets`. Crowd regions and empty boxes are dropped (as Detectron2's mapper
    does); ``category_to_class`` maps dataset category ids to 0..K-1 (default: all -> 0).
    """
    boxes, classes, dps, kpts = [], [], [], []
    any_kpt = False
    for ann in annotations:
        if ann.get("iscrowd", 0):
            continue
        cat = ann.get("category_id", 1)
        if category_to_class is not None:
            if cat not in category_to_class:
                continue
            cls = category_to_class[cat]
        else:
            cls = 0
        box = _tensor(ann["bbox"], torch.float32).reshape(4)
        if not bool((box[2:] - box[:2] > 1e-5).all()):
            continue                # empty after augmentation (Detectron2 drops these too)
        boxes.append(box)
        classes.append(cls)
        dp = ann.get("dp")
        if dp is not None:
            masks = getattr(dp, "masks", None)
            dp = DensePoseTarget(_tensor(dp.x, torch.float32).reshape(-1),
                                 _tensor(dp.y, torch.float32).reshape(-1),
                                 _tensor(dp.i, torch.int64).reshape(-1),
                                 _tensor(dp.u, torch.float32).reshape(-1),
                                 _tensor(dp.v, torch.float32).reshape(-1),
                                 None if masks is None else _tensor(masks, torch.int64))
            if dp.x.numel() == 0 and dp.masks is None:
                dp = None
        dps.append(dp)
        k = ann.get("keypoints")
        if k is not None:
            any_kpt = True
            kpts.append(_tensor(k, torch.float32).reshape(-1, 3))
        else:
            kpts.append(torch.zeros((num_keypoints, 3)))
    box_t = torch.stack(boxes) if boxes else torch.zeros((0, 4))
    cls_t = torch.tensor(classes, dtype=torch.int64)
    kpt_t = torch.stack(kpts) if any_kpt else None
    return ImageTargets(box_t, cls_t, dps, kpt_t)


# ----------------------------------------------------------------------------------------------
# Matching and sampling (Detectron2's Matcher and subsample_labels)
# ----------------------------------------------------------------------------------------------
def match(quality: Tensor, thresholds: Sequence[float], labels: Sequence[int],
          allow_low_quality: bool) -> Tuple[Tensor, Tensor]:
    """Match columns (predictions) of ``quality [G, P]`` to rows (GT).

    Returns ``matches [P]`` (best GT per prediction) and ``match_labels [P]``: with thresholds
    ``t_1 < ... < t_n`` and labels ``l_0 .. l_n``, a best IoU in ``[t_k, t_{k+1})`` gets ``l_k``.
    ``allow_low_quality`` also labels 1 every prediction that ties a GT's best IoU.
    """
    p = quality.shape[1]
    if quality.shape[0] == 0:
        return (quality.new_zeros((p,), dtype=torch.int64),
                quality.new_full((p,), labels[0], dtype=torch.int8))
    vals, matches = quality.max(dim=0)
    match_labels = matches.new_ones(p, dtype=torch.int8)
    bounds = [-float("inf")] + list(thresholds) + [float("inf")]
    for lab, lo, hi in zip(labels, bounds[:-1], bounds[1:]):
        match_labels[(vals >= lo) & (vals < hi)] = lab
    if allow_low_quality:
        best_per_gt, _ = quality.max(dim=1)
        _, cols = torch.nonzero(quality == best_per_gt[:, None], as_tuple=True)
        match_labels[cols] = 1
    return matches, match_labels


def subsample_labels(labels: Tensor, num_samples: int, positive_fraction: float, bg_label: int,
                     generator: torch.Generator) -> Tuple[Tensor, Tensor]:
    """Indices of sampled positives (label not -1 and not ``bg_label``) and negatives.

    At most ``int(num_samples * positive_fraction)`` positives; negatives fill the rest. The
    random choice uses ``generator`` (CPU), so it is reproducible per image.
    """
    positive = torch.nonzero((labels != -1) & (labels != bg_label)).squeeze(1)
    negative = torch.nonzero(labels == bg_label).squeeze(1)
    num_pos = min(int(num_samples * positive_fraction), positive.numel())
    num_neg = min(num_samples - num_pos, negative.numel())
    perm1 = torch.randperm(positive.numel(), generator=generator)[:num_pos].to(labels.device)
    perm2 = torch.randperm(negative.numel(), generator=generator)[:num_neg].to(labels.device)
    return positive[perm1], negative[perm2]


def label_and_sample_anchors(anchors: Tensor, gt_boxes: Tensor, cfg,
                             generator: torch.Generator) -> Tuple[Tensor, Tensor]:
    """RPN targets of one image: ``labels [A]`` in {-1, 0, 1} after sampling and the matched
    GT box of every anchor ``[A, 4]`` (zeros without GT). ``cfg``: :class:`RPNConfig`."""
    if gt_boxes.shape[0] == 0:
        labels = torch.zeros(anchors.shape[0], dtype=torch.int64, device=anchors.device)
        matched = torch.zeros_like(anchors)
    else:
        quality = pairwise_iou(gt_boxes, anchors)
        idx, mlabels = match(quality, cfg.iou_thresholds, cfg.iou_labels, True)
        labels = mlabels.to(torch.int64)
        matched = gt_boxes[idx]
    pos, neg = subsample_labels(labels, cfg.batch_size_per_image, cfg.positive_fraction, 0,
                                generator)
    out = torch.full_like(labels, -1)
    out[pos] = 1
    out[neg] = 0
    return out, matched


@dataclass
class SampledProposals:
    boxes: Tensor        # [n, 4]
    gt_classes: Tensor   # [n], num_classes = background
    matched: Tensor      # [n] index of the matched GT (meaningless without GT)


def sample_proposals(proposals: Tensor, gt_boxes: Tensor, gt_classes: Tensor, cfg,
                     generator: torch.Generator) -> SampledProposals:
    """Append the GT boxes (if ``cfg.proposal_append_gt``), match at ``cfg.iou_thresholds``
    (labels 0/1, no low-quality matches) and sample ``cfg.batch_size_per_image`` with at most
    ``cfg.positive_fraction`` foreground. ``cfg``: :class:`ROIHeadsConfig`."""
    k = cfg.num_classes
    if cfg.proposal_append_gt and gt_boxes.shape[0]:
        proposals = torch.cat([proposals, gt_boxes.to(proposals.dtype)], dim=0)
    if gt_boxes.shape[0]:
        quality = pairwise_iou(gt_boxes, proposals)
        idx, mlabels = match(quality, cfg.iou_thresholds, (0, 1), False)
        classes = gt_classes[idx].clone()
        classes[mlabels == 0] = k
        classes[mlabels == -1] = -1
    else:
        idx = torch.zeros(proposals.shape[0], dtype=torch.int64, device=proposals.device)
        classes = torch.full_like(idx, k)
    pos, neg = subsample_labels(classes, cfg.batch_size_per_image, cfg.positive_fraction, k,
                                generator)
    keep = torch.cat([pos, neg])
    return SampledProposals(proposals[keep], classes[keep], idx[keep])


def matched_iou(a: Tensor, b: Tensor) -> Tensor:
    """Row-wise IoU of two ``[R, 4]`` XYXY box sets."""
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    wh = (torch.min(a[:, 2:], b[:, 2:]) - torch.max(a[:, :2], b[:, :2])).clamp(min=0)
    inter = wh[:, 0] * wh[:, 1]
    return inter / (area_a + area_b - inter)


def select_densepose_rois(sampled: SampledProposals, targets: ImageTargets, num_classes: int,
                          iou_threshold: float) -> Tensor:
    """Indices (into ``sampled``) of the DensePose RoIs: foreground, ``IoU > iou_threshold``
    with the matched GT, and that GT has a DensePose annotation."""
    if targets.boxes.shape[0] == 0:
        return torch.zeros(0, dtype=torch.int64, device=sampled.boxes.device)
    fg = (sampled.gt_classes >= 0) & (sampled.gt_classes < num_classes)
    has_dp = torch.tensor([d is not None for d in targets.densepose], dtype=torch.bool,
                          device=sampled.boxes.device)
    iou = matched_iou(sampled.boxes, targets.boxes[sampled.matched])
    keep = fg & (iou > iou_threshold) & has_dp[sampled.matched]
    return torch.nonzero(keep).squeeze(1)


def pack_densepose_targets(roi_boxes: List[Tensor], roi_gt: List[Tensor],
                           targets: Sequence[ImageTargets], size: int) -> Dict[str, Tensor]:
    """Flatten the DensePose targets of the selected RoIs of all images (RoIs numbered in
    image order, as the DensePose branch sees them).

    Points: the GT point ``(x, y)`` in the GT box's 256 frame goes to image coordinates, then
    to the proposal's ``size``-cell grid; only points inside the proposal are kept (``pt_roi``,
    ``pt_image``, ``pt_gx``, ``pt_gy``, ``pt_part``, ``pt_u``, ``pt_v``). Masks: the GT's
    256 x 256 part mask resampled onto the proposal grid (``masks [R_m, size, size]``,
    ``mask_roi``, ``mask_image``), for the RoIs whose GT has one.
    """
    device = roi_boxes[0].device if roi_boxes else torch.device("cpu")
    pts: Dict[str, List[Tensor]] = {k: [] for k in ("roi", "image", "x", "y", "part", "u", "v",
                                                      "gt", "est")}
    m_list, m_gt, m_est, m_roi, m_img = [], [], [], [], []
    r = 0
    for img, (boxes, gt_idx, t) in enumerate(zip(roi_boxes, roi_gt, targets)):
        for j in range(boxes.shape[0]):
            g = int(gt_idx[j])
            dp = t.densepose[g]
            gt_box, est_box = t.boxes[g], boxes[j]
            n = int(dp.x.numel())
            if n:
                pts["roi"].append(torch.full((n,), r, dtype=torch.int64, device=device))
                pts["image"].append(torch.full((n,), img, dtype=torch.int64, device=device))
                pts["x"].append(dp.x)
                pts["y"].append(dp.y)
                pts["part"].append(dp.i)
                pts["u"].append(dp.u)
                pts["v"].append(dp.v)
                pts["gt"].append(gt_box.expand(n, 4))
                pts["est"].append(est_box.expand(n, 4))
            if dp.masks is not None:
                m_list.append(dp.masks)
                m_gt.append(gt_box)
                m_est.append(est_box)
                m_roi.append(r)
                m_img.append(img)
            r += 1
    out: Dict[str, Tensor] = {}
    if pts["roi"]:
        cat = {k: torch.cat(v) for k, v in pts.items()}
        gt, est = cat["gt"], cat["est"]
        gx, in_x = L.point_grid_coords(cat["x"], gt[:, 0], gt[:, 2] - gt[:, 0], est[:, 0],
                                       est[:, 2] - est[:, 0], size)
        gy, in_y = L.point_grid_coords(cat["y"], gt[:, 1], gt[:, 3] - gt[:, 1], est[:, 1],
                                       est[:, 3] - est[:, 1], size)
        keep = in_x & in_y
        out.update(pt_roi=cat["roi"][keep], pt_image=cat["image"][keep], pt_gx=gx[keep],
                   pt_gy=gy[keep], pt_part=cat["part"][keep], pt_u=cat["u"][keep],
                   pt_v=cat["v"][keep])
    else:
        z = torch.zeros(0, device=device)
        zi = torch.zeros(0, dtype=torch.int64, device=device)
        out.update(pt_roi=zi, pt_image=zi, pt_gx=z, pt_gy=z, pt_part=zi, pt_u=z, pt_v=z)
    if m_list:
        out["masks"] = L.resample_masks(torch.stack(m_list), torch.stack(m_gt),
                                        torch.stack(m_est), size)
        out["mask_roi"] = torch.tensor(m_roi, dtype=torch.int64, device=device)
        out["mask_image"] = torch.tensor(m_img, dtype=torch.int64, device=device)
    else:
        out["masks"] = torch.zeros((0, size, size), dtype=torch.int64, device=device)
        out["mask_roi"] = torch.zeros(0, dtype=torch.int64, device=device)
        out["mask_image"] = torch.zeros(0, dtype=torch.int64, device=device)
    return out


# ----------------------------------------------------------------------------------------------
# The training module
# ----------------------------------------------------------------------------------------------
def check_trainable(cfg: Config) -> None:
    """Refuse, before any work, a config whose losses are not implemented: Detectron2's
    confidence losses (``DensePoseChartWithConfidenceLoss``)."""
    from ..config import ConfigError

    dp = cfg.densepose
    if dp.uv_confidence_enabled or dp.segm_confidence_enabled:
        raise ConfigError("training with MODEL.ROI_DENSEPOSE_HEAD.UV_CONFIDENCE / SEGM_CONFIDENCE "
                          "(Detectron2's confidence losses) is not implemented: these models "
                          "predict and export; train the config without confidences")


class TrainingModel(nn.Module):
    """``forward(images, targets, seeds) -> {loss name: scalar}`` for a DensePose R-CNN.

    ``images``: ``[3, H, W]`` float tensors (0..255, the config's channel order), already
    resized/augmented; ``targets``: one :class:`ImageTargets` per image; ``seeds``: one int per
    image seeding its sampling generator. The total loss is the sum of the dict's values;
    ``last_stats`` holds counts of the last call (RoIs, points) for logging.
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        check_trainable(model.cfg)
        self.model = model
        self.last_stats: Dict[str, float] = {}

    @property
    def cfg(self) -> Config:
        return self.model.cfg

    # -- RPN ------------------------------------------------------------------------------
    def _rpn(self, features, sizes, targets, gens) -> Tuple[Dict[str, Tensor], List[Tensor]]:
        rpn = self.model.proposal_generator
        rcfg = rpn.cfg
        anchors, logits, deltas = rpn.predict_raw(features)
        all_anchors = torch.cat(anchors)
        all_logits = torch.cat(logits, dim=1)
        all_deltas = torch.cat(deltas, dim=1)
        n = len(sizes)
        cls = all_logits.sum() * 0.0
        loc = all_logits.sum() * 0.0
        npos = 0
        for i, t in enumerate(targets):
            labels, matched = label_and_sample_anchors(all_anchors, t.boxes, rcfg, gens[i])
            gt_deltas = torch.zeros_like(all_anchors)
            pos = labels == 1
            npos += int(pos.sum())
            if bool(pos.any()):
                gt_deltas[pos] = get_deltas(all_anchors[pos], matched[pos], rcfg.bbox_reg_weights)
            li = L.rpn_losses_per_image(all_logits[i], all_deltas[i], labels, gt_deltas,
                                        rcfg.batch_size_per_image, rcfg.smooth_l1_beta)
            cls = cls + li["loss_rpn_cls"]
            loc = loc + li["loss_rpn_loc"]
        self.last_stats["rpn_pos_anchors"] = npos / max(n, 1)
        w = rcfg.loss_weight
        losses = {"loss_rpn_cls": cls * (w / n), "loss_rpn_loc": loc * (w / n)}
        with torch.no_grad():
            props = []
            for anc, dl in zip(anchors, deltas):
                b = dl.shape[0]
                dec = apply_deltas(dl.detach().reshape(-1, 4), anc.repeat(b, 1),
                                   rcfg.bbox_reg_weights)
                props.append(dec.view(b, -1, 4))
            proposals, _ = find_top_proposals(props, [lg.detach() for lg in logits], sizes,
                                              rcfg.nms_thresh, rcfg.pre_nms_topk_train,
                                              rcfg.post_nms_topk_train, rcfg.min_size)
        return losses, proposals

    # -- box head -------------------------------------------------------------------------
    def _box(self, features, proposals, targets, gens) -> Tuple[Dict[str, Tensor],
                                                                List[SampledProposals]]:
        rh = self.model.roi_heads
        rcfg = self.cfg.roi_heads
        samples = [sample_proposals(p, t.boxes, t.classes, rcfg, g)
                   for p, t, g in zip(proposals, targets, gens)]
        logits, deltas = rh.box_outputs(features, [s.boxes for s in samples])
        n = len(samples)
        cls = logits.sum() * 0.0
        reg = logits.sum() * 0.0
        start = 0
        nfg = 0
        for s, t in zip(samples, targets):
            m = s.boxes.shape[0]
            fg = (s.gt_classes >= 0) & (s.gt_classes < rcfg.num_classes)
            nfg += int(fg.sum())
            gt_deltas = torch.zeros_like(s.boxes)
            if bool(fg.any()):
                gt_deltas[fg] = get_deltas(s.boxes[fg], t.boxes[s.matched[fg]],
                                           rcfg.bbox_reg_weights)
            li = L.box_losses_per_image(logits[start:start + m], deltas[start:start + m],
                                        s.gt_classes, gt_deltas, rcfg.num_classes,
                                        rcfg.smooth_l1_beta)
            cls = cls + li["loss_cls"]
            reg = reg + li["loss_box_reg"]
            start += m
        self.last_stats["box_fg_samples"] = nfg / max(n, 1)
        return {"loss_cls": cls / n, "loss_box_reg": reg / n}, samples

    # -- DensePose ------------------------------------------------------------------------
    def _densepose_outputs(self, features, boxes: List[Tensor]):
        """Main outputs (uniform names) and the AMANet intermediate stages."""
        rh = self.model.roi_heads
        pooled = rh.densepose_features(features, boxes)
        if self.cfg.family != FAMILY_AMANET:
            out = rh.densepose_predictor(rh.densepose_head(pooled))
            return {"u": out["u"], "v": out["v"], "fine_segm": out["fine_segm"],
                    "coarse": out["coarse_segm"]}, []
        head_out, stages = rh.densepose_head(list(pooled))
        main, inter = rh.densepose_predictor.forward_train(
            head_out, stages, rh.bbox_params(), with_keypoints=self.cfg.densepose.kpt_on)
        outputs = {"u": main["u"], "v": main["v"], "fine_segm": main["index_uv"],
                   "coarse": main["ann_index"], "body_mask": main["m"]}
        if "k" in main:
            outputs["keypoints"] = main["k"]
        stages = [{"u": s["u"], "v": s["v"], "fine_segm": s["index_uv"], "coarse": s["ann_index"],
                   "body_mask": s["body_mask"]} for s in inter]
        return outputs, stages

    def _densepose(self, features, sizes, samples, targets) -> Dict[str, Tensor]:
        cfg = self.cfg
        dp = cfg.densepose
        n = len(samples)
        amanet = cfg.family == FAMILY_AMANET
        rois, gts = [], []
        for s, t in zip(samples, targets):
            keep = select_densepose_rois(s, t, cfg.roi_heads.num_classes, dp.fg_iou_threshold)
            rois.append(s.boxes[keep])
            gts.append(s.matched[keep])
        total = sum(int(b.shape[0]) for b in rois)
        self.last_stats["dp_rois"] = total / max(n, 1)
        names = ["loss_densepose_U", "loss_densepose_V", "loss_densepose_I", "loss_densepose_S"]
        if amanet:
            names += ["loss_densepose_M", "loss_densepose_inter"]
            if dp.kpt_on:
                names.append("loss_densepose_kpt")
        if total == 0:
            # Keep every DensePose parameter in the graph (DDP needs the same graph on every
            # process): run the branch on one whole-image box and multiply by zero.
            h, w = sizes[0]
            dummy = [torch.tensor([[0.0, 0.0, float(w), float(h)]], device=features["p2"].device)]
            dummy += [torch.zeros((0, 4), device=dummy[0].device)] * (n - 1)
            outputs, stages = self._densepose_outputs(features, dummy)
            zero = sum(v.float().sum() for v in outputs.values()) * 0.0
            for st in stages:
                zero = zero + sum(v.float().sum() for v in st.values()) * 0.0
            self.last_stats["dp_points"] = 0.0
            return {k: zero for k in names}

        outputs, stages = self._densepose_outputs(features, rois)
        size = int(outputs["u"].shape[-1])
        packed = pack_densepose_targets(rois, gts, targets, size)
        self.last_stats["dp_points"] = float(packed["pt_part"].numel()) / max(n, 1)
        hw = dp.heatmap_loss_weights
        weights = {"point_regression": hw.get("point_regression", 0.01),
                   "part": hw.get("part", 1.0), "index": hw.get("index", 5.0),
                   "body_mask": hw.get("body_mask", 0.0)}
        uv_mode = L.MODE_AMANET if amanet else L.MODE_DETECTRON2
        uv_scale = float(L.REFERENCE_IMAGES_PER_DEVICE.get(cfg.family, 1))
        segm_classes = int(outputs["coarse"].shape[1])
        losses = L.densepose_stage_losses(outputs, packed, n, weights, uv_mode, uv_scale,
                                          segm_classes, with_body_mask=amanet)
        if amanet:
            inter_w = hw.get("inter", 0.5)
            inter = outputs["u"].sum() * 0.0
            for st in stages:
                sl = L.densepose_stage_losses(st, packed, n, weights, uv_mode, uv_scale,
                                              int(st["coarse"].shape[1]), with_body_mask=True)
                for k, v in sl.items():
                    # the fork weights every intermediate term by INTER_WEIGHTS except I
                    inter = inter + (v if k == "loss_densepose_I" else v * inter_w)
            losses["loss_densepose_inter"] = inter
            if dp.kpt_on:
                losses["loss_densepose_kpt"] = self._keypoint_loss(outputs, rois, gts, targets, n,
                                                                   hw.get("keypoint", 0.5))
        return losses

    def _keypoint_loss(self, outputs, rois, gts, targets, n, weight) -> Tensor:
        logits = outputs["keypoints"]
        size = int(logits.shape[-1])
        idx_l, val_l, img_l = [], [], []
        for img, (boxes, g, t) in enumerate(zip(rois, gts, targets)):
            if boxes.shape[0] == 0:
                continue
            if t.keypoints is None:
                kp = torch.zeros((boxes.shape[0], logits.shape[1], 3), device=boxes.device)
            else:
                kp = t.keypoints[g]
            idx, valid = L.keypoints_to_heatmap(kp, boxes, size)
            idx_l.append(idx)
            val_l.append(valid)
            img_l.append(torch.full((boxes.shape[0],), img, dtype=torch.int64,
                                    device=boxes.device))
        return L.keypoint_losses(logits, torch.cat(idx_l), torch.cat(val_l), torch.cat(img_l), n,
                                 weight)

    # -- all --------------------------------------------------------------------------------
    def forward(self, images: List[Tensor], targets: List[ImageTargets],
                seeds: Sequence[int]) -> Dict[str, Tensor]:
        if len(images) != len(targets) or len(images) != len(seeds):
            raise ValueError("images, targets and seeds must have one entry per image")
        model = self.model
        gens = [torch.Generator().manual_seed(int(s)) for s in seeds]
        batch, sizes = model.preprocess(images)
        device = batch.device
        targets = [t.to(device) for t in targets]
        features = model.backbone(batch)
        self.last_stats = {}
        losses, proposals = self._rpn(features, sizes, targets, gens)
        box_losses, samples = self._box(features, proposals, targets, gens)
        losses.update(box_losses)
        losses.update(self._densepose(features, sizes, samples, targets))
        return losses
