"""TensorRT 10 engines from the ONNX export: a static compatibility check, the builder, a runner.

Three parts:

* :func:`check_trt_compatibility` - pure ONNX analysis (no TensorRT needed): every operator
  (subgraphs included) against :data:`TRT10_ONNX_OPS`, the restrictions of the TensorRT ONNX
  parser that matter for a two-stage detector (RoiAlign, NonMaxSuppression, TopK, Resize,
  pooling, If/Loop, constant-only inputs, element types), the opset range, the image input
  (only H and W dynamic) and, for fixed-size exports (``max_detections > 0``), that ONNX shape
  inference *proves* every output static (the declared output shapes are ignored: the exporter
  writes whatever the traced example produced, TensorRT computes its own).
* :func:`build_engine` - parse the ONNX with ``trt.OnnxParser``, one optimization profile for
  the input ``image [3, H, W]``, FP32 / FP16 / INT8 (entropy calibration over a folder of
  images), write the serialized engine and its metadata side file ``<engine>.json``.
* :class:`TensorRTRunner` - deserialize and run one image; outputs come back in the order of
  ``metadata["outputs"]`` as torch CUDA tensors (``execute_async_v3`` on torch-allocated
  buffers; data-dependent output shapes through an ``IOutputAllocator``).

TensorRT is imported lazily: without it (or without a CUDA GPU) the builder and the runner raise
:class:`TensorRTUnavailable` with a one-line message; the checker and the calibration data
preparation (:func:`prepare_calibration_image`, :class:`CalibrationImages`) work anywhere.

INT8: TensorRT 10.1 deprecated implicit quantization (``IInt8EntropyCalibrator2``) in favour
of explicit Q/DQ graphs, but every 10.x release still implements it, so that is what
``precision="int8"`` uses (with FP16 enabled too, as fallback for layers without INT8
kernels). Explicit quantization would need a Q/DQ-annotated ONNX, which we do not produce.
With FP16/INT8 the box and score arithmetic is kept in FP32 (:func:`pin_box_math_fp32`).

INT64: TensorRT 10 has native INT64 tensors (8.x cast them down to INT32), so the exporter's
int64 indices, shapes, ``classes`` and ``num_detections`` need no rewriting; the importers cast
where a layer wants INT32 (RoiAlign's batch indices, NonMaxSuppression's box limit, clamped).
"""
from __future__ import annotations

import json
import logging
import math
import os
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Sequence, Set, Tuple, Union

import numpy as np

from ..errors import AmanetError, InputError

logger = logging.getLogger(__name__)

PathLike = Union[str, os.PathLike]

# --------------------------------------------------------------------------------------------
# Facts from onnx-tensorrt's docs/operators.md, TensorRT 10.15 GA ("TensorRT 10.15 supports
# operators in the inclusive range of opset 9 to opset 24"), plus the parser sources where the
# table is silent (RoiAlign importer: ROIAlign_TRT plugin v2; NonMaxSuppression importer:
# INMSLayer, whose TopK box limit is documented with the layer).
# --------------------------------------------------------------------------------------------
TRT_DOC_VERSION = "10.15"
TRT_MIN_MAJOR = 10
TRT_OPSET_RANGE = (9, 24)
TRT_TOPK_K_LIMIT = 3840            # TopK: K must be < 3840
TRT_NMS_TOPK_BOX_LIMIT = 5000      # INMSLayer TopK box limit (2000 on SM 5.3 / 6.2 devices)
TRT_NMS_TOPK_BOX_LIMIT_SM53_62 = 2000
_AXES_CONST = "`axes` must be an initializer"
_SMALL_CONSTANT = 1 << 16   # initializers up to this many elements are read by value

#: ONNX operators the TensorRT 10 ONNX parser supports -> restriction ("" = none listed).
TRT10_ONNX_OPS: Dict[str, str] = {
    "Abs": "", "Acos": "", "Acosh": "", "Add": "", "And": "", "ArgMax": "", "ArgMin": "",
    "Asin": "", "Asinh": "", "Atan": "", "Atanh": "",
    "Attention": "Q, K, V and attn_mask 4-D; no past_key/past_value/nonpad_kv_seqlen inputs; "
                 "no present_key/present_value/qk_matmul_output outputs; no "
                 "qk_matmul_output_mode/softcap attributes; head counts from Q/K/V shapes",
    "AveragePool": "2-D or 3-D pooling only; `dilations` empty or all ones",
    "BatchNormalization": "", "BlackmanWindow": "", "Cast": "", "CastLike": "", "Ceil": "",
    "Celu": "", "Clip": "", "Concat": "",
    "Constant": "`sparse_value`, `value_string`, `value_strings` unsupported",
    "ConstantOfShape": "", "Conv": "", "ConvTranspose": "", "Cos": "", "Cosh": "",
    "CumSum": "`axis` must be a build-time constant",
    "DeformConv": "1-D or 2-D spatial input; begin and end `pads` equal per axis",
    "DepthToSpace": "",
    "DequantizeLinear": "`x_zero_point` must be zero",
    "Div": "",
    "Dropout": "`is_training` must be an initializer evaluating to False",
    "Einsum": "", "Elu": "", "Equal": "", "Erf": "", "Exp": "", "Expand": "",
    "EyeLike": "input must have static dimensions",
    "Flatten": "", "Floor": "", "Gather": "", "GatherElements": "", "GatherND": "", "Gelu": "",
    "Gemm": "", "GlobalAveragePool": "", "GlobalLpPool": "", "GlobalMaxPool": "", "Greater": "",
    "GreaterOrEqual": "",
    "GridSample": "4-D input only",
    "GroupNormalization": "",
    "GRU": "bidirectional: same activations for the forward and reverse pass",
    "HammingWindow": "", "HannWindow": "", "HardSigmoid": "", "HardSwish": "",
    "Hardmax": "the `axis` dimension must be a build-time constant",
    "Identity": "",
    "If": "both branches' outputs must have the same rank and different names",
    "ImageScaler": "", "InstanceNormalization": "", "IsInf": "", "IsNaN": "",
    "LayerNormalization": "only the first output `Y`",
    "LeakyRelu": "", "Less": "", "LessOrEqual": "", "Log": "", "LogSoftmax": "",
    "Loop": "scan outputs need a static length (trip count); loop-carried shapes must not "
            "change between iterations",
    "LRN": "",
    "LSTM": "bidirectional: same activations both ways; `input_forget` = 0; `layout` = 0",
    "LpNormalization": "",
    "LpPool": "`dilations` empty or all ones",
    "MatMul": "", "Max": "",
    "MaxPool": "2-D or 3-D pooling only; no `Indices` output; `dilations` empty or all ones",
    "Mean": "", "MeanVarianceNormalization": "", "Min": "", "Mish": "", "Mod": "", "Mul": "",
    "Neg": "",
    "NonMaxSuppression": "data-dependent output shape (TensorRT >= 8.5); boxes and scores 3-D",
    "NonZero": "data-dependent output shape (TensorRT >= 8.5)",
    "Not": "",
    "OneHot": "`depth` must be a build-time constant",
    "Or": "", "Pad": "", "ParametricSoftplus": "", "Pow": "", "PRelu": "",
    "QuantizeLinear": "`y_zero_point` must be 0",
    "RandomNormal": "`seed` ignored", "RandomNormalLike": "`seed` ignored",
    "RandomUniform": "`seed` ignored", "RandomUniformLike": "`seed` ignored",
    "Range": "", "Reciprocal": "",
    "ReduceL1": _AXES_CONST, "ReduceL2": _AXES_CONST, "ReduceLogSum": _AXES_CONST,
    "ReduceLogSumExp": _AXES_CONST, "ReduceMax": _AXES_CONST, "ReduceMean": _AXES_CONST,
    "ReduceMin": _AXES_CONST, "ReduceProd": _AXES_CONST, "ReduceSum": _AXES_CONST,
    "ReduceSumSquare": _AXES_CONST,
    "Relu": "", "Reshape": "",
    "Resize": "coordinate_transformation_mode half_pixel, pytorch_half_pixel, "
              "tf_half_pixel_for_nn, asymmetric or align_corners; mode nearest or linear; "
              "nearest_mode floor, ceil, round_prefer_floor or round_prefer_ceil; "
              "keep_aspect_ratio_policy stretch; no antialias; with a tensor `scales`, `axes` "
              "must be iota(rank)",
    "ReverseSequence": "", "RMSNormalization": "",
    "RNN": "bidirectional: same activations for the forward and reverse pass",
    "RoiAlign": "FP32/FP16 (ROIAlign_TRT plugin); rois [R, 4]; coordinate_transformation_mode "
                "half_pixel or output_half_pixel (honoured from opset 16)",
    "RotaryEmbedding": "`position_ids` must be INT64",
    "Round": "",
    "STFT": "`frame_step` and `window` must be initializers; real-valued input",
    "ScaledTanh": "", "Scan": "", "Scatter": "", "ScatterElements": "",
    "ScatterND": "`reduction` must be none",
    "Selu": "", "Shape": "", "Shrink": "", "Sigmoid": "", "Sign": "", "Sin": "", "Sinh": "",
    "Size": "", "Slice": "", "Softmax": "", "Softplus": "", "Softsign": "", "SpaceToDepth": "",
    "Split": "", "Sqrt": "",
    "Squeeze": "`axes` must be resolvable to a constant",
    "Sub": "", "Sum": "", "Tan": "", "Tanh": "",
    "TensorScatter": "`past_cache` and `update` 4-D; `axis` = -2",
    "ThresholdedRelu": "", "Tile": "",
    "TopK": "`sorted` must be 1; K must be < 3840",
    "Transpose": "", "Trilu": "",
    "Unsqueeze": "`axes` must be resolvable to a constant",
    "Upsample": "", "Where": "", "Xor": "",
}

