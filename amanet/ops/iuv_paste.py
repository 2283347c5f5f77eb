"""Fused IUV paste: DensePose RoI outputs -> per-box uint8 IUV charts (+ the whole-image IUV).

:func:`iuv_paste` is the one entry point (used by :class:`amanet.runtime.Predictor`). It runs the
``amanet::iuv_paste`` csrc op when :func:`amanet.ops.library.use_fused` says so, else
:func:`iuv_paste_reference`, built from the per-RoI rules of :mod:`amanet.modeling.postprocess`.

The op (schema in ``csrc/ops/ops.cpp``, layout in ``csrc/ops/iuv_paste.h``) returns
``(charts, offsets, image)``: ``charts`` uint8 ``[3 * P]`` with ``P = sum_i h_i * w_i``, chart ``i``
being the contiguous ``[3, h_i, w_i]`` block ``charts[3 * offsets[i] : 3 * offsets[i + 1]]``;
``offsets`` int64 ``[N + 1]``; ``image`` uint8 ``[3, H, W]`` (empty ``[0]`` when not asked for).
:func:`unpack_charts` turns that into the list of per-box views.

The fused op reproduces the reference bit for bit on the CPU (ATen's bilinear arithmetic,
including its FMA contraction, is replicated; see ``csrc/ops/common/iuv_paste.h``). Differences
are possible only at exact near-ties (argmax of equal sampled values after an ulp of difference,
the AMANet gate within ~1e-7 of the threshold) and, against other ATen builds (non-AVX2 CPU
kernels, the CUDA reference), sampled values may differ by an ulp.
"""
from __future__ import annotations

from typing import List, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor

from ..modeling import postprocess as pp
from .library import use_fused

# The gate rules of amanet.modeling.families (GATE_COARSE_ARGMAX, GATE_MASK_SOFTMAX)
MODE_S1X = 0     # gate: argmax(coarse segmentation) > 0   (Detectron2 ToChartResultConverter)
MODE_AMANET = 1  # gate: softmax(body mask)[1] > threshold (AMANet DensePoseResult)

ImageHW = Union[Tuple[int, int], Sequence[int]]


def mode_for_family(family: str) -> int:
    """The family's gate rule (:func:`amanet.modeling.families.family_of`)."""
    from ..modeling.families import family_of
    return family_of(family).gate_mode


def unpack_charts(charts: Tensor, offsets: Tensor, boxes_xywh_int: Tensor) -> List[Tensor]:
    """Per-box ``[3, h_i, w_i]`` views of the op's packed ``charts`` (see the module doc)."""
    offs = offsets.tolist()
    sizes = boxes_xywh_int[:, 2:].tolist()
    return [charts[3 * offs[i]:3 * offs[i + 1]].view(3, int(sizes[i][1]), int(sizes[i][0]))
            for i in range(len(sizes))]


def iuv_paste_reference(fine: Tensor, gate: Tensor, u: Tensor, v: Tensor, boxes_xywh_int: Tensor,
                        scores: Tensor, mode: int, threshold: float, image_hw: ImageHW,
                        whole_image: bool = True) -> Tuple[List[Tensor], Optional[Tensor]]:
    """Plain-PyTorch :func:`iuv_paste`: the per-RoI functions of ``postprocess`` + ``paste_iuv``."""
    if mode == MODE_S1X:
        charts = pp.iuv_charts_s1x_uint8(gate, fine, u, v, boxes_xywh_int)
    elif mode == MODE_AMANET:
        charts = pp.iuv_charts_amanet(fine, u, v, gate, boxes_xywh_int, threshold)
    else:
        raise ValueError(f"iuv_paste: mode must be {MODE_S1X} (s1x) or {MODE_AMANET} (AMANet), got {mode}")
    image = None
    if whole_image:
        image = pp.paste_iuv(charts, boxes_xywh_int.tolist(), scores.tolist(),
                             (int(image_hw[0]), int(image_hw[1]))).to(fine.device)
    return charts, image


def iuv_paste_fused(fine: Tensor, gate: Tensor, u: Tensor, v: Tensor, boxes_xywh_int: Tensor,
                    scores: Tensor, mode: int, threshold: float, image_hw: ImageHW,
                    whole_image: bool = True) -> Tuple[List[Tensor], Optional[Tensor]]:
    """:func:`iuv_paste` through the ``amanet::iuv_paste`` op (the library must be loaded)."""
    charts, offsets, image = torch.ops.amanet.iuv_paste(
        fine, gate, u, v, boxes_xywh_int, scores, int(mode), float(threshold),
        int(image_hw[0]), int(image_hw[1]), bool(whole_image))
    return unpack_charts(charts, offsets, boxes_xywh_int), (image if whole_image else None)


def iuv_paste(fine: Tensor, gate: Tensor, u: Tensor, v: Tensor, boxes_xywh_int: Tensor,
              scores: Tensor, mode: int, threshold: float, image_hw: ImageHW,
              whole_image: bool = True) -> Tuple[List[Tensor], Optional[Tensor]]:
    """Per-box IUV charts and the whole-image IUV in one call (no per-box loop when fused).

    Args:
        fine, u, v: ``[N, 25, S, S]`` fine-I logits and U, V of every RoI.
        gate: ``[N, 2, S, S]``: s1x coarse segmentation logits (``mode=0``) or AMANet body-mask
            logits (``mode=1``).
        boxes_xywh_int: int64 ``[N, 4]`` XYWH boxes from :func:`postprocess.xyxy_to_xywh_int`.
        scores: ``[N]`` detection scores (where foregrounds overlap the higher score wins, equal
            scores: the lower index).
        mode: :data:`MODE_S1X` or :data:`MODE_AMANET` (see :func:`mode_for_family`).
        threshold: AMANet gate threshold (``cfg.densepose.mask_gate_threshold``); unused for s1x.
        image_hw: ``(H, W)`` of the whole-image map; charts are clipped to it.
        whole_image: also build the ``[3, H, W]`` map (else ``None`` is returned for it).

    Returns:
        ``(charts, image)``: a list of uint8 ``[3, h_i, w_i]`` charts (views into one packed
        tensor when fused) and uint8 ``[3, H, W]`` or ``None``.
    """
    if use_fused():
        return iuv_paste_fused(fine, gate, u, v, boxes_xywh_int, scores, mode, threshold, image_hw,
                               whole_image)
    return iuv_paste_reference(fine, gate, u, v, boxes_xywh_int, scores, mode, threshold, image_hw,
                               whole_image)
