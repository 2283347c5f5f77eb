"""RoI heads: box head + box predictor, and the DensePose branch of either family.

Module names reproduce Detectron2's keys under ``roi_heads.``: ``box_head``, ``box_predictor``,
``decoder`` (s1x), ``densepose_head``, ``densepose_predictor``.

DensePose outputs are dicts of ``[D, C, S, S]`` tensors under Detectron2's field names:
``fine_segm`` (25-channel I logits), ``u``, ``v`` (25 channels), plus ``coarse_segm`` (chart
family: 2 channels background/foreground, 15 coarse parts for the legacy head) and the
confidences the config enables (``sigma_2``, ``kappa_u``, ``kappa_v``,
``fine_segm_confidence``, ``coarse_segm_confidence``), or AMANet's ``body_mask`` (2 channels).
Inference runs :class:`~amanet.modeling.densepose_branch.DensePoseBranch`, the module the
exports run too.
"""
from __future__ import annotations

from typing import Dict, List, Tuple

import torch
from torch import nn

from ..config import FAMILY_AMANET, FAMILY_S1X, Config
from ..config.schema import HEAD_DEEPLAB
from .box_head import FastRCNNFCHead, FastRCNNPredictor, select_detections
from .densepose_branch import DensePoseBranch
from .heads.ama import AMAHead
from .heads.decoder import Decoder
from .heads.deeplab import DeepLabHead
from .heads.v1convx import V1ConvXHead
from .poolers import MultiPathPooler, ROIPooler, rois_like
from .predictors.ama import AMAPredictor
from .predictors.chart import ChartPredictor

DensePoseOutputs = Dict[str, torch.Tensor]


