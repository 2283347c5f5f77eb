"""What a model family is, described once: its DensePose outputs (names, channels, the
foreground gate first) and how a chart is read from them (the gate semantics).

Construction (pooler, head, predictor) lives in :class:`~amanet.modeling.roi_heads
.DensePoseROIHeads`; inference runs :class:`~amanet.modeling.densepose_branch.DensePoseBranch`
(eager and exported alike); the runtime, the exports' metadata and the IUV paste op read the
gate rule from here.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict

from ..config import FAMILY_AMANET, FAMILY_S1X, Config
from .predictors.chart import SEGM_CONFIDENCE_FIELDS, confidence_fields

#: Gate rules (the ``mode`` of ``amanet::iuv_paste`` and the exports' ``gate_mode``).
GATE_COARSE_ARGMAX = 0   # chart family: foreground = argmax(coarse_segm) > 0 (Detectron2)
GATE_MASK_SOFTMAX = 1    # AMANet: foreground = softmax(body_mask)[1] > threshold


@dataclass(frozen=True)
class Family:
    name: str
    gate_output: str       # the first DensePose output, read by the gate rule
    gate_mode: int


FAMILIES: Dict[str, Family] = {
    FAMILY_S1X: Family(FAMILY_S1X, "coarse_segm", GATE_COARSE_ARGMAX),
    FAMILY_AMANET: Family(FAMILY_AMANET, "body_mask", GATE_MASK_SOFTMAX),
}


def family_of(cfg_or_name) -> Family:
    name = cfg_or_name if isinstance(cfg_or_name, str) else cfg_or_name.family
    try:
        return FAMILIES[name]
    except KeyError:
        raise ValueError(f"unknown model family {name!r}; known: {sorted(FAMILIES)}") from None


def densepose_output_channels(cfg: Config) -> Dict[str, int]:
    """Every inference output of the family's DensePose branch and its channel count, in the
    branch's order (the gate first, then fine_segm, u, v and the chart confidences)."""
    dp = cfg.densepose
    n = dp.num_patches + 1
    fam = family_of(cfg)
    gate = 2 if fam.gate_mode == GATE_MASK_SOFTMAX else dp.num_coarse_segm_channels
    out = {fam.gate_output: gate, "fine_segm": n, "u": n, "v": n}
    if fam.name == FAMILY_S1X:
        for name in confidence_fields(dp):
            out[name] = 1 if name in SEGM_CONFIDENCE_FIELDS else n
    return out
