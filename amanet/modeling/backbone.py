"""ResNet (FrozenBN, stride in the 1x1 conv) and FPN with a max-pooled p6.

Module names reproduce Detectron2's state_dict keys: ``backbone.bottom_up.stem.conv1``,
``backbone.bottom_up.res{2..5}.{i}.conv{1,2,3}`` / ``.shortcut``, ``backbone.fpn_lateral{2..5}``,
``backbone.fpn_output{2..5}``.
"""
from __future__ import annotations

from typing import Dict, List

import torch
import torch.nn.functional as F
from torch import nn

from ..config import BackboneConfig
from .layers import Conv2dNorm, FrozenBatchNorm2d, c2_msra_fill, c2_xavier_fill

_BLOCKS_PER_STAGE = {18: [2, 2, 2, 2], 34: [3, 4, 6, 3], 50: [3, 4, 6, 3], 101: [3, 4, 23, 3]}


def _norm(norm: str, channels: int) -> nn.Module:
    if norm == "FrozenBN":
        return FrozenBatchNorm2d(channels)
    if norm == "BN":
        return nn.BatchNorm2d(channels)
    raise ValueError(f"MODEL.RESNETS.NORM={norm!r} is not supported (FrozenBN, BN)")


class BasicStem(nn.Module):
    """conv7x7/2 + norm + ReLU, then max-pool 3x3/2: ``[B,3,H,W] -> [B,64,H/4,W/4]``."""

    def __init__(self, in_channels: int, out_channels: int, norm: str):
        super().__init__()
        self.conv1 = Conv2dNorm(in_channels, out_channels, 7, stride=2, padding=3, bias=False,
                                norm=_norm(norm, out_channels), relu=True)
        c2_msra_fill(self.conv1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.max_pool2d(self.conv1(x), kernel_size=3, stride=2, padding=1)


class BottleneckBlock(nn.Module):
    """1x1 -> 3x3 -> 1x1 bottleneck with a projection shortcut when shapes change."""

    def __init__(self, in_channels: int, out_channels: int, bottleneck_channels: int,
                 stride: int, norm: str, stride_in_1x1: bool, dilation: int, groups: int):
        super().__init__()
        self.shortcut = None
        if in_channels != out_channels:
            self.shortcut = Conv2dNorm(in_channels, out_channels, 1, stride=stride, bias=False,
                                       norm=_norm(norm, out_channels))
        s1, s3 = (stride, 1) if stride_in_1x1 else (1, stride)
        self.conv1 = Conv2dNorm(in_channels, bottleneck_channels, 1, stride=s1, bias=False,
                                norm=_norm(norm, bottleneck_channels), relu=True)
        self.conv2 = Conv2dNorm(bottleneck_channels, bottleneck_channels, 3, stride=s3,
                                padding=dilation, dilation=dilation, groups=groups, bias=False,
                                norm=_norm(norm, bottleneck_channels), relu=True)
        self.conv3 = Conv2dNorm(bottleneck_channels, out_channels, 1, bias=False,
                                norm=_norm(norm, out_channels))
        for m in (self.conv1, self.conv2, self.conv3, self.shortcut):
            if m is not None:
                c2_msra_fill(m)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv3(self.conv2(self.conv1(x)))
        identity = x if self.shortcut is None else self.shortcut(x)
        return F.relu_(out + identity)


class BasicBlock(nn.Module):
    """3x3 -> 3x3 residual block (ResNet-18/34)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, norm: str):
        super().__init__()
        self.shortcut = None
        if in_channels != out_channels:
            self.shortcut = Conv2dNorm(in_channels, out_channels, 1, stride=stride, bias=False,
                                       norm=_norm(norm, out_channels))
        self.conv1 = Conv2dNorm(in_channels, out_channels, 3, stride=stride, padding=1,
                                bias=False, norm=_norm(norm, out_channels), relu=True)
        self.conv2 = Conv2dNorm(out_channels, out_channels, 3, padding=1, bias=False,
                                norm=_norm(norm, out_channels))
        for m in (self.conv1, self.conv2, self.shortcut):
            if m is not None:
                c2_msra_fill(m)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv2(self.conv1(x))
        identity = x if self.shortcut is None else self.shortcut(x)
        return F.relu_(out + identity)


class ResNet(nn.Module):
    """Returns ``{"res2": [B,C2,H/4,W/4], ..., "res5": [B,C5,H/32,W/32]}``."""

    def __init__(self, cfg: BackboneConfig, in_channels: int = 3):
        super().__init__()
        if cfg.depth not in _BLOCKS_PER_STAGE:
            raise ValueError(f"MODEL.RESNETS.DEPTH={cfg.depth} is not supported "
                             f"({sorted(_BLOCKS_PER_STAGE)})")
        self.stem = BasicStem(in_channels, cfg.stem_out_channels, cfg.norm)
        self.stage_names: List[str] = []
        self.out_channels: Dict[str, int] = {}
        self.strides: Dict[str, int] = {}
        bottleneck = cfg.num_groups * cfg.width_per_group
        out_ch = cfg.res2_out_channels
        in_ch = cfg.stem_out_channels
        for idx, num_blocks in enumerate(_BLOCKS_PER_STAGE[cfg.depth]):
            name = f"res{idx + 2}"
            dilation = cfg.res5_dilation if idx == 3 else 1
            first_stride = 1 if idx == 0 or (idx == 3 and dilation == 2) else 2
            blocks = []
            for b in range(num_blocks):
                stride = first_stride if b == 0 else 1
                if cfg.depth >= 50:
                    blocks.append(BottleneckBlock(in_ch, out_ch, bottleneck, stride, cfg.norm,
                                                  cfg.stride_in_1x1, dilation, cfg.num_groups))
                else:
                    blocks.append(BasicBlock(in_ch, out_ch, stride, cfg.norm))
                in_ch = out_ch
            self.add_module(name, nn.Sequential(*blocks))
            self.stage_names.append(name)
            self.out_channels[name] = out_ch
            self.strides[name] = 4 * 2 ** idx
            out_ch *= 2
            bottleneck *= 2
        self._freeze(cfg.freeze_at)

    def _freeze(self, freeze_at: int) -> None:
        """Stop gradients through the stem (1) and the first stages (2..5), as Detectron2 does."""
        if freeze_at >= 1:
            for p in self.stem.parameters():
                p.requires_grad_(False)
        for i, name in enumerate(self.stage_names):
            if freeze_at >= i + 2:
                for p in getattr(self, name).parameters():
                    p.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        x = self.stem(x)
        outs: Dict[str, torch.Tensor] = {}
        x = self.res2(x)
        outs["res2"] = x
        x = self.res3(x)
        outs["res3"] = x
        x = self.res4(x)
        outs["res4"] = x
        x = self.res5(x)
        outs["res5"] = x
        return outs


class FPN(nn.Module):
    """Feature pyramid over res2..res5 plus p6 = max_pool(p5, 1, stride 2).

    Input ``[B,3,H,W]`` (H, W multiples of 32); output ``{"p2": [B,256,H/4,W/4], ...,
    "p6": [B,256,H/64,W/64]}``.
    """

    def __init__(self, cfg: BackboneConfig):
        super().__init__()
        if cfg.fpn_norm:
            raise ValueError(f"MODEL.FPN.NORM={cfg.fpn_norm!r} is not supported (only '')")
        if cfg.fpn_fuse_type not in ("sum", "avg"):
            raise ValueError(f"MODEL.FPN.FUSE_TYPE={cfg.fpn_fuse_type!r} is not supported")
        self.bottom_up = ResNet(cfg)
        self.fuse_avg = cfg.fpn_fuse_type == "avg"
        oc = cfg.fpn_out_channels
        for lvl in (2, 3, 4, 5):
            lateral = nn.Conv2d(self.bottom_up.out_channels[f"res{lvl}"], oc, 1)
            output = nn.Conv2d(oc, oc, 3, padding=1)
            c2_xavier_fill(lateral)
            c2_xavier_fill(output)
            self.add_module(f"fpn_lateral{lvl}", lateral)
            self.add_module(f"fpn_output{lvl}", output)
        self.out_channels = oc
        self.strides = {"p2": 4, "p3": 8, "p4": 16, "p5": 32, "p6": 64}

    def forward(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        feats = self.bottom_up(x)
        prev = self.fpn_lateral5(feats["res5"])
        p5 = self.fpn_output5(prev)
        prev = self._merge(self.fpn_lateral4(feats["res4"]), prev)
        p4 = self.fpn_output4(prev)
        prev = self._merge(self.fpn_lateral3(feats["res3"]), prev)
        p3 = self.fpn_output3(prev)
        prev = self._merge(self.fpn_lateral2(feats["res2"]), prev)
        p2 = self.fpn_output2(prev)
        p6 = F.max_pool2d(p5, kernel_size=1, stride=2, padding=0)
        return {"p2": p2, "p3": p3, "p4": p4, "p5": p5, "p6": p6}

    def _merge(self, lateral: torch.Tensor, prev: torch.Tensor) -> torch.Tensor:
        top_down = F.interpolate(prev, scale_factor=2.0, mode="nearest")
        out = lateral + top_down
        if self.fuse_avg:
            out = out / 2
        return out
