"""Non-maximum suppression: the csrc op ``amanet::nms`` and the switch to torchvision's.

Entry points (same arguments and results as :func:`torchvision.ops.nms` /
:func:`torchvision.ops.batched_nms`):

* :func:`nms`, :func:`batched_nms` - what the model calls. In eager mode they run the csrc op
  when :func:`amanet.ops.library.use_fused` says so, else torchvision (decided at call time).
  Inside ``torch.jit.script`` the eager-only switch is compiled out and they always run
  ``amanet::nms``: a scripted graph then loads in a C++ program without torchvision's library
  (DESIGN.md section 7). Scripting needs the library built.
* :func:`nms_fused`, :func:`batched_nms_fused` - always ``amanet::nms``.
* :func:`nms_reference`, :func:`batched_nms_reference` - always torchvision.

:func:`batched_nms_fused` reproduces torchvision's strategy choice exactly, so its result (set
and order) is the one of ``torchvision.ops.batched_nms``: the coordinate-offset trick (one NMS
over boxes shifted by ``idx * (max_coordinate + 1)``) when ``boxes.numel() <= 4000`` on the CPU
(<= 100000 on CUDA, i.e. up to 1000 / 25000 boxes) or when tracing, else one NMS per category
with the kept boxes re-sorted by score. The two strategies agree mathematically but not always
in float rounding (the offset changes the coordinates), hence the mirrored threshold.

``amanet::nms`` itself gives torchvision's result: the same stable descending sort of the scores
(equal scores visited by increasing index), IoU > threshold with the same float arithmetic.
"""
import torch
from torch import Tensor

from .library import load_library, use_fused

load_library()  # registers torch.ops.amanet.* (logs a warning and falls back when not built)


def nms_fused(boxes: Tensor, scores: Tensor, iou_threshold: float) -> Tensor:
    """``torch.ops.amanet.nms``: ``boxes [N, 4]`` XYXY, ``scores [N]`` -> int64 kept indices,
    by decreasing score."""
    return torch.ops.amanet.nms(boxes, scores, float(iou_threshold))


def nms_reference(boxes: Tensor, scores: Tensor, iou_threshold: float) -> Tensor:
    """:func:`torchvision.ops.nms` (eager only)."""
    from torchvision.ops import nms as tv_nms
    return tv_nms(boxes, scores, iou_threshold)


def nms(boxes: Tensor, scores: Tensor, iou_threshold: float) -> Tensor:
    """Greedy NMS: discards boxes with IoU > ``iou_threshold`` with a higher-scoring kept box."""
    if not torch.jit.is_scripting():
        if not use_fused():
            return nms_reference(boxes, scores, iou_threshold)
    return nms_fused(boxes, scores, iou_threshold)


@torch.jit._script_if_tracing
def _batched_nms_coordinate_trick(boxes: Tensor, scores: Tensor, idxs: Tensor,
                                  iou_threshold: float) -> Tensor:
    # one NMS over boxes moved apart per category (offset > every coordinate: no overlap across)
    if boxes.numel() == 0:
        return torch.empty((0,), dtype=torch.int64, device=boxes.device)
    max_coordinate = boxes.max()
    offsets = idxs.to(boxes) * (max_coordinate + torch.tensor(1).to(boxes))
    boxes_for_nms = boxes + offsets[:, None]
    return nms_fused(boxes_for_nms, scores, iou_threshold)


@torch.jit._script_if_tracing
def _batched_nms_vanilla(boxes: Tensor, scores: Tensor, idxs: Tensor,
                         iou_threshold: float) -> Tensor:
    # one NMS per category, then all kept boxes by decreasing score (the sort call torchvision
    # makes). index_select == boxes[curr_indices] (same copy; ATen's advanced-indexing path costs
    # milliseconds here with 2 threads)
    keep_mask = torch.zeros_like(scores, dtype=torch.bool)
    for class_id in torch.unique(idxs):
        curr_indices = torch.where(idxs == class_id)[0]
        curr_keep_indices = nms_fused(boxes.index_select(0, curr_indices),
                                      scores.index_select(0, curr_indices), iou_threshold)
        keep_mask[curr_indices[curr_keep_indices]] = True
    keep_indices = torch.where(keep_mask)[0]
    return keep_indices[scores[keep_indices].sort(descending=True)[1]]


def batched_nms_fused(boxes: Tensor, scores: Tensor, idxs: Tensor, iou_threshold: float) -> Tensor:
    """NMS within each category ``idxs`` with ``amanet::nms`` (torchvision's strategy choice)."""
    limit = 4000 if boxes.device.type == "cpu" else 100000
    if boxes.numel() > limit and not torch.jit.is_tracing():
        return _batched_nms_vanilla(boxes, scores, idxs, iou_threshold)
    return _batched_nms_coordinate_trick(boxes, scores, idxs, iou_threshold)


def batched_nms_reference(boxes: Tensor, scores: Tensor, idxs: Tensor,
                          iou_threshold: float) -> Tensor:
    """:func:`torchvision.ops.batched_nms` (eager only)."""
    from torchvision.ops import batched_nms as tv_batched_nms
    return tv_batched_nms(boxes, scores, idxs, iou_threshold)


def batched_nms(boxes: Tensor, scores: Tensor, idxs: Tensor, iou_threshold: float) -> Tensor:
    """NMS independently per category: ``boxes [N, 4]``, ``scores [N]``, ``idxs [N]`` int ->
    int64 kept indices by decreasing score."""
    if not torch.jit.is_scripting():
        if not use_fused():
            return batched_nms_reference(boxes, scores, idxs, iou_threshold)
    return batched_nms_fused(boxes, scores, idxs, iou_threshold)
