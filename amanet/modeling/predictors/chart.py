"""Detectron2's ``DensePoseChartPredictor``: transposed convs to 2x, then bilinear x up_scale.

Keys: ``roi_heads.densepose_predictor.{ann_index,index_uv,u,v}_lowres``.
"""
from __future__ import annotations

from typing import Dict

import torch
import torch.nn.functional as F
from torch import nn

from ...config import DensePoseConfig


class ChartPredictor(nn.Module):
    """``[R, C, 28, 28]`` -> coarse ``[R, 2, 112, 112]``, fine/u/v ``[R, 25, 112, 112]``."""

    def __init__(self, cfg: DensePoseConfig, in_channels: int):
        super().__init__()
        k = cfg.deconv_kernel
        pad = int(k / 2 - 1)
        n = cfg.num_patches + 1

        def deconv(out_ch: int) -> nn.ConvTranspose2d:
            layer = nn.ConvTranspose2d(in_channels, out_ch, k, stride=2, padding=pad)
            nn.init.kaiming_normal_(layer.weight, mode="fan_out", nonlinearity="relu")
            nn.init.constant_(layer.bias, 0)
            return layer

        self.ann_index_lowres = deconv(cfg.num_coarse_segm_channels)
        self.index_uv_lowres = deconv(n)
        self.u_lowres = deconv(n)
        self.v_lowres = deconv(n)
        self.scale_factor = float(cfg.up_scale)

    def _up(self, x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(x, scale_factor=self.scale_factor, mode="bilinear",
                             align_corners=False)

    def forward(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        return {
            "coarse_segm": self._up(self.ann_index_lowres(x)),
            "fine_segm": self._up(self.index_uv_lowres(x)),
            "u": self._up(self.u_lowres(x)),
            "v": self._up(self.v_lowres(x)),
        }

    def forward_lowres(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        """The transposed-conv outputs before the final upsampling (``[R, C, 56, 56]``)."""
        return {
            "coarse_segm": self.ann_index_lowres(x),
            "fine_segm": self.index_uv_lowres(x),
            "u": self.u_lowres(x),
            "v": self.v_lowres(x),
        }
