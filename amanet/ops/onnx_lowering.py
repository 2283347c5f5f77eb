"""ONNX lowering of the ``amanet::*`` ops for the TorchScript-based exporter (``dynamo=False``).

:func:`register_onnx_symbolics` registers one symbolic function per op with
``torch.onnx.register_custom_op_symbolic``; call it once before ``torch.onnx.export``. Each op's
function is below, with its standard-ONNX mapping and the subtleties of that mapping.
"""
import sys
import warnings

import torch
from torch.onnx import symbolic_helper as sym_help

_DOMAIN = "amanet"
_INT64 = torch.onnx.TensorProtoDataType.INT64
_FLOAT = torch.onnx.TensorProtoDataType.FLOAT


def _const(g, value, dtype):
    return g.op("Constant", value_t=torch.tensor(value, dtype=dtype))


# --- amanet::roi_align -> RoiAlign ----------------------------------------------------------
#
# rois [K, 5] split into batch_indices (column 0, cast to int64) and boxes (columns 1..4).
# aligned=True is RoiAlign-16 coordinate_transformation_mode="half_pixel" (the -0.5 shift);
# aligned=False is "output_half_pixel" (the legacy mode, which also forces boxes to >= 1x1,
# exactly as the op). Opset 10-15 RoiAlign has no such attribute and always behaves as
# output_half_pixel: aligned=True would silently lose the shift there, so it is refused.
# sampling_ratio <= 0 (adaptive ceil(roi_size / output_size) in the op) is ONNX's 0 (the same
# rule); a positive ratio is passed through. mode="avg". The ONNX op has no gradient: export
# inference graphs.

def _roi_align_inputs(g, rois):
    batch_indices = g.op("Gather", rois, _const(g, 0, torch.int64), axis_i=1)      # [K]
    batch_indices = g.op("Cast", batch_indices, to_i=_INT64)
    boxes = g.op("Gather", rois, _const(g, [1, 2, 3, 4], torch.int64), axis_i=1)  # [K, 4]
    return boxes, batch_indices


@sym_help.parse_args("v", "v", "f", "i", "i", "i", "b")
def roi_align_opset16(g, input, rois, spatial_scale, pooled_height, pooled_width,
                      sampling_ratio, aligned):
    boxes, batch_indices = _roi_align_inputs(g, rois)
    return g.op("RoiAlign", input, boxes, batch_indices,
                coordinate_transformation_mode_s="half_pixel" if aligned else "output_half_pixel",
                mode_s="avg", output_height_i=pooled_height, output_width_i=pooled_width,
                sampling_ratio_i=max(int(sampling_ratio), 0), spatial_scale_f=spatial_scale)


@sym_help.parse_args("v", "v", "f", "i", "i", "i", "b")
def roi_align_opset10(g, input, rois, spatial_scale, pooled_height, pooled_width,
                      sampling_ratio, aligned):
    if aligned:
        raise torch.onnx.errors.SymbolicValueError(
            "amanet::roi_align with aligned=True (ROIAlignV2) needs ONNX opset >= 16 "
            "(RoiAlign coordinate_transformation_mode='half_pixel'); export with opset_version=16 "
            "or higher", input)
    boxes, batch_indices = _roi_align_inputs(g, rois)
    return g.op("RoiAlign", input, boxes, batch_indices, mode_s="avg",
                output_height_i=pooled_height, output_width_i=pooled_width,
                sampling_ratio_i=max(int(sampling_ratio), 0), spatial_scale_f=spatial_scale)


# --- amanet::nms -> NonMaxSuppression ---------------------------------------------------------
#
# NonMaxSuppression takes boxes [batch, N, 4] and scores [batch, classes, N] (float32 only in
# ONNX Runtime: double inputs are cast) and returns selected_indices [M, 3] rows of
# (batch, class, box); the keep vector is column 2 (Gather with a scalar index -> [M] int64).
# max_output_boxes_per_class is int64 max ("all"), no score threshold, center_point_box=0
# (corner boxes), IoU > iou_threshold suppresses as in the op. Selection order is by decreasing
# score, exact score ties by increasing index, in ONNX Runtime as in the op (stable sort, like
# torchvision). Zero boxes give an empty [0] keep vector.

