"""Standard-ONNX lowering of ``amanet::iuv_paste`` (registered by :mod:`amanet.ops.onnx_lowering`).

Default-domain operators only (opset >= 13), in one of two profiles (:func:`onnx_profile`):

``"onnxruntime"`` (default): exact, all three outputs.

- A ``Loop`` runs once per box (trip count N; zero boxes run it zero times). Its body takes box
  ``n``'s integer XYWH box, builds the source taps of ATen's bilinear resize for the rows
  ``0..h-1`` and columns ``0..w-1`` of the chart (``Range``, the float scale ``S / out``, the
  half-pixel source index with ATen's fused multiply-add emulated exactly in double, floor,
  clamp, the identity taps when ``out == S``), and samples with ``Gather`` along rows then
  columns (4 corners, width first as ATen's generic kernel) -> ``[25, h, w]`` fine logits,
  ``ArgMax`` (first maximum, like torch.argmax) -> part label. The gate: s1x ``ArgMax`` over the
  sampled coarse channels > 0; AMANet ``Softmax`` over the sampled mask channels, [1] >
  threshold. U and V are sampled only at the label (flat ``Gather`` of the 4 corners), coded
  ``Cast(Clip(255 * value, 0, 255), uint8)`` and zeroed where the label is 0.
- Charts: the body appends the flattened ``[3, h, w]`` chart to a loop-carried uint8 vector
  (ONNX Loop allows carried values to change shape), giving the op's packed layout directly;
  offsets are ``Concat(0, CumSum(w * h))``.
- Whole image: every box's chart is gathered into image coordinates (``Gather`` with the clipped
  row/column indices ``y - by``, ``x - bx``; pixels outside the box are masked) and written where
  its label is > 0, the pixel is inside the box and the box's rank beats the rank already
  written there (a loop-carried ``[H, W]`` rank map, initialised to "none"). ``rank`` is the
  box's position in (score descending, index ascending) order, computed from an ``[N, N]``
  comparison matrix (``Greater``/``Equal``/``Less`` + ``ReduceSum``), so ties follow the op.
  Boxes can be visited in index order because the rank test, not the visiting order, decides.

``"tensorrt"``: static shapes for TensorRT (whole image + offsets; charts output empty).
TensorRT 10 rejects data-dependent shapes (``Range(0, h)`` of a box value), loop-carried values
that change shape, uint8 tensors inside the network and double. This profile evaluates each box
on the image grid (``[H, W]``, clamped taps, masked writes), unrolls the K fine channels into a
running argmax over ``[H, W]`` maps, keeps the canvas and rank map in float and casts to uint8
only at the output; arithmetic is float (no double FMA emulation). Work per box is ``H * W``
pixels x (K + 4) samples: cheap on a GPU, slow in ONNX Runtime on large images (the tests run it
on small ones). It passes amanet.deploy.tensorrt.check_trt_compatibility (apart from that
checker's whole-graph input rule); TensorRT itself cannot be installed here.

Precision (measured in tests/test_ops_iuv_paste.py against the fused op): the "onnxruntime"
profile's taps are bit-exact with ATen's CPU kernel and its sampled values use ATen's generic-
kernel formula with the FMAs emulated exactly in double (one rounding of a float product plus a
float in double, then to float: double rounding can differ from a true FMA in ~1 of 2^29
cases). Boxes with ``h + w <= 128`` (where ATen switches to its channels-last kernel and another
summation order), the AMANet softmax (ONNX Runtime's exp) and the float-only "tensorrt" profile
can differ by an ulp, so a label can differ at exact near-ties and a code by 1 at an integer
boundary: the tests require >= 99.5 % equal pixels; measured: 100 % ("onnxruntime") and
>= 99.999 % ("tensorrt") on random inputs.
"""
from __future__ import annotations

import contextlib
from typing import Iterator

import torch
from torch.onnx import symbolic_helper as sym_help

try:  # torch >= 2.9 keeps the TorchScript exporter here
    from torch.onnx._internal.torchscript_exporter import jit_utils as _jit_utils
