"""Adaptive aggregation (the AMA head's gating + sums): reference and fused op.

``G[n, p, c] = gates[n, p, c] * features[n, p, c]``, the group sums
``R[n, k] = sum_{p in group k} G[n, p]`` over consecutive groups of ``group_size`` paths, and
``S = sum_p G[:, p]``. ``group_size`` 1 gives ``R = G``; 2 gives the ``G1+G2, G3+G4`` the AMA
predictor's intermediate supervision reads (training); 0 gives no ``R`` at all (inference).

:func:`adaptive_aggregation` is the entry point for eager code: it asks
:func:`amanet.ops.library.use_fused` at call time and runs ``torch.ops.amanet.adaptive_aggregation``
(csrc, one pass over ``features``, ``G`` never stored) or :func:`adaptive_aggregation_reference`.
TorchScript cannot run that Python check: scripted modules call
``torch.ops.amanet.adaptive_aggregation`` or the reference behind a ``Final[bool]`` attribute set
when they are scripted (see ``AMAHead.use_fused_ops``).
"""
from __future__ import annotations

from typing import Tuple

import torch
from torch import Tensor

from .library import use_fused


def adaptive_aggregation_reference(features: Tensor, gates: Tensor,
                                   group_size: int = 1) -> Tuple[Tensor, Tensor]:
    """Gate every path and channel, then sum (the unfused formulation: ``G`` is materialised).

    Args:
        features: ``[N, P, C, H, W]`` the P path maps per RoI.
        gates: ``[N, P, C]`` one gate per RoI, path and channel.
        group_size: 0, or a divisor of P: the size of the consecutive path groups summed into R.

    Returns:
        ``R`` ``[N, P // group_size, C, H, W]`` (``G`` itself for 1; an empty ``[0]`` tensor for 0)
        and ``S`` ``[N, C, H, W]`` (``G.sum(1)``).
    """
    paths = features.shape[1]
    if group_size < 0 or (group_size > 0 and paths % group_size != 0):
        raise ValueError("adaptive_aggregation: group_size must be 0 (no group sums) or divide the "
                         "number of paths P = {}, got {}".format(paths, group_size))
    # gates follow the features' dtype, as in the fused op (under autocast: a float32 softmax /
    # sigmoid gate meets bf16 / fp16 features)
    gated = features * gates.to(features.dtype)[:, :, :, None, None]
    summed = gated.sum(1)
    if group_size == 0:
        return features.new_empty(0), summed
    if group_size == 1:
        return gated, summed
    return gated.unflatten(1, (paths // group_size, group_size)).sum(2), summed


def adaptive_aggregation(features: Tensor, gates: Tensor, group_size: int = 1) -> Tuple[Tensor, Tensor]:
    """Same contract as :func:`adaptive_aggregation_reference`; fused when :func:`use_fused`."""
    if use_fused():
        return torch.ops.amanet.adaptive_aggregation(features, gates, group_size)
    return adaptive_aggregation_reference(features, gates, group_size)
