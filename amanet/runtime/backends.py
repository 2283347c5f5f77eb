"""Inference backends: the same flat outputs from eager PyTorch, TorchScript, ONNX Runtime,
OpenVINO and TensorRT.

Every backend runs one resized image ``[3, H, W]`` (float32, 0..255, the model's channel order)
and returns the graph outputs named by :func:`amanet.deploy.graph.output_names` (boxes in the
resized image's coordinates), plus ``num_detections`` for fixed-size (TensorRT-style) exports,
already sliced to the real detections.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np
import torch

from ..config import Config
from ..errors import AmanetError
from .precision import PrecisionError, autocast, check_eager_precision, check_precision

logger = logging.getLogger(__name__)

BACKENDS = ("eager", "torchscript", "onnxruntime", "openvino", "tensorrt")


Outputs = Dict[str, torch.Tensor]


class BackendUnavailable(AmanetError, RuntimeError):
    """The runtime a backend needs is not installed (or cannot run here)."""


def _named(values: List[Any], names: List[str]) -> Outputs:
    out = {n: torch.as_tensor(np.asarray(v)) if not isinstance(v, torch.Tensor) else v
           for n, v in zip(names, values)}
    if "num_detections" in out:
        n = int(out.pop("num_detections").reshape(-1)[0])
        out = {k: v[:n] for k, v in out.items()}
    return out


class EagerBackend:
    """The PyTorch model run through the very module the exports are made of
    (:class:`~amanet.deploy.graph.DeployGraph` over the model's weights, not scripted), in
    ``precision`` (``fp32``, or ``bf16`` / ``fp16`` under autocast; outputs are float32)."""
    name = "eager"

    def __init__(self, model, device: torch.device, precision: str = "fp32"):
        from ..deploy.graph import DeployGraph, output_names

        self.model = model
        self.device = device
        self.precision = check_eager_precision(precision, device)
        self.graph = DeployGraph(model).eval().to(device)
        self.names = output_names(model.cfg)

    def __call__(self, image: torch.Tensor) -> Outputs:
        with torch.no_grad(), autocast(self.precision, self.device):
            outs = self.graph(image.to(self.device))
        return dict(zip(self.names, outs))

    def run_many(self, images: List[torch.Tensor]) -> List[Outputs]:
        """Several resized images of one size in one batch
        (:meth:`~amanet.deploy.graph.DeployGraph.forward_many`): each image's outputs."""
        with torch.no_grad(), autocast(self.precision, self.device):
            outs = self.graph.forward_many([im.to(self.device) for im in images])
        return [dict(zip(self.names, o)) for o in outs]


def flat_outputs(det: Dict[str, Any], densepose_names: List[str]) -> Outputs:
    """The model's per-image result dict in the flat form every backend returns: the first
    DensePose output (the foreground gate) is called ``gate``, as in the exports."""
    from ..deploy.graph import GATE_OUTPUT
    dp = det["densepose"]
    out = {"boxes": det["boxes"], "scores": det["scores"], "classes": det["classes"],
           GATE_OUTPUT: dp[densepose_names[0]]}
    out.update({n: dp[n] for n in densepose_names[1:]})
    return out


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

    def __init__(self, path: str, providers: Optional[List[str]] = None, threads: int = 0,
                 meta: Optional[Dict[str, Any]] = None):
        import onnxruntime as ort

        from ..deploy.onnx import read_metadata
        self.meta = meta if meta is not None else read_metadata(path)  # parsing costs ~1 s
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


class OpenVINOBackend:
    """The ONNX export compiled by OpenVINO for the CPU, in ``precision`` (OpenVINO's
    ``INFERENCE_PRECISION_HINT``: an fp32 graph is lowered to bf16 / fp16 by OpenVINO; an int8
    export, :mod:`amanet.deploy.quantize`, carries its int8 layers itself).

    The compiled model is cached in ``<export>.ovcache/`` (OpenVINO's ``CACHE_DIR``), so a
    second start skips compilation; an unwritable folder only costs the cache (logged).
    """
    name = "openvino"
    # int8: the export's QuantizeLinear/DequantizeLinear pairs pick the int8 kernels; the
    # float layers between them stay f32
    HINTS = {"fp32": "f32", "bf16": "bf16", "fp16": "f16", "int8": "f32"}
    CAPABILITY = {"bf16": "BF16", "fp16": "FP16", "int8": "INT8"}

    def __init__(self, path: str, precision: str = "fp32", threads: int = 0,
                 cache: bool = True, device: str = "CPU", meta: Optional[Dict[str, Any]] = None):
        try:
            import openvino as ov
        except ImportError:
            raise BackendUnavailable("backend openvino needs the openvino package (pinned in "
                                     "requirements.txt: pip install -r requirements.txt)") from None
        from ..deploy.onnx import read_metadata

        if precision not in self.HINTS:
            check_precision(precision, torch.device("cpu"))  # raises: unknown name
        self.meta = meta if meta is not None else read_metadata(path)
        core = ov.Core()
        if precision in self.CAPABILITY:
            caps = core.get_property(device, "OPTIMIZATION_CAPABILITIES")
            if self.CAPABILITY[precision] not in caps:
                raise PrecisionError(f"OpenVINO cannot run {precision} on this {device} (its "
                                     f"capabilities: {', '.join(caps)})")
        self.precision = precision
        if cache:
            cache_dir = Path(str(path) + ".ovcache")
            try:
                cache_dir.mkdir(exist_ok=True)
                core.set_property({"CACHE_DIR": str(cache_dir)})
            except OSError as e:
                logger.warning("OpenVINO model cache disabled (%s): every start compiles", e)
        config = {"INFERENCE_PRECISION_HINT": self.HINTS[precision],
                  "PERFORMANCE_HINT": "LATENCY"}
        if threads:
            config["INFERENCE_NUM_THREADS"] = int(threads)
        self.compiled = core.compile_model(str(path), device, config)
        self.request = self.compiled.create_infer_request()
        logger.info("openvino %s on %s, precision %s", ov.__version__, device, precision)

    def __call__(self, image: torch.Tensor) -> Outputs:
        x = image.detach().to("cpu", torch.float32).contiguous().numpy()
        result = self.request.infer({0: x})
        outs = [np.array(result[o], copy=True) for o in self.compiled.outputs]
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