except ImportError:  # pragma: no cover - older torch
    from torch.onnx._internal import jit_utils as _jit_utils  # type: ignore[no-redef]

_TP = torch.onnx.TensorProtoDataType
FLOAT, DOUBLE, INT64, UINT8, BOOL = _TP.FLOAT, _TP.DOUBLE, _TP.INT64, _TP.UINT8, _TP.BOOL

# Emulate ATen's fused multiply-adds exactly (float -> double -> float); False uses float Mul/Add
# (about 2x cheaper in ONNX Runtime, ulp differences on ~1/3 of the sampled values).
EXACT_FMA = True

_NO_RANK = 2 ** 62  # rank-map value of a pixel no box has written


class _G:
    """Terse op builder over a GraphContext (the main graph or the loop body)."""

    def __init__(self, g, exact: bool = True):
        self.g = g
        self.exact = exact

    def child(self, g) -> "_G":
        return _G(g, self.exact)

    def __call__(self, name, *args, **kw):
        return self.g.op(name, *args, **kw)

    def i64(self, v):
        return self.g.op("Constant", value_t=torch.tensor(v, dtype=torch.int64))

    def f32(self, v):
        return self.g.op("Constant", value_t=torch.tensor(v, dtype=torch.float32))

    def u8(self, v):
        return self.g.op("Constant", value_t=torch.tensor(v, dtype=torch.uint8))

    def cast(self, x, to):
        return self.g.op("Cast", x, to_i=to)

    def take(self, x, index: int, axis: int = 0):
        """``x`` indexed by a constant scalar along ``axis`` (the axis is dropped)."""
        return self.g.op("Gather", x, self.i64(index), axis_i=axis)

    def unsq(self, x, axes):
        return self.g.op("Unsqueeze", x, self.i64(list(axes)))

    def fma(self, a, b, c):
        """``a * b + c`` for float tensors with one rounding (ATen's contracted FMA)."""
        if not self.exact:
            return self.g.op("Add", self.g.op("Mul", a, b), c)
        prod = self.g.op("Mul", self.cast(a, DOUBLE), self.cast(b, DOUBLE))  # exact in double
        return self.cast(self.g.op("Add", prod, self.cast(c, DOUBLE)), FLOAT)


def _taps(b: _G, o, length, size):
    """ATen's source taps of outputs ``o`` (1-D int64, within ``0..length-1``) when resizing
    ``size`` samples to ``length`` (int64 scalars). Returns ``(o, i0, i1, l0, l1)``: 1-D int64
    indices and float weights."""
    scale = b("Div", b.cast(size, FLOAT), b.cast(length, FLOAT))
    src = b.fma(scale, b("Add", b.cast(o, FLOAT), b.f32(0.5)), b.f32(-0.5))
    src = b("Max", src, b.f32(0.0))
    last = b("Sub", size, b.i64(1))
    i0 = b("Min", b.cast(b("Floor", src), INT64), last)
    l1 = b("Min", b("Max", b("Sub", src, b.cast(i0, FLOAT)), b.f32(0.0)), b.f32(1.0))
    l0 = b("Sub", b.f32(1.0), l1)
    i1 = b("Add", i0, b.cast(b("Less", i0, last), INT64))
    same = b("Equal", length, size)  # ATen copies when the size does not change
    return (o, b("Where", same, o, i0), b("Where", same, o, i1),
            b("Where", same, b.f32(1.0), l0), b("Where", same, b.f32(0.0), l1))


def _combine(b: _G, x00, x01, x10, x11, ty, tx):
    """ATen's generic (separable, width-first) bilinear formula; ``ty`` weights are ``[h, 1]``."""
    _, _, _, ly0, ly1 = ty
    _, _, _, lx0, lx1 = tx
    t0 = b.fma(x00, lx0, b("Mul", x01, lx1))
    t1 = b.fma(x10, lx0, b("Mul", x11, lx1))
    return b.fma(t0, ly0, b("Mul", t1, ly1))


