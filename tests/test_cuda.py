"""Inference on a CUDA device against the CPU: every head kind in eager fp32 (CUDA kernels vs
CPU kernels), fp16 autocast, and an fp16 TorchScript export loaded on the GPU. Skipped with the
reason where there is no GPU; tools/gpu_check.sh runs them on one."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from amanet.assets import PHOTO
from amanet.ops.library import build_info, load_library

pytestmark = [
    pytest.mark.skipif(not torch.cuda.is_available(),
                       reason="no CUDA device: the GPU path runs in tools/gpu_check.sh"),
    pytest.mark.skipif(not load_library() or "cuda" not in build_info(),
                       reason="amanet._C was built without CUDA kernels"),
]

#: every head kind: V1ConvX + decoder, AMANet, DeepLab with confidences, legacy
FAMILIES = ("s1x", "amanet", "densepose_rcnn_R_50_FPN_DL_WC2M_s1x",
            "densepose_rcnn_R_50_FPN_s1x_legacy")
#: detections forced, a 512 short side: quick, and the same boxes on both devices
OVERRIDES = ("MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0", "TEST.DETECTIONS_PER_IMAGE", "8",
             "INPUT.MIN_SIZE_TEST", "512", "INPUT.MAX_SIZE_TEST", "853")


def _predictor(family, device, precision=None):
    from amanet.runtime import Predictor
    return Predictor(family, None, overrides=OVERRIDES, device=device, precision=precision)


def _pairs(a, b):
    """Detections of ``b`` paired to ``a``'s by best box IoU (near-tied scores may reorder)."""
    from amanet.runtime.tracking import box_iou
    iou = box_iou(a.boxes, b.boxes)
    return [(i, int(iou[i].argmax())) for i in range(len(a)) if iou[i].max() > 0.9]


def _label_agreement(a, b, pairs):
    same = total = 0
    for i, j in pairs:
        if np.array_equal(a.chart_boxes[i], b.chart_boxes[j]):
            same += int((a.charts[i][0] == b.charts[j][0]).sum())
            total += a.charts[i][0].size
    return same / max(total, 1)


@pytest.mark.parametrize("family", FAMILIES)
def test_cuda_fp32_equals_cpu(family):
    cpu = _predictor(family, "cpu")(str(PHOTO))
    gpu = _predictor(family, "cuda")(str(PHOTO))
    assert len(cpu) == len(gpu) == 8
    pairs = _pairs(cpu, gpu)
    assert len(pairs) >= 7, pairs
    for i, j in pairs:
        assert np.abs(cpu.boxes[i] - gpu.boxes[j]).max() < 0.5
        assert abs(cpu.scores[i] - gpu.scores[j]) < 1e-3
    assert _label_agreement(cpu, gpu, pairs) > 0.99


@pytest.mark.parametrize("family", ("s1x", "amanet"))
def test_cuda_fp16_autocast_is_close_to_fp32(family):
    ref = _predictor(family, "cuda")(str(PHOTO))
    half = _predictor(family, "cuda", "fp16")(str(PHOTO))
    assert half.boxes.dtype == np.float32 and len(half) == len(ref)
    pairs = _pairs(ref, half)
    assert len(pairs) >= 6, pairs
    assert np.median([np.abs(ref.boxes[i] - half.boxes[j]).max() for i, j in pairs]) < 2.0
    assert _label_agreement(ref, half, pairs) > 0.9     # random weights: near-ties abound


def test_fp16_torchscript_runs_on_cuda(tmp_path):
    from amanet.config import load_config
    from amanet.deploy.torchscript import export_torchscript
    from amanet.modeling.model import build_model
    from amanet.modeling.smoke_init import smoke_init_
    from amanet.runtime import Predictor

    model = smoke_init_(build_model(load_config("s1x", list(OVERRIDES))), seed=0)
    path = export_torchscript(model, tmp_path / "s1x_fp16.ts", precision="fp16")
    ts = Predictor.from_export(str(path), device="cuda")
    assert ts.precision == "fp16"
    out = ts(str(PHOTO))
    eager = _predictor("s1x", "cuda", "fp16")(str(PHOTO))
    assert out.boxes.dtype == np.float32 and len(out) == len(eager) == 8
    pairs = _pairs(eager, out)
    assert len(pairs) >= 6
    assert _label_agreement(eager, out, pairs) > 0.9


@pytest.mark.parametrize("precision", [None, "fp16"])
def test_cuda_batch_of_frames_equals_one_at_a_time(precision):
    """Frames batched on the GPU (amanet video --batch) give each frame's own detections and
    labels."""
    from PIL import Image

    pred = _predictor("s1x", "cuda", precision)
    photo = np.asarray(Image.open(PHOTO).convert("RGB"))[:, :, ::-1]
    frames = [np.ascontiguousarray(np.roll(photo, 8 * i, axis=1)) for i in range(4)]
    for one, batched in zip([pred(f) for f in frames], pred.predict_many(frames, batch_size=4),
                            strict=True):
        assert len(one) == len(batched) == 8
        pairs = _pairs(one, batched)
        assert len(pairs) >= 7, pairs
        assert _label_agreement(one, batched, pairs) > (0.99 if precision is None else 0.9)