#: Operators the same table lists as not supported.
TRT10_UNSUPPORTED_ONNX_OPS = frozenset({
    "AffineGrid", "Bernoulli", "BitShift", "BitwiseAnd", "BitwiseNot", "BitwiseOr",
    "BitwiseXor", "Col2Im", "CenterCropPad", "Compress", "ConcatFromSequence", "ConvInteger",
    "DFT", "Det", "DynamicQuantizeLinear", "ImageDecoder", "MatMulInteger", "MaxRoiPool",
    "MaxUnpool", "MelWeightMatrix", "Multinomial", "NegativeLogLikelihoodLoss", "Optional",
    "OptionalGetElement", "OptionalHasElement", "QLinearConv", "QLinearMatMul",
    "RegexFullMatch", "SequenceAt", "SequenceConstruct", "SequenceEmpty", "SequenceErase",
    "SequenceInsert", "SequenceLength", "SequenceMap", "SoftmaxCrossEntropyLoss",
    "SplitToSequence", "StringConcat", "StringNormalizer", "StringSplit", "TfIdfVectorizer",
    "Unique",
})

_RESIZE_COORD_MODES = {"half_pixel", "pytorch_half_pixel", "tf_half_pixel_for_nn", "asymmetric",
                       "align_corners"}
_RESIZE_MODES = {"nearest", "linear"}
_RESIZE_NEAREST_MODES = {"floor", "ceil", "round_prefer_floor", "round_prefer_ceil"}
_ROIALIGN_COORD_MODES = {"half_pixel", "output_half_pixel"}
_REDUCE_OPS = {op for op in TRT10_ONNX_OPS if op.startswith("Reduce")}
_STANDARD_DOMAINS = ("", "ai.onnx")

DETECTION_OUTPUTS = ("boxes", "scores", "classes")
IMAGE_INPUT = "image"

TRT_MISSING_MESSAGE = ("TensorRT is not installed (pip package tensorrt); building or running "
                       "an engine needs TensorRT 10 and an NVIDIA GPU")


class TensorRTUnavailable(AmanetError):
    """TensorRT (>= 10) or a CUDA GPU is missing; the message is one line."""


class TensorRTBuildError(AmanetError):
    """The ONNX did not parse or the engine did not build."""


# ============================================================================================
# Compatibility check (ONNX only)
# ============================================================================================
def _allowed_elem_types() -> Dict[int, str]:
    """ONNX element types TensorRT 10 accepts (DOUBLE is cast down to FLOAT by the parser)."""
    from onnx import TensorProto as T

    names = ["FLOAT", "FLOAT16", "BFLOAT16", "DOUBLE", "INT32", "INT64", "INT8", "UINT8", "BOOL",
             "FLOAT8E4M3FN", "INT4", "FLOAT4E2M1"]
    return {getattr(T, n): n for n in names if hasattr(T, n)}


def _elem_type_name(t: int) -> str:
    import onnx
    try:
        return onnx.TensorProto.DataType.Name(t)
    except ValueError:
        return str(t)


def _attr(node, name: str, default: Any = None) -> Any:
    import onnx
    for a in node.attribute:
        if a.name == name:
            v = onnx.helper.get_attribute_value(a)
            return v.decode() if isinstance(v, bytes) else v
    return default


def _node_label(node) -> str:
    return f"{node.op_type} '{node.name}'" if node.name else node.op_type


class _GraphFacts:
    """Constants, producers and (re-)inferred types of every tensor of a model."""

    def __init__(self, model):
        import onnx
        from onnx import numpy_helper

        self.model = model
        self.opset = 0
        for imp in model.opset_import:
            if imp.domain in _STANDARD_DOMAINS:
                self.opset = int(imp.version)
        self.consts: Dict[str, np.ndarray] = {}              # small constants, by value
        self.big: Dict[str, Tuple[List[int], int]] = {}     # weights: dims, element type
        self.producer: Dict[str, Any] = {}
        self.nodes: List[Any] = []       # every node, subgraphs included
        self.types: Dict[str, Any] = {}  # name -> TypeProto.Tensor

        def walk(g):
            for init in g.initializer:
                if math.prod(init.dims) <= _SMALL_CONSTANT:
                    self.consts[init.name] = numpy_helper.to_array(init)
                else:
                    self.big[init.name] = (list(init.dims), int(init.data_type))
            for n in g.node:
                self.nodes.append(n)
                for o in n.output:
                    if o:
                        self.producer[o] = n
                if n.op_type == "Constant" and n.domain in _STANDARD_DOMAINS and n.output:
                    value = self._constant_value(n)
                    if value is not None:
                        self.consts[n.output[0]] = value
                for a in n.attribute:
                    if a.type == onnx.AttributeProto.GRAPH:
                        walk(a.g)
                    for sub in a.graphs:
                        walk(sub)

        walk(model.graph)
        self.inference_error: Optional[str] = None
        self._infer_types()

    @staticmethod
    def _constant_value(node) -> Optional[np.ndarray]:
        from onnx import numpy_helper
        for a in node.attribute:
            if a.name == "value":
                return numpy_helper.to_array(a.t)
            if a.name == "value_int":
                return np.asarray(a.i, dtype=np.int64)
            if a.name == "value_ints":
                return np.asarray(list(a.ints), dtype=np.int64)
            if a.name == "value_float":
                return np.asarray(a.f, dtype=np.float32)
            if a.name == "value_floats":
                return np.asarray(list(a.floats), dtype=np.float32)
        return None

    def _infer_types(self) -> None:
        """ONNX shape inference from scratch: declared output shapes and value_info dropped."""
        import onnx

        src = self.model.graph
        g = onnx.GraphProto(name=src.name)
        g.node.extend(src.node)
        g.input.extend(src.input)
        g.output.extend(src.output)
        for o in g.output:
            o.type.tensor_type.ClearField("shape")
        declared = {i.name for i in src.input}
        for init in src.initializer:   # weights as typed inputs: same shapes, no bytes copied
            if init.name in self.big:
                if init.name not in declared:
                    g.input.append(onnx.helper.make_tensor_value_info(
                        init.name, init.data_type, list(init.dims)))
            else:
                g.initializer.append(init)
        m = onnx.ModelProto(ir_version=self.model.ir_version)
        m.opset_import.extend(self.model.opset_import)
        m.functions.extend(self.model.functions)
        m.graph.CopyFrom(g)
        try:
            m = onnx.shape_inference.infer_shapes(m, check_type=False, strict_mode=False,
                                                  data_prop=True)
        except Exception as e:  # noqa: BLE001 - reported as a problem by the caller
            self.inference_error = str(e).strip().splitlines()[0] if str(e).strip() else repr(e)
        self.inferred = m

        def collect(g):
            for vi in list(g.input) + list(g.output) + list(g.value_info):
                if vi.type.HasField("tensor_type"):
                    self.types[vi.name] = vi.type.tensor_type
            for n in g.node:
                for a in n.attribute:
                    if a.type == onnx.AttributeProto.GRAPH:
                        collect(a.g)
                    for sub in a.graphs:
                        collect(sub)

        collect(m.graph)

    # -- helpers -------------------------------------------------------------------------------
    def const(self, name: str) -> Optional[np.ndarray]:
        return self.consts.get(name) if name else None

    def is_const(self, name: str) -> bool:
        return bool(name) and (name in self.consts or name in self.big)

    def dims(self, name: str) -> Optional[List[Optional[int]]]:
        """Inferred dims (None for unknown/symbolic), or None if the rank is unknown."""
        t = self.types.get(name)
        if t is None or not t.HasField("shape"):
            c = self.consts.get(name)
            if c is None:
                return self.big[name][0] if name in self.big else None
            return [int(x) for x in c.shape]
        return [d.dim_value if d.HasField("dim_value") else None for d in t.shape.dim]

    def elem_type(self, name: str) -> Optional[int]:
        t = self.types.get(name)
        if t is not None and t.elem_type:
            return int(t.elem_type)
        if name in self.big:
            return self.big[name][1]
        c = self.consts.get(name)
        if c is not None:
            from onnx import helper
            try:
                return int(helper.np_dtype_to_tensor_dtype(c.dtype))
            except (KeyError, TypeError, ValueError):
                return None
        return None

    # -- integer upper bounds (for TopK's K) ---------------------------------------------------
    def upper_bound(self, name: str) -> Optional[float]:
        """A bound on *every* element of ``name``, or None when it cannot be shown."""
        return self._ub(name, every=True, depth=0)

    def _ub(self, name: str, every: bool, depth: int) -> Optional[float]:
        if depth > 64 or not name:
            return None
        c = self.consts.get(name)
        if c is not None:
            if c.size == 0:
                return None
            return float(np.max(c) if every else np.min(c))
        n = self.producer.get(name)
        if n is None:
            return None
        op, ins = n.op_type, list(n.input)
        d = depth + 1
        passthrough = {"Identity", "Cast", "Reshape", "Squeeze", "Unsqueeze", "Flatten"}
        if op in passthrough:
            return self._ub(ins[0], every, d)
        if not every and op == "Concat":   # the minimum element is <= any part's minimum
            bounds = [b for b in (self._ub(i, False, d) for i in ins) if b is not None]
            return min(bounds) if bounds else None
        if not every:
            return self._ub(name, True, d)
        # bounds valid for every element
        if op in ("Expand", "Tile", "Gather", "GatherElements", "GatherND", "Slice",
                  "Transpose", "ReduceMax"):
            return self._ub(ins[0], True, d)
        if op in ("Concat", "Max"):
            bounds = [self._ub(i, True, d) for i in ins if i]
            return None if not bounds or any(b is None for b in bounds) else max(bounds)
        if op == "Min":
            bounds = [b for b in (self._ub(i, True, d) for i in ins if i) if b is not None]
            return min(bounds) if bounds else None
        if op == "Clip":
            bounds = [b for b in (self._ub(ins[0], True, d),
                                  self._ub(ins[2], True, d) if len(ins) > 2 else None)
                      if b is not None]
            return min(bounds) if bounds else None
        if op == "ReduceMin":
            axes = _attr(n, "axes")
            if axes is None and len(ins) > 1 and ins[1]:
                axes = self.const(ins[1])
                if axes is None:
                    return self._ub(ins[0], True, d)
            rank = len(self.dims(ins[0]) or [None, None])
            full = axes is None or len(axes) == 0 or rank == 1
            if full and not _attr(n, "noop_with_empty_axes", 0):
                return self._ub(ins[0], False, d)
            return self._ub(ins[0], True, d)
        return None