def _resample(b: _G, x, ty, tx):
    """``[C, S_h, S_w]`` -> ``[C, h, w]`` at the taps (4-corner gathers, then _combine)."""
    _, iy0, iy1, _, _ = ty
    _, ix0, ix1, _, _ = tx
    r0 = b("Gather", x, iy0, axis_i=1)
    r1 = b("Gather", x, iy1, axis_i=1)
    return _combine(b, b("Gather", r0, ix0, axis_i=2), b("Gather", r0, ix1, axis_i=2),
                    b("Gather", r1, ix0, axis_i=2), b("Gather", r1, ix1, axis_i=2), ty, tx)


def _at_label(b: _G, flat, label, plane, s_w, ty, tx):
    """Values of the ``[K * S_h * S_w]`` flattened planes at the label's channel -> ``[h, w]``."""
    _, iy0, iy1, _, _ = ty
    _, ix0, ix1, _, _ = tx
    base = b("Mul", label, plane)
    row0 = b.unsq(b("Mul", iy0, s_w), [1])
    row1 = b.unsq(b("Mul", iy1, s_w), [1])
    corner = lambda row, col: b("Gather", flat, b("Add", b("Add", base, row), col), axis_i=0)  # noqa: E731
    return _combine(b, corner(row0, ix0), corner(row0, ix1), corner(row1, ix0), corner(row1, ix1),
                    ty, tx)


def _code(b: _G, value, fg):
    """uint8(clamp(255 * value, 0, 255)) where ``fg``, else 0."""
    code = b.cast(b("Clip", b("Mul", value, b.f32(255.0)), b.f32(0.0), b.f32(255.0)), UINT8)
    return b("Where", fg, code, b.u8(0))


def _ranks(b: _G, scores):
    """rank[n] = #{m: s_m > s_n} + #{m < n: s_m == s_n} (score descending, index ascending)."""
    n = b("Shape", scores)
    idx = b("Range", b.i64(0), b.take(n, 0), b.i64(1))
    s_row, s_col = b.unsq(scores, [0]), b.unsq(scores, [1])     # [1, N] (m), [N, 1] (n)
    i_row, i_col = b.unsq(idx, [0]), b.unsq(idx, [1])
    before = b("Or", b("Greater", s_row, s_col),
               b("And", b("Equal", s_row, s_col), b("Less", i_row, i_col)))
    return b("ReduceSum", b.cast(before, INT64), b.i64([1]), keepdims_i=0)


