"""ROIAlign: the csrc op ``amanet::roi_align`` and the switch to torchvision's.

Entry points (all take the same arguments as :func:`torchvision.ops.roi_align` with a ``[K, 5]``
rois tensor):

* :func:`roi_align` - what the model calls. In eager mode it runs the csrc op when
  :func:`amanet.ops.library.use_fused` says so (library built, ``AMANET_OPS`` not ``reference``),
  else :func:`torchvision.ops.roi_align`. The choice is made at call time, so tracing records
  whichever op is active.
* :func:`roi_align_fused` - always ``torch.ops.amanet.roi_align``.
* :func:`roi_align_reference` - always torchvision.

TorchScript: inside ``torch.jit.script`` the eager-only switch is compiled out (a
``torch.jit.is_scripting()`` branch: TorchScript does not even compile the untaken side), so a
scripted caller of :func:`roi_align` always runs ``amanet::roi_align``. That is the deployable
choice: a scripted graph holding ``torchvision::roi_align`` cannot be loaded by a C++ program
(DESIGN.md section 7), one holding ``amanet::roi_align`` needs only ``amanet._C`` / libamanet_ops.
Scripting therefore needs the library built (``amanet._C`` is loaded on import of this module).

Numerics: float32 / float64 are bit-identical to torchvision's CPU kernel, forward and backward
(same per-sample operation order). The gradient flows to ``input`` only (rois are constants).
"""
from typing import List

import torch
from torch import Tensor
from torch.jit.annotations import BroadcastingList2
from torch.nn.modules.utils import _pair

from .library import load_library, use_fused

load_library()  # registers torch.ops.amanet.* (logs a warning and falls back when not built)


def roi_align_fused(input: Tensor, rois: Tensor, output_size: BroadcastingList2[int],
                    spatial_scale: float = 1.0, sampling_ratio: int = -1,
                    aligned: bool = False) -> Tensor:
    """``torch.ops.amanet.roi_align``: ``input [N, C, H, W]``, ``rois [K, 5]`` ->
    ``[K, C, output_size[0], output_size[1]]``."""
    size: List[int] = _pair(output_size)
    return torch.ops.amanet.roi_align(input, rois, float(spatial_scale), size[0], size[1],
                                      int(sampling_ratio), bool(aligned))


def roi_align_reference(input: Tensor, rois: Tensor, output_size: BroadcastingList2[int],
                        spatial_scale: float = 1.0, sampling_ratio: int = -1,
                        aligned: bool = False) -> Tensor:
    """:func:`torchvision.ops.roi_align` (eager only)."""
    from torchvision.ops import roi_align as tv_roi_align
    return tv_roi_align(input, rois, _pair(output_size), spatial_scale, sampling_ratio, aligned)


def roi_align(input: Tensor, rois: Tensor, output_size: BroadcastingList2[int],
              spatial_scale: float = 1.0, sampling_ratio: int = -1,
              aligned: bool = False) -> Tensor:
    """ROIAlign (average) with torchvision's semantics; fused or reference per ``use_fused()``,
    always fused under TorchScript (see the module doc).

    Args:
        input: ``[N, C, H, W]`` feature map.
        rois: ``[K, 5]`` rows ``(batch_index, x1, y1, x2, y2)`` in image coordinates, same dtype
            and device as ``input``.
        output_size: ``int`` or ``(height, width)`` of the pooled output.
        spatial_scale: image -> feature map scale (e.g. 1/4 for FPN p2).
        sampling_ratio: samples per bin side; ``<= 0`` adaptive ``ceil(roi_size / output_size)``.
        aligned: Detectron2's ROIAlignV2 half-pixel shift (True) or legacy ROIAlign (False).
    """
    if not torch.jit.is_scripting():
        if not use_fused():
            return roi_align_reference(input, rois, output_size, spatial_scale, sampling_ratio,
                                       aligned)
    return roi_align_fused(input, rois, output_size, spatial_scale, sampling_ratio, aligned)
