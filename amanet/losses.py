"""Training losses: RPN, Fast R-CNN box head, DensePose (both families), AMANet keypoints.

The formulas follow Detectron2 (RPN, box head, the s1x chart loss) and the AMANet fork
(``dp_loss``, intermediate stages, keypoint heat-map loss); DESIGN.md §3/§4 list the weights.
The target side (matching, sampling, which RoIs and points) is in
:mod:`amanet.modeling.training`; here are the loss terms on already-packed targets.

Normalisation (batch-size independent)
--------------------------------------
Every term is the **mean over the images of the batch of a per-image loss**, where the
per-image loss is what Detectron2 / the AMANet fork compute on a device holding that one image:

- RPN: ``sum over the image's sampled anchors / RPN.BATCH_SIZE_PER_IMAGE`` (Detectron2 divides
  by ``batch_size_per_image * num_images``: the same thing);
- box head: ``sum over the image's sampled proposals / their number`` (Detectron2's ``mean``
  over ``512 * num_images`` proposals: the same whenever each image fills its 512 samples);
- DensePose I, S (coarse/index), M (body mask), keypoints: means over the image's points, RoI
  pixels, visible keypoints (the AMANet reference trains one image per GPU, so this is its
  exact objective);
- DensePose U, V: the fork and Detectron2 use ``reduction="sum"`` over the points on one
  device, so the per-image term is that sum times the reference schedule's images per device
  (:data:`REFERENCE_IMAGES_PER_DEVICE`: AMANet 4 images / 4 GPUs = 1, s1x 16 / 8 = 2), which
  keeps the published ``POINT_REGRESSION_WEIGHTS`` meaningful.

Images without DensePose RoIs contribute 0 but still count in the mean (as a GPU without
DensePose data contributes a zero loss to Detectron2's gradient average). Because every image
enters with weight ``1 / N``, splitting a batch of N images over P processes of N/P images
each and averaging gradients (what DDP does) gives exactly the single-process gradient, up to
float summation order: ``mean_p (P/N) sum_{i in p} g_i == (1/N) sum_i g_i``.
"""
from __future__ import annotations

from typing import Dict

import torch
import torch.nn.functional as F
from torch import Tensor

from .ops.uv_loss import MODE_AMANET, MODE_DETECTRON2, uv_interp_loss

__all__ = ["REFERENCE_IMAGES_PER_DEVICE", "smooth_l1", "per_image_mean", "rpn_losses_per_image",
           "box_losses_per_image", "interpolate_at_points", "point_grid_coords",
           "resample_masks", "keypoints_to_heatmap", "densepose_stage_losses",
           "keypoint_losses", "MODE_AMANET", "MODE_DETECTRON2"]

#: Images per device in each family's reference schedule: the U/V sums are per device there.
REFERENCE_IMAGES_PER_DEVICE = {"amanet": 1, "s1x": 2}


def smooth_l1(input: Tensor, target: Tensor, beta: float) -> Tensor:
    """Element-wise smooth-L1 (``beta < 1e-5`` is L1, as in Detectron2 / fvcore)."""
    diff = torch.abs(input - target)
    if beta < 1e-5:
        return diff
    return torch.where(diff < beta, 0.5 * diff * diff / beta, diff - 0.5 * beta)


def per_image_mean(values: Tensor, image_index: Tensor, num_images: int) -> Tensor:
    """``(1/num_images) * sum_i mean_{k: image_index[k]==i} values[k]`` (empty images give 0).

    ``values`` ``[K]`` (any float), ``image_index`` ``[K]`` int64 in ``[0, num_images)``.
    """
    if values.numel() == 0:
        return values.sum() * 0.0
    counts = torch.bincount(image_index, minlength=num_images).to(values.dtype)
    weights = 1.0 / counts.clamp(min=1)[image_index]
    return (values * weights).sum() / num_images


# ----------------------------------------------------------------------------------------------
# RPN and box head
# ----------------------------------------------------------------------------------------------
def rpn_losses_per_image(logits: Tensor, deltas: Tensor, labels: Tensor, gt_deltas: Tensor,
                         batch_size_per_image: int, smooth_l1_beta: float
                         ) -> Dict[str, Tensor]:
    """One image: objectness BCE over sampled anchors and box regression over positives.

    ``logits [A]``, ``deltas [A, 4]``, ``labels [A]`` in {-1 (ignore), 0, 1}, ``gt_deltas [A, 4]``
    (used where ``labels == 1``). Both sums are divided by ``batch_size_per_image``.
    """
    valid = labels >= 0
    pos = labels == 1
    cls = F.binary_cross_entropy_with_logits(logits[valid], labels[valid].to(logits.dtype),
                                             reduction="sum")
    loc = smooth_l1(deltas[pos], gt_deltas[pos], smooth_l1_beta).sum()
    return {"loss_rpn_cls": cls / batch_size_per_image, "loss_rpn_loc": loc / batch_size_per_image}


