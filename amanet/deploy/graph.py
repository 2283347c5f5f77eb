"""The deployable graph: one resized image in, flat tensors out.

:class:`DeployGraph` reuses the weights of a :class:`~amanet.modeling.model.DensePoseRCNN` but
has its own forward, written so that the same code

- compiles with ``torch.jit.script`` (TorchScript; every op is an ``aten::`` or ``amanet::`` op,
  so the module loads in C++ with only our op library — no torchvision), and
- traces into a dynamic-shape ONNX graph with the TorchScript-based exporter (the dynamo
  exporter fails on the data-dependent NMS shapes of two-stage detectors).

Input: ``image [3, H, W]`` float32 (or uint8), channels in the config's order (BGR), 0..255,
already resized (the host resizes with Detectron2's PIL rule; H, W are free).
Precision: the graph computes in the dtype of its conv weights (float32, or bfloat16 for a
reduced-precision TorchScript export: :func:`cast_compute_layers`); box decoding, NMS, level
assignment and every output stay float32.
Outputs (batch 1), boxes in the input image's coordinates:
``boxes [D, 4]``, ``scores [D]``, ``classes [D]`` (int64), then the DensePose branch's outputs
(:class:`~amanet.modeling.densepose_branch.DensePoseBranch`, the module eager inference runs):
``gate [D, K, S, S]`` (chart coarse segmentation / AMANet body mask logits; named ``gate`` in
exports), ``fine_segm [D, 25, S, S]``, ``u``, ``v`` and the model's confidences (``sigma_2``,
``kappa_u``, ``kappa_v`` ``[D, 25, S, S]``, ``fine_segm_confidence``,
``coarse_segm_confidence`` ``[D, 1, S, S]``) under Detectron2's names.
With ``max_detections = M > 0`` (TensorRT style) every output has ``M`` rows, padded with
zeros, and a last output ``num_detections [1]`` (int64) says how many are real.
"""
from __future__ import annotations

from typing import List, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..config import FAMILY_AMANET, FAMILY_S1X, Config
from ..modeling.densepose_branch import DensePoseBranch
from ..modeling.families import densepose_output_channels
from ..modeling.model import DensePoseRCNN
from ..modeling.poolers import aligned_flag, pool_by_level
from ..modeling.rpn import cell_anchors

DETECTION_OUTPUTS = ["boxes", "scores", "classes"]
#: The first DensePose output (coarse_segm / body_mask) keeps one name in every export.
GATE_OUTPUT = "gate"


def _nms(boxes: Tensor, scores: Tensor, iou: float) -> Tensor:
    return torch.ops.amanet.nms(boxes, scores, iou)


def _batched_nms(boxes: Tensor, scores: Tensor, groups: Tensor, iou: float) -> Tensor:
    """NMS within groups via the coordinate-offset trick (same result as per-group NMS)."""
    if boxes.shape[0] == 0:
        return torch.zeros((0,), dtype=torch.int64, device=boxes.device)
    offsets = groups.to(boxes.dtype) * (boxes.max() + 1)
    return _nms(boxes + offsets[:, None], scores, iou)


def _apply_deltas(deltas: Tensor, boxes: Tensor, weights: List[float],
                  scale_clamp: float = 4.135166556742356) -> Tensor:
    """``deltas [R, 4]`` relative to ``boxes [R, 4]`` -> ``[R, 4]`` (Detectron2's numerics).

    ``scale_clamp`` is log(1000 / 16) (TorchScript cannot read a module-level float).
    """
    widths = boxes[:, 2] - boxes[:, 0]
    heights = boxes[:, 3] - boxes[:, 1]
    ctr_x = boxes[:, 0] + 0.5 * widths
    ctr_y = boxes[:, 1] + 0.5 * heights
    dx = deltas[:, 0] / weights[0]
    dy = deltas[:, 1] / weights[1]
    dw = torch.clamp(deltas[:, 2] / weights[2], max=scale_clamp)
    dh = torch.clamp(deltas[:, 3] / weights[3], max=scale_clamp)
    pcx = dx * widths + ctr_x
    pcy = dy * heights + ctr_y
    pw = torch.exp(dw) * widths
    ph = torch.exp(dh) * heights
    return torch.stack((pcx - 0.5 * pw, pcy - 0.5 * ph, pcx + 0.5 * pw, pcy + 0.5 * ph), dim=1)


def _clip(boxes: Tensor, wh: Tensor) -> Tensor:
    """Clamp XYXY boxes to ``[0, w] x [0, h]``; ``wh`` is a float tensor ``[w, h, w, h]``."""
    return torch.min(boxes.clamp(min=0.0), wh[None, :])


