"""Small layers shared by the model parts: FrozenBN and a conv that owns its norm."""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn


class FrozenBatchNorm2d(nn.Module):
    """BatchNorm with fixed statistics and affine parameters, all stored as buffers.

    ``y = (x - running_mean) * weight / sqrt(running_var + eps) + bias``; the buffer names
    match Detectron2's so checkpoints load one to one.
    """

    def __init__(self, num_features: int, eps: float = 1e-5):
        super().__init__()
        self.num_features = num_features
        self.eps = eps
        self.register_buffer("weight", torch.ones(num_features))
        self.register_buffer("bias", torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features) - eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Fold into one scale and shift (same arithmetic order as Detectron2).
        scale = self.weight * (self.running_var + self.eps).rsqrt()
        shift = self.bias - self.running_mean * scale
        return x * scale.view(1, -1, 1, 1).to(x.dtype) + shift.view(1, -1, 1, 1).to(x.dtype)

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.eps}"


class Conv2dNorm(nn.Conv2d):
    """``nn.Conv2d`` followed by an optional ``.norm`` submodule and optional ReLU.

    Keeping the norm as a child named ``norm`` gives the checkpoint keys
    ``<conv>.weight`` and ``<conv>.norm.{weight,bias,running_mean,running_var}``.
    """

    def __init__(self, *args, norm: Optional[nn.Module] = None, relu: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        self.norm = norm
        self.relu = relu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.conv2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation,
                     self.groups)
        if self.norm is not None:
            x = self.norm(x)
        if self.relu:
            x = F.relu(x)
        return x


def c2_msra_fill(module: nn.Module) -> None:
    """Kaiming-normal (fan_out) weights and zero bias, as Detectron2 initialises convs."""
    nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
    if getattr(module, "bias", None) is not None:
        nn.init.constant_(module.bias, 0)


def c2_xavier_fill(module: nn.Module) -> None:
    """Kaiming-uniform (a=1) weights and zero bias, Detectron2's FPN initialisation."""
    nn.init.kaiming_uniform_(module.weight, a=1)
    if getattr(module, "bias", None) is not None:
        nn.init.constant_(module.bias, 0)
