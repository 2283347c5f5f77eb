"""Deterministic random weights that keep activations O(1) through the whole model.

Detectron2's training initialisation assumes an ImageNet backbone; with every layer random the
ResNet's activations explode and the detector saturates (no proposals survive, scores are 0/1).
For smoke runs, benchmarks and exports without a checkpoint we instead draw weights with
variance-preserving scales (the rules of the shared parity fixtures), so a random model yields
plausible detections and non-degenerate DensePose outputs.
"""
from __future__ import annotations

import math

import torch
from torch import nn


def _fan_in(shape) -> int:
    return int(math.prod(shape[1:])) if len(shape) > 1 else int(shape[0])


def _std(name: str, shape) -> float:
    fan = _fan_in(shape)
    he, lecun = math.sqrt(2.0 / fan), math.sqrt(1.0 / fan)
    if "transfer_matrix" in name:
        return 1e-3
    if "stem.conv1" in name:
        return he / 64
    if name.endswith("conv3.weight") and "bottom_up" in name:
        return he * 0.5
    if ".shortcut." in name:
        return lecun
    if "fpn_lateral" in name:
        return lecun * 0.25
    if "objectness_logits" in name:
        return lecun * 3.0
    if "anchor_deltas" in name or "bbox_pred" in name:
        return 1e-3
    if "cls_score" in name:
        return lecun * 0.5
    if "_lowres" in name or "deconv_p" in name:  # ConvTranspose2d (in, out, k, k), stride 2
        eff = shape[0] * shape[2] * shape[3] / 4
        return math.sqrt((2.0 if "deconv_p" in name else 1.0) / eff)
    if "att_levels" in name:
        return lecun
    if "fc1_levels" in name or "box_head.fc" in name:
        return he
    if len(shape) == 2:  # other Linear layers (AMANet's task transformer)
        return 0.02
    if name.endswith(("u_layer.weight", "v_layer.weight")):
        return he * 0.2
    if "fpn_output" in name or "decoder.predictor" in name:
        return lecun
    return he


@torch.no_grad()
def smoke_init_(model: nn.Module, seed: int = 0) -> nn.Module:
    """Re-draw every parameter and FrozenBN buffer of ``model`` in place (deterministic)."""
    g = torch.Generator().manual_seed(seed)
    state = model.state_dict()
    for name in sorted(state):
        t = state[name]
        if not t.is_floating_point():
            continue
        shape = tuple(t.shape)
        if ".norm." in name or (len(shape) == 1 and name.endswith("weight")):  # FrozenBN / GN
            if name.endswith(("weight", "running_var")):
                new = torch.rand(shape, generator=g) * 0.4 + 0.8
            else:
                new = torch.randn(shape, generator=g) * 0.05
        elif name.endswith("bias"):
            new = torch.randn(shape, generator=g) * 0.02
            if name.endswith(("u_layer.bias", "v_layer.bias")):
                new += 0.5  # U, V around 0.5: the uint8 codes are not all clamped
            elif name.endswith("m_layer.bias"):
                new[1] -= 1.0  # body-mask gate passes part of the pixels, not all
            elif name.endswith("ann_index_lowres.bias"):
                new[1] += 2.0  # s1x coarse foreground: a real mix of fg and bg
        else:
            new = torch.randn(shape, generator=g) * _std(name, shape)
        t.copy_(new.to(t.dtype))
    if hasattr(model, "roi_heads"):
        model.roi_heads.fold()
    return model
