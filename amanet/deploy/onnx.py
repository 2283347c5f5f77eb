"""ONNX export of :class:`DeployGraph` with standard operators only.

We use the TorchScript-based exporter (``dynamo=False``): the dynamo exporter fails on the
data-dependent shapes after NMS in two-stage detectors, while the tracer keeps H, W and the
detection count dynamic. Our ``amanet::`` ops are lowered to standard ONNX ops by
:mod:`amanet.ops.onnx_lowering` (RoiAlign with the family's coordinate mode, NonMaxSuppression,
plain arithmetic for the aggregation), so ONNX Runtime and TensorRT need no plugins.
"""
from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, Optional, Sequence, Tuple, Union

import torch

from ..modeling.model import DensePoseRCNN
from ..ops.library import require_library
from . import metadata
from .graph import DeployGraph, output_names

if TYPE_CHECKING:
    from .quantize import Calibration

logger = logging.getLogger(__name__)
MIN_OPSET = 17
TRACE_THRESHOLD = -1.5  # score threshold while tracing (no real threshold is negative)
METADATA_KEY = "amanet"
ONNX_PRECISIONS = ("fp32", "int8")


def export_onnx(model: DensePoseRCNN, path: Union[str, Path], opset: int = MIN_OPSET,
                max_detections: int = 0, example_hw: Sequence[int] = (320, 480),
                static_hw: bool = False, precision: str = "fp32",
                calibration: Optional["Calibration"] = None) -> Path:
    """Write ``path``; H and W stay dynamic unless ``static_hw`` (then fixed to ``example_hw``).

    ``precision="int8"`` writes the post-training quantized graph
    (:mod:`amanet.deploy.quantize`), calibrated on ``calibration``: resized model inputs
    ``[3, H, W]`` (:func:`~amanet.deploy.quantize.calibration_images`), or the layer ranges
    :func:`~amanet.deploy.quantize.calibrate` returned. ``fp32`` graphs are
    lowered to bf16 / fp16 by the runtime (OpenVINO's precision hint) instead.
    """
    import onnx

    from ..ops.onnx_lowering import register_onnx_symbolics

    if opset < MIN_OPSET:
        raise ValueError(f"opset {opset} < {MIN_OPSET}: RoiAlign needs >= 16 for aligned=True "
                         "(opset 11 silently drops the half-pixel offset)")
    if precision not in ONNX_PRECISIONS:
        raise ValueError(f"an ONNX export is {' or '.join(ONNX_PRECISIONS)}, not {precision!r} "
                         "(bf16 / fp16: export fp32 and choose the precision at run time)")
    if (precision == "int8") != (calibration is not None):
        raise ValueError("an int8 export needs calibration images, and only an int8 export "
                         "takes them")
    require_library()
    register_onnx_symbolics()
    if precision == "int8":
        from .quantize import int8_model
        model = int8_model(model, calibration)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    graph = DeployGraph(model.eval(), max_detections).eval()
    # With a decoder, the DensePose branch would run it over the whole image even for zero
    # boxes; its guard, scripted inside the trace, skips it through an ONNX If. Without one
    # zero boxes cost nothing already, and the padded, static-shape TensorRT graph never has
    # zero boxes: both keep plain traced ops.
    scripted_branch = max_detections <= 0 and graph.densepose_branch.has_decoder
    if scripted_branch:
        branch = graph.densepose_branch
        branch.decoder = torch.jit.script(branch.decoder)
    example = torch.rand(3, int(example_hw[0]), int(example_hw[1])) * 255
    names = output_names(model.cfg, max_detections)
    dynamic: Dict[str, Dict[int, str]] = {}
    if not static_hw:
        dynamic["image"] = {1: "height", 2: "width"}
    if max_detections <= 0:
        dynamic.update({n: {0: "detections"} for n in names})
    # The tracer must see detections: exporting a trace with zero RoIs crashes the exporter's
    # shape inference (a 0/0 in a reshape). So we trace with a permissive score threshold and
    # write the real one into its initializer afterwards.
    threshold = graph.score_threshold.clone()
    graph.score_threshold.fill_(TRACE_THRESHOLD)
    try:
        with warnings.catch_warnings(), torch.no_grad():
            # The tracer warns about every Python int it sees; the graph is written so that
            # the shape-dependent ones stay symbolic (tests run other sizes than the example).
            warnings.simplefilter("ignore")
            traced = graph
            if scripted_branch:  # the ONNX tracer cannot call a scripted submodule itself
                traced = torch.jit.trace(_TupleOutputs(graph), (example,), check_trace=False)
            torch.onnx.export(traced, (example,), str(path), input_names=["image"],
                              output_names=names, dynamic_axes=dynamic or None,
                              opset_version=opset, dynamo=False, do_constant_folding=True,
                              keep_initializers_as_inputs=False)
    finally:
        graph.score_threshold.copy_(threshold)
    proto = onnx.load(str(path))
    _replace_threshold(proto, TRACE_THRESHOLD, float(threshold[0]))
    _decouple_outputs_from_branches(proto.graph)
    if precision == "int8":
        from .onnx_weights import store_int8_weights
        logger.info("stored %d int8 weights", store_int8_weights(proto))
    meta = metadata.graph_metadata(model.cfg, max_detections, precision=precision)
    entry = proto.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, metadata.dumps(meta)
    onnx.checker.check_model(proto, full_check=True)
    proto = onnx.shape_inference.infer_shapes(proto, check_type=True, strict_mode=True)
    onnx.save(proto, str(path))
    logger.info("wrote ONNX %s (opset %d, %d nodes)", path, opset, len(proto.graph.node))
    return path