def _lower_box_frame(g, b: _G, fine, gate, u, v, boxes, rank, n_boxes, s_h, s_w, height, width,
                     mode, threshold, whole_image):
    """The "onnxruntime" profile: every chart at its box size (data-dependent shapes)."""
    plane = b("Mul", s_h, s_w)

    canvas0 = b("ConstantOfShape", b("Concat", b.i64([3]), b.unsq(height, [0]), b.unsq(width, [0]),
                                     axis_i=0), value_t=torch.tensor([0], dtype=torch.uint8))
    ranks0 = b("ConstantOfShape", b("Concat", b.unsq(height, [0]), b.unsq(width, [0]), axis_i=0),
               value_t=torch.tensor([_NO_RANK], dtype=torch.int64))
    packed0 = b("Constant", value_t=torch.zeros(0, dtype=torch.uint8))
    cond = b.cast(b.i64(1), BOOL)

    loop_outputs = 3 if whole_image else 1
    carried = (packed0, canvas0, ranks0) if whole_image else (packed0,)
    loop, (body_ctx,), _ = _jit_utils.add_op_with_blocks(g, "Loop", n_boxes, cond, *carried,
                                                         outputs=loop_outputs, n_blocks=1)
    body = body_ctx.block
    it = body.addInputToBlock()
    body.addInputToBlock()  # incoming condition
    packed = body.addInputToBlock()
    if whole_image:
        canvas, ranks = body.addInputToBlock(), body.addInputToBlock()
    c = b.child(body_ctx)

    box = c("Gather", boxes, it, axis_i=0)                        # [4] x, y, w, h
    bx, by, bw, bh = (c.take(box, i) for i in range(4))
    ty = _taps(c, c("Range", c.i64(0), bh, c.i64(1)), bh, s_h)
    tx = _taps(c, c("Range", c.i64(0), bw, c.i64(1)), bw, s_w)
    ty = ty[:3] + tuple(c.unsq(t, [1]) for t in ty[3:])             # row weights as [h, 1]

    fine_n = c("Gather", fine, it, axis_i=0)                      # [K, S_h, S_w]
    gate_n = c("Gather", gate, it, axis_i=0)                      # [Cg, S_h, S_w]
    label = c("ArgMax", _resample(c, fine_n, ty, tx), axis_i=0, keepdims_i=0)          # [h, w]
    gate_r = _resample(c, gate_n, ty, tx)
    if mode == 0:
        fg = c("Greater", c("ArgMax", gate_r, axis_i=0, keepdims_i=0), c.i64(0))
    else:
        prob = c.take(c("Softmax", gate_r, axis_i=0), 1)
        fg = c("Greater", prob, c.f32(float(threshold)))
    label = c("Where", fg, label, c.i64(0))
    pos = c("Greater", label, c.i64(0))
    u_code = _code(c, _at_label(c, c("Reshape", c("Gather", u, it, axis_i=0), c.i64([-1])),
                                label, plane, s_w, ty, tx), pos)
    v_code = _code(c, _at_label(c, c("Reshape", c("Gather", v, it, axis_i=0), c.i64([-1])),
                                label, plane, s_w, ty, tx), pos)
    chart = c("Concat", c.unsq(c.cast(label, UINT8), [0]), c.unsq(u_code, [0]),
              c.unsq(v_code, [0]), axis_i=0)                       # [3, h, w]
    outs = [c("Concat", packed, c("Reshape", chart, c.i64([-1])), axis_i=0)]

    if whole_image:
        yy, xx, in_y, in_x = _box_grid(c, height, width, bx, by, bw, bh)
        full = c("Gather", c("Gather", chart, yy, axis_i=1), xx, axis_i=2)          # [3, H, W]
        lab_full = c("Gather", c("Gather", label, yy, axis_i=0), xx, axis_i=1)       # [H, W]
        rank_n = c("Gather", rank, it, axis_i=0)
        write = c("And", c("And", c.unsq(in_y, [1]), c.unsq(in_x, [0])),
                  c("And", c("Greater", lab_full, c.i64(0)), c("Less", rank_n, ranks)))
        outs.append(c("Where", c.unsq(write, [0]), full, canvas))
        outs.append(c("Where", write, rank_n, ranks))

    body.registerOutput(c("Identity", cond))
    for o in outs:
        body.registerOutput(o)

    loop_values = list(loop) if isinstance(loop, (list, tuple)) else [loop]
    return loop_values[0], (loop_values[1] if whole_image else None)


def _box_grid(c: _G, height, width, bx, by, bw, bh):
    """For a box at ``(bx, by)`` of ``bw x bh`` chart pixels: the chart row of every image row and
    the chart column of every image column, clamped into the chart, and whether each row / column
    falls inside the box: ``(yy [H], xx [W], in_y [H], in_x [W])``."""
    yy = c("Sub", c("Range", c.i64(0), height, c.i64(1)), by)
    xx = c("Sub", c("Range", c.i64(0), width, c.i64(1)), bx)
    in_y = c("And", c("GreaterOrEqual", yy, c.i64(0)), c("Less", yy, bh))
    in_x = c("And", c("GreaterOrEqual", xx, c.i64(0)), c("Less", xx, bw))
    yy = c("Max", c("Min", yy, c("Sub", bh, c.i64(1))), c.i64(0))
    xx = c("Max", c("Min", xx, c("Sub", bw, c.i64(1))), c.i64(0))
    return yy, xx, in_y, in_x