def check_trt_compatibility(onnx_path: PathLike) -> List[str]:
    """Problems that would stop TensorRT 10 from parsing ``onnx_path`` or make the engine
    differ from the ONNX graph; an empty list means compatible. No TensorRT needed.

    The rules come from onnx-tensorrt's operator table (TensorRT 10.15, see
    :data:`TRT10_ONNX_OPS`) and its importers:

    * default-domain opset in 9..24; no custom-domain ops (they would need plugins);
    * every op (subgraphs included) supported, not in :data:`TRT10_UNSUPPORTED_ONNX_OPS`;
    * element types TensorRT 10 has (no INT16/UINT16/UINT32/UINT64/STRING/COMPLEX; UINT8 only
      as a network input/output); Cast targets likewise;
    * RoiAlign: sampling_ratio explicit and >= 0 (the importer's default differs from ONNX's),
      coordinate mode half_pixel/output_half_pixel at opset >= 16, mode avg/max, rois [R, 4]
      with a static 4, FP32/FP16 input;
    * NonMaxSuppression: 3-D boxes and scores, center_point_box 0/1; TopK: sorted=1 and K
      provably < 3840 (constant, or bounded through Min/ReduceMin/Concat/Reshape of constants);
    * Resize modes/coordinate modes/nearest modes/aspect policy/antialias/axes; pooling
      dilations, 2-D/3-D kernels, no MaxPool Indices; If branches (output count, rank, distinct
      names); Loop scan outputs with a constant trip count; constant axes/depth/axis inputs
      (Squeeze, Unsqueeze, Reduce*, CumSum, OneHot); Dropout, ScatterND, Q/DQ zero points,
      BatchNormalization/LayerNormalization outputs, Constant attributes, LSTM, EyeLike,
      GridSample;
    * exactly one input ``image [3, H, W]`` with only H and W dynamic;
    * with ``max_detections = M > 0`` (metadata, or a ``num_detections`` output): the outputs
      re-inferred from scratch are static: boxes [M, 4], scores/classes [M], every DensePose
      output [M, C, S, S] (C from the metadata's ``output_channels``), num_detections [1];
    * the config's NMS candidate counts within INMSLayer's TopK box limit (5000).
    """
    import onnx

    path = Path(onnx_path)
    if not path.is_file():
        raise FileNotFoundError(f"ONNX file not found: {path}")
    model = onnx.load(str(path))
    facts = _GraphFacts(model)
    problems: List[str] = []
    if facts.inference_error:
        problems.append(f"ONNX shape inference failed, shapes cannot be verified: "
                        f"{facts.inference_error}")
    _check_opset(model, facts, problems)
    _check_ops(facts, problems)
    _check_elem_types(model, facts, problems)
    for node in facts.nodes:
        if node.domain in _STANDARD_DOMAINS:
            check = _NODE_CHECKS.get(node.op_type)
            if check is not None:
                check(node, facts, problems)
    meta = _metadata_of(model)
    _check_io(model, facts, meta, problems)
    if meta is not None:
        _check_model_config(meta, problems)
    return list(dict.fromkeys(problems))   # de-duplicated, order kept


# The ONNX metadata key and format version of amanet.deploy.onnx / amanet.deploy.metadata,
# repeated here so that this module (the checker, the runner) imports neither the model code nor
# the op library; tests/test_tensorrt.py checks that they agree.
_ONNX_METADATA_KEY = "amanet"
_EXPORT_FORMAT = 1


def _parse_metadata(text: str, source: str) -> Dict[str, Any]:
    meta = json.loads(text)
    if meta.get("amanet_export_format") != _EXPORT_FORMAT:
        raise ValueError(f"{source}: unsupported amanet export format "
                         f"{meta.get('amanet_export_format')!r} (expected {_EXPORT_FORMAT})")
    return meta


def _metadata_of(model) -> Optional[Dict[str, Any]]:
    for p in model.metadata_props:
        if p.key == _ONNX_METADATA_KEY:
            try:
                return _parse_metadata(p.value, "ONNX metadata")
            except ValueError:
                return None
    return None


