"""TorchScript export: the scripted :class:`DeployGraph` plus its metadata.

The module calls only ``aten::`` and ``amanet::`` ops (our ROIAlign and NMS, not torchvision's),
so it loads with ``torch.jit.load`` in any process where ``amanet._C`` (Python) or
``libamanet_ops`` (C++) is loaded — no Python model code is needed.
"""
from __future__ import annotations

import copy
import logging
from pathlib import Path
from typing import Any, Dict, Tuple, Union

import torch

from ..modeling.model import DensePoseRCNN
from ..ops.library import require_library
from . import metadata
from ..modeling.inference_prep import prepare_for_inference
from .graph import DeployGraph, cast_compute_layers

logger = logging.getLogger(__name__)
EXTRA_FILE = "amanet.json"


# Precisions a TorchScript export can be made in (fp16 runs on CUDA only; bf16 on both).
PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def script_graph(model: DensePoseRCNN, max_detections: int = 0, precision: str = "fp32"
                 ) -> torch.jit.ScriptModule:
    """The scripted graph of a copy of ``model`` prepared as the Predictor prepares an eager
    model (FrozenBN folded, channels-last weights), its conv / linear weights cast for bf16 /
    fp16 (``model`` itself is left as it is)."""
    require_library()
    if precision not in PRECISIONS:
        raise ValueError(f"TorchScript export precision {precision!r} is not supported; choose "
                         f"from {', '.join(PRECISIONS)}")
    model = prepare_for_inference(copy.deepcopy(model).eval())
    graph = DeployGraph(model, max_detections).eval()
    if precision != "fp32":
        cast_compute_layers(graph, PRECISIONS[precision])
    return torch.jit.script(graph)


def foreign_ops(scripted: torch.jit.ScriptModule) -> set:
    """Op namespaces other than aten/prim/amanet that the scripted graph calls (should be none)."""
    names = set()
    for node in scripted.inlined_graph.nodes():
        kind = node.kind()
        ns = kind.split("::")[0]
        if ns not in ("aten", "prim", "amanet"):
            names.add(kind)
    return names


def export_torchscript(model: DensePoseRCNN, path: Union[str, Path], max_detections: int = 0,
                       precision: str = "fp32") -> Path:
    """Write the scripted graph; ``precision`` bf16 (CPU with AVX512-BF16 / AMX, or CUDA sm80+)
    or fp16 (CUDA) makes the convs and linear layers run in that dtype, in Python and C++ alike
    (the input and every output stay float32)."""
    path = Path(path)
    scripted = script_graph(model, max_detections, precision)
    bad = foreign_ops(scripted)
    if bad:
        raise RuntimeError(f"the scripted graph calls ops outside aten/amanet: {sorted(bad)}")
    meta = metadata.graph_metadata(model.cfg, max_detections, precision=precision)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.jit.save(scripted, str(path), _extra_files={EXTRA_FILE: metadata.dumps(meta)})
    logger.info("wrote TorchScript %s", path)
    return path


def load_torchscript(path: Union[str, Path], device: str = "cpu"
                     ) -> Tuple[torch.jit.ScriptModule, Dict[str, Any]]:
    require_library()
    extra = {EXTRA_FILE: ""}
    module = torch.jit.load(str(path), map_location=device, _extra_files=extra)
    if not extra[EXTRA_FILE]:
        raise ValueError(f"{path} is not an amanet TorchScript export (no {EXTRA_FILE})")
    return module.eval(), metadata.loads(extra[EXTRA_FILE])
