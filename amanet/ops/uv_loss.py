"""DensePose U/V loss at annotated points: bilinear read of the U/V maps + smooth-L1 sum.

Points come as flat tensors (``K`` points over all RoIs): ``roi_index [K] int64``, grid
coordinates ``x, y [K]`` in the RoI's ``H x W`` output grid (already scaled; for AMANet
``g = (px - x0) * W / w``), ``part [K] int64`` (1..24; 0 = ignored point) and the targets
``target_u, target_v [K]``. Per axis of size ``S``::

    lo = clamp(floor(g), 0, S - 1);  hi = min(lo + 1, S - 1);  w = min(hi, g) - lo

(no half-pixel shift) and 4-corner bilinear weights, read from channel ``part`` of the point's
RoI. ``mode`` picks the point rule: :data:`MODE_AMANET` (0) keeps every point with ``part > 0``
(outside the grid the clamped rule applies as is); :data:`MODE_DETECTRON2` (1) is Detectron2's
``BilinearInterpolationHelper.from_matches`` (same weights) and also drops points outside
``0 <= g < S`` on either axis (its ``j_valid``). Returns
``sum smooth_l1(u_est - target_u) + smooth_l1(v_est - target_v)`` over the kept points
(``beta = 0`` is L1). The loss is differentiable in ``u`` and ``v`` only.

:func:`uv_interp_loss` dispatches to ``torch.ops.amanet.uv_interp_loss`` (csrc: one pass over the
points, backward zero-fills dU/dV once and scatters) when :func:`amanet.ops.library.use_fused`,
else to :func:`uv_interp_loss_reference` (the unfused formulation).
"""
from __future__ import annotations

from typing import Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from .library import use_fused

MODE_AMANET = 0
MODE_DETECTRON2 = 1


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def _axis(g: Tensor, size: int) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    """``lo, hi`` (int64), weight ``w`` and ``inside`` (``0 <= g < size``) along one axis."""
    lo = g.floor().clamp(0, size - 1).long()  # clamp before .long(): no int overflow far outside
    hi = (lo + 1).clamp(max=size - 1)
    w = torch.min(hi.to(g.dtype), g) - lo.to(g.dtype)
    inside = (g >= 0) & (g < size)
    return lo, hi, w, inside


def uv_interp_loss_reference(u: Tensor, v: Tensor, roi_index: Tensor, x: Tensor, y: Tensor,
                             part: Tensor, target_u: Tensor, target_v: Tensor,
                             mode: int = MODE_AMANET, beta: float = 1.0) -> Tensor:
    """The unfused formulation (advanced-indexing gathers + ``F.smooth_l1_loss``); see module doc.

    Args:
        u, v: ``[N, C, H, W]`` predicted U and V maps (C = 25 for DensePose).
        roi_index, part: ``[K]`` int64; x, y, target_u, target_v: ``[K]`` floating.
        mode: :data:`MODE_AMANET` or :data:`MODE_DETECTRON2`.
        beta: smooth-L1 beta (0 = L1).

    Returns:
        A scalar tensor of ``u``'s dtype.
    """
    height, width = u.shape[2], u.shape[3]
    dt = _compute_dtype(u.dtype)
    x, y = x.to(dt), y.to(dt)
    x_lo, x_hi, x_w, x_in = _axis(x, width)
    y_lo, y_hi, y_w, y_in = _axis(y, height)
    keep = part > 0
    if mode == MODE_DETECTRON2:
        keep = keep & x_in & y_in
    i, p = roi_index[keep], part[keep]
    x_lo, x_hi, x_w = x_lo[keep], x_hi[keep], x_w[keep]
    y_lo, y_hi, y_w = y_lo[keep], y_hi[keep], y_w[keep]
    w00 = (1.0 - x_w) * (1.0 - y_w)
    w01 = x_w * (1.0 - y_w)
    w10 = (1.0 - x_w) * y_w
    w11 = x_w * y_w
    u_est = (u[i, p, y_lo, x_lo] * w00 + u[i, p, y_lo, x_hi] * w01
             + u[i, p, y_hi, x_lo] * w10 + u[i, p, y_hi, x_hi] * w11)
    v_est = (v[i, p, y_lo, x_lo] * w00 + v[i, p, y_lo, x_hi] * w01
             + v[i, p, y_hi, x_lo] * w10 + v[i, p, y_hi, x_hi] * w11)
    loss = (F.smooth_l1_loss(u_est, target_u[keep].to(u_est.dtype), reduction="sum", beta=beta)
            + F.smooth_l1_loss(v_est, target_v[keep].to(v_est.dtype), reduction="sum", beta=beta))
    return loss.to(u.dtype)


def uv_interp_loss(u: Tensor, v: Tensor, roi_index: Tensor, x: Tensor, y: Tensor, part: Tensor,
                   target_u: Tensor, target_v: Tensor, mode: int = MODE_AMANET,
                   beta: float = 1.0) -> Tensor:
    """Same contract as :func:`uv_interp_loss_reference`; fused when :func:`use_fused`."""
    if use_fused():
        return torch.ops.amanet.uv_interp_loss(u, v, roi_index, x, y, part, target_u, target_v,
                                               mode, beta)
    return uv_interp_loss_reference(u, v, roi_index, x, y, part, target_u, target_v, mode, beta)