def read_onnx_metadata(path: PathLike) -> Dict[str, Any]:
    """The amanet metadata of an ONNX export (like :func:`amanet.deploy.onnx.read_metadata`)."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    for p in model.metadata_props:
        if p.key == _ONNX_METADATA_KEY:
            return _parse_metadata(p.value, str(path))
    raise ValueError(f"{path} is not an amanet ONNX export (no '{_ONNX_METADATA_KEY}' metadata)")


def _check_opset(model, facts: _GraphFacts, problems: List[str]) -> None:
    lo, hi = TRT_OPSET_RANGE
    if not any(imp.domain in _STANDARD_DOMAINS for imp in model.opset_import):
        problems.append("the model imports no default-domain (ai.onnx) opset")
    elif not lo <= facts.opset <= hi:
        problems.append(f"opset {facts.opset} is outside TensorRT {TRT_DOC_VERSION}'s supported "
                        f"range {lo}..{hi}")


def _check_ops(facts: _GraphFacts, problems: List[str]) -> None:
    seen: Dict[Tuple[str, str], List[Any]] = {}
    for n in facts.nodes:
        seen.setdefault((n.domain, n.op_type), []).append(n)
    for (domain, op), nodes in sorted(seen.items()):
        example = _node_label(nodes[0])
        count = f"{len(nodes)} node{'s' if len(nodes) > 1 else ''}, e.g. {example}"
        if domain not in _STANDARD_DOMAINS:
            problems.append(f"operator {domain}::{op} ({count}) is not a standard ONNX operator; "
                            f"TensorRT would need a plugin for it")
        elif op in TRT10_UNSUPPORTED_ONNX_OPS:
            problems.append(f"operator {op} ({count}) is not supported by the TensorRT "
                            f"{TRT_DOC_VERSION} ONNX parser")
        elif op not in TRT10_ONNX_OPS:
            problems.append(f"operator {op} ({count}) is not in the TensorRT {TRT_DOC_VERSION} "
                            f"ONNX parser's operator table")


def _check_elem_types(model, facts: _GraphFacts, problems: List[str]) -> None:
    from onnx import TensorProto

    allowed = _allowed_elem_types()
    io_names = {v.name for v in list(model.graph.input) + list(model.graph.output)}
    bad: Dict[str, List[str]] = {}
    names = set(facts.types) | set(facts.consts) | set(facts.big)
    for name in sorted(names):
        t = facts.elem_type(name)
        if t is None or t == TensorProto.UNDEFINED:
            continue
        if t not in allowed:
            bad.setdefault(_elem_type_name(t), []).append(name)
        elif t == TensorProto.UINT8 and name not in io_names:
            bad.setdefault("UINT8 (allowed only for network inputs/outputs)", []).append(name)
    for tname, tensors in sorted(bad.items()):
        problems.append(f"element type {tname} is not supported by TensorRT 10 (tensors: "
                        f"{', '.join(tensors[:3])}{', ...' if len(tensors) > 3 else ''})")


# -- per-operator rules ----------------------------------------------------------------------
def _need_const(node, facts: _GraphFacts, index: int, what: str, problems: List[str]) -> None:
    if len(node.input) > index and node.input[index] and not facts.is_const(node.input[index]):
        problems.append(f"{_node_label(node)}: {what} must be a constant (initializer or Constant "
                        f"node) for TensorRT, got the computed tensor '{node.input[index]}'")


def _check_pool(node, facts: _GraphFacts, problems: List[str]) -> None:
    dil = _attr(node, "dilations")
    if dil and any(int(x) != 1 for x in dil):
        problems.append(f"{_node_label(node)}: dilations {list(dil)} unsupported (must be 1)")
    if node.op_type in ("MaxPool", "AveragePool"):
        ks = _attr(node, "kernel_shape") or []
        if len(ks) not in (2, 3):
            problems.append(f"{_node_label(node)}: only 2-D or 3-D pooling is supported "
                            f"(kernel_shape {list(ks)})")
    if node.op_type == "MaxPool" and len(node.output) > 1 and node.output[1]:
        problems.append(f"{_node_label(node)}: the Indices output is not supported")


def _check_roialign(node, facts: _GraphFacts, problems: List[str]) -> None:
    label = _node_label(node)
    mode = _attr(node, "coordinate_transformation_mode")
    if mode is not None:
        if facts.opset < 16:
            problems.append(f"{label}: coordinate_transformation_mode needs opset >= 16 "
                            f"(TensorRT ignores it at opset {facts.opset})")
        elif mode not in _ROIALIGN_COORD_MODES:
            problems.append(f"{label}: coordinate_transformation_mode '{mode}' is not "
                            f"half_pixel/output_half_pixel")
    pool = _attr(node, "mode", "avg")
    if pool not in ("avg", "max"):
        problems.append(f"{label}: mode '{pool}' unsupported (avg or max)")
    sr = _attr(node, "sampling_ratio")
    if sr is None:
        problems.append(f"{label}: sampling_ratio must be set explicitly (TensorRT's importer "
                        f"defaults to 1, ONNX to 0)")
    elif int(sr) < 0:
        problems.append(f"{label}: sampling_ratio {sr} must be >= 0 (0 = adaptive)")
    if len(node.input) >= 2:
        d = facts.dims(node.input[1])
        if d is None or len(d) != 2 or d[1] != 4:
            shown = "unknown" if d is None else str(["?" if x is None else x for x in d])
            problems.append(f"{label}: rois must be [R, 4] with a static 4 (inferred {shown})")
    if node.input:
        t = facts.elem_type(node.input[0])
        from onnx import TensorProto
        if t is not None and t not in (TensorProto.FLOAT, TensorProto.FLOAT16):
            problems.append(f"{label}: input type {_elem_type_name(t)} unsupported (the "
                            f"ROIAlign_TRT plugin takes FP32/FP16)")


def _check_nms(node, facts: _GraphFacts, problems: List[str]) -> None:
    label = _node_label(node)
    for i, what in ((0, "boxes"), (1, "scores")):
        if len(node.input) > i:
            d = facts.dims(node.input[i])
            if d is not None and len(d) != 3:
                problems.append(f"{label}: {what} must be 3-D (rank {len(d)})")
    if int(_attr(node, "center_point_box", 0)) not in (0, 1):
        problems.append(f"{label}: center_point_box must be 0 or 1")


def _check_topk(node, facts: _GraphFacts, problems: List[str]) -> None:
    label = _node_label(node)
    if int(_attr(node, "sorted", 1)) != 1:
        problems.append(f"{label}: sorted=0 is unsupported (TensorRT needs sorted=1)")
    if facts.opset < 10:
        k = _attr(node, "k")
        bound = None if k is None else float(k)
    else:
        bound = facts.upper_bound(node.input[1]) if len(node.input) > 1 else None
    if bound is None:
        problems.append(f"{label}: K cannot be shown to be < {TRT_TOPK_K_LIMIT} (it is computed "
                        f"at run time with no constant bound)")
    elif bound >= TRT_TOPK_K_LIMIT:
        problems.append(f"{label}: K may be {int(bound)}, TensorRT needs K < {TRT_TOPK_K_LIMIT}")


def _check_resize(node, facts: _GraphFacts, problems: List[str]) -> None:
    label = _node_label(node)
    mode = _attr(node, "mode", "nearest")
    if mode not in _RESIZE_MODES:
        problems.append(f"{label}: mode '{mode}' unsupported (nearest or linear)")
    if facts.opset >= 11:
        ctm = _attr(node, "coordinate_transformation_mode", "half_pixel")
        if ctm not in _RESIZE_COORD_MODES:
            problems.append(f"{label}: coordinate_transformation_mode '{ctm}' unsupported")
        if mode == "nearest":
            nm = _attr(node, "nearest_mode", "round_prefer_floor")
            if nm not in _RESIZE_NEAREST_MODES:
                problems.append(f"{label}: nearest_mode '{nm}' unsupported")
    policy = _attr(node, "keep_aspect_ratio_policy", "stretch")
    if policy != "stretch":
        problems.append(f"{label}: keep_aspect_ratio_policy '{policy}' unsupported (stretch)")
    if int(_attr(node, "antialias", 0)):
        problems.append(f"{label}: antialias is not supported")
    axes = _attr(node, "axes")
    has_sizes = len(node.input) > 3 and node.input[3]
    if axes is not None and not has_sizes and len(node.input) > 2 and node.input[2] \
            and not facts.is_const(node.input[2]):
        rank = len(facts.dims(node.input[0]) or [])
        if [int(a) % max(rank, 1) for a in axes] != list(range(rank)):
            problems.append(f"{label}: with a computed `scales` tensor, `axes` must be "
                            f"0..rank-1 (got {list(axes)})")


def _check_if(node, facts: _GraphFacts, problems: List[str]) -> None:
    label = _node_label(node)
    then_g, else_g = _attr(node, "then_branch"), _attr(node, "else_branch")
    if then_g is None or else_g is None:
        return
    if len(then_g.output) != len(else_g.output):
        problems.append(f"{label}: then/else branches have different numbers of outputs")
        return
    for a, b in zip(then_g.output, else_g.output):
        if a.name == b.name:
            problems.append(f"{label}: both branches output the same tensor name '{a.name}' "
                            f"(TensorRT needs different names)")
        ra, rb = facts.dims(a.name), facts.dims(b.name)
        if ra is not None and rb is not None and len(ra) != len(rb):
            problems.append(f"{label}: branch outputs '{a.name}' and '{b.name}' have different "
                            f"ranks ({len(ra)} vs {len(rb)})")


def _check_loop(node, facts: _GraphFacts, problems: List[str]) -> None:
    body = _attr(node, "body")
    if body is None:
        return
    carried = max(len(node.input) - 2, 0)
    scan_outputs = len(body.output) - 1 - carried
    if scan_outputs > 0:
        trip = node.input[0] if node.input else ""
        if not trip or not facts.is_const(trip):
            problems.append(f"{_node_label(node)}: has {scan_outputs} scan output(s) but no "
                            f"constant trip count (TensorRT needs a static scan output length)")


def _check_constant(node, facts: _GraphFacts, problems: List[str]) -> None:
    for name in ("sparse_value", "value_string", "value_strings"):
        if any(a.name == name for a in node.attribute):
            problems.append(f"{_node_label(node)}: attribute {name} is not supported")


def _check_cast(node, facts: _GraphFacts, problems: List[str]) -> None:
    to = _attr(node, "to")
    if to is not None and int(to) not in _allowed_elem_types():
        problems.append(f"{_node_label(node)}: cast to {_elem_type_name(int(to))} is not "
                        f"supported by TensorRT 10")


def _check_single_output(node, facts: _GraphFacts, problems: List[str]) -> None:
    if any(o for o in node.output[1:]):
        problems.append(f"{_node_label(node)}: only the first output is supported")
    if node.op_type == "BatchNormalization" and int(_attr(node, "training_mode", 0)):
        problems.append(f"{_node_label(node)}: training_mode=1 is not supported")


def _check_reduce(node, facts: _GraphFacts, problems: List[str]) -> None:
    _need_const(node, facts, 1, "`axes`", problems)


def _check_squeeze(node, facts: _GraphFacts, problems: List[str]) -> None:
    _need_const(node, facts, 1, "`axes`", problems)


def _check_dropout(node, facts: _GraphFacts, problems: List[str]) -> None:
    if len(node.input) > 2 and node.input[2]:
        value = facts.const(node.input[2])
        if value is None or bool(np.any(value)):
            problems.append(f"{_node_label(node)}: training_mode must be a constant False")


def _check_scatternd(node, facts: _GraphFacts, problems: List[str]) -> None:
    red = _attr(node, "reduction", "none")
    if red != "none":
        problems.append(f"{_node_label(node)}: reduction '{red}' is not supported")


def _check_zero_point(node, facts: _GraphFacts, problems: List[str]) -> None:
    if len(node.input) > 2 and node.input[2]:
        zp = facts.const(node.input[2])
        if zp is None or bool(np.any(zp)):
            problems.append(f"{_node_label(node)}: the zero point must be a constant zero")


def _check_lstm(node, facts: _GraphFacts, problems: List[str]) -> None:
    if int(_attr(node, "input_forget", 0)) or int(_attr(node, "layout", 0)):
        problems.append(f"{_node_label(node)}: input_forget and layout must be 0")


def _check_eyelike(node, facts: _GraphFacts, problems: List[str]) -> None:
    d = facts.dims(node.input[0]) if node.input else None
    if d is None or any(x is None for x in d):
        problems.append(f"{_node_label(node)}: the input must have static dimensions")


def _check_gridsample(node, facts: _GraphFacts, problems: List[str]) -> None:
    d = facts.dims(node.input[0]) if node.input else None
    if d is not None and len(d) != 4:
        problems.append(f"{_node_label(node)}: only 4-D input is supported")


_NODE_CHECKS = {
    "AveragePool": _check_pool, "MaxPool": _check_pool, "LpPool": _check_pool,
    "RoiAlign": _check_roialign, "NonMaxSuppression": _check_nms, "TopK": _check_topk,
    "Resize": _check_resize, "If": _check_if, "Loop": _check_loop,
    "Constant": _check_constant, "Cast": _check_cast,
    "BatchNormalization": _check_single_output, "LayerNormalization": _check_single_output,
    "Squeeze": _check_squeeze, "Unsqueeze": _check_squeeze,
    "CumSum": lambda n, f, p: _need_const(n, f, 1, "`axis`", p),
    "OneHot": lambda n, f, p: _need_const(n, f, 1, "`depth`", p),
    "Dropout": _check_dropout, "ScatterND": _check_scatternd,
    "QuantizeLinear": _check_zero_point, "DequantizeLinear": _check_zero_point,
    "LSTM": _check_lstm, "EyeLike": _check_eyelike, "GridSample": _check_gridsample,
    **{op: _check_reduce for op in _REDUCE_OPS},
}


# -- inputs, outputs, model-level rules --------------------------------------------------------
def _fmt_dims(d: Optional[List[Optional[int]]]) -> str:
    return "unknown" if d is None else "[" + ", ".join("?" if x is None else str(x)
                                                      for x in d) + "]"


def _check_io(model, facts: _GraphFacts, meta: Optional[Dict[str, Any]],
              problems: List[str]) -> None:
    from onnx import TensorProto

    inits = {i.name for i in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in inits]
    names = [i.name for i in inputs]
    if names != [IMAGE_INPUT]:
        problems.append(f"the graph must have exactly one input '{IMAGE_INPUT}', got {names}")
    for inp in inputs:
        if inp.name != IMAGE_INPUT:
            continue
        tt = inp.type.tensor_type
        if tt.elem_type not in (TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.UINT8):
            problems.append(f"input '{IMAGE_INPUT}' has type {_elem_type_name(tt.elem_type)} "
                            f"(float32, float16 or uint8 expected)")
        dims = list(tt.shape.dim) if tt.HasField("shape") else None
        if dims is None or len(dims) != 3:
            problems.append(f"input '{IMAGE_INPUT}' must be [3, H, W], got rank "
                            f"{'unknown' if dims is None else len(dims)}")
        elif not (dims[0].HasField("dim_value") and dims[0].dim_value == 3):
            problems.append(f"input '{IMAGE_INPUT}': only H and W may be dynamic, the channel "
                            f"dimension must be a static 3 (got "
                            f"{dims[0].dim_param or dims[0].dim_value or '?'})")

    outs = [o.name for o in model.graph.output]
    expected = list(meta["outputs"]) if meta is not None else None
    if expected is not None and outs != expected:
        problems.append(f"graph outputs {outs} differ from the metadata's {expected}")
    m = int(meta.get("max_detections", 0)) if meta is not None else 0
    if meta is None and "num_detections" in outs:
        d = facts.dims("boxes") if "boxes" in outs else None
        m = d[0] if d and d[0] else -1   # fixed size but M unknown: check staticness only
    if m == 0:
        return   # dynamic outputs: the runner uses an IOutputAllocator (TensorRT >= 8.5)
    s = meta.get("heatmap_size") if meta is not None else None
    parts = meta.get("num_parts") if meta is not None else None
    # channels per DensePose output: the metadata's (every head kind), else the V1ConvX ones
    channels = (meta or {}).get("output_channels") or {
        "gate": 2, "fine_segm": parts, "u": parts, "v": parts}
    want: Dict[str, List[Optional[int]]] = {
        "boxes": [m, 4], "scores": [m], "classes": [m], "num_detections": [1]}
    want.update({name: [m, c, s, s] for name, c in channels.items()})
    for name in DETECTION_OUTPUTS + tuple(channels) + ("num_detections",):
        if name not in outs:
            problems.append(f"output '{name}' is missing (max_detections={m})")
            continue
        d = facts.dims(name)
        if d is None or any(x is None for x in d):
            problems.append(f"output '{name}' is not static with max_detections={m}: shape "
                            f"inference gives {_fmt_dims(d)} (TensorRT would treat it as "
                            f"data-dependent)")
            continue
        w = want[name]
        if len(d) != len(w) or any(x is not None and x > 0 and x != y for x, y in zip(w, d)):
            problems.append(f"output '{name}' has shape {_fmt_dims(d)}, expected "
                            f"{_fmt_dims([x if x is None or x > 0 else None for x in w])}")


def _check_model_config(meta: Dict[str, Any], problems: List[str]) -> None:
    """NMS candidate counts against INMSLayer's TopK box limit (5000; 2000 on SM 5.3/6.2)."""
    cfg = meta.get("config") or {}
    rpn, roi = cfg.get("rpn") or {}, cfg.get("roi_heads") or {}
    levels = len(rpn.get("in_features") or []) or 5
    pre = rpn.get("pre_nms_topk_test")
    if pre is not None and levels * int(pre) > TRT_NMS_TOPK_BOX_LIMIT:
        problems.append(f"RPN NMS sees up to {levels} x {pre} = {levels * int(pre)} boxes, more "
                        f"than TensorRT's NMS TopK box limit {TRT_NMS_TOPK_BOX_LIMIT} (the "
                        f"lowest-scoring ones would be ignored)")
    elif pre is not None and levels * int(pre) > TRT_NMS_TOPK_BOX_LIMIT_SM53_62:
        logger.info("RPN NMS sees up to %d boxes: fine, except on SM 5.3/6.2 GPUs (Jetson "
                    "TX1/TX2) where TensorRT's NMS considers only %d", levels * int(pre),
                    TRT_NMS_TOPK_BOX_LIMIT_SM53_62)
    post, ncls = rpn.get("post_nms_topk_test"), roi.get("num_classes")
    if post is not None and ncls is not None and int(post) * int(ncls) > TRT_NMS_TOPK_BOX_LIMIT:
        problems.append(f"detection NMS sees up to {int(post) * int(ncls)} boxes, more than "
                        f"TensorRT's NMS TopK box limit {TRT_NMS_TOPK_BOX_LIMIT}")


