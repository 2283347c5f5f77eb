"""The DensePose branch at inference: FPN features + RoIs -> every raw per-RoI output.

One scriptable module serves eager inference (:meth:`DensePoseROIHeads.densepose`), the
TorchScript export (and so the C++ Predictor) and the ONNX export (traced; its decoder guard
scripted inside the trace, an ONNX ``If``). A family is described by its parts:

- **pooling**: ``decoder`` (Detectron2 ``DECODER_ON``: the decoder's stride-4 map, one level;
  :class:`GuardedDecoder` skips it when there is nothing to pool),
  ``levels`` (FPN level assignment, e.g. the legacy chart head) or ``paths`` (AMANet: every RoI
  from every level);
- **head** and **predictor** modules (``roi_heads.densepose_head`` / ``densepose_predictor``);
- **output names**: :attr:`output_names`, Detectron2's field names, first the foreground gate
  (``coarse_segm`` / AMANet's ``body_mask``), then ``fine_segm``, ``u``, ``v`` and any
  confidences; ``predictor_keys`` are the same outputs' keys in the predictor's dict.
"""
from __future__ import annotations

from typing import List

import torch
from torch import Tensor, nn

from ..config import FAMILY_AMANET
from .families import densepose_output_channels

#: AMANet predictor keys -> the field names outputs carry everywhere else.
_AMA_FIELDS = {"m": "body_mask", "index_uv": "fine_segm", "u": "u", "v": "v"}


class GuardedDecoder(nn.Module):
    """The decoder, skipped (zeros of its output shape) when there are no RoIs to pool from
    it: scripted inside a traced ONNX graph this is an ``If`` with one rank-4 output, which
    every runtime (OpenVINO included) accepts."""

    __constants__ = ["channels"]

    def __init__(self, decoder: nn.Module, channels: int):
        super().__init__()
        self.decoder = decoder
        self.channels = int(channels)

    def forward(self, features: List[Tensor], rois: Tensor) -> Tensor:
        if torch.jit.is_scripting() or not torch.jit.is_tracing():
            if rois.shape[0] == 0:
                p2 = features[0]
                return p2.new_zeros((p2.shape[0], self.channels, p2.shape[2], p2.shape[3]))
        return self.decoder(features[:4])


class DensePoseBranch(nn.Module):
    """``features`` (p2..p5 ``[B, C, H_l, W_l]``) and ``rois [R, 5]`` (batch index, XYXY in
    input pixels) -> float32 ``[R, C_k, S, S]`` per name of :attr:`output_names`, whatever the
    compute dtype. Shares the modules of the ``roi_heads`` it is built from."""

    # bool constants: TorchScript compiles only the taken side of ``if`` on them
    __constants__ = ["pool_paths", "has_decoder", "heatmap"]

    def __init__(self, roi_heads: nn.Module):
        super().__init__()
        cfg = roi_heads.cfg
        self.pool_paths = cfg.family == FAMILY_AMANET
        self.has_decoder = roi_heads.decoder is not None
        channels = densepose_output_channels(cfg)
        self.output_names = list(channels)
        if self.pool_paths:
            self.predictor_keys = list(_AMA_FIELDS)
        else:
            self.predictor_keys = list(roi_heads.densepose_predictor.output_names)
        assert [_AMA_FIELDS.get(k, k) if self.pool_paths else k
                for k in self.predictor_keys] == self.output_names
        self.decoder = GuardedDecoder(roi_heads.decoder, cfg.densepose.decoder_num_classes) \
            if self.has_decoder else nn.Identity()
        self.pooler = roi_heads.densepose_pooler
        self.densepose_head = roi_heads.densepose_head
        self.densepose_predictor = roi_heads.densepose_predictor
        self.heatmap = int(cfg.densepose.heatmap_size)
        self.channels = [int(c) for c in channels.values()]

    def empty(self, rois: Tensor) -> List[Tensor]:
        """Zero-RoI outputs ``[0, C_k, S, S]``: distinct tensors (in ONNX an ``If`` branch must
        not return one value twice)."""
        out: List[Tensor] = []
        for i, c in enumerate(self.channels):
            out.append(rois.new_full((0, c, self.heatmap, self.heatmap), float(i),
                                     dtype=torch.float32))
        return out

    def forward(self, features: List[Tensor], rois: Tensor) -> List[Tensor]:
        if torch.jit.is_scripting() or not torch.jit.is_tracing():
            if rois.shape[0] == 0:
                # no DensePose work without RoIs (the decoder would run over the whole image)
                return self.empty(rois)
        if self.pool_paths:
            paths = self.pooler.forward_rois(features[:4], rois)
            head_out, _ = self.densepose_head(paths, False)
            out = self.densepose_predictor(head_out)
        else:
            if self.has_decoder:
                pooled = self.pooler.forward_rois([self.decoder(features, rois)], rois)
            else:
                pooled = self.pooler.forward_rois(features[:4], rois)
            out = self.densepose_predictor(self.densepose_head(pooled))
        result: List[Tensor] = []
        for key in self.predictor_keys:
            result.append(out[key].float())
        return result
