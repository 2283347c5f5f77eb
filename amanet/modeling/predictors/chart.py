"""Detectron2's ``DensePoseChartPredictor`` and its confidence layers
(``DensePoseChartConfidencePredictorMixin``): transposed convs to 2x, then bilinear x up_scale.

Keys: ``roi_heads.densepose_predictor.{ann_index,index_uv,u,v}_lowres``, and with confidences
``sigma_2_lowres`` (UV confidence), ``kappa_{u,v}_lowres`` (``indep_aniso``),
``{fine,coarse}_segm_confidence_lowres`` (segmentation confidence).

Outputs carry Detectron2's semantics: ``sigma_2`` / ``kappa_*`` are the raw (upsampled) conv
outputs; the segmentation confidences are ``softplus(x) + epsilon`` and ``fine_segm`` /
``coarse_segm`` come out already multiplied by them (their argmax is unchanged).
"""
from __future__ import annotations

from typing import Dict, List

import torch
import torch.nn.functional as F
from torch import nn

from ...config import DensePoseConfig

UV_CONFIDENCE_FIELDS = {"iid_iso": ["sigma_2"], "indep_aniso": ["sigma_2", "kappa_u", "kappa_v"]}
SEGM_CONFIDENCE_FIELDS = ["fine_segm_confidence", "coarse_segm_confidence"]
#: Every confidence output a chart model can have.
CONFIDENCE_FIELDS = UV_CONFIDENCE_FIELDS["indep_aniso"] + SEGM_CONFIDENCE_FIELDS


def confidence_fields(cfg: DensePoseConfig) -> List[str]:
    """The confidence outputs a chart config has, in Detectron2's order."""
    out: List[str] = []
    if cfg.uv_confidence_enabled:
        if cfg.uv_confidence_type not in UV_CONFIDENCE_FIELDS:
            raise ValueError(f"UV_CONFIDENCE.TYPE={cfg.uv_confidence_type!r} is not supported "
                             f"({sorted(UV_CONFIDENCE_FIELDS)})")
        out += UV_CONFIDENCE_FIELDS[cfg.uv_confidence_type]
    if cfg.segm_confidence_enabled:
        out += SEGM_CONFIDENCE_FIELDS
    return out


class ChartPredictor(nn.Module):
    """``[R, C, S, S]`` -> ``{coarse_segm [R, K, 4S, 4S], fine_segm / u / v [R, 25, 4S, 4S]}``
    plus the confidence fields of the config (``[R, 25, ...]`` for sigma/kappa, ``[R, 1, ...]``
    for the segmentation confidences); 4S with the default UP_SCALE 2."""

    __constants__ = ["segm_confidence", "segm_epsilon"]
    __jit_unused_properties__ = ["output_names"]

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
        self.confidence_names = confidence_fields(cfg)
        self.uv_confidence_names = [c for c in self.confidence_names
                                    if c not in SEGM_CONFIDENCE_FIELDS]
        confs = nn.ModuleDict()
        for name in self.uv_confidence_names:
            confs[name] = deconv(n)
        self.segm_confidence = bool(cfg.segm_confidence_enabled)
        self.segm_epsilon = float(cfg.segm_confidence_epsilon)
        for name in SEGM_CONFIDENCE_FIELDS if self.segm_confidence else []:
            confs[name] = deconv(1)
        # Registered under Detectron2's flat names (sigma_2_lowres, ...): see _load / state_dict
        for name, layer in confs.items():
            self.add_module(f"{name}_lowres", layer)
        self.scale_factor = float(cfg.up_scale)

    @property
    def output_names(self) -> List[str]:
        return ["coarse_segm", "fine_segm", "u", "v"] + self.confidence_names

    def _up(self, x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(x, scale_factor=self.scale_factor, mode="bilinear",
                             align_corners=False)

    def forward(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        out = {
            "coarse_segm": self._up(self.ann_index_lowres(x)),
            "fine_segm": self._up(self.index_uv_lowres(x)),
            "u": self._up(self.u_lowres(x)),
            "v": self._up(self.v_lowres(x)),
        }
        for name, layer in self.named_children():
            field = name.replace("_lowres", "")
            if name.startswith("sigma_") or name.startswith("kappa_"):
                out[field] = self._up(layer(x))
            elif name.endswith("segm_confidence_lowres"):
                conf = F.softplus(self._up(layer(x))) + self.segm_epsilon
                out[field] = conf
                seg = "fine_segm" if field.startswith("fine") else "coarse_segm"
                out[seg] = out[seg] * conf  # [R, 1, S, S] broadcasts over the channels
        return out

    def forward_lowres(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        """The transposed-conv outputs before the final upsampling (``[R, C, 56, 56]``)."""
        return {
            "coarse_segm": self.ann_index_lowres(x),
            "fine_segm": self.index_uv_lowres(x),
            "u": self.u_lowres(x),
            "v": self.v_lowres(x),
        }