# ============================================================================================
# TensorRT import, profiles, calibration data
# ============================================================================================
def require_tensorrt():
    """Import ``tensorrt`` (>= 10) and check for a CUDA GPU; :class:`TensorRTUnavailable` if not."""
    try:
        import tensorrt as trt
    except ImportError:
        raise TensorRTUnavailable(TRT_MISSING_MESSAGE) from None
    except OSError as e:   # the wheel is there but its shared libraries are not
        raise TensorRTUnavailable(f"TensorRT is installed but failed to load "
                                  f"({str(e).splitlines()[0]})") from None
    version = str(getattr(trt, "__version__", "0"))
    try:
        major = int(version.split(".")[0])
    except ValueError:
        major = 0
    if major < TRT_MIN_MAJOR:
        raise TensorRTUnavailable(f"TensorRT {version} is installed; amanet needs TensorRT >= "
                                  f"{TRT_MIN_MAJOR}")
    if major > TRT_MIN_MAJOR:
        logger.warning("TensorRT %s: this code follows the TensorRT 10 API", version)
    import torch
    if not torch.cuda.is_available():
        raise TensorRTUnavailable("no CUDA GPU is available (torch.cuda.is_available() is "
                                  "False); TensorRT needs an NVIDIA GPU")
    return trt


def tensorrt_available() -> bool:
    try:
        require_tensorrt()
        return True
    except TensorRTUnavailable:
        return False


