"""The AMANet DensePose predictor (``TaskTransformerAMAPredictorV2`` semantics, DESIGN.md §3).

``e = relu(dp_emb_layer(head_out))``; 3x3 convs on ``e`` give S (coarse parts), I, U, V, M (body
mask) and K (keypoints). The fine I averages ``i_layer`` with a conv whose weights ``W_gen`` a small
"task transformer" generates from parameters only (box predictor, ``ann_index_layer`` and
``k_layer`` weights). ``W_gen`` is constant at inference, so :meth:`AMAPredictor.fold` merges the
two I convs into one.

Parameter names follow the AMANet checkpoint (``roi_heads.densepose_predictor.*``) one to one.
"""
from __future__ import annotations

import logging
from typing import Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from amanet.config.schema import DensePoseConfig

logger = logging.getLogger(__name__)

_LRELU_SLOPE = 0.02
_INTER_STAGES = 2


def _conv3x3(cin: int, cout: int) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, padding=1)


class ParameterAttention(nn.Module):
    """One-head attention block over rows of flattened conv weights.

    ``K, V, Q = lrelu(linear_{k,v,q}(x_k, x_v, x_q))``; ``A = softmax(Q K^T / sqrt(D))`` over keys;
    ``out = lrelu(linear_final(A V)) + x_v``. The residual is the raw value *input* ``x_v``, so
    the number of queries must equal the number of keys. Inputs and output are ``[B, L, D]``.
    """

    def __init__(self, dim: int):
        super().__init__()
        self.linear_k = nn.Linear(dim, dim)
        self.linear_v = nn.Linear(dim, dim)
        self.linear_q = nn.Linear(dim, dim)
        self.linear_final = nn.Linear(dim, dim)
        self.scale = float(dim) ** -0.5
        self.slope = _LRELU_SLOPE

    def forward(self, x_k: Tensor, x_v: Tensor, x_q: Tensor) -> Tensor:
        k = F.leaky_relu(self.linear_k(x_k), self.slope)
        v = F.leaky_relu(self.linear_v(x_v), self.slope)
        q = F.leaky_relu(self.linear_q(x_q), self.slope)
        attn = torch.softmax(torch.bmm(q, k.transpose(1, 2)) * self.scale, dim=-1)
        return F.leaky_relu(self.linear_final(torch.bmm(attn, v)), self.slope) + x_v


