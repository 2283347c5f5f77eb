"""Inference backends: the same flat outputs from eager PyTorch, TorchScript, ONNX Runtime, TensorRT.

Every backend runs one resized image ``[3, H, W]`` (float32, 0..255, the model's channel order)
and returns the graph outputs named in :data:`amanet.deploy.graph.OUTPUT_NAMES` (boxes in the
resized image's coordinates), plus ``num_detections`` for fixed-size (TensorRT-style) exports,
already sliced to the real detections.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np
import torch

from ..config import FAMILY_S1X, Config

logger = logging.getLogger(__name__)

BACKENDS = ("eager", "torchscript", "onnxruntime", "tensorrt")
Outputs = Dict[str, torch.Tensor]


def _named(values: List[Any], names: List[str]) -> Outputs:
    out = {n: torch.as_tensor(np.asarray(v)) if not isinstance(v, torch.Tensor) else v
           for n, v in zip(names, values)}
    if "num_detections" in out:
        n = int(out.pop("num_detections").reshape(-1)[0])
        out = {k: v[:n] for k, v in out.items()}
    return out


class EagerBackend:
    """The PyTorch model itself (:class:`~amanet.modeling.model.DensePoseRCNN`)."""
    name = "eager"

    def __init__(self, model, device: torch.device):
        self.model = model
        self.device = device

    def __call__(self, image: torch.Tensor) -> Outputs:
        with torch.no_grad():
            det = self.model([image.to(self.device)])[0]
        return flat_outputs(det, self.model.family)


def flat_outputs(det: Dict[str, Any], family: str) -> Outputs:
    """The model's per-image result dict in the flat form every backend returns."""
    dp = det["densepose"]
    gate = dp["coarse_segm"] if family == FAMILY_S1X else dp["body_mask"]
    return {"boxes": det["boxes"], "scores": det["scores"], "classes": det["classes"],
            "gate": gate, "fine_segm": dp["fine_segm"], "u": dp["u"], "v": dp["v"]}


class TorchScriptBackend:
    name = "torchscript"

    def __init__(self, path: str, device: torch.device):
        from ..deploy.torchscript import load_torchscript
        self.module, self.meta = load_torchscript(path, str(device))
        self.device = device

    def __call__(self, image: torch.Tensor) -> Outputs:
        with torch.no_grad():
            outs = self.module(image.to(self.device))
        return _named(list(outs), self.meta["outputs"])


class OnnxRuntimeBackend:
    name = "onnxruntime"

    def __init__(self, path: str, providers: Optional[List[str]] = None, threads: int = 0):
        import onnxruntime as ort

        from ..deploy.onnx import read_metadata
        self.meta = read_metadata(path)
        available = ort.get_available_providers()
        wanted = providers or [p for p in ("TensorrtExecutionProvider", "CUDAExecutionProvider",
                                           "CPUExecutionProvider") if p in available]
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = threads
        self.session = ort.InferenceSession(str(path), sess_options=opts, providers=wanted)
        logger.info("onnxruntime providers: %s", self.session.get_providers())

    def __call__(self, image: torch.Tensor) -> Outputs:
        x = image.detach().to("cpu", torch.float32).contiguous().numpy()
        outs = self.session.run(None, {"image": x})
        return _named(outs, self.meta["outputs"])


class TensorRTBackend:
    name = "tensorrt"

    def __init__(self, path: str):
        from ..deploy.tensorrt import TensorRTRunner
        self.runner = TensorRTRunner(path)
        self.meta = self.runner.metadata

    def __call__(self, image: torch.Tensor) -> Outputs:
        return _named(list(self.runner(image)), self.meta["outputs"])


def artifact_config(meta: Dict[str, Any]) -> Config:
    """The model config stored in an export's metadata."""
    from ..config import config_from_dict
    return config_from_dict(meta["config"])


def backend_for_path(path: str) -> str:
    """Guess the backend from an artifact's file name."""
    suffix = Path(path).suffix.lower()
    if suffix in (".ts", ".torchscript", ".jit"):
        return "torchscript"
    if suffix == ".onnx":
        return "onnxruntime"
    if suffix in (".engine", ".plan", ".trt"):
        return "tensorrt"
    raise ValueError(f"cannot tell the backend of {path} from its extension; pass backend=")

