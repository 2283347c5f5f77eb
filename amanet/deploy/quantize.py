"""Post-training int8 quantization of a model for its ONNX export (OpenVINO, ONNX Runtime).

CPUs without AMX run bf16 convolutions at only ~2x fp32 (AVX512-BF16), while their VNNI int8
dot products run at ~3.5x (measured by bench/latency.py on a Zen 4): int8 is what makes such a
CPU fast. The scheme is the one both runtimes accelerate — symmetric per-output-channel int8
weights, asymmetric per-tensor uint8 activations — written into the export as
QuantizeLinear/DequantizeLinear pairs in front of each convolution and linear layer (OpenVINO
fuses them into int8 kernels; ONNX Runtime into QLinearConv).

1. :func:`calibrate` runs the fp32 model over calibration images (photos like the ones it will
   see, with people in them) and records each quantized layer's input range;
2. :func:`quantize` swaps those layers for :class:`FakeQuant` wrappers carrying the scales. The
   result is still a float PyTorch model (it *simulates* int8, slowly — the eager reference of
   the exported graph's arithmetic), and :func:`~amanet.deploy.onnx.export_onnx` writes it.

What stays float32: the layers whose outputs are the model's predictions — RPN objectness and
box deltas, the box predictor, the DensePose predictor — and everything that is not a
convolution or linear layer (RoIAlign, NMS, box decoding, interpolation, post-processing).
"""
from __future__ import annotations

import copy
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterable, List, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import AmanetError, InputError
from ..modeling.layers import Conv2dNorm

logger = logging.getLogger(__name__)

#: modules under these prefixes are quantized ...
QUANTIZED_PREFIXES = ("backbone.", "proposal_generator.rpn_head.conv", "roi_heads.box_head.",
                      "roi_heads.decoder.", "roi_heads.densepose_head.")
#: ... and the layers that produce predictions stay float32 whatever the prefixes say
FLOAT_LAYERS = ("proposal_generator.rpn_head.objectness_logits",
                "proposal_generator.rpn_head.anchor_deltas", "roi_heads.box_predictor.",
                "roi_heads.densepose_predictor.")
QUANTIZABLE = (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)
#: a registered dataset's name (not a path): ``synthetic_<split>_<N>...`` or ``densepose_coco_...``
DATASET_RE = re.compile(r"^[a-z][a-z0-9_]*_[a-z0-9_]+$")


class CalibrationError(AmanetError, ValueError):
    """Calibration cannot give a layer its range (no images, or no detections to pool)."""


@dataclass
class Range:
    lo: float = float("inf")
    hi: float = float("-inf")

    def update(self, x: torch.Tensor) -> None:
        if x.numel():
            self.lo = min(self.lo, float(x.min()))
            self.hi = max(self.hi, float(x.max()))

    @property
    def seen(self) -> bool:
        return self.lo <= self.hi


def quantized_layer_names(model: nn.Module) -> List[str]:
    """The convolution / linear layers :func:`quantize` turns int8, in module order."""
    return [name for name, m in model.named_modules()
            if isinstance(m, QUANTIZABLE) and name.startswith(QUANTIZED_PREFIXES)
            and not name.startswith(FLOAT_LAYERS)]


@torch.no_grad()
def calibrate(model: nn.Module, images: Iterable[torch.Tensor]) -> Dict[str, Tuple[float, float]]:
    """Each quantized layer's input range ``(lo, hi)`` over ``images`` (resized ``[3, H, W]``,
    float 0..255, the model's channel order), run through the deploy graph of ``model`` in fp32.
    A layer no image reached — the DensePose head when no image had a detection — is a
    :class:`CalibrationError`."""
    from tqdm import tqdm

    from .graph import DeployGraph

    names = quantized_layer_names(model)
    modules = dict(model.named_modules())
    ranges = {name: Range() for name in names}
    hooks = [modules[name].register_forward_pre_hook(
        lambda _m, args, r=ranges[name]: r.update(args[0])) for name in names]
    run = DeployGraph(model.eval()).eval()
    count = 0
    try:  # the bar shows on a terminal only (disable=None)
        for image in tqdm(images, desc="int8 calibration", unit="img", disable=None):
            run(image)
            count += 1
    finally:
        for h in hooks:
            h.remove()
    if count == 0:
        raise CalibrationError("int8 calibration needs at least one image")
    missing = [n for n, r in ranges.items() if not r.seen]
    if missing:
        raise CalibrationError(f"the {count} calibration image(s) never reached {len(missing)} "
                               f"layer(s) (first: {missing[0]}): with no detection the DensePose "
                               "head cannot be calibrated; use photos with people in them")
    logger.info("calibrated %d layers on %d image(s)", len(names), count)
    return {n: (r.lo, r.hi) for n, r in ranges.items()}