@sym_help.parse_args("v", "v", "f")
def nms_opset11(g, boxes, scores, iou_threshold):
    boxes = sym_help._unsqueeze_helper(g, g.op("Cast", boxes, to_i=_FLOAT), [0])            # [1, N, 4]
    scores = sym_help._unsqueeze_helper(g, g.op("Cast", scores, to_i=_FLOAT), [0, 1])       # [1, 1, N]
    selected = g.op("NonMaxSuppression", boxes, scores,
                    _const(g, [sys.maxsize], torch.int64),
                    _const(g, [iou_threshold], torch.float32))                              # [M, 3]
    return g.op("Gather", selected, _const(g, 2, torch.int64), axis_i=1)                    # [M]


# --- amanet::adaptive_aggregation -> Unsqueeze, Mul, ReduceSum (Slice, Concat) ----------------
#
# G = features * Unsqueeze(gates, [3, 4]); S = ReduceSum(G, axes=[1], keepdims=0): the op's
# math, in the op's order (S sums the paths p = 0, 1, ...). Group sums: G itself for
# group_size 1; else one ReduceSum per group of paths (Slice on axis 1, keepdims=1) concatenated
# on axis 1, which needs P known when exporting (the model's P = 4 always is). group_size 0
# returns an empty [0] tensor of features' dtype like the op; the graph still computes G as an
# intermediate (ONNX has no fused form), which an ONNX runtime may fuse itself.

def _dtype_of(value, default=torch.float32):
    scalar_type = sym_help._try_get_scalar_type(value)
    return scalar_type.dtype() if scalar_type is not None else default


def _group_sums(g, gated, features, group_size):
    sizes = sym_help._get_tensor_sizes(features)
    paths = sizes[1] if sizes is not None and len(sizes) == 5 else None
    if not isinstance(paths, int):
        raise RuntimeError("amanet::adaptive_aggregation ONNX export: group_size "
                           f"{group_size} needs the number of paths (dim 1 of features) fixed when exporting")
    if paths % group_size != 0:
        raise RuntimeError(f"amanet::adaptive_aggregation ONNX export: group_size {group_size} "
                           f"does not divide P = {paths}")
    axis = _const(g, [1], torch.int64)
    parts = [g.op("ReduceSum", g.op("Slice", gated, _const(g, [k], torch.int64),
                                    _const(g, [k + group_size], torch.int64), axis), axis, keepdims_i=1)
             for k in range(0, paths, group_size)]
    return parts[0] if len(parts) == 1 else g.op("Concat", *parts, axis_i=1)


@sym_help.parse_args("v", "v", "i")
def adaptive_aggregation_opset13(g, features, gates, group_size):
    gated = g.op("Mul", features, g.op("Unsqueeze", gates, _const(g, [3, 4], torch.int64)))
    summed = g.op("ReduceSum", gated, _const(g, [1], torch.int64), keepdims_i=0)
    if group_size == 0:
        return g.op("Constant", value_t=torch.empty(0, dtype=_dtype_of(features))), summed
    if group_size == 1:
        return gated, summed
    return _group_sums(g, gated, features, group_size), summed


# --- amanet::uv_interp_loss -> Floor, Min/Max, Gather, Where, ReduceSum ---------------------
#
# Per axis of size S (read from Shape(u) at run time): lo = Cast(Max(Min(Floor(g), S-1), 0)),
# hi = Min(lo + 1, S - 1), w = Min(hi, g) - lo; 4-corner weights as the op; the corners are
# gathered from u / v flattened to [-1] at ((roi * C + part) * H + y) * W + x. Points that do
# not count (part == 0, and for mode 1 a coordinate outside [0, S)) are zeroed with Where
# (not a multiply, so a NaN at an ignored point cannot leak), then one ReduceSum over all
# points (0 for K = 0). Coordinates and targets are cast to u's dtype. No gradient in ONNX.

