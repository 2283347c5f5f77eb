"""int8 weights in an int8 ONNX export: ``W (float) -> QuantizeLinear -> DequantizeLinear``
becomes ``W_int8 -> DequantizeLinear``, so the file stores one byte a weight instead of four.

The tracer writes each quantized layer's weight as a float initializer quantized in the graph
(what ``torch.fake_quantize_per_channel_affine`` exports to). Quantizing it here with the same
rule as QuantizeLinear (round half to even, add the zero point, saturate) gives the very int8
values the runtime would compute, so the outputs do not change; only the file shrinks.
"""
from __future__ import annotations

from typing import Dict, Optional

import numpy as np


def store_int8_weights(proto) -> int:
    """Rewrite every QuantizeLinear of a constant float tensor into an int8 initializer, in
    the main graph and in subgraphs (If branches read the main graph's initializers). Returns
    the number rewritten; float initializers nothing reads any more are dropped."""
    from onnx import numpy_helper as nh

    main = proto.graph
    added: Dict[str, str] = {}  # float weight name -> its int8 initializer

    def rewrite(graph, outer: Dict[str, np.ndarray]) -> int:
        consts = dict(outer)
        consts.update({i.name: nh.to_array(i) for i in graph.initializer})
        count = 0
        keep = []
        renamed: Dict[str, str] = {}
        for node in graph.node:
            for attr in node.attribute:
                if attr.g.node:
                    count += rewrite(attr.g, consts)
            value = _constant_value(node, consts)
            if value is not None:
                consts[node.output[0]] = value
            if node.op_type == "QuantizeLinear" and len(node.input) == 3 \
                    and all(name in consts for name in node.input) \
                    and consts[node.input[0]].dtype == np.float32 \
                    and consts[node.input[2]].dtype == np.int8:
                w, scale, zero = (consts[name] for name in node.input)
                name = added.get(node.input[0])
                if name is None:
                    name = added[node.input[0]] = f"{node.input[0]}__int8"
                    main.initializer.append(nh.from_array(_quantize(w, scale, zero, node), name))
                renamed[node.output[0]] = name
                count += 1
                continue
            keep.append(node)
        del graph.node[:]
        graph.node.extend(keep)
        for node in graph.node:
            for i, name in enumerate(node.input):
                if name in renamed:
                    node.input[i] = renamed[name]
        return count

    count = rewrite(main, {})
    used = set()

    def collect(graph) -> None:
        for node in graph.node:
            used.update(node.input)
            for attr in node.attribute:
                if attr.g.node:
                    collect(attr.g)

    collect(main)
    used.update(o.name for o in main.output)
    unused = [i for i in main.initializer if i.name not in used]
    for init in unused:
        main.initializer.remove(init)
    return count


def _constant_value(node, consts: Dict[str, np.ndarray]) -> Optional[np.ndarray]:
    """The value of a Constant node, or of an Identity / Cast of a known constant (the
    exporter shares equal zero points through Identity; the scripted decoder casts its
    weights' zero points inside the If branch)."""
    from onnx import helper
    from onnx import numpy_helper as nh

    if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
        return nh.to_array(node.attribute[0].t)
    if node.op_type == "Identity" and node.input[0] in consts:  # the exporter's shared zeros
        return consts[node.input[0]]
    if node.op_type == "Cast" and node.input[0] in consts:
        to = next(a.i for a in node.attribute if a.name == "to")
        return consts[node.input[0]].astype(helper.tensor_dtype_to_np_dtype(to))
    return None


def _quantize(w: np.ndarray, scale: np.ndarray, zero: np.ndarray, node) -> np.ndarray:
    """QuantizeLinear's arithmetic on a constant: per-tensor, or per channel along ``axis``."""
    axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
    shape = [1] * w.ndim
    if scale.ndim == 1 and scale.size > 1:
        shape[axis % w.ndim] = scale.size
    q = np.rint(w / scale.reshape(shape)) + zero.reshape(shape).astype(np.float32)
    return np.clip(q, -128, 127).astype(np.int8)
