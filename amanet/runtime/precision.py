"""Compute precision: ``fp32`` (default), ``bf16``, ``fp16``, ``int8`` — what each device can run.

Reduced precision runs the convolutions and matrix products in bf16 / fp16 under
``torch.autocast``; box decoding, NMS, FPN level assignment, RoI pooling coordinates, the gates
and all post-processing stay float32 (the model and the op library's autocast kernels see to
that). ``int8`` is a property of an export (post-training quantized ONNX,
:mod:`amanet.deploy.quantize`), run by OpenVINO or ONNX Runtime on the CPU. A precision a device
cannot run is a :class:`PrecisionError`, never a silent fp32 run.
"""
from __future__ import annotations

import contextlib
import logging
from typing import ContextManager, Dict

import torch

from ..errors import AmanetError

logger = logging.getLogger(__name__)

PRECISIONS = ("fp32", "bf16", "fp16", "int8")
DTYPES: Dict[str, torch.dtype] = {"fp32": torch.float32, "bf16": torch.bfloat16,
                                  "fp16": torch.float16}


class PrecisionError(AmanetError, ValueError):
    """A precision the chosen device or backend cannot run."""


def cpu_isa() -> Dict[str, bool]:
    """Which reduced-precision instructions this CPU has (as PyTorch's kernels see them)."""
    return {"avx512_bf16": bool(torch.cpu._is_avx512_bf16_supported()),
            "amx_bf16": bool(torch.cpu._is_amx_tile_supported()),
            "avx512_fp16": bool(getattr(torch.cpu, "_is_avx512_fp16_supported", lambda: False)())}


def check_precision(precision: str, device: torch.device) -> str:
    """``precision`` if ``device`` can run it, else :class:`PrecisionError` (one line)."""
    if precision not in PRECISIONS:
        raise PrecisionError(f"precision {precision!r} is not supported; choose from "
                             f"{', '.join(PRECISIONS)}")
    device = torch.device(device)
    if precision == "int8" and device.type != "cpu":
        raise PrecisionError("precision int8 runs an int8 ONNX export on the CPU (backend "
                             "openvino or onnxruntime); on CUDA use fp16 or bf16")
    if precision == "fp16" and device.type == "cpu":
        raise PrecisionError("precision fp16 needs a CUDA device (on the CPU use bf16 or fp32)")
    if precision == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise PrecisionError(f"precision bf16 is not supported by {torch.cuda.get_device_name(device)}"
                             " (compute capability 8.0 or newer); use fp16 or fp32")
    if precision == "bf16" and device.type == "cpu":
        isa = cpu_isa()
        if not (isa["avx512_bf16"] or isa["amx_bf16"]):
            logger.warning("this CPU has neither AVX512-BF16 nor AMX: bf16 runs emulated and is "
                           "likely slower than fp32")
    return precision


def autocast(precision: str, device: torch.device) -> ContextManager:
    """The autocast region of ``precision`` on ``device`` (a no-op for fp32)."""
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=DTYPES[precision])


def check_eager_precision(precision: str, device: torch.device) -> str:
    """:func:`check_precision` for the eager PyTorch model (autocast): no int8."""
    if precision == "int8":
        raise PrecisionError("precision int8 runs an int8 ONNX export (amanet export onnx "
                             "--precision int8 --calibration IMAGES) with backend openvino or "
                             "onnxruntime, not the eager model")
    return check_precision(precision, device)