def _lower_image_frame(g, b: _G, fine, gate, u, v, boxes, rank, n_boxes, s_h, s_w, height, width,
                       mode, threshold, k_parts: int):
    """The "tensorrt" profile: every shape follows from input shapes (no data-dependent shape),
    the loop-carried canvas ``[3, H, W]`` and rank map ``[H, W]`` are float with fixed shapes,
    no uint8 inside the graph and no double. Each box is evaluated on the image grid: rows and
    columns outside it are clamped to its edge for the taps and masked at the write, so the work
    per box is ``H * W`` pixels (a GPU's job; ONNX Runtime runs it too, slowly on big images).
    The K fine channels are unrolled (a running argmax over ``[H, W]`` maps) rather than sampled
    as one ``[K, H, W]`` tensor, to bound the memory. Charts are not produced (their sizes are
    data-dependent): the charts output is an empty uint8 tensor."""
    plane = b("Mul", s_h, s_w)
    hw = b("Concat", b.unsq(height, [0]), b.unsq(width, [0]), axis_i=0)
    canvas0 = b("ConstantOfShape", b("Concat", b.i64([3]), hw, axis_i=0),
                value_t=torch.tensor([0.0], dtype=torch.float32))
    ranks0 = b("ConstantOfShape", hw, value_t=torch.tensor([float(2 ** 24)], dtype=torch.float32))
    rank_f = b.cast(rank, FLOAT)
    cond = b.cast(b.i64(1), BOOL)
    loop, (body_ctx,), _ = _jit_utils.add_op_with_blocks(g, "Loop", n_boxes, cond, canvas0, ranks0,
                                                         outputs=2, n_blocks=1)
    body = body_ctx.block
    it = body.addInputToBlock()
    body.addInputToBlock()
    canvas, ranks = body.addInputToBlock(), body.addInputToBlock()
    c = b.child(body_ctx)

    box = c("Gather", boxes, it, axis_i=0)
    bx, by, bw, bh = (c.take(box, i) for i in range(4))
    yy, xx, in_y, in_x = _box_grid(c, height, width, bx, by, bw, bh)
    ty = _taps(c, yy, bh, s_h)
    tx = _taps(c, xx, bw, s_w)
    ty = ty[:3] + tuple(c.unsq(t, [1]) for t in ty[3:])             # row weights as [H, 1]
    _, iy0, iy1, _, _ = ty
    _, ix0, ix1, _, _ = tx

    fine_n = c("Gather", fine, it, axis_i=0)                       # [K, S_h, S_w]
    rows0 = c("Gather", fine_n, iy0, axis_i=1)                      # [K, H, S_w]
    rows1 = c("Gather", fine_n, iy1, axis_i=1)
    best = label = None
    for k in range(k_parts):
        r0, r1 = c.take(rows0, k), c.take(rows1, k)                  # [H, S_w]
        val = _combine(c, c("Gather", r0, ix0, axis_i=1), c("Gather", r0, ix1, axis_i=1),
                       c("Gather", r1, ix0, axis_i=1), c("Gather", r1, ix1, axis_i=1), ty, tx)
        if k == 0:
            best = val
            label = c("ConstantOfShape", c("Shape", val), value_t=torch.tensor([0.0]))
        else:
            take = c("Greater", val, best)                         # strictly: the first max wins
            best = c("Where", take, val, best)
            label = c("Where", take, c.f32(float(k)), label)
    gate_r = _resample(c, c("Gather", gate, it, axis_i=0), ty, tx)  # [Cg, H, W]
    if mode == 0:
        fg = c("Greater", c("ArgMax", gate_r, axis_i=0, keepdims_i=0), c.i64(0))
    else:
        fg = c("Greater", c.take(c("Softmax", gate_r, axis_i=0), 1), c.f32(float(threshold)))
    label = c("Where", fg, label, c.f32(0.0))                      # float part label
    pos = c("Greater", label, c.f32(0.0))
    label_i = c.cast(label, INT64)

    def code(t):
        flat = c("Reshape", c("Gather", t, it, axis_i=0), c.i64([-1]))
        value = _at_label(c, flat, label_i, plane, s_w, ty, tx)
        coded = c("Floor", c("Clip", c("Mul", value, c.f32(255.0)), c.f32(0.0), c.f32(255.0)))
        return c("Where", pos, coded, c.f32(0.0))

    chart = c("Concat", c.unsq(label, [0]), c.unsq(code(u), [0]), c.unsq(code(v), [0]), axis_i=0)
    rank_n = c("Gather", rank_f, it, axis_i=0)
    write = c("And", c("And", c.unsq(in_y, [1]), c.unsq(in_x, [0])),
              c("And", pos, c("Less", rank_n, ranks)))
    body.registerOutput(c("Identity", cond))
    body.registerOutput(c("Where", c.unsq(write, [0]), chart, canvas))
    body.registerOutput(c("Where", write, rank_n, ranks))
    canvas_out, _ = list(loop)
    return None, b.cast(canvas_out, UINT8)


