"""Detectron2's ``DensePoseV1ConvXHead``: N x [conv + ReLU] on pooled RoI features.

Keys: ``roi_heads.densepose_head.body_conv_fcn{1..N}``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ...config import DensePoseConfig


class V1ConvXHead(nn.Module):
    """``[R, C_in, 28, 28] -> [R, conv_head_dim, 28, 28]``."""

    def __init__(self, cfg: DensePoseConfig, in_channels: int):
        super().__init__()
        k = cfg.conv_head_kernel
        self.num_convs = cfg.num_stacked_convs
        ch = in_channels
        for i in range(self.num_convs):
            conv = nn.Conv2d(ch, cfg.conv_head_dim, k, padding=k // 2)
            nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
            nn.init.constant_(conv.bias, 0)
            self.add_module(f"body_conv_fcn{i + 1}", conv)
            ch = cfg.conv_head_dim
        self.out_channels = ch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for conv in self.children():  # body_conv_fcn1..N in order (TorchScript unrolls)
            x = F.relu(conv(x))
        return x