class AMAPredictor(nn.Module):
    """Task-transformer AMA predictor; all outputs are ``[N, C, S, S]`` at the head's resolution.

    Args:
        cfg: ``num_patches`` (I/U/V have ``num_patches + 1`` channels), ``ama_num_ann_index``,
            ``num_keypoints``, ``conv_head_dim`` (channels of the head's stage features F_j).
        in_channels: channels of ``head_out``.
        box_fc_dim: columns of ``bbox_params`` (the box head's FC width).
        num_box_params: rows of ``bbox_params`` (``cat([cls_score.weight, bbox_pred.weight])``:
            2 + 4 for one class with class-specific regression).
    """

    def __init__(self, cfg: DensePoseConfig, in_channels: int = 256, box_fc_dim: int = 1024,
                 num_box_params: int = 6):
        super().__init__()
        dim = in_channels
        n_parts = cfg.num_patches + 1
        n_ann = cfg.ama_num_ann_index
        n_kpt = cfg.num_keypoints
        wdim = dim * 3 * 3  # one flattened 3x3 conv filter
        self.in_channels = dim
        self.num_parts = n_parts

        self.bbox_surface_transfer_matrix = nn.Parameter(torch.empty(n_parts, num_box_params))
        self.part_surface_transfer_matrix = nn.Parameter(torch.empty(n_parts, n_ann))
        self.kpt_surface_transfer_matrix = nn.Parameter(torch.empty(n_parts, n_kpt))
        self.dp_emb_layer = _conv3x3(dim, dim)
        self.ann_index_layer = _conv3x3(dim, n_ann)
        self.u_layer = _conv3x3(dim, n_parts)
        self.v_layer = _conv3x3(dim, n_parts)
        self.i_layer = _conv3x3(dim, n_parts)
        self.m_layer = _conv3x3(dim, 2)
        self.k_layer = _conv3x3(dim, n_kpt)
        self.bbox_surface_convertor = nn.Sequential(
            nn.Linear(box_fc_dim, wdim), nn.LeakyReLU(_LRELU_SLOPE), nn.Linear(wdim, wdim))
        self.part_surface_convertor = nn.Sequential(nn.Linear(wdim, wdim), nn.LeakyReLU(_LRELU_SLOPE))
        self.kpt_surface_convertor = nn.Sequential(nn.Linear(wdim, wdim), nn.LeakyReLU(_LRELU_SLOPE))
        self.param_aggregator = nn.Sequential(
            nn.Conv1d(3 * n_parts, n_parts, 1), nn.LeakyReLU(_LRELU_SLOPE))
        self.parameter_encoder = ParameterAttention(wdim)
        self.parameter_decoder = ParameterAttention(wdim)
        self.param_predictor = nn.Linear(wdim, wdim)
        # Training-only heads on the intermediate features (G_1+G_2, G_3+G_4).
        for j in range(1, _INTER_STAGES + 1):
            self.add_module(f"ann_index_inter_body_conv_fcn{j}", _conv3x3(cfg.conv_head_dim, n_ann))
            self.add_module(f"u_inter_body_conv_fcn{j}", _conv3x3(cfg.conv_head_dim, n_parts))
            self.add_module(f"v_inter_body_conv_fcn{j}", _conv3x3(cfg.conv_head_dim, n_parts))
            self.add_module(f"body_mask_inter_body_conv_fcn{j}", _conv3x3(cfg.conv_head_dim, 2))

        # The folded fine-I conv; not persistent, so state_dict() keeps the checkpoint's keys.
        self.register_buffer("folded_i_weight", torch.empty(0), persistent=False)
        self.register_buffer("folded_i_bias", torch.empty(0), persistent=False)
        self.folded = False
        self._init_weights()

    def _init_weights(self) -> None:
        for name, p in self.named_parameters():
            if name.endswith("_transfer_matrix"):
                # (The original leaves kpt_surface_transfer_matrix uninitialised; we do not.)
                nn.init.normal_(p, std=0.001)
            elif name.endswith(".bias"):
                nn.init.zeros_(p)
            else:
                nn.init.kaiming_normal_(p, mode="fan_out", nonlinearity="relu")

    # ------------------------------------------------------------------ generated I weights
    def generate_surface_weights(self, bbox_params: Tensor) -> Tensor:
        """``bbox_params`` ``[6, box_fc_dim]`` -> ``W_gen`` ``[num_parts, in_channels, 3, 3]``."""
        n_ann = self.ann_index_layer.weight.shape[0]
        n_kpt = self.k_layer.weight.shape[0]
        box = self.bbox_surface_convertor(torch.matmul(self.bbox_surface_transfer_matrix, bbox_params))
        part = self.part_surface_convertor(torch.matmul(
            self.part_surface_transfer_matrix, self.ann_index_layer.weight.reshape(n_ann, -1)))
        kpt = self.kpt_surface_convertor(torch.matmul(
            self.kpt_surface_transfer_matrix, self.k_layer.weight.reshape(n_kpt, -1)))
        pool = self.param_aggregator(torch.cat([box, part, kpt], dim=0).unsqueeze(0))  # [1,P,9C]
        query = self.i_layer.weight.reshape(1, self.num_parts, -1)                  # [1,P,9C]
        enc = self.parameter_encoder(pool, pool, query)
        dec = self.parameter_decoder(enc, enc, query)
        return self.param_predictor(dec[0]).reshape(self.num_parts, self.in_channels, 3, 3)

    @torch.no_grad()
    def fold(self, bbox_params: Tensor) -> None:
        """Compute ``W_gen`` once and merge ``0.5 * (i_layer + conv_Wgen)`` into one conv.

        Loading new weights (``load_state_dict``) discards the folded conv; fold again after.
        """
        w_gen = self.generate_surface_weights(bbox_params.to(self.i_layer.weight))
        self.folded_i_weight = 0.5 * (self.i_layer.weight + w_gen)
        self.folded_i_bias = 0.5 * self.i_layer.bias
        self.folded = True

    def unfold(self) -> None:
        self.folded_i_weight = torch.empty(0, device=self.i_layer.weight.device)
        self.folded_i_bias = torch.empty(0, device=self.i_layer.weight.device)
        self.folded = False

    def _load_from_state_dict(self, *args, **kwargs):  # type: ignore[override]
        super()._load_from_state_dict(*args, **kwargs)
        if self.folded:
            # DensePoseRCNN.load_state_dict folds again right after: not worth an INFO line
            logger.debug("AMAPredictor: weights loaded, folded fine-I conv discarded")
            self.unfold()

    # ------------------------------------------------------------------ inference
    def _main_outputs(self, emb: Tensor, index_uv: Tensor, with_keypoints: bool) -> Dict[str, Tensor]:
        out: Dict[str, Tensor] = {
            "ann_index": self.ann_index_layer(emb),
            "index_uv": index_uv,
            "u": self.u_layer(emb),
            "v": self.v_layer(emb),
            "m": self.m_layer(emb),
        }
        if with_keypoints:
            out["k"] = self.k_layer(emb)
        return out

    def forward(self, head_out: Tensor, inter_features: Optional[List[Tensor]] = None,
                bbox_params: Optional[Tensor] = None, with_keypoints: bool = False,
                use_folded: bool = True) -> Dict[str, Tensor]:
        """``head_out`` ``[N,C,S,S]`` -> dict of ``ann_index`` ``[N,15,S,S]``, ``index_uv``, ``u``,
        ``v`` ``[N,25,S,S]``, ``m`` ``[N,2,S,S]`` and, if ``with_keypoints``, ``k`` ``[N,17,S,S]``.

        Folded (and ``use_folded``): uses the folded I conv and ignores ``bbox_params``.
        Otherwise ``bbox_params``
        ``[6, box_fc_dim]`` is required. ``inter_features`` (the head's ``[F_1, F_2]``) is accepted
        for call compatibility and not used here: see :meth:`forward_intermediate`.
        """
        emb = F.relu(self.dp_emb_layer(head_out))
        if self.folded and use_folded:
            index_uv = F.conv2d(emb, self.folded_i_weight, self.folded_i_bias, padding=1)
        else:
            if bbox_params is None:
                raise RuntimeError("AMAPredictor is not folded: pass bbox_params or call fold(bbox_params)")
            w_gen = self.generate_surface_weights(bbox_params)
            index_uv = 0.5 * (self.i_layer(emb) + F.conv2d(emb, w_gen, padding=1))
        return self._main_outputs(emb, index_uv, with_keypoints)

    # ------------------------------------------------------------------ training
    def _intermediate(self, emb: Tensor, stage_features: List[Tensor], w_gen: Tensor) -> List[Dict[str, Tensor]]:
        if len(stage_features) != 2:
            raise ValueError("expected the head's 2 stage features [G_1 + G_2, G_3 + G_4], "
                             f"got a list of {len(stage_features)}")
        # The original computes this from the main embedding (not the stage's features), with no
        # bias, identically for both stages.
        index_uv = F.conv2d(emb, w_gen, padding=1)
        outputs: List[Dict[str, Tensor]] = []
        for j, feat in enumerate(stage_features, start=1):
            outputs.append({
                "ann_index": getattr(self, f"ann_index_inter_body_conv_fcn{j}")(feat),
                "index_uv": index_uv,
                "u": getattr(self, f"u_inter_body_conv_fcn{j}")(feat),
                "v": getattr(self, f"v_inter_body_conv_fcn{j}")(feat),
                "body_mask": getattr(self, f"body_mask_inter_body_conv_fcn{j}")(feat),
            })
        return outputs

    def forward_intermediate(self, head_out: Tensor, stages: List[Tensor],
                             bbox_params: Tensor) -> List[Dict[str, Tensor]]:
        """The two intermediate-supervision outputs (training only).

        ``stages`` is the head's ``[F_1, F_2]`` = ``[G_1+G_2, G_3+G_4]``. Stage j uses ``F_j``:
        ``ann_index`` ``[N,15,S,S]``, ``u``, ``v`` ``[N,25,S,S]``, ``body_mask`` ``[N,2,S,S]``
        from the stage's own convs, and
        ``index_uv`` ``[N,25,S,S]`` = ``conv2d(e, W_gen)`` (shared by both stages).
        """
        emb = F.relu(self.dp_emb_layer(head_out))
        return self._intermediate(emb, stages, self.generate_surface_weights(bbox_params))

    def forward_train(self, head_out: Tensor, stages: List[Tensor], bbox_params: Tensor,
                      with_keypoints: bool = True) -> Tuple[Dict[str, Tensor], List[Dict[str, Tensor]]]:
        """:meth:`forward` (unfolded) and :meth:`forward_intermediate` sharing ``e`` and ``W_gen``."""
        emb = F.relu(self.dp_emb_layer(head_out))
        w_gen = self.generate_surface_weights(bbox_params)
        index_uv = 0.5 * (self.i_layer(emb) + F.conv2d(emb, w_gen, padding=1))
        return self._main_outputs(emb, index_uv, with_keypoints), self._intermediate(emb, stages, w_gen)