class _TupleOutputs(torch.nn.Module):
    """The graph's outputs as a tuple (a traced list of mixed dtypes is an ONNX sequence)."""

    def __init__(self, graph: DeployGraph):
        super().__init__()
        self.graph = graph

    def forward(self, image: torch.Tensor):
        return tuple(self.graph(image))


def _decouple_outputs_from_branches(graph) -> None:
    """Subgraphs (If branches) read graph outputs (``boxes``) through an Identity instead of by
    the output's own name: OpenVINO's ONNX frontend (2026.4) turns an outer-scope value that is
    a model output into extra branch results, and then refuses the If (unequal output counts)."""
    import onnx
    from onnx import helper

    outputs = {o.name for o in graph.output}
    renamed = {name: f"{name}__to_branch" for name in outputs}
    used = set()

    def rename(g) -> None:
        for node in g.node:
            for i, name in enumerate(node.input):
                if name in renamed:
                    node.input[i] = renamed[name]
                    used.add(name)
            for attr in node.attribute:
                if attr.type == onnx.AttributeProto.GRAPH:
                    rename(attr.g)

    first = None  # the first node holding a subgraph: the Identities go right before it
    for k, node in enumerate(graph.node):
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                rename(attr.g)
                first = k if first is None else first
    for name in sorted(used, reverse=True):
        graph.node.insert(first, helper.make_node("Identity", [name], [renamed[name]]))


def _replace_threshold(proto, traced: float, real: float) -> None:
    """Write the real score threshold into the one ``Greater`` that compared with ``traced``."""
    import numpy as np
    import onnx.numpy_helper as nh

    consumers = {n.input[1] for n in proto.graph.node if n.op_type == "Greater"}
    hits = []  # (the tensor proto to overwrite, its name): a Constant node or an initializer
    for node in proto.graph.node:
        if node.op_type == "Constant" and node.output[0] in consumers:
            hits.append((node.attribute[0].t, node.output[0]))
    hits += [(init, init.name) for init in proto.graph.initializer if init.name in consumers]
    hits = [(t, name) for t, name in hits
            if nh.to_array(t).shape == (1,) and nh.to_array(t)[0] == np.float32(traced)]
    if len(hits) != 1:
        raise RuntimeError(f"expected one score-threshold constant in the traced graph, found "
                           f"{len(hits)}")
    tensor, name = hits[0]
    tensor.CopyFrom(nh.from_array(np.array([real], np.float32), name if tensor.name else None))


def read_metadata(path: Union[str, Path]) -> Dict[str, Any]:
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    for p in proto.metadata_props:
        if p.key == METADATA_KEY:
            return metadata.loads(p.value)
    raise ValueError(f"{path} is not an amanet ONNX export (no '{METADATA_KEY}' metadata)")


def op_types(path: Union[str, Path]) -> Tuple[str, ...]:
    """Every operator type in the graph, including inside subgraphs (If/Loop bodies)."""
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    seen = set()

    def walk(g):
        for n in g.node:
            seen.add(n.op_type if n.domain in ("", "ai.onnx") else f"{n.domain}::{n.op_type}")
            for a in n.attribute:
                if a.type == onnx.AttributeProto.GRAPH:
                    walk(a.g)
                for sub in a.graphs:
                    walk(sub)

    walk(proto.graph)
    return tuple(sorted(seen))