PROFILES = ("onnxruntime", "tensorrt")
#: Lowering used by the next export: "onnxruntime" (default; exact, charts included) or
#: "tensorrt" (static shapes, whole image only). See :func:`onnx_profile`.
PROFILE = "onnxruntime"


@contextlib.contextmanager
def onnx_profile(name: str) -> Iterator[None]:
    """Export ``amanet::iuv_paste`` with the given lowering profile inside the block."""
    global PROFILE
    if name not in PROFILES:
        raise ValueError(f"iuv_paste ONNX profile must be one of {PROFILES}, got {name!r}")
    previous, PROFILE = PROFILE, name
    try:
        yield
    finally:
        PROFILE = previous


@sym_help.parse_args("v", "v", "v", "v", "v", "v", "i", "f", "v", "v", "b")
def iuv_paste_opset13(g, fine, gate, u, v, boxes, scores, mode, threshold, image_height,
                      image_width, whole_image):
    if mode not in (0, 1):
        raise torch.onnx.errors.SymbolicValueError(
            f"amanet::iuv_paste: mode must be 0 (s1x) or 1 (AMANet), got {mode}", fine)
    static = PROFILE == "tensorrt"
    b = _G(g, exact=not static and EXACT_FMA)
    fine_in = fine
    fine, gate, u, v = (b.cast(t, FLOAT) for t in (fine, gate, u, v))
    boxes = b.cast(boxes, INT64)
    shape = b("Shape", fine)
    n_boxes, s_h, s_w = b.take(shape, 0), b.take(shape, 2), b.take(shape, 3)
    height = b("Reshape", b.cast(image_height, INT64), b.i64([]))
    width = b("Reshape", b.cast(image_width, INT64), b.i64([]))
    sizes = b("Mul", b.take(boxes, 2, axis=1), b.take(boxes, 3, axis=1))      # [N] = w * h
    offsets = b("Concat", b.i64([0]), b("CumSum", sizes, b.i64(0)), axis_i=0)
    rank = _ranks(b, b.cast(scores, FLOAT if static else DOUBLE))
    empty = b("Constant", value_t=torch.zeros(0, dtype=torch.uint8))
    if static:
        sizes_in = sym_help._get_tensor_sizes(fine_in)
        if not sizes_in or sizes_in[1] is None:
            raise torch.onnx.errors.SymbolicValueError(
                "amanet::iuv_paste: the tensorrt profile needs a static part-channel count", fine_in)
        _, image = _lower_image_frame(g, b, fine, gate, u, v, boxes, rank, n_boxes, s_h, s_w, height,
                                      width, mode, threshold, int(sizes_in[1]))
        return empty, offsets, (image if whole_image else empty)
    charts, image = _lower_box_frame(g, b, fine, gate, u, v, boxes, rank, n_boxes, s_h, s_w, height,
                                     width, mode, threshold, whole_image)
    return charts, offsets, (image if whole_image else empty)
