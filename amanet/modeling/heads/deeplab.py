"""Detectron2's ``DensePoseDeepLabHead``: ASPP, an optional non-local block, then N x
[conv3x3 + GroupNorm(32) + ReLU].

Keys (``roi_heads.densepose_head.``): ``ASPP.convs.{0..3}.{0,1}`` (conv, GroupNorm),
``ASPP.convs.4.{1,2}`` (image pooling: conv, GroupNorm), ``ASPP.project.0``,
``NLBlock.{g,theta,phi,W}`` (``NONLOCAL_ON``), ``body_conv_fcn{1..N}`` (+ ``.norm``).
"""
from __future__ import annotations

from typing import List

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...config import DensePoseConfig
from ..layers import Conv2dNorm, c2_msra_fill

#: Dilation rates of the three atrous branches (Detectron2's, including the unusual 56).
ASPP_RATES = (6, 12, 56)
GN_GROUPS = 32


class GroupNorm(nn.GroupNorm):
    """``nn.GroupNorm`` whose traced (ONNX) form has no ``-1`` in its reshapes: the exporter's
    ``Reshape(x, [N, G, -1])`` cannot infer ``-1`` with zero RoIs (ONNX Runtime refuses it).
    Eager and scripted it is ``F.group_norm`` itself."""

    def forward(self, x: Tensor) -> Tensor:
        if torch.jit.is_scripting() or not torch.jit.is_tracing():
            return F.group_norm(x, self.num_groups, self.weight, self.bias, self.eps)
        n, c, h, w = x.shape
        y = x.reshape(n, self.num_groups, c // self.num_groups, h, w)
        mean = y.mean(dim=(2, 3, 4), keepdim=True)
        var = (y - mean).pow(2).mean(dim=(2, 3, 4), keepdim=True)
        y = ((y - mean) * torch.rsqrt(var + self.eps)).reshape(n, c, h, w)
        return y * self.weight[None, :, None, None] + self.bias[None, :, None, None]


def _conv_gn_relu(cin: int, cout: int, kernel: int, dilation: int = 1) -> nn.Sequential:
    pad = dilation if kernel == 3 else 0
    return nn.Sequential(nn.Conv2d(cin, cout, kernel, padding=pad, dilation=dilation, bias=False),
                         GroupNorm(GN_GROUPS, cout), nn.ReLU())


class ASPPPooling(nn.Sequential):
    """Image-level branch: global mean -> 1x1 conv -> GN -> ReLU, broadcast back to ``[H, W]``
    (Detectron2 resizes the 1x1 map bilinearly, which is the same constant). A Sequential so
    that the keys are Detectron2's (``convs.4.1``, ``convs.4.2``)."""

    def __init__(self, cin: int, cout: int):
        super().__init__(nn.AdaptiveAvgPool2d(1), nn.Conv2d(cin, cout, 1, bias=False),
                         GroupNorm(GN_GROUPS, cout), nn.ReLU())

    def forward(self, x: Tensor) -> Tensor:
        y = x
        for m in self:
            y = m(y)
        return y.expand(-1, -1, x.shape[2], x.shape[3])


class ASPP(nn.Module):
    """``[R, C, S, S]`` -> ``[R, C_out, S, S]``: 1x1, three dilated 3x3 and the image-pooling
    branch (each GN + ReLU), concatenated, projected by a 1x1 conv + ReLU (no norm)."""

    def __init__(self, cin: int, cout: int, rates=ASPP_RATES):
        super().__init__()
        self.convs = nn.ModuleList([_conv_gn_relu(cin, cout, 1)] +
                                   [_conv_gn_relu(cin, cout, 3, r) for r in rates] +
                                   [ASPPPooling(cin, cout)])
        self.project = nn.Sequential(nn.Conv2d(len(self.convs) * cout, cout, 1, bias=False),
                                     nn.ReLU())

    def forward(self, x: Tensor) -> Tensor:
        outs: List[Tensor] = []
        for branch in self.convs:
            outs.append(branch(x))
        return self.project(torch.cat(outs, dim=1))


class NonLocalBlock2D(nn.Module):
    """Embedded-Gaussian non-local block (Detectron2's ``NONLocalBlock2D``, sub-sampled, with
    a GroupNorm after ``W``): ``z = W(softmax(theta(x)^T phi(x)) g(x)) + x``."""

    def __init__(self, channels: int):
        super().__init__()
        inter = max(channels // 2, 1)
        self.inter_channels = inter
        self.g = nn.Sequential(nn.Conv2d(channels, inter, 1), nn.MaxPool2d(2))
        self.theta = nn.Conv2d(channels, inter, 1)
        self.phi = nn.Sequential(nn.Conv2d(channels, inter, 1), nn.MaxPool2d(2))
        self.W = nn.Sequential(nn.Conv2d(inter, channels, 1), GroupNorm(GN_GROUPS, channels))
        nn.init.zeros_(self.W[1].weight)
        nn.init.zeros_(self.W[1].bias)

    def forward(self, x: Tensor) -> Tensor:
        n, _, h, w = x.shape
        g = self.g(x).flatten(2).transpose(1, 2)              # [N, h'w', C']
        theta = self.theta(x).flatten(2).transpose(1, 2)      # [N, hw, C']
        phi = self.phi(x).flatten(2)                          # [N, C', h'w']
        attn = F.softmax(torch.matmul(theta, phi), dim=-1)    # [N, hw, h'w']
        y = torch.matmul(attn, g).transpose(1, 2).reshape(n, self.inter_channels, h, w)
        return self.W(y) + x


class DeepLabHead(nn.Module):
    """``[R, C_in, S, S]`` -> ``[R, conv_head_dim, S, S]``; ASPP keeps ``C_in`` channels."""

    __constants__ = ["use_nonlocal"]

    def __init__(self, cfg: DensePoseConfig, in_channels: int):
        super().__init__()
        if cfg.deeplab_norm not in ("GN", ""):
            raise ValueError(f"DEEPLAB.NORM={cfg.deeplab_norm!r} is not supported ('GN', '')")
        self.ASPP = ASPP(in_channels, in_channels)
        self.use_nonlocal = bool(cfg.deeplab_nonlocal_on)
        self.NLBlock = NonLocalBlock2D(in_channels) if self.use_nonlocal else nn.Identity()
        k = cfg.conv_head_kernel
        gn = cfg.deeplab_norm == "GN"
        ch = in_channels
        for i in range(cfg.num_stacked_convs):
            norm = GroupNorm(GN_GROUPS, cfg.conv_head_dim) if gn else None
            conv = Conv2dNorm(ch, cfg.conv_head_dim, k, padding=k // 2, bias=not gn, norm=norm,
                              relu=True)
            c2_msra_fill(conv)
            self.add_module(f"body_conv_fcn{i + 1}", conv)
            ch = cfg.conv_head_dim
        self.out_channels = ch

    def forward(self, x: Tensor) -> Tensor:
        x = self.ASPP(x)
        if self.use_nonlocal:
            x = self.NLBlock(x)
        for name, module in self.named_children():  # body_conv_fcn1..N in order
            if name.startswith("body_conv_fcn"):
                x = module(x)
        return x