HW = Tuple[int, int]


def default_profile(meta: Dict[str, Any]) -> Tuple[HW, HW, HW]:
    """(min, opt, max) ``(H, W)`` for images resized with the metadata's shortest-edge rule:
    any orientation up to ``max_size_test`` on both sides, optimised for a 4:3 landscape."""
    inp = meta.get("input") or {}
    short = int(inp.get("min_size_test", 800))
    long = int(inp.get("max_size_test", 1333))
    div = int(inp.get("size_divisibility", 32) or 32)
    lo = max(div, 32)
    opt = (short, min(long, int(round(short * 4 / 3))))
    return (lo, lo), opt, (long, long)


def resolve_profile(meta: Dict[str, Any], min_hw: Optional[Sequence[int]] = None,
                    opt_hw: Optional[Sequence[int]] = None,
                    max_hw: Optional[Sequence[int]] = None) -> Tuple[HW, HW, HW]:
    """Fill missing profile shapes from :func:`default_profile` and validate min <= opt <= max."""
    dmin, dopt, dmax = default_profile(meta)
    shapes = []
    for given, default, what in ((min_hw, dmin, "min"), (opt_hw, dopt, "opt"),
                                 (max_hw, dmax, "max")):
        hw = tuple(int(x) for x in (given if given is not None else default))
        if len(hw) != 2 or hw[0] <= 0 or hw[1] <= 0:
            raise ValueError(f"--{what}-hw must be two positive integers H W, got {given}")
        shapes.append(hw)
    mn, op, mx = shapes
    for i, axis in enumerate("HW"):
        if not mn[i] <= op[i] <= mx[i]:
            raise ValueError(f"profile {axis}: need min <= opt <= max, got {mn[i]}, {op[i]}, "
                             f"{mx[i]}")
    return mn, op, mx  # type: ignore[return-value]