class DensePoseROIHeads(nn.Module):
    def __init__(self, cfg: Config, in_channels: int, strides: Dict[str, int]):
        super().__init__()
        self.cfg = cfg
        rh = cfg.roi_heads
        self.in_features = list(rh.in_features)
        scales = [1.0 / strides[f] for f in self.in_features]
        self.box_pooler = ROIPooler(rh.pooler_resolution, scales, rh.pooler_sampling_ratio,
                                    rh.pooler_type)
        self.box_head = FastRCNNFCHead(in_channels * rh.pooler_resolution ** 2, rh.num_fc,
                                       rh.fc_dim)
        self.box_predictor = FastRCNNPredictor(rh.fc_dim, rh.num_classes,
                                               rh.cls_agnostic_bbox_reg)
        dp = cfg.densepose
        self.family = cfg.family
        if cfg.family == FAMILY_S1X:
            if dp.decoder_on:
                self.decoder = Decoder(self.in_features, strides, in_channels,
                                       dp.decoder_conv_dims, dp.decoder_num_classes,
                                       dp.decoder_common_stride, dp.decoder_norm)
                dp_scales = [1.0 / strides[self.in_features[0]]]
                dp_in = dp.decoder_num_classes
            else:
                self.decoder = None
                dp_scales = scales
                dp_in = in_channels
            self.densepose_pooler = ROIPooler(dp.pooler_resolution, dp_scales,
                                              dp.pooler_sampling_ratio, dp.pooler_type)
            head = DeepLabHead if dp.name == HEAD_DEEPLAB else V1ConvXHead
            self.densepose_head = head(dp, dp_in)
            self.densepose_predictor = ChartPredictor(dp, self.densepose_head.out_channels)
        elif cfg.family == FAMILY_AMANET:
            self.decoder = None
            self.densepose_pooler = MultiPathPooler(dp.ama_pooler_resolutions, scales,
                                                    dp.pooler_sampling_ratio, dp.pooler_type)
            self.densepose_head = AMAHead(dp, in_channels)
            # the task transformer reads the box predictor's weights: [K+1 + 4K, fc_dim]
            num_box_params = rh.num_classes + 1 + (4 if rh.cls_agnostic_bbox_reg
                                                   else 4 * rh.num_classes)
            self.densepose_predictor = AMAPredictor(dp, dp.conv_head_dim, rh.fc_dim,
                                                    num_box_params)
        else:
            raise ValueError(f"unknown model family {cfg.family!r}")

    # -- boxes -------------------------------------------------------------------------------
    def box_outputs(self, features: Dict[str, torch.Tensor], proposals: List[torch.Tensor]
                    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """Class logits ``[R, K+1]`` and box deltas ``[R, K*4]`` for all images' proposals."""
        feats = [features[f] for f in self.in_features]
        x = self.box_head(self.box_pooler(feats, proposals))
        return self.box_predictor(x)

    def detect(self, features: Dict[str, torch.Tensor], proposals: List[torch.Tensor],
               image_sizes: List[Tuple[int, int]]) -> List[Dict[str, torch.Tensor]]:
        logits, deltas = self.box_outputs(features, proposals)
        out = []
        start = 0
        for props, size in zip(proposals, image_sizes):
            n = props.shape[0]
            boxes, scores, classes = select_detections(
                logits[start:start + n], deltas[start:start + n], props, size, self.cfg.roi_heads)
            start += n
            out.append({"boxes": boxes, "scores": scores, "classes": classes})
        return out

    # -- DensePose ---------------------------------------------------------------------------
    def bbox_params(self) -> torch.Tensor:
        """AMANet's task parameters: ``cat([cls_score.weight, bbox_pred.weight])`` ``[6, 1024]``."""
        return torch.cat([self.box_predictor.cls_score.weight,
                          self.box_predictor.bbox_pred.weight], dim=0)

    def fold(self) -> None:
        """Fold AMANet's generated fine-I weights into one conv (no-op for s1x)."""
        if self.family == FAMILY_AMANET:
            with torch.no_grad():
                self.densepose_predictor.fold(self.bbox_params())

    def densepose_features(self, features: Dict[str, torch.Tensor], boxes: List[torch.Tensor]):
        """Pooled RoI features for the DensePose head (a tensor for s1x, 4 paths for AMANet)."""
        feats = [features[f] for f in self.in_features]
        if self.decoder is not None:
            feats = [self.decoder(feats)]
        return self.densepose_pooler(feats, boxes)

    @property
    def branch(self) -> DensePoseBranch:
        """The inference branch over this module's pooler, head and predictor. Built on first
        use and kept out of the module tree, so the state dict has each weight once."""
        branch = self.__dict__.get("_branch")
        if branch is None:
            branch = DensePoseBranch(self)
            self.__dict__["_branch"] = branch
        return branch

    def densepose(self, features: Dict[str, torch.Tensor], boxes: List[torch.Tensor],
                  unfolded: bool = False) -> DensePoseOutputs:
        """DensePose outputs for ``boxes`` (per image ``[D_i, 4]``, input coordinates), float32
        whatever the compute precision (post-processing is float32). ``unfolded``: AMANet's
        fine-I through the task transformer instead of the folded conv (a check, not a mode)."""
        if unfolded or (self.family == FAMILY_AMANET and not self.densepose_predictor.folded):
            pooled = self.densepose_features(features, boxes)
            return {k: v.float() for k, v in self.densepose_from_pooled(pooled, unfolded).items()}
        feats = [features[f] for f in self.in_features]
        rois = rois_like(boxes, feats[0])
        outs = self.branch(feats, rois)
        return dict(zip(self.branch.output_names, outs))

    def densepose_from_pooled(self, pooled, unfolded: bool = False) -> DensePoseOutputs:
        if self.family == FAMILY_S1X:
            out = self.densepose_predictor(self.densepose_head(pooled))
            return {k: out[k] for k in self.branch.output_names}
        head_out, _ = self.densepose_head(list(pooled), return_stages=False)  # stages: training only
        folded = self.densepose_predictor.folded and not unfolded
        bbox_params = None if folded else self.bbox_params()
        out = self.densepose_predictor(head_out, bbox_params=bbox_params, use_folded=not unfolded)
        return {"body_mask": out["m"], "fine_segm": out["index_uv"], "u": out["u"], "v": out["v"]}
