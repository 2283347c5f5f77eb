"""Semantic-FPN style decoder of the s1x family (``ROI_DENSEPOSE_HEAD.DECODER_ON``).

Fuses p2..p5 into one stride-4 map: per level, ``log2(stride/4)`` times (at least once)
[conv3x3 + ReLU, then x2 bilinear upsampling while above stride 4]; the levels are summed and
a 1x1 conv ``predictor`` gives the output. Keys: ``roi_heads.decoder.p{2..5}.{0,2,4}``,
``roi_heads.decoder.predictor``.
"""
from __future__ import annotations

import math
from typing import Dict, List

import torch
from torch import nn

from ..layers import Conv2dNorm, c2_msra_fill


class Decoder(nn.Module):
    """``[p2..p5]`` (256 ch, strides 4..32) -> ``[B, num_classes, H/4, W/4]``."""

    def __init__(self, in_features: List[str], strides: Dict[str, int], in_channels: int,
                 conv_dims: int, num_classes: int, common_stride: int, norm: str = ""):
        super().__init__()
        if norm:
            raise ValueError(f"DECODER_NORM={norm!r} is not supported (only '')")
        self.in_features = list(in_features)
        for name in self.in_features:
            stride = strides[name]
            length = max(1, int(math.log2(stride) - math.log2(common_stride)))
            ops: List[nn.Module] = []
            for k in range(length):
                conv = Conv2dNorm(in_channels if k == 0 else conv_dims, conv_dims, 3, padding=1,
                                  relu=True)
                c2_msra_fill(conv)
                ops.append(conv)
                if stride != common_stride:
                    ops.append(nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False))
            seq = nn.Sequential(*ops)
            self.add_module(name, seq)  # keys p2.*, p3.*, ... as in Detectron2
        self.predictor = nn.Conv2d(conv_dims, num_classes, 1)
        c2_msra_fill(self.predictor)

    def forward(self, features: List[torch.Tensor]) -> torch.Tensor:
        # Children are the per-level heads in order, then the predictor (TorchScript unrolls).
        x = features[0]
        i = 0
        for name, head in self.named_children():
            if name != "predictor":
                y = head(features[i])
                x = y if i == 0 else x + y
                i += 1
        return self.predictor(x)