def activation_qparams(lo: float, hi: float) -> Tuple[float, int]:
    """Scale and zero point of asymmetric uint8 over ``[lo, hi]`` (widened to hold 0)."""
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    scale = max((hi - lo) / 255.0, 1e-8)
    zero_point = int(round(-lo / scale))
    return scale, min(max(zero_point, 0), 255)


class FakeQuant(nn.Module):
    """A conv / transposed conv / linear layer whose input and weight pass through int8
    quantize-dequantize: uint8 per-tensor input, int8 symmetric per-output-channel weight.
    Exported to ONNX as QuantizeLinear/DequantizeLinear pairs in front of the float op."""

    def __init__(self, layer: nn.Module, lo: float, hi: float):
        super().__init__()
        self.kind = ("linear" if isinstance(layer, nn.Linear) else
                     "deconv" if isinstance(layer, nn.ConvTranspose2d) else "conv")
        self.layer = layer
        self.scale, self.zero_point = activation_qparams(lo, hi)
        self.axis = 1 if self.kind == "deconv" else 0  # output channels of the weight
        w = layer.weight.detach()
        amax = w.abs().transpose(0, self.axis).reshape(w.shape[self.axis], -1).amax(dim=1)
        self.register_buffer("w_scale", (amax / 127.0).clamp_min(1e-12).float())
        self.register_buffer("w_zero", torch.zeros(w.shape[self.axis], dtype=torch.int32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        layer = self.layer
        x = torch.fake_quantize_per_tensor_affine(x, self.scale, self.zero_point, 0, 255)
        w = torch.fake_quantize_per_channel_affine(layer.weight, self.w_scale, self.w_zero,
                                                   self.axis, -128, 127)
        if self.kind == "linear":
            return F.linear(x, w, layer.bias)
        if self.kind == "deconv":
            return F.conv_transpose2d(x, w, layer.bias, layer.stride, layer.padding,
                                      layer.output_padding, layer.groups, layer.dilation)
        y = F.conv2d(x, w, layer.bias, layer.stride, layer.padding, layer.dilation, layer.groups)
        if isinstance(layer, Conv2dNorm):
            if layer.norm is not None:
                y = layer.norm(y)
            if layer.relu:
                y = F.relu(y)
        return y


def quantize(model: nn.Module, ranges: Dict[str, Tuple[float, float]],
             inplace: bool = False) -> nn.Module:
    """``model`` (a copy unless ``inplace``) with each calibrated layer wrapped in
    :class:`FakeQuant`."""
    if not inplace:
        model = copy.deepcopy(model)
    model.eval()
    for name, (lo, hi) in ranges.items():
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name)
        setattr(parent, child, FakeQuant(getattr(parent, child), lo, hi))
    return model


Calibration = Union[Iterable[torch.Tensor], Dict[str, Tuple[float, float]]]


def int8_model(model: nn.Module, calibration: Calibration) -> nn.Module:
    """A quantized copy of ``model`` ready to export: FrozenBN folded into the convs first (so
    the int8 weights are the folded ones; the layers' inputs, hence their ranges, do not
    change), then calibrated on ``calibration`` images — or given the ranges :func:`calibrate`
    returned, e.g. for the same weights under a config that detects nobody — and wrapped."""
    from ..modeling.inference_prep import fold_frozen_batchnorm

    model = copy.deepcopy(model).eval()
    fold_frozen_batchnorm(model)
    ranges = calibration if isinstance(calibration, dict) else calibrate(model, calibration)
    missing = sorted(set(quantized_layer_names(model)) - set(ranges))
    if missing:
        raise CalibrationError(f"no calibration range for {len(missing)} layer(s) (first: "
                               f"{missing[0]}): the ranges are of another model")
    return quantize(model, ranges, inplace=True)


def calibration_images(sources: Sequence[str], cfg, limit: int = 32) -> List[torch.Tensor]:
    """At most ``limit`` model inputs (resized as at test time) from ``sources``: image files,
    folders of images, or registered dataset names (``synthetic_train_32``: the synthetic world,
    for the demo model). Unreadable sources raise :class:`~amanet.errors.InputError`."""
    from ..data.image_io import expand_images, read_image
    from ..data.transforms import model_input

    if limit < 1:
        raise CalibrationError(f"the number of calibration images must be >= 1, got {limit}")
    paths: List[Path] = []
    for source in sources:
        if Path(source).exists():
            paths += expand_images([source])
        elif DATASET_RE.match(str(source)):
            from ..data.registry import load_dataset
            records, _ = load_dataset(str(source))
            paths += [Path(r["file_name"]) for r in records]
        else:
            raise InputError(f"calibration source not found: {source} (an image, a folder of "
                             "images, or a dataset name such as synthetic_train_32)")
    if not paths:
        given = ", ".join(map(str, sources)) or "(none given)"
        raise CalibrationError(f"no calibration images in {given}")
    return [model_input(read_image(p), cfg.input) for p in paths[:limit]]
