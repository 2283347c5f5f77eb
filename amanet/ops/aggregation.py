"""Adaptive aggregation (the AMA head's gating + sum), reference implementation.

``G[n, p, c] = gates[n, p, c] * features[n, p, c]`` and ``S = sum_p G[:, p]``.

:func:`adaptive_aggregation` is the one entry point the model calls; it dispatches to the
plain-PyTorch reference today and will dispatch to the fused csrc op once it exists.
"""
from __future__ import annotations

from typing import Tuple

import torch
from torch import Tensor


def adaptive_aggregation_reference(features: Tensor, gates: Tensor) -> Tuple[Tensor, Tensor]:
    """Gate every path and channel, then sum over the paths.

    Args:
        features: ``[N, P, C, H, W]`` the P path maps per RoI.
        gates: ``[N, P, C]`` one gate per RoI, path and channel.

    Returns:
        ``G`` ``[N, P, C, H, W]`` (the gated paths) and ``S`` ``[N, C, H, W]`` (``G.sum(1)``).
    """
    gated = features * gates[:, :, :, None, None]
    return gated, gated.sum(1)


def adaptive_aggregation(features: Tensor, gates: Tensor) -> Tuple[Tensor, Tensor]:
    """Same contract as :func:`adaptive_aggregation_reference`; the switch point for the fused op."""
    return adaptive_aggregation_reference(features, gates)