def box_losses_per_image(logits: Tensor, deltas: Tensor, gt_classes: Tensor, gt_deltas: Tensor,
                         num_classes: int, smooth_l1_beta: float) -> Dict[str, Tensor]:
    """One image's sampled proposals: class CE (mean) and class-specific smooth-L1 on the
    foreground deltas, divided by the number of sampled proposals (Detectron2's rule).

    ``logits [R, K+1]``, ``deltas [R, 4K]`` (or ``[R, 4]`` class-agnostic), ``gt_classes [R]``
    (``K`` = background), ``gt_deltas [R, 4]`` (used on the foreground rows).
    """
    n = max(int(gt_classes.numel()), 1)
    cls = F.cross_entropy(logits, gt_classes, reduction="sum") / n
    fg = torch.nonzero((gt_classes >= 0) & (gt_classes < num_classes)).squeeze(1)
    if deltas.shape[1] == 4:
        pred = deltas[fg]
    else:
        pred = deltas.view(-1, num_classes, 4)[fg, gt_classes[fg]]
    reg = smooth_l1(pred, gt_deltas[fg], smooth_l1_beta).sum() / n
    return {"loss_cls": cls, "loss_box_reg": reg}


# ----------------------------------------------------------------------------------------------
# DensePose: points, masks
# ----------------------------------------------------------------------------------------------
def point_grid_coords(norm: Tensor, gt_lo: Tensor, gt_size: Tensor, est_lo: Tensor,
                      est_size: Tensor, grid: int):
    """Map annotated points from the GT box's 256-frame into a proposal's ``grid``-cell axis.

    ``image = gt_lo + norm * gt_size / 256``; ``g = (image - est_lo) * grid / est_size``.
    Returns ``(g, inside)`` with ``inside = 0 <= image - est_lo < est_size`` (the point lies in
    the proposal; Detectron2's and the fork's ``j_valid`` on one axis).
    """
    image = gt_lo + norm * gt_size / 256.0
    offset = image - est_lo
    return offset * grid / est_size, (offset >= 0) & (offset < est_size)


def _axis(g: Tensor, size: int):
    lo = g.floor().clamp(0, size - 1).long()
    hi = (lo + 1).clamp(max=size - 1)
    w = torch.min(hi.to(g.dtype), g) - lo.to(g.dtype)
    return lo, hi, w


def interpolate_at_points(maps: Tensor, roi_index: Tensor, gx: Tensor, gy: Tensor) -> Tensor:
    """All channels of ``maps [R, C, H, W]`` at grid points: ``[K, C]``.

    The same 4-corner rule as the U/V loss (``lo = clamp(floor g, 0, S-1)``, ``hi =
    min(lo+1, S-1)``, no half-pixel shift); used for the I cross-entropy at points.
    """
    h, w = maps.shape[2], maps.shape[3]
    x_lo, x_hi, x_w = _axis(gx, w)
    y_lo, y_hi, y_w = _axis(gy, h)
    x_w, y_w = x_w[:, None], y_w[:, None]
    m = maps.permute(0, 2, 3, 1)  # [R, H, W, C]: one gather per corner gives [K, C]
    return (m[roi_index, y_lo, x_lo] * ((1 - x_w) * (1 - y_w))
            + m[roi_index, y_lo, x_hi] * (x_w * (1 - y_w))
            + m[roi_index, y_hi, x_lo] * ((1 - x_w) * y_w)
            + m[roi_index, y_hi, x_hi] * (x_w * y_w))


