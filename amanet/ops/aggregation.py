"""Adaptive aggregation (the AMA head's gating + sum): reference and fused op.

``G[n, p, c] = gates[n, p, c] * features[n, p, c]`` and ``S = sum_p G[:, p]``.

:func:`adaptive_aggregation` is the entry point for eager code: it asks
:func:`amanet.ops.library.use_fused` at call time and runs ``torch.ops.amanet.adaptive_aggregation``
(csrc, one pass over ``features``; with ``need_gated=False`` it never writes ``G``) or
:func:`adaptive_aggregation_reference`. TorchScript cannot run that Python check: scripted
modules call ``torch.ops.amanet.adaptive_aggregation`` or the reference behind a
``Final[bool]`` attribute set when they are scripted (see ``AMAHead.use_fused_ops``).
"""
from __future__ import annotations

from typing import Tuple

import torch
from torch import Tensor

from .library import use_fused


def adaptive_aggregation_reference(features: Tensor, gates: Tensor,
                                   need_gated: bool = True) -> Tuple[Tensor, Tensor]:
    """Gate every path and channel, then sum over the paths (the unfused formulation).

    Args:
        features: ``[N, P, C, H, W]`` the P path maps per RoI.
        gates: ``[N, P, C]`` one gate per RoI, path and channel.
        need_gated: when False, ``G`` is returned as an empty tensor (``features.new_empty(0)``).

    Returns:
        ``G`` ``[N, P, C, H, W]`` (the gated paths) and ``S`` ``[N, C, H, W]`` (``G.sum(1)``).
    """
    gated = features * gates[:, :, :, None, None]
    summed = gated.sum(1)
    if not need_gated:
        return features.new_empty(0), summed
    return gated, summed


def adaptive_aggregation(features: Tensor, gates: Tensor,
                         need_gated: bool = True) -> Tuple[Tensor, Tensor]:
    """Same contract as :func:`adaptive_aggregation_reference`; fused when :func:`use_fused`."""
    if use_fused():
        return torch.ops.amanet.adaptive_aggregation(features, gates, need_gated)
    return adaptive_aggregation_reference(features, gates, need_gated)