def fit_to_shape(chw: np.ndarray, hw: Sequence[int], fill: Sequence[float]) -> np.ndarray:
    """Center-crop and/or pad (bottom/right, with ``fill`` per channel) ``[C, h, w]`` to
    ``[C, H, W]``."""
    c, h, w = chw.shape
    th, tw = int(hw[0]), int(hw[1])
    top = max((h - th) // 2, 0)
    left = max((w - tw) // 2, 0)
    crop = chw[:, top:top + min(h, th), left:left + min(w, tw)]
    out = np.empty((c, th, tw), dtype=np.float32)
    out[...] = np.asarray(fill, dtype=np.float32).reshape(-1, 1, 1)
    out[:, :crop.shape[1], :crop.shape[2]] = crop
    return out


def prepare_calibration_image(bgr: np.ndarray, meta: Dict[str, Any], hw: Sequence[int]
                              ) -> np.ndarray:
    """One calibration input: ``[H, W, 3]`` uint8 BGR -> float32 ``[3, H, W]`` exactly like
    the runtime input (shortest-edge resize with the metadata's sizes, channel order, 0..255),
    then fitted to the profile shape ``hw``. Padding uses the pixel mean, i.e. the value the
    model's own normalisation maps to zero (what its internal size-divisibility padding adds)."""
    from ..data.transforms import resize_shortest_edge

    inp = meta.get("input") or {}
    resized = resize_shortest_edge(bgr, int(inp.get("min_size_test", 800)),
                                   int(inp.get("max_size_test", 1333)))
    channels = str(inp.get("channels", "BGR")).upper()
    if channels == "RGB":
        resized = resized[:, :, ::-1]
    chw = np.ascontiguousarray(resized.transpose(2, 0, 1)).astype(np.float32)
    # Detectron2's pixel_mean is given in the input format's channel order, like the input.
    mean = ((meta.get("config") or {}).get("input") or {}).get("pixel_mean")
    if mean is None or len(mean) != 3:
        mean = [0.0, 0.0, 0.0]
    return fit_to_shape(chw, hw, mean)


class CalibrationImages:
    """The calibration set: image files of a folder (sorted, at most ``limit``), yielded as
    prepared ``[3, H, W]`` float32 arrays; unreadable files are skipped with a warning."""

    def __init__(self, folder: PathLike, meta: Dict[str, Any], hw: Sequence[int],
                 limit: int = 500):
        from ..data.image_io import IMAGE_EXTENSIONS

        folder = Path(folder)
        if not folder.is_dir():
            raise InputError(f"calibration folder not found: {folder}")
        self.files = sorted(f for f in folder.iterdir()
                            if f.is_file() and f.suffix.lower() in IMAGE_EXTENSIONS)[:limit]
        if not self.files:
            raise InputError(f"no images in the calibration folder {folder}")
        self.meta = meta
        self.hw = (int(hw[0]), int(hw[1]))

    def __len__(self) -> int:
        return len(self.files)

    def __iter__(self) -> Iterable[np.ndarray]:
        from ..data.image_io import read_image

        for f in self.files:
            try:
                bgr = read_image(f)
            except InputError as e:
                logger.warning("calibration: skipping %s", e)
                continue
            yield prepare_calibration_image(bgr, self.meta, self.hw)


def _make_calibrator(trt, images: CalibrationImages, cache_path: Optional[Path]):
    """An ``IInt8EntropyCalibrator2`` feeding ``images`` one at a time (the network input has no
    batch dimension, so a calibration "batch" is one ``[3, H, W]`` image at the profile's opt
    shape, set with ``BuilderConfig.set_calibration_profile``)."""
    import torch

    class _Calibrator(trt.IInt8EntropyCalibrator2):
        def __init__(self):
            trt.IInt8EntropyCalibrator2.__init__(self)
            self._it = iter(images)
            self._buf = None   # device buffer, allocated on the first batch
            self.count = 0

        def get_batch_size(self):
            return 1

        def get_batch(self, names, *args):
            try:
                arr = next(self._it)
            except StopIteration:
                return None
            if self._buf is None:
                self._buf = torch.empty((3,) + images.hw, dtype=torch.float32, device="cuda")
            self._buf.copy_(torch.from_numpy(arr))
            torch.cuda.synchronize()
            self.count += 1
            if self.count % 50 == 0:
                logger.info("calibration: %d / %d images", self.count, len(images))
            return [int(self._buf.data_ptr())]

        def read_calibration_cache(self, *args):
            if cache_path is not None and cache_path.is_file():
                logger.info("using the INT8 calibration cache %s", cache_path)
                return cache_path.read_bytes()
            return None

        def write_calibration_cache(self, cache):
            if cache_path is not None:
                cache_path.write_bytes(bytes(cache))

    return _Calibrator()


# ============================================================================================
# Build
# ============================================================================================
PRECISIONS = ("fp32", "fp16", "int8")


def side_file(engine_path: PathLike) -> Path:
    """The metadata file next to an engine: ``<engine>.json`` (``model.engine.json``)."""
    return Path(str(engine_path) + ".json")


def _parser_errors(parser) -> List[str]:
    out = []
    for i in range(parser.num_errors):
        err = parser.get_error(i)
        parts = []
        for attr in ("node_name", "node_operator"):
            fn = getattr(err, attr, None)
            if callable(fn):
                try:
                    value = fn()
                except Exception:  # noqa: BLE001 - best-effort diagnostics
                    value = ""
                if value:
                    parts.append(str(value))
        where = f" [node {' '.join(parts)}]" if parts else (
            f" [node #{err.node()}]" if callable(getattr(err, "node", None)) and err.node() >= 0
            else "")
        out.append(f"{err.desc()}{where}")
    return out


def pin_box_math_fp32(trt, network) -> int:
    """Ask TensorRT to keep the detector's box and score arithmetic in FP32.

    Under FP16, coordinates lose whole pixels above 2048, and the NMS inputs carry the
    per-level/per-class offsets of the batched-NMS trick (up to ~5 x 1334 for the RPN), so IoUs
    and the RoIs handed to RoiAlign would drift. Convolutions, deconvolutions, resizes and other
    4-D feature-map layers stay free to use FP16/INT8; pinned (soft constraint, used with
    ``PREFER_PRECISION_CONSTRAINTS``): layers whose outputs are all float tensors of rank <= 3
    (boxes ``[N, 4]``, ``[1, N, 4]``, scores, deltas), NMS and TopK layers, and plugin layers
    (RoiAlign is the ROIAlign_TRT plugin; its rois stay FP32). Returns the number pinned.
    """
    floats = {getattr(trt, n) for n in ("float32", "float16", "bfloat16") if hasattr(trt, n)}
    always = {getattr(trt.LayerType, n) for n in ("NMS", "TOPK", "PLUGIN", "PLUGIN_V2",
                                                  "PLUGIN_V3") if hasattr(trt.LayerType, n)}
    pinned = 0
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        outs = [layer.get_output(j) for j in range(layer.num_outputs)]
        float_outs = [j for j, t in enumerate(outs) if t is not None and t.dtype in floats]
        small = bool(outs) and len(float_outs) == len(outs) and all(
            len(t.shape) <= 3 for t in outs)
        if not (small or layer.type in always):
            continue
        try:
            layer.precision = trt.float32
            for j in float_outs:
                layer.set_output_type(j, trt.float32)
            pinned += 1
        except (AttributeError, TypeError, RuntimeError) as e:   # API differences: best effort
            logger.debug("could not pin %s to FP32: %s", layer.name, e)
    return pinned


def build_engine(onnx_path: PathLike, engine_path: PathLike, precision: str = "fp32",
                 min_hw: Optional[Sequence[int]] = None, opt_hw: Optional[Sequence[int]] = None,
                 max_hw: Optional[Sequence[int]] = None,
                 calib_images: Optional[PathLike] = None, workspace_gb: float = 4.0,
                 calib_cache: Optional[PathLike] = None, calib_limit: int = 500,
                 verbose: bool = False, box_math_fp32: bool = True) -> Path:
    """Build a serialized TensorRT engine from an amanet ONNX export.

    Writes ``engine_path`` and :func:`side_file` (the ONNX metadata plus a ``"tensorrt"``
    entry: version, precision, profile). Profile shapes default to :func:`default_profile`.
    ``precision="int8"`` needs ``calib_images`` (a folder) or an existing ``calib_cache``
    (default ``<engine>.calib``, written after calibration). With fp16/int8,
    ``box_math_fp32`` keeps box/score arithmetic in FP32 (:func:`pin_box_math_fp32`).
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    onnx_path = Path(onnx_path)
    if not onnx_path.is_file():
        raise FileNotFoundError(f"ONNX file not found: {onnx_path}")
    engine_path = Path(engine_path)
    cache = Path(calib_cache) if calib_cache else Path(str(engine_path) + ".calib")
    if precision == "int8" and calib_images is None and not cache.is_file():
        raise ValueError("int8 needs calibration images (a folder) or an existing calibration "
                         f"cache ({cache})")
    if workspace_gb <= 0:
        raise ValueError(f"workspace_gb must be > 0, got {workspace_gb}")
    trt = require_tensorrt()
    meta = read_onnx_metadata(onnx_path)
    mn, op, mx = resolve_profile(meta, min_hw, opt_hw, max_hw)

    trt_logger = trt.Logger(trt.Logger.VERBOSE if verbose else trt.Logger.WARNING)
    trt.init_libnvinfer_plugins(trt_logger, "")   # RoiAlign is imported as ROIAlign_TRT
    builder = trt.Builder(trt_logger)
    network = builder.create_network(0)          # explicit batch is the only mode in TRT 10
    parser = trt.OnnxParser(network, trt_logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = _parser_errors(parser) or ["unknown parser error"]
        raise TensorRTBuildError(f"TensorRT could not parse {onnx_path}: " + "; ".join(errors))
    inputs = [network.get_input(i) for i in range(network.num_inputs)]
    if [t.name for t in inputs] != [IMAGE_INPUT]:
        raise TensorRTBuildError(f"expected one network input '{IMAGE_INPUT}', got "
                                 f"{[t.name for t in inputs]}")
    dims = tuple(int(d) for d in inputs[0].shape)
    if len(dims) == 3 and dims[1] > 0 and dims[2] > 0:   # a static_hw export: one shape only
        fixed = (dims[1], dims[2])
        for given in (min_hw, opt_hw, max_hw):
            if given is not None and tuple(int(x) for x in given) != fixed:
                raise ValueError(f"{onnx_path} has a static input size {fixed[0]}x{fixed[1]}; "
                                 f"the profile cannot be {given[0]}x{given[1]}")
        mn = op = mx = fixed

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gb * (1 << 30)))
    profile = builder.create_optimization_profile()
    profile.set_shape(IMAGE_INPUT, (3,) + mn, (3,) + op, (3,) + mx)
    config.add_optimization_profile(profile)
    calibrator = None
    if precision in ("fp16", "int8"):
        if not hasattr(trt.BuilderFlag, "FP16"):
            raise TensorRTBuildError(f"TensorRT {trt.__version__} has no FP16 builder flag "
                                     "(weakly-typed precision flags are from TensorRT 10)")
        config.set_flag(trt.BuilderFlag.FP16)
        if box_math_fp32:
            n = pin_box_math_fp32(trt, network)
            config.set_flag(trt.BuilderFlag.PREFER_PRECISION_CONSTRAINTS)
            logger.info("kept %d box/score layers in FP32", n)
    if precision == "int8":
        if not (hasattr(trt, "IInt8EntropyCalibrator2") and hasattr(trt.BuilderFlag, "INT8")):
            raise TensorRTBuildError(f"TensorRT {trt.__version__} has no implicit INT8 "
                                     "calibration (deprecated in 10.1); use fp16")
        config.set_flag(trt.BuilderFlag.INT8)
        images = CalibrationImages(calib_images, meta, op, calib_limit) if calib_images else None
        if images is None:   # cache only: the calibrator is still required, with no batches
            images = _EmptyImages(op)
        calibrator = _make_calibrator(trt, images, cache)
        config.int8_calibrator = calibrator   # deprecated since TRT 10.1, still supported
        config.set_calibration_profile(profile)
        logger.info("INT8 calibration over %d image(s) at %dx%d", len(images), op[0], op[1])

    logger.info("building the TensorRT %s engine (%s; profile min %s opt %s max %s); this takes "
                "minutes", trt.__version__, precision, mn, op, mx)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise TensorRTBuildError("TensorRT failed to build the engine (see its log above)")
    engine_path.parent.mkdir(parents=True, exist_ok=True)
    with open(engine_path, "wb") as f:
        f.write(memoryview(serialized))
    meta = dict(meta)
    meta["tensorrt"] = {"version": trt.__version__, "precision": precision,
                        "input": IMAGE_INPUT, "profile": {"min": list(mn), "opt": list(op),
                                                          "max": list(mx)},
                        "onnx": onnx_path.name}
    side_file(engine_path).write_text(json.dumps(meta, sort_keys=True, indent=1))
    logger.info("wrote %s and %s", engine_path, side_file(engine_path))
    del calibrator
    return engine_path


class _EmptyImages:
    def __init__(self, hw):
        self.hw = (int(hw[0]), int(hw[1]))

    def __len__(self):
        return 0

    def __iter__(self):
        return iter(())


# ============================================================================================
# Run
# ============================================================================================
def _torch_dtype(trt, dt):
    import torch
    table = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16,
             "int32": torch.int32, "int64": torch.int64, "int8": torch.int8,
             "uint8": torch.uint8, "bool": torch.bool}
    for name, tdt in table.items():
        if hasattr(trt, name) and dt == getattr(trt, name):
            return tdt
    raise TensorRTBuildError(f"unsupported TensorRT tensor type {dt}")


def _make_output_allocator(trt, device):
    """``IOutputAllocator`` handing TensorRT torch-allocated buffers for outputs whose shape is
    only known during execution (dynamic-detections exports)."""
    import torch

    class _TorchOutputAllocator(trt.IOutputAllocator):
        def __init__(self):
            trt.IOutputAllocator.__init__(self)
            self.buffers: Dict[str, torch.Tensor] = {}
            self.shapes: Dict[str, Tuple[int, ...]] = {}

        def _allocate(self, name, size):
            size = max(int(size), 1)
            buf = self.buffers.get(name)
            if buf is None or buf.numel() < size:
                buf = torch.empty(size, dtype=torch.uint8, device=device)
                self.buffers[name] = buf
            return int(buf.data_ptr())

        def reallocate_output(self, tensor_name, memory, size, alignment):
            return self._allocate(tensor_name, size)

        def reallocate_output_async(self, tensor_name, memory, size, alignment, stream):
            return self._allocate(tensor_name, size)

        def notify_shape(self, tensor_name, shape):
            self.shapes[tensor_name] = tuple(int(d) for d in shape)

    return _TorchOutputAllocator()


class TensorRTRunner:
    """Run a TensorRT engine built by :func:`build_engine` on one image.

    ``runner(image)`` takes ``[3, H, W]`` (torch tensor or numpy array, 0..255, the model's
    channel order, already resized) and returns the outputs in ``metadata["outputs"]`` order as
    torch CUDA tensors (numpy with ``as_numpy=True``). Fixed-size exports are sliced to
    ``num_detections`` rows (``num_detections`` itself is returned too).
    """

    def __init__(self, engine_path: PathLike, device: str = "cuda"):
        engine_path = Path(engine_path)
        trt = require_tensorrt()
        import torch

        if not engine_path.is_file():
            raise FileNotFoundError(f"TensorRT engine not found: {engine_path}")
        meta_file = side_file(engine_path)
        if not meta_file.is_file():
            raise AmanetError(f"{meta_file} is missing: the engine needs the metadata file that "
                              "build_engine writes next to it")
        self.metadata = _parse_metadata(meta_file.read_text(), str(meta_file))
        self.device = torch.device(device)
        if self.device.type != "cuda":
            raise ValueError(f"TensorRT runs on CUDA devices only, got device={device!r}")
        self._trt = trt
        self._logger = trt.Logger(trt.Logger.WARNING)
        trt.init_libnvinfer_plugins(self._logger, "")
        with torch.cuda.device(self.device):
            self._runtime = trt.Runtime(self._logger)
            self.engine = self._runtime.deserialize_cuda_engine(engine_path.read_bytes())
            if self.engine is None:
                raise TensorRTBuildError(f"TensorRT {trt.__version__} could not deserialize "
                                         f"{engine_path} (built with another TensorRT version "
                                         "or GPU?)")
            self.context = self.engine.create_execution_context()
            self.stream = torch.cuda.Stream(self.device)
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        mode = trt.TensorIOMode.INPUT
        self.input_names = [n for n in names if self.engine.get_tensor_mode(n) == mode]
        if self.input_names != [IMAGE_INPUT]:
            raise TensorRTBuildError(f"engine inputs {self.input_names}, expected "
                                     f"['{IMAGE_INPUT}']")
        self.output_names: List[str] = list(self.metadata["outputs"])
        missing = [n for n in self.output_names if n not in names]
        if missing:
            raise TensorRTBuildError(f"engine lacks the outputs {missing} named by its metadata")
        self.max_detections = int(self.metadata.get("max_detections", 0))
        self._input_dtype = _torch_dtype(trt, self.engine.get_tensor_dtype(IMAGE_INPUT))
        self._dtypes = {n: _torch_dtype(trt, self.engine.get_tensor_dtype(n))
                        for n in self.output_names}
        self._allocator = _make_output_allocator(trt, self.device)
        self._with_allocator: Set[str] = set()
        self.profile = tuple(tuple(int(x) for x in s)
                             for s in self.engine.get_tensor_profile_shape(IMAGE_INPUT, 0))

    def __call__(self, image, as_numpy: bool = False) -> List[Any]:
        return self.run(image, as_numpy)

    def _check_shape(self, shape: Tuple[int, ...]) -> None:
        mn, _, mx = self.profile
        if len(shape) != 3 or shape[0] != 3:
            raise InputError(f"expected an image tensor [3, H, W], got {list(shape)}")
        if not all(lo <= s <= hi for s, lo, hi in zip(shape[1:], mn[1:], mx[1:])):
            raise InputError(f"image size {shape[1]}x{shape[2]} is outside the engine's profile "
                             f"({mn[1]}x{mn[2]} .. {mx[1]}x{mx[2]}); rebuild with other "
                             "--min-hw/--max-hw")

    def run(self, image, as_numpy: bool = False) -> List[Any]:
        import torch

        x = torch.as_tensor(image)
        self._check_shape(tuple(x.shape))
        ctx = self.context
        with torch.cuda.device(self.device):
            x = x.to(self.device, self._input_dtype).contiguous()
            self.stream.wait_stream(torch.cuda.current_stream(self.device))
            with torch.cuda.stream(self.stream):
                if not ctx.set_input_shape(IMAGE_INPUT, tuple(x.shape)):
                    raise InputError(f"TensorRT rejected the input shape {list(x.shape)}")
                ctx.set_tensor_address(IMAGE_INPUT, int(x.data_ptr()))
                static: Dict[str, torch.Tensor] = {}
                for name in self.output_names:
                    shape = tuple(int(d) for d in ctx.get_tensor_shape(name))
                    if any(d < 0 for d in shape):   # data-dependent: allocated during execution
                        if name not in self._with_allocator:
                            ctx.set_output_allocator(name, self._allocator)
                            self._with_allocator.add(name)
                        continue
                    buf = torch.empty(shape, dtype=self._dtypes[name], device=self.device)
                    static[name] = buf
                    ctx.set_tensor_address(name, int(buf.data_ptr()))
                if not ctx.execute_async_v3(self.stream.cuda_stream):
                    raise TensorRTBuildError("TensorRT execution failed (see its log)")
                self.stream.synchronize()
            outs: Dict[str, torch.Tensor] = {}
            for name in self.output_names:
                if name in static:
                    outs[name] = static[name]
                    continue
                shape = self._allocator.shapes[name]
                dtype = self._dtypes[name]
                nbytes = math.prod(shape) * torch.empty((), dtype=dtype).element_size()
                raw = self._allocator.buffers[name][:nbytes]
                outs[name] = raw.view(dtype).reshape(shape).clone()
        if self.max_detections > 0 and "num_detections" in outs:
            n = int(outs["num_detections"].reshape(-1)[0].item())
            outs = {k: (v if k == "num_detections" else v[:n]) for k, v in outs.items()}
        result = [outs[n] for n in self.output_names]
        return [t.cpu().numpy() for t in result] if as_numpy else result