def resample_masks(masks: Tensor, gt_boxes: Tensor, est_boxes: Tensor, size: int) -> Tensor:
    """GT part masks ``[R, 256, 256]`` over the GT boxes, resampled (nearest) onto a
    ``size x size`` grid over the estimated boxes (XYXY). Outside the GT box: 0 (background).

    The fork's / Detectron2's ``resample_data``: output cell ``j`` samples the source at
    normalised ``x0 + j / size * (x1 - x0)`` with ``align_corners=True``.
    """
    r = masks.shape[0]
    if r == 0:
        return masks.new_zeros((0, size, size), dtype=torch.int64)
    gx0, gy0 = gt_boxes[:, 0], gt_boxes[:, 1]
    gw = gt_boxes[:, 2] - gt_boxes[:, 0]
    gh = gt_boxes[:, 3] - gt_boxes[:, 1]
    ex0, ey0 = est_boxes[:, 0], est_boxes[:, 1]
    ew = est_boxes[:, 2] - est_boxes[:, 0]
    eh = est_boxes[:, 3] - est_boxes[:, 1]
    x0 = 2 * (ex0 - gx0) / gw - 1
    y0 = 2 * (ey0 - gy0) / gh - 1
    x1 = 2 * (ex0 + ew - gx0) / gw - 1
    y1 = 2 * (ey0 + eh - gy0) / gh - 1
    steps = torch.arange(size, device=masks.device, dtype=torch.float32) / size
    gxs = x0[:, None] + steps[None, :] * (x1 - x0)[:, None]          # [R, size]
    gys = y0[:, None] + steps[None, :] * (y1 - y0)[:, None]
    grid = torch.stack((gxs[:, None, :].expand(r, size, size),
                        gys[:, :, None].expand(r, size, size)), dim=3)
    out = F.grid_sample(masks[:, None].float(), grid, mode="nearest", padding_mode="zeros",
                        align_corners=True)
    return out[:, 0].round().long()


def keypoints_to_heatmap(keypoints: Tensor, rois: Tensor, size: int):
    """Detectron2's ``keypoints_to_heatmap``: ``keypoints [R, K, 3]`` (x, y, visibility) and
    ``rois [R, 4]`` -> flat target index ``[R, K]`` (``y * size + x``) and validity ``[R, K]``.
    """
    if rois.numel() == 0:
        empty = rois.new_zeros((0, keypoints.shape[1]), dtype=torch.int64)
        return empty, empty.bool()
    offset_x, offset_y = rois[:, 0:1], rois[:, 1:2]
    scale_x = size / (rois[:, 2:3] - rois[:, 0:1])
    scale_y = size / (rois[:, 3:4] - rois[:, 1:2])
    x, y = keypoints[..., 0], keypoints[..., 1]
    x_edge = x == rois[:, 2:3]
    y_edge = y == rois[:, 3:4]
    x = ((x - offset_x) * scale_x).floor().long()
    y = ((y - offset_y) * scale_y).floor().long()
    x[x_edge] = size - 1
    y[y_edge] = size - 1
    valid = (x >= 0) & (y >= 0) & (x < size) & (y < size) & (keypoints[..., 2] > 0)
    index = torch.where(valid, y * size + x, torch.zeros_like(x))
    return index, valid


