"""What a runtime needs to know about an exported graph, stored beside it.

TorchScript keeps it as the extra file ``amanet.json``; ONNX as ``metadata_props`` key
``amanet``; TensorRT engines as a ``<engine>.json`` side file. It carries the pre-processing
(resize, channel order), the meaning of the outputs and the post-processing rule.
"""
from __future__ import annotations

import json
from typing import Any, Dict

from ..config import Config
from ..modeling.families import densepose_output_channels, family_of
from .graph import GATE_OUTPUT, output_names

FORMAT_VERSION = 1


def graph_metadata(cfg: Config, max_detections: int = 0, ops: str = "amanet",
                   precision: str = "fp32") -> Dict[str, Any]:
    return {
        "amanet_export_format": FORMAT_VERSION,
        "precision": precision,
        "family": cfg.family,
        "input": {
            "layout": "CHW", "channels": cfg.input.format.upper(), "range": "0..255",
            "min_size_test": cfg.input.min_size_test, "max_size_test": cfg.input.max_size_test,
            "size_divisibility": cfg.input.size_divisibility,
            "resize": "shortest edge, PIL bilinear (Detectron2's ResizeShortestEdge)",
        },
        "outputs": output_names(cfg, max_detections),
        "output_channels": _channels_by_output(cfg),
        "max_detections": max_detections,
        "heatmap_size": cfg.densepose.heatmap_size,
        "num_parts": cfg.densepose.num_patches + 1,
        "gate_mode": family_of(cfg).gate_mode,
        "gate_threshold": cfg.densepose.mask_gate_threshold,
        "ops": ops,
        "config": cfg.to_dict(),
    }


def _channels_by_output(cfg: Config) -> Dict[str, int]:
    """Channels of each DensePose output under its export name (the gate first)."""
    channels = list(densepose_output_channels(cfg).items())
    return {GATE_OUTPUT if i == 0 else name: c for i, (name, c) in enumerate(channels)}


def dumps(meta: Dict[str, Any]) -> str:
    return json.dumps(meta, sort_keys=True)


def loads(text: str) -> Dict[str, Any]:
    meta = json.loads(text)
    if meta.get("amanet_export_format") != FORMAT_VERSION:
        raise ValueError(f"unsupported amanet export format {meta.get('amanet_export_format')!r}"
                         f" (expected {FORMAT_VERSION})")
    return meta
