"""The AMANet DensePose head (``DensePoseAMAHead``): shared tower, shared up-sampling, adaptive
multi-path aggregation (DESIGN.md §3).

Submodule names follow the AMANet checkpoint (``roi_heads.densepose_head.*``) one to one.
"""
from __future__ import annotations

from typing import List, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from amanet.config.schema import DensePoseConfig
from amanet.ops.aggregation import adaptive_aggregation, adaptive_aggregation_reference
from amanet.ops.library import use_fused

NUM_PATHS = 4
# The predictor's intermediate supervision reads F_1 = G_1 + G_2 and F_2 = G_3 + G_4.
STAGE_GROUP_SIZE = 2


class AMAHead(nn.Module):
    """Multi-path AMA head.

    Input: the 4 pooled paths of every RoI (p2..p5), ``[N,C_in,32,32]``, ``[N,C_in,16,16]``,
    ``[N,C_in,16,16]``, ``[N,C_in,8,8]``. Each runs through the same conv tower and is
    up-sampled by shared stride-2 deconvs to ``[N,D,64,64]`` (``U_1..U_4``), D = conv_head_dim.

    Output: ``head_out`` ``[N,D,64,64]`` and the two **stage features** ``[F_1, F_2]`` =
    ``[G_1 + G_2, G_3 + G_4]`` (sums of the gated paths G_i, each ``[N,D,64,64]``), which the
    predictor uses for intermediate supervision; with ``return_stages=False`` (inference) the
    list is empty. The fused op never materialises the G_i: it writes S and F_1, F_2 directly.

    Fused vs reference aggregation: eager calls go through
    :func:`amanet.ops.aggregation.adaptive_aggregation`, which asks
    :func:`amanet.ops.library.use_fused` at call time. TorchScript cannot run that check: the
    scripted graph branches on ``use_fused_ops``, a bool in ``__constants__`` (a compile-time
    constant, so only the taken branch is compiled and the reference graph needs no op
    library), which :meth:`__prepare_scriptable__` sets from ``use_fused()`` when the head is
    scripted. A head scripted with the fused op needs ``amanet._C`` loaded wherever it runs
    (``amanet_ops`` in C++).
    """

    __constants__ = ["use_fused_ops", "stage_group_size"]

    def __init__(self, cfg: DensePoseConfig, in_channels: int = 256):
        super().__init__()
        if len(cfg.ama_pooler_resolutions) != NUM_PATHS:
            raise ValueError(f"AMAHead needs {NUM_PATHS} pooled paths, "
                             f"got ama_pooler_resolutions={cfg.ama_pooler_resolutions}")
        dim = cfg.conv_head_dim
        k = cfg.conv_head_kernel
        dk = cfg.deconv_kernel
        channels = in_channels
        for i in range(cfg.num_stacked_convs):
            self.add_module(f"body_conv_fcn{i + 1}", nn.Conv2d(channels, dim, k, padding=k // 2))
            channels = dim
        for i in range(3):
            deconv = nn.ConvTranspose2d(dim, dim, dk, stride=2, padding=dk // 2 - 1)
            self.add_module(f"deconv_p{i + 1}", nn.Sequential(deconv, nn.ReLU()))
        for i in range(NUM_PATHS):
            self.add_module(f"fc1_levels_{i + 1}", nn.Linear(dim, dim))
            self.add_module(f"att_levels_{i + 1}", nn.Linear(dim, dim))
        self.ama_static_conv_emb = nn.Conv2d(NUM_PATHS * dim, dim, 3, padding=1)
        self.ama_dynamic_conv_emb = nn.Conv2d(dim, dim, 3, padding=1)
        self.instance_embedding_layer1 = nn.Conv2d(2 * dim, dim, 1)
        self.out_channels = dim
        self.use_fused_ops = use_fused()
        self.stage_group_size = STAGE_GROUP_SIZE
        self._init_weights()

    def __prepare_scriptable__(self) -> "AMAHead":
        # torch.jit.script calls this first: script the ops backend that is current now.
        self.use_fused_ops = use_fused()
        return self

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)

    def _tower(self, x: Tensor) -> Tensor:
        # Children are registered tower-first, in order; TorchScript unrolls this loop.
        for name, module in self.named_children():
            if name.startswith("body_conv_fcn"):
                x = F.relu(module(x))
        return x

    def path_gates(self, u: Tensor) -> Tensor:
        """``U`` ``[N,4,D,H,W]`` -> ``[N,4,D]`` sigmoid gates, one MLP per path on its channel means.

        The gates are computed in float32 whatever the compute precision; :meth:`forward`
        hands them to the aggregation op in the features' dtype (the op's rule)."""
        pooled = u.mean(dim=(3, 4))
        g1 = torch.sigmoid(self.att_levels_1(F.relu(self.fc1_levels_1(pooled[:, 0]))).float())
        g2 = torch.sigmoid(self.att_levels_2(F.relu(self.fc1_levels_2(pooled[:, 1]))).float())
        g3 = torch.sigmoid(self.att_levels_3(F.relu(self.fc1_levels_3(pooled[:, 2]))).float())
        g4 = torch.sigmoid(self.att_levels_4(F.relu(self.fc1_levels_4(pooled[:, 3]))).float())
        return torch.stack([g1, g2, g3, g4], dim=1)

    def upsampled_paths(self, features: List[Tensor]) -> Tensor:
        """The 4 pooled paths -> ``U`` ``[N,4,D,64,64]`` (before gating)."""
        x1, x2, x3, x4 = features[0], features[1], features[2], features[3]
        # p3 and p4 share a size, so they go through tower and deconvs as one batch.
        t23 = self.deconv_p2(self._tower(torch.cat([x2, x3], dim=0)))
        t4 = self.deconv_p2(self.deconv_p1(self._tower(x4)))
        t1 = self._tower(x1)
        # Every path ends with deconv_p3; run it once on all of them (path-major batch).
        u = self.deconv_p3(torch.cat([t1, t23, t4], dim=0))
        # chunk, not view(4, n, ...): an exported ONNX Reshape reads a 0 in its target shape as
        # "copy that input dim", which breaks the zero-RoI case. Nor slices u[:n], ...: each
        # slice's backward allocates and zero-fills a gradient the size of u (4 of them, then
        # summed); chunk's backward is one cat (this step fwd+bwd at N=16, D=256: 0.60 -> 0.22 s).
        return torch.stack(u.chunk(len(features), dim=0), dim=1)

    def forward(self, features: List[Tensor], return_stages: bool = True) -> Tuple[Tensor, List[Tensor]]:
        """``features``: 4 pooled paths (see class doc). Returns ``(head_out [N,D,64,64], [F_1, F_2])``
        (``[]`` instead of the stage features when ``return_stages`` is False: inference)."""
        u = self.upsampled_paths(features)
        n, p, d, h, w = u.shape
        gates = self.path_gates(u).to(u.dtype)  # the op's dtype rule: gates follow the features
        group_size = self.stage_group_size if return_stages else 0
        if torch.jit.is_scripting():
            if self.use_fused_ops:
                stages, gated_sum = torch.ops.amanet.adaptive_aggregation(u, gates, group_size)
            else:
                stages, gated_sum = adaptive_aggregation_reference(u, gates, group_size)
        else:
            stages, gated_sum = adaptive_aggregation(u, gates, group_size)
        # The static branch sees the UN-gated paths: [N,4,D,H,W] viewed as cat(U_1..U_4, 1).
        static = F.relu(self.ama_static_conv_emb(u.view(n, p * d, h, w)))
        dynamic = F.relu(self.ama_dynamic_conv_emb(gated_sum))
        head_out = F.relu(self.instance_embedding_layer1(torch.cat([static, dynamic], dim=1)))
        if not return_stages:
            no_stages: List[Tensor] = []
            return head_out, no_stages
        return head_out, list(stages.unbind(1))