@torch.jit.unused
def _traced_topk_k(scores: Tensor, k: int) -> int:
    """During ONNX tracing, ``min(k, len)`` must stay a graph value, not a baked constant."""
    n = torch._shape_as_tensor(scores)[1].unsqueeze(0)
    return torch.min(torch.cat([torch.tensor([k], dtype=n.dtype), n]))  # type: ignore[return-value]


class DeployGraph(nn.Module):
    # Constants let TorchScript drop the other family's branches before compiling them.
    __constants__ = ["max_detections"]

    def __init__(self, model: DensePoseRCNN, max_detections: int = 0):
        super().__init__()
        cfg = model.cfg
        if cfg.family not in (FAMILY_S1X, FAMILY_AMANET):
            raise ValueError(f"unknown family {cfg.family!r}")
        self.backbone = model.backbone
        rpn = model.proposal_generator
        self.rpn_head = rpn.rpn_head
        rh = model.roi_heads
        self.box_head = rh.box_head
        self.box_predictor = rh.box_predictor
        if cfg.family == FAMILY_AMANET and not rh.densepose_predictor.folded:
            rh.fold()
        self.densepose_branch = DensePoseBranch(rh)
        self.register_buffer("pixel_mean", model.pixel_mean.clone(), persistent=False)
        self.register_buffer("pixel_std", model.pixel_std.clone(), persistent=False)
        self.size_divisibility = int(cfg.input.size_divisibility)

        # RPN
        anchors = []
        for sizes, ratios in zip(_per_level(cfg.rpn.anchor_sizes, 5),
                                 _per_level(cfg.rpn.aspect_ratios, 5)):
            anchors.append(cell_anchors(tuple(sizes), tuple(ratios)))
        self.register_buffer("cell_anchors", torch.stack(anchors), persistent=False)
        self.rpn_strides = [4, 8, 16, 32, 64]
        self.anchor_offset = float(cfg.rpn.anchor_offset)
        self.rpn_weights = [float(w) for w in cfg.rpn.bbox_reg_weights]
        self.rpn_nms = float(cfg.rpn.nms_thresh)
        self.pre_nms_topk = int(cfg.rpn.pre_nms_topk_test)
        self.post_nms_topk = int(cfg.rpn.post_nms_topk_test)
        self.rpn_min_size = float(cfg.rpn.min_size)
        if list(cfg.rpn.in_features) != ["p2", "p3", "p4", "p5", "p6"]:
            raise ValueError("the deploy graph expects RPN on p2..p6")
        # Box head
        r = cfg.roi_heads
        if list(r.in_features) != ["p2", "p3", "p4", "p5"]:
            raise ValueError("the deploy graph expects RoI heads on p2..p5")
        self.box_res = int(r.pooler_resolution)
        self.box_sampling = int(r.pooler_sampling_ratio)
        self.box_aligned = aligned_flag(r.pooler_type)
        self.box_weights = [float(w) for w in r.bbox_reg_weights]
        # A tensor (an ONNX initializer), not a float: see amanet.deploy.onnx for why.
        self.register_buffer("score_threshold", torch.tensor([float(r.score_thresh_test)]),
                             persistent=False)
        self.det_nms = float(r.nms_thresh_test)
        self.det_topk = int(r.detections_per_image)
        self.max_detections = int(max_detections)
        # an empty tensor whose dtype is the compute dtype (a dtype attribute does not script)
        self.register_buffer("compute_dtype", torch.zeros(0), persistent=False)

    # -- stages --------------------------------------------------------------------------------
    def preprocess(self, image: Tensor) -> Tensor:
        x = (image.to(torch.float32) - self.pixel_mean) / self.pixel_std
        x = x.to(self.compute_dtype.dtype)
        d = self.size_divisibility
        h = image.shape[-2]
        w = image.shape[-1]
        ph = (d - h % d) % d
        pw = (d - w % d) % d
        return F.pad(x, [0, pw, 0, ph])[None]

    def proposals(self, feats: List[Tensor], wh: Tensor) -> Tensor:
        """RPN: top-k per level, clip, drop empty, per-level NMS, top-k -> ``[R, 4]``."""
        logits_all, deltas_all = self.rpn_head(feats)
        return self.select_proposals(feats, logits_all, deltas_all, wh, 0)

    def select_proposals(self, feats: List[Tensor], logits_all: List[Tensor],
                         deltas_all: List[Tensor], wh: Tensor, b: int) -> Tensor:
        """The proposals ``[R, 4]`` of image ``b`` of the batch from the RPN head's outputs."""
        boxes_l: List[Tensor] = []
        scores_l: List[Tensor] = []
        levels_l: List[Tensor] = []
        for lvl, (feat, logits, deltas) in enumerate(zip(feats, logits_all, deltas_all)):
            anchors = self._grid_anchors(feat, lvl)
            if torch.jit.is_scripting() or not torch.jit.is_tracing():
                k = min(self.pre_nms_topk, logits.shape[1])
            else:
                k = _traced_topk_k(logits, self.pre_nms_topk)
            scores, idx = logits[b].topk(k)
            sel = _apply_deltas(deltas[b][idx], anchors[idx], self.rpn_weights)
            boxes_l.append(sel)
            scores_l.append(scores)
            levels_l.append(torch.full_like(scores, lvl, dtype=torch.int64))
        boxes = _clip(torch.cat(boxes_l), wh)
        scores = torch.cat(scores_l)
        levels = torch.cat(levels_l)
        keep = ((boxes[:, 2] - boxes[:, 0]) > self.rpn_min_size) & \
               ((boxes[:, 3] - boxes[:, 1]) > self.rpn_min_size) & torch.isfinite(scores)
        boxes, scores, levels = boxes[keep], scores[keep], levels[keep]
        keep = _batched_nms(boxes, scores, levels, self.rpn_nms)[:self.post_nms_topk]
        return boxes[keep]

    def _grid_anchors(self, feat: Tensor, lvl: int) -> Tensor:
        stride = float(self.rpn_strides[lvl])
        h = feat.shape[-2]
        w = feat.shape[-1]
        sx = (torch.arange(w, device=feat.device).to(torch.float32) + self.anchor_offset) * stride
        sy = (torch.arange(h, device=feat.device).to(torch.float32) + self.anchor_offset) * stride
        gy, gx = torch.meshgrid(sy, sx, indexing="ij")
        gx = gx.reshape(-1)
        gy = gy.reshape(-1)
        shifts = torch.stack((gx, gy, gx, gy), dim=1)
        return (shifts[:, None, :] + self.cell_anchors[lvl][None, :, :]).reshape(-1, 4)

    def _pool_by_level(self, feats: List[Tensor], boxes: Tensor) -> Tensor:
        """Box-head pooling: each RoI from its FPN level (Detectron2's rule)."""
        rois = torch.cat([torch.zeros_like(boxes[:, :1]), boxes], dim=1)
        return pool_by_level(feats[:4], rois, self.box_res, [0.25, 0.125, 0.0625, 0.03125],
                             self.box_sampling, self.box_aligned, 2, 5)

    def detect(self, feats: List[Tensor], proposals: Tensor, wh: Tensor
               ) -> Tuple[Tensor, Tensor, Tensor]:
        x = self.box_head(self._pool_by_level(feats, proposals))
        logits, deltas = self.box_predictor(x)
        probs = torch.softmax(logits, dim=-1)[:, :-1]
        num_classes = probs.shape[1]
        num_reg = deltas.shape[1] // 4
        props = proposals[:, None, :].expand(-1, num_reg, 4).reshape(-1, 4)
        boxes = _apply_deltas(deltas.reshape(-1, 4), props, self.box_weights)
        boxes = _clip(boxes, wh).reshape(-1, num_reg, 4)
        if num_reg == 1:
            boxes = boxes.expand(-1, num_classes, 4)
        flat_scores = probs.reshape(-1)
        flat_boxes = boxes.reshape(-1, 4)
        classes = torch.arange(num_classes, device=probs.device).repeat(probs.shape[0])
        keep = torch.nonzero(flat_scores > self.score_threshold).reshape(-1)
        flat_boxes, flat_scores, classes = flat_boxes[keep], flat_scores[keep], classes[keep]
        keep = _batched_nms(flat_boxes, flat_scores, classes, self.det_nms)[:self.det_topk]
        return flat_boxes[keep], flat_scores[keep], classes[keep]

    def densepose(self, feats: List[Tensor], boxes: Tensor) -> List[Tensor]:
        """The DensePose outputs for ``boxes [D, 4]`` (see :class:`DensePoseBranch`)."""
        rois = torch.cat([torch.zeros_like(boxes[:, :1]), boxes], dim=1)
        return self.densepose_branch(feats, rois)

    def forward(self, image: Tensor) -> List[Tensor]:
        hw = torch._shape_as_tensor(image)[1:].to(torch.float32)
        wh = torch.stack([hw[1], hw[0], hw[1], hw[0]])
        fdict = self.backbone(self.preprocess(image))
        feats = [fdict["p2"], fdict["p3"], fdict["p4"], fdict["p5"], fdict["p6"]]
        proposals = self.proposals(feats, wh)
        boxes, scores, classes = self.detect(feats, proposals, wh)
        if self.max_detections > 0:
            return self._padded(feats, boxes, scores, classes)
        return [boxes, scores, classes] + self.densepose(feats, boxes)

    @torch.jit.unused
    def forward_many(self, images: List[Tensor]) -> List[List[Tensor]]:
        """Several resized images of one size (each ``[3, H, W]``) -> one list of
        :meth:`forward`'s outputs per image. The backbone, the RPN head and the DensePose branch
        run once over the batch ``[B, 3, H', W']`` (one RoI list with batch indices), proposals
        and detections per image: what a device that gains from batches (a GPU) runs for
        frames of a video. Eager only (the exports take one image); not with
        ``max_detections``."""
        if self.max_detections > 0:
            raise ValueError("forward_many() does not pad to max_detections")
        if len({tuple(im.shape) for im in images}) != 1:
            raise ValueError("forward_many() needs images of one size, got "
                             f"{sorted({tuple(im.shape) for im in images})}")
        hw = torch._shape_as_tensor(images[0])[1:].to(torch.float32)
        wh = torch.stack([hw[1], hw[0], hw[1], hw[0]])
        fdict = self.backbone(torch.cat([self.preprocess(im) for im in images]))
        feats = [fdict["p2"], fdict["p3"], fdict["p4"], fdict["p5"], fdict["p6"]]
        logits_all, deltas_all = self.rpn_head(feats)
        detections: List[List[Tensor]] = []
        for b in range(len(images)):
            proposals = self.select_proposals(feats, logits_all, deltas_all, wh, b)
            detections.append(list(self.detect([f[b:b + 1] for f in feats], proposals, wh)))
        rois = torch.cat([torch.cat([torch.full_like(boxes[:, :1], float(b)), boxes], dim=1)
                          for b, (boxes, _, _) in enumerate(detections)])
        dense = self.densepose_branch(feats, rois)
        counts = [int(boxes.shape[0]) for boxes, _, _ in detections]
        per_image = [list(chunk) for chunk in zip(*[d.split(counts) for d in dense])]
        return [found + own for found, own in zip(detections, per_image)]

    def _padded(self, feats: List[Tensor], boxes: Tensor, scores: Tensor, classes: Tensor
                ) -> List[Tensor]:
        """Fixed ``max_detections`` rows (zero padded) + ``num_detections``: static shapes."""
        m = self.max_detections
        n = torch._shape_as_tensor(scores)[:1]
        pad = torch.zeros((m, 4), dtype=boxes.dtype, device=boxes.device)
        # Rows are picked with a constant index vector, not sliced with [:m]: a Gather with
        # M constant indices has a provably static [M, ...] shape (ONNX shape inference and
        # TensorRT), a slice of a data-dependent [D + M] dim does not.
        rows = torch.arange(m, device=boxes.device)
        boxes_p = torch.cat([boxes, pad]).index_select(0, rows)
        scores_p = torch.cat([scores, pad[:, 0]]).index_select(0, rows)
        classes_p = torch.cat([classes, torch.zeros((m,), dtype=classes.dtype,
                                                    device=classes.device)]).index_select(0, rows)
        return [boxes_p, scores_p, classes_p] + self.densepose(feats, boxes_p) + \
            [torch.clamp(n, max=m)]


COMPUTE_LAYERS = (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)


def cast_compute_layers(graph: DeployGraph, dtype: torch.dtype) -> DeployGraph:
    """Run ``graph`` in ``dtype``: the weights of every conv / deconv / linear layer (their
    activations follow) and the compute-dtype marker; anchors, pixel statistics and the
    detection arithmetic stay float32. Fold FrozenBN into the convs first."""
    for m in graph.modules():
        if isinstance(m, COMPUTE_LAYERS):
            m.to(dtype)
        for name, buf in list(m.named_buffers(recurse=False)):
            if name.startswith("folded_") and buf.is_floating_point():
                setattr(m, name, buf.to(dtype))  # AMANet's folded fine-I conv
    graph.compute_dtype = graph.compute_dtype.to(dtype)
    return graph


def _per_level(values, levels: int):
    values = list(values)
    return values * levels if len(values) == 1 else values


def output_names(cfg: Config, max_detections: int = 0) -> List[str]:
    """The graph's outputs, in order, for a model of config ``cfg``."""
    densepose = list(densepose_output_channels(cfg))
    return DETECTION_OUTPUTS + [GATE_OUTPUT] + densepose[1:] + \
        (["num_detections"] if max_detections > 0 else [])

