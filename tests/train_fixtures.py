"""Tiny training configs and a hand-made DensePose-COCO set for the training tests.

The hand-made set: images with 1-2 "people" (a rectangle split into coloured parts); every
person has a box, DensePose points whose part / U / V follow the drawn colours and position,
a coarse part mask and 17 keypoints. Small and fast, deterministic from a seed.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Tuple

import numpy as np
from PIL import Image

from amanet.config import amanet_config, s1x_config


def tiny_config(family: str, out_dir: str = "", ims_per_batch: int = 2, max_iter: int = 4,
                size: int = 128):
    """A small, fast model of ``family`` (ResNet-18, 32-channel FPN, narrow heads)."""
    cfg = amanet_config() if family == "amanet" else s1x_config()
    b = cfg.backbone
    b.depth, b.res2_out_channels, b.fpn_out_channels = 18, 64, 32
    cfg.rpn.anchor_sizes = ((16,), (32,), (64,), (128,), (256,))
    cfg.rpn.pre_nms_topk_train, cfg.rpn.post_nms_topk_train = 300, 150
    cfg.rpn.pre_nms_topk_test, cfg.rpn.post_nms_topk_test = 200, 50
    cfg.rpn.batch_size_per_image = 64
    rh = cfg.roi_heads
    rh.fc_dim, rh.batch_size_per_image, rh.detections_per_image = 64, 64, 10
    dp = cfg.densepose
    dp.conv_head_dim, dp.num_stacked_convs = 32, 2
    if family == "amanet":
        dp.ama_pooler_resolutions = (16, 8, 8, 4)   # 32 x 32 outputs
        dp.pooler_resolution, dp.heatmap_size = 16, 32
    else:
        dp.decoder_conv_dims = dp.decoder_num_classes = 32
        dp.pooler_resolution, dp.heatmap_size = 14, 56
    dp.fg_iou_threshold = 0.5
    cfg.input.min_size_train = (size - 16, size)
    cfg.input.max_size_train = 2 * size
    cfg.input.min_size_test, cfg.input.max_size_test = size, 2 * size
    s = cfg.solver
    s.ims_per_batch, s.base_lr, s.max_iter = ims_per_batch, 0.01, max_iter
    s.steps, s.warmup_iters, s.warmup_factor = (max_iter * 3 // 4,), 2, 0.1
    s.checkpoint_period = 1000
    # from scratch (no ImageNet backbone) the unnormalised network needs clipping
    s.clip_gradients, s.clip_type, s.clip_value = True, "norm", 1.0
    cfg.seed = 7
    cfg.output_dir = out_dir
    return cfg


def make_dataset(root: Path, num_images: int = 4, seed: int = 0,
                 hw: Tuple[int, int] = (128, 160)) -> Path:
    """Write ``root/images/*.png`` and ``root/annotations.json``; returns the JSON path."""
    from amanet.data.densepose_coco import encode_dp_masks

    rng = np.random.default_rng(seed)
    h, w = hw
    (root / "images").mkdir(parents=True, exist_ok=True)
    images, anns = [], []
    aid = 1
    for n in range(num_images):
        img = (rng.random((h, w, 3)) * 60 + 40).astype(np.uint8)
        for _ in range(int(rng.integers(1, 3))):
            bw, bh = int(rng.integers(w // 4, w // 2)), int(rng.integers(h // 3, h - 8))
            x0, y0 = int(rng.integers(0, w - bw)), int(rng.integers(0, h - bh))
            # 4 horizontal bands = parts 1, 2, 15, 23 (coarse 1, 1, 10, 14)
            parts = [23, 2, 15, 1]
            coarse = [14, 1, 10, 1]
            colours = [(220, 40, 40), (40, 220, 40), (40, 40, 220), (220, 220, 40)]
            mask = np.zeros((256, 256), np.uint8)
            for k in range(4):
                ya, yb = y0 + bh * k // 4, y0 + bh * (k + 1) // 4
                img[ya:yb, x0:x0 + bw] = colours[k]
                mask[64 * k:64 * (k + 1), :] = coarse[k]
            p = 40
            px = rng.uniform(2, 254, p)
            py = rng.uniform(2, 254, p)
            band = np.minimum((py // 64).astype(int), 3)
            dp_i = np.array([parts[b] for b in band])
            dp_u = px / 256.0
            dp_v = (py - 64 * band) / 64.0
            kp = np.zeros((17, 3))
            kp[:, 0] = x0 + rng.uniform(0, bw, 17)
            kp[:, 1] = y0 + rng.uniform(0, bh, 17)
            kp[:, 2] = 2
            anns.append({"id": aid, "image_id": n + 1, "category_id": 1, "iscrowd": 0,
                         "bbox": [x0, y0, bw, bh], "area": float(bw * bh),
                         "dp_x": px.tolist(), "dp_y": py.tolist(), "dp_I": dp_i.tolist(),
                         "dp_U": dp_u.tolist(), "dp_V": dp_v.tolist(),
                         "dp_masks": encode_dp_masks(mask),
                         "keypoints": kp.reshape(-1).tolist(), "num_keypoints": 17})
            aid += 1
        name = f"{n:04d}.png"
        Image.fromarray(img[:, :, ::-1]).save(root / "images" / name)
        images.append({"id": n + 1, "file_name": name, "height": h, "width": w})
    doc = {"images": images, "annotations": anns,
           "categories": [{"id": 1, "name": "person", "supercategory": "person"}]}
    path = root / "annotations.json"
    path.write_text(json.dumps(doc))
    return path


def tiny_overrides(family: str, out_dir: str, max_iter: int = 2, ims_per_batch: int = 2,
                   size: int = 128, extra=()) -> list:
    """Detectron2-style ``KEY VALUE`` overrides that shrink a shipped config to
    :func:`tiny_config` size (appended to the seed's command lines in the CLI tests)."""
    ov = ["OUTPUT_DIR", out_dir,
          "MODEL.RESNETS.DEPTH", "18", "MODEL.RESNETS.RES2_OUT_CHANNELS", "64",
          "MODEL.FPN.OUT_CHANNELS", "32",
          "MODEL.ANCHOR_GENERATOR.SIZES", "[[16], [32], [64], [128], [256]]",
          "MODEL.RPN.PRE_NMS_TOPK_TRAIN", "300", "MODEL.RPN.POST_NMS_TOPK_TRAIN", "150",
          "MODEL.RPN.PRE_NMS_TOPK_TEST", "200", "MODEL.RPN.POST_NMS_TOPK_TEST", "50",
          "MODEL.RPN.BATCH_SIZE_PER_IMAGE", "64",
          "MODEL.ROI_BOX_HEAD.FC_DIM", "64", "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", "64",
          "TEST.DETECTIONS_PER_IMAGE", "10",
          "MODEL.ROI_DENSEPOSE_HEAD.CONV_HEAD_DIM", "32",
          "MODEL.ROI_DENSEPOSE_HEAD.NUM_STACKED_CONVS", "2",
          "MODEL.ROI_DENSEPOSE_HEAD.FG_IOU_THRESHOLD", "0.5",
          "INPUT.MIN_SIZE_TRAIN", f"({size},)", "INPUT.MAX_SIZE_TRAIN", str(2 * size),
          "INPUT.MIN_SIZE_TEST", str(size), "INPUT.MAX_SIZE_TEST", str(2 * size),
          "SOLVER.IMS_PER_BATCH", str(ims_per_batch), "SOLVER.BASE_LR", "0.01",
          "SOLVER.MAX_ITER", str(max_iter), "SOLVER.STEPS", f"({max_iter * 3 // 4},)",
          "SOLVER.WARMUP_ITERS", "2", "SOLVER.WARMUP_FACTOR", "0.1",
          "SOLVER.CLIP_GRADIENTS.ENABLED", "True", "SOLVER.CLIP_GRADIENTS.CLIP_TYPE", "norm",
          "SOLVER.CLIP_GRADIENTS.CLIP_VALUE", "1.0", "SEED", "7"]
    if family == "amanet":
        ov += ["MODEL.ROI_DENSEPOSE_HEAD.POOLER_RESOLUTION", "16",
               "MODEL.ROI_DENSEPOSE_HEAD.HEATMAP_SIZE", "32"]
    else:
        ov += ["MODEL.ROI_DENSEPOSE_HEAD.DECODER_CONV_DIMS", "32",
               "MODEL.ROI_DENSEPOSE_HEAD.DECODER_NUM_CLASSES", "32",
               "MODEL.ROI_DENSEPOSE_HEAD.POOLER_RESOLUTION", "14",
               "MODEL.ROI_DENSEPOSE_HEAD.HEATMAP_SIZE", "56"]
    return ov + list(extra)
