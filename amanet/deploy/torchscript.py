"""TorchScript export: the scripted :class:`DeployGraph` plus its metadata.

The module calls only ``aten::`` and ``amanet::`` ops (our ROIAlign and NMS, not torchvision's),
so it loads with ``torch.jit.load`` in any process where ``amanet._C`` (Python) or
``libamanet_ops`` (C++) is loaded — no Python model code is needed.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Dict, Tuple, Union

import torch

from ..modeling.model import DensePoseRCNN
from ..ops.library import require_library
from . import metadata
from .graph import DeployGraph

logger = logging.getLogger(__name__)
EXTRA_FILE = "amanet.json"


def script_graph(model: DensePoseRCNN, max_detections: int = 0) -> torch.jit.ScriptModule:
    require_library()
    graph = DeployGraph(model.eval(), max_detections).eval()
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


def export_torchscript(model: DensePoseRCNN, path: Union[str, Path], max_detections: int = 0
                       ) -> Path:
    path = Path(path)
    scripted = script_graph(model, max_detections)
    bad = foreign_ops(scripted)
    if bad:
        raise RuntimeError(f"the scripted graph calls ops outside aten/amanet: {sorted(bad)}")
    meta = metadata.graph_metadata(model.cfg, max_detections)
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