@sym_help.parse_args("v", "v", "v", "v", "v", "v", "v", "v", "i", "f")
def uv_interp_loss_opset13(g, u, v, roi_index, x, y, part, target_u, target_v, mode, beta):
    dtype = _dtype_of(u)
    onnx_dtype = {torch.float32: 1, torch.float64: 11, torch.float16: 10,
                  torch.bfloat16: 16}[dtype]  # ONNX TensorProto element types
    cast = lambda t: g.op("Cast", t, to_i=onnx_dtype)  # noqa: E731
    one_i = _const(g, 1, torch.int64)
    zero_f, one_f = _const(g, 0.0, dtype), _const(g, 1.0, dtype)
    shape = g.op("Shape", u)
    dim = lambda i: g.op("Gather", shape, _const(g, i, torch.int64), axis_i=0)  # noqa: E731
    channels, height, width = dim(1), dim(2), dim(3)

    def axis(coord, size):
        size_f = cast(size)
        top_i = g.op("Sub", size, one_i)
        lo = g.op("Cast", g.op("Max", g.op("Min", g.op("Floor", coord), cast(top_i)), zero_f),
                  to_i=_INT64)
        hi = g.op("Min", g.op("Add", lo, one_i), top_i)
        w = g.op("Sub", g.op("Min", cast(hi), coord), cast(lo))
        inside = g.op("And", g.op("GreaterOrEqual", coord, zero_f), g.op("Less", coord, size_f))
        return lo, hi, w, inside

    x, y = cast(x), cast(y)
    x_lo, x_hi, x_w, x_in = axis(x, width)
    y_lo, y_hi, y_w, y_in = axis(y, height)
    one_minus = lambda t: g.op("Sub", one_f, t)  # noqa: E731
    weights = [g.op("Mul", one_minus(x_w), one_minus(y_w)), g.op("Mul", x_w, one_minus(y_w)),
               g.op("Mul", one_minus(x_w), y_w), g.op("Mul", x_w, y_w)]
    plane = g.op("Mul", g.op("Add", g.op("Mul", roi_index, channels), part), height)
    rows = [g.op("Mul", g.op("Add", plane, y_lo), width), g.op("Mul", g.op("Add", plane, y_hi), width)]
    corners = [g.op("Add", rows[0], x_lo), g.op("Add", rows[0], x_hi),
               g.op("Add", rows[1], x_lo), g.op("Add", rows[1], x_hi)]
    flat_shape = _const(g, [-1], torch.int64)

    def interpolate(z):
        flat = g.op("Reshape", z, flat_shape)
        terms = [g.op("Mul", g.op("Gather", flat, idx, axis_i=0), w) for idx, w in zip(corners, weights)]
        return g.op("Add", g.op("Add", g.op("Add", terms[0], terms[1]), terms[2]), terms[3])

    def smooth_l1(diff):
        z = g.op("Abs", diff)
        if beta == 0:
            return z
        quadratic = g.op("Div", g.op("Mul", g.op("Mul", z, z), _const(g, 0.5, dtype)), _const(g, beta, dtype))
        linear = g.op("Sub", z, _const(g, 0.5 * beta, dtype))
        return g.op("Where", g.op("Less", z, _const(g, beta, dtype)), quadratic, linear)

    per_point = g.op("Add", smooth_l1(g.op("Sub", interpolate(u), cast(target_u))),
                     smooth_l1(g.op("Sub", interpolate(v), cast(target_v))))
    counted = g.op("Greater", part, _const(g, 0, torch.int64))
    if mode == 1:
        counted = g.op("And", counted, g.op("And", x_in, y_in))
    return g.op("ReduceSum", g.op("Where", counted, per_point, zero_f), keepdims_i=0)


# --- amanet::iuv_paste -> Loop over boxes (Range/Gather/ArgMax/Softmax/Where ...) -----------
#
# Standard ops only; the lowering and its precision are documented in iuv_paste_onnx.py: a Loop
# over the N boxes samples each chart at its box size with ATen's exact taps (Gather of the 4
# corners), appends it to the packed uint8 charts (a loop-carried vector) and composites it into
# a loop-carried [3, H, W] canvas where its rank (score desc, index asc) beats a carried [H, W]
# rank map. Opset >= 13 (Softmax on axis 0, Unsqueeze/ReduceSum with axes inputs). For
# TensorRT export inside `iuv_paste_onnx.onnx_profile("tensorrt")`: static shapes, float
# internals, whole image only (charts output empty).
from .iuv_paste_onnx import iuv_paste_opset13  # noqa: E402

_SYMBOLICS = [
    # (op name, symbolic, first opset it serves; a later entry wins from its opset on)
    ("roi_align", roi_align_opset10, 10),
    ("roi_align", roi_align_opset16, 16),
    ("nms", nms_opset11, 11),
    ("adaptive_aggregation", adaptive_aggregation_opset13, 13),
    ("uv_interp_loss", uv_interp_loss_opset13, 13),
    ("iuv_paste", iuv_paste_opset13, 13),
]

_registered = False


def register_onnx_symbolics() -> None:
    """Register the ONNX symbolic of every ``amanet::*`` op (idempotent)."""
    global _registered
    if _registered:
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the legacy exporter's deprecation notices
        for name, fn, opset in _SYMBOLICS:
            torch.onnx.register_custom_op_symbolic(f"{_DOMAIN}::{name}", fn, opset)
    _registered = True