def densepose_stage_losses(outputs: Dict[str, Tensor], targets: Dict[str, Tensor],
                           num_images: int, weights: Dict[str, float], uv_mode: int,
                           uv_scale: float, segm_classes: int,
                           with_body_mask: bool) -> Dict[str, Tensor]:
    """U, V, I, S (and M) of one set of DensePose outputs, per-image normalised.

    ``outputs``: ``u``, ``v``, ``fine_segm`` ``[R, 25, S, S]``, ``coarse`` ``[R, C_s, S, S]``,
    ``body_mask`` ``[R, 2, S, S]`` (if ``with_body_mask``). ``targets`` (see
    :func:`amanet.modeling.training.pack_densepose_targets`): points ``pt_roi``, ``pt_image``,
    ``pt_gx``, ``pt_gy``, ``pt_part``, ``pt_u``, ``pt_v`` (only points inside their proposal),
    and ``mask_roi`` / ``mask_image`` / ``masks`` ``[R_m, S, S]`` (GT parts 0..14 resampled onto
    the proposal grid). ``weights``: ``point_regression``, ``part``, ``index``, ``body_mask``.
    ``segm_classes`` 2 turns the 15-part mask into foreground/background.
    """
    u, v, fine = outputs["u"].float(), outputs["v"].float(), outputs["fine_segm"].float()
    roi, img = targets["pt_roi"], targets["pt_image"]
    gx, gy, part = targets["pt_gx"], targets["pt_gy"], targets["pt_part"]
    fg = part > 0
    # One fused pass gives sum(smooth_l1(U)) + sum(smooth_l1(V)) and its gradient. For the
    # log the sum is split by the share of U, measured by a gradient-free gather at the K
    # points: the two entries add up to the fused loss, so the gradient is exactly the op's.
    r_fg, gx_fg, gy_fg, p_fg = roi[fg], gx[fg], gy[fg], part[fg]
    tu, tv = targets["pt_u"][fg], targets["pt_v"][fg]
    uv = uv_interp_loss(u, v, r_fg, gx_fg, gy_fg, p_fg, tu, tv, mode=uv_mode, beta=1.0)
    with torch.no_grad():
        su = smooth_l1(_at_points(u, r_fg, gx_fg, gy_fg, p_fg), tu, 1.0).sum()
        sv = smooth_l1(_at_points(v, r_fg, gx_fg, gy_fg, p_fg), tv, 1.0).sum()
        share_u = torch.where(su + sv > 0, su / (su + sv), torch.full_like(su, 0.5))
    scale = weights["point_regression"] * uv_scale / num_images
    losses = {"loss_densepose_U": uv * share_u * scale,
              "loss_densepose_V": uv * (1.0 - share_u) * scale}

    est = interpolate_at_points(fine, roi, gx, gy)
    ce = F.cross_entropy(est, part, reduction="none") if part.numel() else est.sum(1) * 0.0
    # every output stays in the graph even when a batch has no points / masks (DDP needs
    # the same set of parameters to receive gradients on every process)
    anchor = sum(t.float().sum() for t in outputs.values()) * 0.0
    losses["loss_densepose_I"] = per_image_mean(ce, img, num_images) * weights["part"] + anchor

    masks = targets["masks"]
    mroi, mimg = targets["mask_roi"], targets["mask_image"]
    coarse = outputs["coarse"].float()[mroi]
    s_gt = masks if segm_classes != 2 else (masks > 0).long()
    s_ce = F.cross_entropy(coarse, s_gt, reduction="none").flatten(1).mean(1) \
        if mroi.numel() else coarse.sum((1, 2, 3)) * 0.0
    losses["loss_densepose_S"] = per_image_mean(s_ce, mimg, num_images) * weights["index"]
    if with_body_mask:
        body = outputs["body_mask"].float()[mroi]
        m_ce = F.cross_entropy(body, masks.clamp(0, 1), reduction="none").flatten(1).mean(1) \
            if mroi.numel() else body.sum((1, 2, 3)) * 0.0
        losses["loss_densepose_M"] = per_image_mean(m_ce, mimg, num_images) * weights["body_mask"]
    return losses


def _at_points(maps: Tensor, roi: Tensor, gx: Tensor, gy: Tensor, part: Tensor) -> Tensor:
    """``maps[roi, part]`` bilinearly read at the grid points (``[K]``)."""
    h, w = maps.shape[2], maps.shape[3]
    x_lo, x_hi, x_w = _axis(gx, w)
    y_lo, y_hi, y_w = _axis(gy, h)
    return (maps[roi, part, y_lo, x_lo] * (1 - x_w) * (1 - y_w)
            + maps[roi, part, y_lo, x_hi] * x_w * (1 - y_w)
            + maps[roi, part, y_hi, x_lo] * (1 - x_w) * y_w
            + maps[roi, part, y_hi, x_hi] * x_w * y_w)


def keypoint_losses(logits: Tensor, target_index: Tensor, valid: Tensor, roi_image: Tensor,
                    num_images: int, weight: float) -> Tensor:
    """AMANet keypoint loss: spatial-softmax CE of each visible keypoint over the ``S x S``
    logits of its channel, normalised by the image's visible keypoints (Detectron2's
    ``NORMALIZE_LOSS_BY_VISIBLE_KEYPOINTS``), times ``weight``.

    ``logits [R, K, S, S]``, ``target_index``/``valid`` ``[R, K]``, ``roi_image [R]``.
    """
    r, k = logits.shape[:2]
    flat = logits.float().reshape(r * k, -1)
    sel = valid.reshape(-1)
    if not bool(sel.any()):
        return logits.sum() * 0.0
    ce = F.cross_entropy(flat[sel], target_index.reshape(-1)[sel], reduction="none")
    img = roi_image[:, None].expand(r, k).reshape(-1)[sel]
    return per_image_mean(ce, img, num_images) * weight
