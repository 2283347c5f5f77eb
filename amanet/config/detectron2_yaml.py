"""Detectron2-style YAML configs for the two model families, mapped onto :mod:`.schema`.

What this module accepts:

- a preset name (see :data:`amanet.config.schema.PRESETS`), or a YAML file: a short model-zoo
  file with a ``_BASE_`` chain, a full ``cfg.dump()`` of Detectron2 / its DensePose project /
  the AMANet fork, or a dump of our own format (:func:`dump_config`);
- Detectron2-style ``KEY VALUE`` overrides (:func:`merge_overrides`). Lower-case dotted keys
  (``densepose.mask_gate_threshold``) address our own fields directly.

Every Detectron2 key is checked against :data:`KNOWN_KEYS`, the set of keys that Detectron2,
its DensePose project or the AMANet fork define. A key nobody defines is an error; a known
key without effect on our inference is accepted and ignored (or mapped onto a training field);
a known key whose value we cannot honour (``MODEL.RESNETS.NORM: GN``, ...) is an error that
says what is supported. :data:`D2_TO_FIELD` maps keys onto dataclass fields.

The family (``s1x`` / ``amanet``) comes from ``MODEL.ROI_DENSEPOSE_HEAD.NAME``; a file is
applied on top of that family's preset, then the overrides.
"""
from __future__ import annotations

import ast
import difflib
import logging
import typing
from dataclasses import fields, is_dataclass
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import yaml

from .schema import (FAMILIES, FAMILY_AMANET, FAMILY_S1X, HEAD_FAMILIES, PRESETS, Config,
                     family_of_head, preset)

logger = logging.getLogger(__name__)

__all__ = ["ConfigError", "load_config", "merge_overrides", "dump_config", "config_from_dict",
           "KNOWN_KEYS", "D2_TO_FIELD", "CONFIGS_DIR"]

#: The YAML presets shipped with the package.
CONFIGS_DIR = Path(__file__).resolve().parent.parent / "configs"

#: Preset name -> shipped YAML file (the python presets and these files agree; tested).
PRESET_FILES = {
    "densepose_rcnn_R_50_FPN_s1x": "densepose_rcnn_R_50_FPN_s1x.yaml",
    "densepose_AMA_R_50_FPN_s1x": "densepose_AMA_R_50_FPN_s1x.yaml",
    FAMILY_S1X: "densepose_rcnn_R_50_FPN_s1x.yaml",
    FAMILY_AMANET: "densepose_AMA_R_50_FPN_s1x.yaml",
}

HEAD_KEY = "MODEL.ROI_DENSEPOSE_HEAD.NAME"


class ConfigError(ValueError):
    """A config file or override that cannot be honoured; the message names the key."""


# --------------------------------------------------------------------------------------------
# The known keys
# --------------------------------------------------------------------------------------------
# Leaf kinds. ``OPEN`` marks a node that takes any sub-keys (Detectron2's new_allowed nodes).
INT, FLOAT, BOOL, STR, SEQ, ANY, OPEN = "int", "float", "bool", "str", "seq", "any", "open"
_KIND_ABBREV = {"i": INT, "f": FLOAT, "b": BOOL, "s": STR, "seq": SEQ, "any": ANY, "open": OPEN}


def _leaves(**groups: str) -> Dict[str, str]:
    """``_leaves(i="A B", b="C")`` -> ``{"A": INT, "B": INT, "C": BOOL}`` (see ``_KIND_ABBREV``)."""
    return {name: _KIND_ABBREV[abbrev]
            for abbrev, names in groups.items() for name in names.split()}


_HRNET_STAGE = _leaves(i="NUM_MODULES NUM_BRANCHES", s="BLOCK FUSE_METHOD",
                       seq="NUM_BLOCKS NUM_CHANNELS")

#: Every key defined by Detectron2 (``detectron2/config/defaults.py``, current and the version
#: the AMANet fork ships), its DensePose project (``add_densepose_config`` and the functions it
#: calls) and the AMANet fork (``projects/AMA/densepose/config.py``), with its value kind.
KNOWN_KEYS: Dict[str, Any] = {
    **_leaves(i="VERSION NUM_GPUS VIS_PERIOD SEED", b="CUDNN_BENCHMARK",
              s="OUTPUT_DIR FLOAT32_PRECISION", seq="BOOTSTRAP_DATASETS"),
    "GLOBAL": _leaves(f="HACK"),
    "BOOTSTRAP_MODEL": _leaves(s="WEIGHTS DEVICE"),
    "MODEL": {
        **_leaves(b="LOAD_PROPOSALS MASK_ON KEYPOINT_ON DENSEPOSE_ON",
                  s="DEVICE META_ARCHITECTURE WEIGHTS", seq="PIXEL_MEAN PIXEL_STD"),
        "BACKBONE": _leaves(s="NAME", i="FREEZE_AT"),
        "FPN": _leaves(seq="IN_FEATURES", i="OUT_CHANNELS", s="NORM FUSE_TYPE"),
        "PROPOSAL_GENERATOR": _leaves(s="NAME", f="MIN_SIZE"),
        "ANCHOR_GENERATOR": _leaves(s="NAME", seq="SIZES ASPECT_RATIOS ANGLES", f="OFFSET"),
        "RPN": _leaves(
            s="HEAD_NAME BBOX_REG_LOSS_TYPE",
            seq="IN_FEATURES IOU_THRESHOLDS IOU_LABELS BBOX_REG_WEIGHTS CONV_DIMS",
            i="BOUNDARY_THRESH BATCH_SIZE_PER_IMAGE PRE_NMS_TOPK_TRAIN PRE_NMS_TOPK_TEST "
              "POST_NMS_TOPK_TRAIN POST_NMS_TOPK_TEST",
            f="POSITIVE_FRACTION BBOX_REG_LOSS_WEIGHT SMOOTH_L1_BETA LOSS_WEIGHT NMS_THRESH"),
        "ROI_HEADS": _leaves(
            s="NAME", i="NUM_CLASSES BATCH_SIZE_PER_IMAGE",
            seq="IN_FEATURES IOU_THRESHOLDS IOU_LABELS",
            f="POSITIVE_FRACTION SCORE_THRESH_TEST NMS_THRESH_TEST", b="PROPOSAL_APPEND_GT"),
        "ROI_BOX_HEAD": _leaves(
            s="NAME BBOX_REG_LOSS_TYPE POOLER_TYPE NORM", seq="BBOX_REG_WEIGHTS",
            f="BBOX_REG_LOSS_WEIGHT SMOOTH_L1_BETA FED_LOSS_FREQ_WEIGHT_POWER",
            i="POOLER_RESOLUTION POOLER_SAMPLING_RATIO NUM_FC FC_DIM NUM_CONV CONV_DIM "
              "FED_LOSS_NUM_CLASSES",
            b="CLS_AGNOSTIC_BBOX_REG TRAIN_ON_PRED_BOXES USE_FED_LOSS USE_SIGMOID_CE"),
        "ROI_BOX_CASCADE_HEAD": _leaves(seq="BBOX_REG_WEIGHTS IOUS"),
        "ROI_MASK_HEAD": _leaves(
            s="NAME NORM POOLER_TYPE",
            i="POOLER_RESOLUTION POOLER_SAMPLING_RATIO NUM_CONV CONV_DIM",
            b="CLS_AGNOSTIC_MASK RCNN_HEAD_ON"),
        "ROI_KEYPOINT_HEAD": _leaves(
            s="NAME POOLER_TYPE RELATION_DIR WORD_EMB_DIR KPT_RELATION_DIR KPT_WORD_EMB_DIR",
            i="POOLER_RESOLUTION POOLER_SAMPLING_RATIO NUM_KEYPOINTS MIN_KEYPOINTS_PER_IMAGE "
              "CONV_HEAD_DIM NUM_STACKED_CONVS RELATION_DIM KPT_RELATION_DIM",
            seq="CONV_DIMS", f="LOSS_WEIGHT",
            b="NORMALIZE_LOSS_BY_VISIBLE_KEYPOINTS RCNN_HEAD_ON RELATION_ON MULTI_ROIS"),
        "SEM_SEG_HEAD": _leaves(
            s="NAME NORM", seq="IN_FEATURES", f="LOSS_WEIGHT",
            i="IGNORE_VALUE NUM_CLASSES CONVS_DIM COMMON_STRIDE"),
        "PANOPTIC_FPN": {
            **_leaves(f="INSTANCE_LOSS_WEIGHT"),
            "COMBINE": _leaves(b="ENABLED", f="OVERLAP_THRESH INSTANCES_CONFIDENCE_THRESH",
                               i="STUFF_AREA_LIMIT"),
        },
        "RETINANET": _leaves(
            i="NUM_CLASSES NUM_CONVS TOPK_CANDIDATES_TEST",
            seq="IN_FEATURES IOU_THRESHOLDS IOU_LABELS BBOX_REG_WEIGHTS",
            f="PRIOR_PROB SCORE_THRESH_TEST NMS_THRESH_TEST FOCAL_LOSS_GAMMA FOCAL_LOSS_ALPHA "
              "SMOOTH_L1_LOSS_BETA",
            s="BBOX_REG_LOSS_TYPE NORM"),
        "RESNETS": _leaves(
            i="DEPTH NUM_GROUPS WIDTH_PER_GROUP RES5_DILATION RES2_OUT_CHANNELS STEM_OUT_CHANNELS "
              "DEFORM_NUM_GROUPS",
            seq="OUT_FEATURES DEFORM_ON_PER_STAGE", s="NORM", b="STRIDE_IN_1X1 DEFORM_MODULATED"),
        "HRNET": {
            **_leaves(i="STEM_INPLANES"),
            "STAGE2": dict(_HRNET_STAGE), "STAGE3": dict(_HRNET_STAGE),
            "STAGE4": dict(_HRNET_STAGE),
            "HRFPN": _leaves(i="OUT_CHANNELS"),
        },
        "ROI_DENSEPOSE_HEAD": {
            **_leaves(
                s="NAME POOLER_TYPE DECODER_NORM PREDICTOR_NAME LOSS_NAME "
                  "PREDICTOR KPT_CLASSIFIER_WEIGHT_DIR KPT_SURF_RELATION_DIR",
                i="NUM_STACKED_CONVS NUM_PATCHES DECONV_KERNEL CONV_HEAD_DIM CONV_HEAD_KERNEL "
                  "UP_SCALE HEATMAP_SIZE POOLER_RESOLUTION POOLER_SAMPLING_RATIO "
                  "NUM_COARSE_SEGM_CHANNELS DECODER_NUM_CLASSES DECODER_CONV_DIMS "
                  "DECODER_COMMON_STRIDE KPT_UP_SCALE DECODER_OUT_DIMS",
                f="FG_IOU_THRESHOLD INDEX_WEIGHTS PART_WEIGHTS POINT_REGRESSION_WEIGHTS "
                  "INTER_WEIGHTS BODY_MASK_WEIGHTS SEMSEG_WEIGHTS",
                b="COARSE_SEGM_TRAINED_BY_MASKS DECODER_ON SEMSEG_ON IA_LOSS KPT_ON "
                  "RCNN_HEAD_ON MID_ON DECODER_MULTI_SCALE_ON"),
            "DEEPLAB": _leaves(s="NORM", i="NONLOCAL_ON"),
            "UV_CONFIDENCE": _leaves(b="ENABLED", f="EPSILON", s="TYPE"),
            "SEGM_CONFIDENCE": _leaves(b="ENABLED", f="EPSILON"),
            "CSE": {
                **_leaves(i="EMBED_SIZE", open="EMBEDDERS", s="EMBED_LOSS_NAME",
                          f="EMBEDDING_DIST_GAUSS_SIGMA GEODESIC_DIST_GAUSS_SIGMA "
                            "EMBED_LOSS_WEIGHT FEATURES_LR_FACTOR EMBEDDING_LR_FACTOR"),
                "SHAPE_TO_SHAPE_CYCLE_LOSS": _leaves(
                    b="ENABLED", f="WEIGHT TEMPERATURE", i="NORM_P MAX_NUM_VERTICES"),
                "PIX_TO_SHAPE_CYCLE_LOSS": _leaves(
                    b="ENABLED USE_ALL_MESHES_NOT_GT_ONLY", i="NORM_P NUM_PIXELS_TO_SAMPLE",
                    f="WEIGHT PIXEL_SIGMA TEMPERATURE_PIXEL_TO_VERTEX TEMPERATURE_VERTEX_TO_PIXEL"),
            },
        },
    },
    "INPUT": {
        **_leaves(seq="MIN_SIZE_TRAIN ROTATION_ANGLES",
                  i="MAX_SIZE_TRAIN MIN_SIZE_TEST MAX_SIZE_TEST",
                  s="MIN_SIZE_TRAIN_SAMPLING RANDOM_FLIP FORMAT MASK_FORMAT"),
        "CROP": _leaves(b="ENABLED", s="TYPE", seq="SIZE"),
    },
    "DATASETS": _leaves(
        seq="TRAIN PROPOSAL_FILES_TRAIN TEST PROPOSAL_FILES_TEST",
        i="PRECOMPUTED_PROPOSAL_TOPK_TRAIN PRECOMPUTED_PROPOSAL_TOPK_TEST",
        open="CATEGORY_MAPS WHITELISTED_CATEGORIES CLASS_TO_MESH_NAME_MAPPING"),
    "DATALOADER": _leaves(i="NUM_WORKERS", s="SAMPLER_TRAIN", f="REPEAT_THRESHOLD",
                          b="ASPECT_RATIO_GROUPING REPEAT_SQRT FILTER_EMPTY_ANNOTATIONS"),
    "SOLVER": {
        **_leaves(
            s="LR_SCHEDULER_NAME WARMUP_METHOD",
            i="MAX_ITER NUM_DECAYS WARMUP_ITERS CHECKPOINT_PERIOD IMS_PER_BATCH "
              "REFERENCE_WORLD_SIZE",
            f="BASE_LR BASE_LR_END MOMENTUM WEIGHT_DECAY WEIGHT_DECAY_NORM GAMMA WARMUP_FACTOR "
              "BIAS_LR_FACTOR",
            b="NESTEROV RESCALE_INTERVAL", seq="STEPS", any="WEIGHT_DECAY_BIAS"),
        "CLIP_GRADIENTS": _leaves(b="ENABLED", s="CLIP_TYPE", f="CLIP_VALUE NORM_TYPE"),
        "AMP": _leaves(b="ENABLED"),
    },
    "TEST": {
        **_leaves(seq="EXPECTED_RESULTS KEYPOINT_OKS_SIGMAS", i="EVAL_PERIOD DETECTIONS_PER_IMAGE"),
        "AUG": _leaves(b="ENABLED FLIP", seq="MIN_SIZES ROTATION_ANGLES", i="MAX_SIZE"),
        "PRECISE_BN": _leaves(b="ENABLED", i="NUM_ITER"),
    },
    "DENSEPOSE_EVALUATION": _leaves(
        s="TYPE STORAGE", f="MIN_IOU_THRESHOLD", seq="MESH_ALIGNMENT_MESH_NAMES",
        b="DISTRIBUTED_INFERENCE EVALUATE_MESH_ALIGNMENT"),
}

# --------------------------------------------------------------------------------------------
# Detectron2 key -> dataclass field
# --------------------------------------------------------------------------------------------
FieldPath = Tuple[str, ...]
_DP = "MODEL.ROI_DENSEPOSE_HEAD."

#: Detectron2 key -> path of the field in :class:`Config` (a 3rd element indexes a dict field).
D2_TO_FIELD: Dict[str, FieldPath] = {
    "MODEL.DEVICE": ("device",),
    "MODEL.WEIGHTS": ("weights",),
    "OUTPUT_DIR": ("output_dir",),
    "SEED": ("seed",),
    # input
    "INPUT.MIN_SIZE_TEST": ("input", "min_size_test"),
    "INPUT.MAX_SIZE_TEST": ("input", "max_size_test"),
    "INPUT.FORMAT": ("input", "format"),
    "MODEL.PIXEL_MEAN": ("input", "pixel_mean"),
    "MODEL.PIXEL_STD": ("input", "pixel_std"),
    "INPUT.MIN_SIZE_TRAIN": ("input", "min_size_train"),
    "INPUT.MAX_SIZE_TRAIN": ("input", "max_size_train"),
    "INPUT.RANDOM_FLIP": ("input", "random_flip"),
    # backbone
    "MODEL.RESNETS.DEPTH": ("backbone", "depth"),
    "MODEL.RESNETS.NORM": ("backbone", "norm"),
    "MODEL.RESNETS.STRIDE_IN_1X1": ("backbone", "stride_in_1x1"),
    "MODEL.RESNETS.NUM_GROUPS": ("backbone", "num_groups"),
    "MODEL.RESNETS.WIDTH_PER_GROUP": ("backbone", "width_per_group"),
    "MODEL.RESNETS.STEM_OUT_CHANNELS": ("backbone", "stem_out_channels"),
    "MODEL.RESNETS.RES2_OUT_CHANNELS": ("backbone", "res2_out_channels"),
    "MODEL.RESNETS.RES5_DILATION": ("backbone", "res5_dilation"),
    "MODEL.RESNETS.OUT_FEATURES": ("backbone", "out_features"),
    "MODEL.BACKBONE.FREEZE_AT": ("backbone", "freeze_at"),
    "MODEL.FPN.OUT_CHANNELS": ("backbone", "fpn_out_channels"),
    "MODEL.FPN.NORM": ("backbone", "fpn_norm"),
    "MODEL.FPN.FUSE_TYPE": ("backbone", "fpn_fuse_type"),
    # RPN
    "MODEL.RPN.IN_FEATURES": ("rpn", "in_features"),
    "MODEL.ANCHOR_GENERATOR.SIZES": ("rpn", "anchor_sizes"),
    "MODEL.ANCHOR_GENERATOR.ASPECT_RATIOS": ("rpn", "aspect_ratios"),
    "MODEL.ANCHOR_GENERATOR.OFFSET": ("rpn", "anchor_offset"),
    "MODEL.RPN.BBOX_REG_WEIGHTS": ("rpn", "bbox_reg_weights"),
    "MODEL.RPN.NMS_THRESH": ("rpn", "nms_thresh"),
    "MODEL.PROPOSAL_GENERATOR.MIN_SIZE": ("rpn", "min_size"),
    "MODEL.RPN.PRE_NMS_TOPK_TEST": ("rpn", "pre_nms_topk_test"),
    "MODEL.RPN.POST_NMS_TOPK_TEST": ("rpn", "post_nms_topk_test"),
    "MODEL.RPN.PRE_NMS_TOPK_TRAIN": ("rpn", "pre_nms_topk_train"),
    "MODEL.RPN.POST_NMS_TOPK_TRAIN": ("rpn", "post_nms_topk_train"),
    "MODEL.RPN.BATCH_SIZE_PER_IMAGE": ("rpn", "batch_size_per_image"),
    "MODEL.RPN.POSITIVE_FRACTION": ("rpn", "positive_fraction"),
    "MODEL.RPN.IOU_THRESHOLDS": ("rpn", "iou_thresholds"),
    "MODEL.RPN.IOU_LABELS": ("rpn", "iou_labels"),
    "MODEL.RPN.SMOOTH_L1_BETA": ("rpn", "smooth_l1_beta"),
    "MODEL.RPN.LOSS_WEIGHT": ("rpn", "loss_weight"),
    # ROI heads and box head
    "MODEL.ROI_HEADS.IN_FEATURES": ("roi_heads", "in_features"),
    "MODEL.ROI_HEADS.NUM_CLASSES": ("roi_heads", "num_classes"),
    "MODEL.ROI_HEADS.SCORE_THRESH_TEST": ("roi_heads", "score_thresh_test"),
    "MODEL.ROI_HEADS.NMS_THRESH_TEST": ("roi_heads", "nms_thresh_test"),
    "TEST.DETECTIONS_PER_IMAGE": ("roi_heads", "detections_per_image"),
    "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE": ("roi_heads", "batch_size_per_image"),
    "MODEL.ROI_HEADS.POSITIVE_FRACTION": ("roi_heads", "positive_fraction"),
    "MODEL.ROI_HEADS.IOU_THRESHOLDS": ("roi_heads", "iou_thresholds"),
    "MODEL.ROI_HEADS.PROPOSAL_APPEND_GT": ("roi_heads", "proposal_append_gt"),
    "MODEL.ROI_BOX_HEAD.POOLER_RESOLUTION": ("roi_heads", "pooler_resolution"),
    "MODEL.ROI_BOX_HEAD.POOLER_SAMPLING_RATIO": ("roi_heads", "pooler_sampling_ratio"),
    "MODEL.ROI_BOX_HEAD.POOLER_TYPE": ("roi_heads", "pooler_type"),
    "MODEL.ROI_BOX_HEAD.NUM_FC": ("roi_heads", "num_fc"),
    "MODEL.ROI_BOX_HEAD.FC_DIM": ("roi_heads", "fc_dim"),
    "MODEL.ROI_BOX_HEAD.BBOX_REG_WEIGHTS": ("roi_heads", "bbox_reg_weights"),
    "MODEL.ROI_BOX_HEAD.CLS_AGNOSTIC_BBOX_REG": ("roi_heads", "cls_agnostic_bbox_reg"),
    "MODEL.ROI_BOX_HEAD.SMOOTH_L1_BETA": ("roi_heads", "smooth_l1_beta"),
    # DensePose head
    _DP + "NAME": ("densepose", "name"),
    _DP + "PREDICTOR_NAME": ("densepose", "predictor_name"),
    _DP + "PREDICTOR": ("densepose", "predictor_name"),          # AMANet fork's spelling
    _DP + "NUM_PATCHES": ("densepose", "num_patches"),
    _DP + "NUM_COARSE_SEGM_CHANNELS": ("densepose", "num_coarse_segm_channels"),
    _DP + "CONV_HEAD_DIM": ("densepose", "conv_head_dim"),
    _DP + "CONV_HEAD_KERNEL": ("densepose", "conv_head_kernel"),
    _DP + "NUM_STACKED_CONVS": ("densepose", "num_stacked_convs"),
    _DP + "DECONV_KERNEL": ("densepose", "deconv_kernel"),
    _DP + "UP_SCALE": ("densepose", "up_scale"),
    _DP + "HEATMAP_SIZE": ("densepose", "heatmap_size"),
    _DP + "POOLER_RESOLUTION": ("densepose", "pooler_resolution"),
    _DP + "POOLER_SAMPLING_RATIO": ("densepose", "pooler_sampling_ratio"),
    _DP + "POOLER_TYPE": ("densepose", "pooler_type"),
    _DP + "DECODER_ON": ("densepose", "decoder_on"),
    _DP + "DECODER_CONV_DIMS": ("densepose", "decoder_conv_dims"),
    _DP + "DECODER_NUM_CLASSES": ("densepose", "decoder_num_classes"),
    _DP + "DECODER_COMMON_STRIDE": ("densepose", "decoder_common_stride"),
    _DP + "DECODER_NORM": ("densepose", "decoder_norm"),
    _DP + "DEEPLAB.NORM": ("densepose", "deeplab_norm"),
    _DP + "DEEPLAB.NONLOCAL_ON": ("densepose", "deeplab_nonlocal_on"),
    _DP + "UV_CONFIDENCE.ENABLED": ("densepose", "uv_confidence_enabled"),
    _DP + "UV_CONFIDENCE.TYPE": ("densepose", "uv_confidence_type"),
    _DP + "UV_CONFIDENCE.EPSILON": ("densepose", "uv_confidence_epsilon"),
    _DP + "SEGM_CONFIDENCE.ENABLED": ("densepose", "segm_confidence_enabled"),
    _DP + "SEGM_CONFIDENCE.EPSILON": ("densepose", "segm_confidence_epsilon"),
    _DP + "KPT_ON": ("densepose", "kpt_on"),
    "MODEL.KEYPOINT_ON": ("densepose", "kpt_on"),
    "MODEL.ROI_KEYPOINT_HEAD.NUM_KEYPOINTS": ("densepose", "num_keypoints"),
    _DP + "FG_IOU_THRESHOLD": ("densepose", "fg_iou_threshold"),
    _DP + "POINT_REGRESSION_WEIGHTS": ("densepose", "heatmap_loss_weights", "point_regression"),
    _DP + "PART_WEIGHTS": ("densepose", "heatmap_loss_weights", "part"),
    _DP + "INDEX_WEIGHTS": ("densepose", "heatmap_loss_weights", "index"),
    _DP + "INTER_WEIGHTS": ("densepose", "heatmap_loss_weights", "inter"),
    _DP + "BODY_MASK_WEIGHTS": ("densepose", "heatmap_loss_weights", "body_mask"),
    "MODEL.ROI_KEYPOINT_HEAD.LOSS_WEIGHT": ("densepose", "heatmap_loss_weights", "keypoint"),
    # solver
    "SOLVER.IMS_PER_BATCH": ("solver", "ims_per_batch"),
    "SOLVER.BASE_LR": ("solver", "base_lr"),
    "SOLVER.MOMENTUM": ("solver", "momentum"),
    "SOLVER.WEIGHT_DECAY": ("solver", "weight_decay"),
    "SOLVER.MAX_ITER": ("solver", "max_iter"),
    "SOLVER.STEPS": ("solver", "steps"),
    "SOLVER.GAMMA": ("solver", "gamma"),
    "SOLVER.WARMUP_FACTOR": ("solver", "warmup_factor"),
    "SOLVER.WARMUP_ITERS": ("solver", "warmup_iters"),
    "SOLVER.WARMUP_METHOD": ("solver", "warmup_method"),
    "SOLVER.CHECKPOINT_PERIOD": ("solver", "checkpoint_period"),
    "SOLVER.CLIP_GRADIENTS.ENABLED": ("solver", "clip_gradients"),
    "SOLVER.CLIP_GRADIENTS.CLIP_VALUE": ("solver", "clip_value"),
    "SOLVER.CLIP_GRADIENTS.CLIP_TYPE": ("solver", "clip_type"),
    "SOLVER.CLIP_GRADIENTS.NORM_TYPE": ("solver", "clip_norm_type"),
    "SOLVER.BIAS_LR_FACTOR": ("solver", "bias_lr_factor"),
    "SOLVER.WEIGHT_DECAY_BIAS": ("solver", "weight_decay_bias"),
    "SOLVER.WEIGHT_DECAY_NORM": ("solver", "weight_decay_norm"),
    "SOLVER.NESTEROV": ("solver", "nesterov"),
    "SOLVER.AMP.ENABLED": ("solver", "amp"),
    "TEST.EVAL_PERIOD": ("solver", "eval_period"),
    "INPUT.MIN_SIZE_TRAIN_SAMPLING": ("input", "min_size_train_sampling"),
    # data (training / evaluation)
    "DATASETS.TRAIN": ("datasets", "train"),
    "DATASETS.TEST": ("datasets", "test"),
}

#: Keys that only the AMANet fork's code reads: applied for that family, ignored for others.
FAMILY_ONLY_KEYS: Dict[str, str] = {
    _DP + "INTER_WEIGHTS": FAMILY_AMANET,
    _DP + "BODY_MASK_WEIGHTS": FAMILY_AMANET,
    "MODEL.ROI_KEYPOINT_HEAD.LOSS_WEIGHT": FAMILY_AMANET,
}

#: Two keys for one field: within one file, the family's own spelling wins over the other.
_PREFERRED_KEY: Dict[Tuple[str, str], str] = {
    (FAMILY_S1X, _DP + "PREDICTOR"): _DP + "PREDICTOR_NAME",
    (FAMILY_AMANET, _DP + "PREDICTOR_NAME"): _DP + "PREDICTOR",
    (FAMILY_S1X, "MODEL.KEYPOINT_ON"): _DP + "KPT_ON",
    (FAMILY_AMANET, "MODEL.KEYPOINT_ON"): _DP + "KPT_ON",
}

# --------------------------------------------------------------------------------------------
# Values we can honour
# --------------------------------------------------------------------------------------------
_FPN_LEVELS = ("p2", "p3", "p4", "p5", "p6")
_RES_STAGES = ("res2", "res3", "res4", "res5")
_POOLERS = ("ROIAlign", "ROIAlignV2")
_S1X_PREDICTORS = ("DensePoseChartPredictor", "DensePoseChartWithConfidencePredictor")
_AMA_PREDICTORS = ("TaskTransformerAMAPredictorV2",)


def _one_of(*allowed: Any) -> Tuple[Any, str]:
    return (lambda v: v in allowed), "one of " + ", ".join(repr(a) for a in allowed)


def _subset_of(names: Sequence[str]) -> Tuple[Any, str]:
    return ((lambda v: len(v) > 0 and all(x in names for x in v)),
            f"a non-empty list drawn from {list(names)}")


#: Detectron2 key -> (predicate on the decoded value, what is supported).
SUPPORTED_VALUES: Dict[str, Tuple[Any, str]] = {
    "VERSION": _one_of(2),
    "MODEL.META_ARCHITECTURE": _one_of("GeneralizedRCNN"),
    "MODEL.MASK_ON": _one_of(False),
    "MODEL.LOAD_PROPOSALS": _one_of(False),
    "MODEL.DENSEPOSE_ON": _one_of(True),
    "MODEL.BACKBONE.NAME": _one_of("build_resnet_fpn_backbone"),
    "MODEL.RESNETS.DEPTH": _one_of(18, 34, 50, 101),
    "MODEL.RESNETS.NORM": _one_of("FrozenBN", "BN"),
    "MODEL.RESNETS.RES5_DILATION": _one_of(1, 2),
    "MODEL.RESNETS.DEFORM_ON_PER_STAGE": (
        lambda v: not any(v), "all False (deformable convolutions are not implemented)"),
    "MODEL.RESNETS.OUT_FEATURES": _subset_of(("stem",) + _RES_STAGES),
    "MODEL.FPN.IN_FEATURES": (lambda v: tuple(v) == _RES_STAGES, f"exactly {list(_RES_STAGES)}"),
    "MODEL.FPN.NORM": _one_of(""),
    "MODEL.FPN.FUSE_TYPE": _one_of("sum", "avg"),
    "MODEL.PROPOSAL_GENERATOR.NAME": _one_of("RPN"),
    "MODEL.ANCHOR_GENERATOR.NAME": _one_of("DefaultAnchorGenerator"),
    "MODEL.RPN.HEAD_NAME": _one_of("StandardRPNHead"),
    "MODEL.RPN.CONV_DIMS": (lambda v: list(v) == [-1],
                            "[-1] (one 3x3 conv with the FPN channel count)"),
    "MODEL.RPN.IN_FEATURES": _subset_of(_FPN_LEVELS),
    "MODEL.ROI_HEADS.NAME": _one_of("DensePoseROIHeads", "StandardROIHeads"),
    "MODEL.ROI_HEADS.IN_FEATURES": _subset_of(_FPN_LEVELS),
    "MODEL.ROI_BOX_HEAD.NAME": _one_of("FastRCNNConvFCHead"),
    "MODEL.ROI_BOX_HEAD.NUM_CONV": _one_of(0),
    "MODEL.ROI_BOX_HEAD.USE_SIGMOID_CE": _one_of(False),
    "MODEL.ROI_BOX_HEAD.USE_FED_LOSS": _one_of(False),
    "MODEL.ROI_BOX_HEAD.POOLER_TYPE": _one_of(*_POOLERS),
    _DP + "NAME": _one_of(*HEAD_FAMILIES),
    _DP + "POOLER_TYPE": _one_of(*_POOLERS),
    _DP + "PREDICTOR_NAME": _one_of(*(_S1X_PREDICTORS + _AMA_PREDICTORS)),
    _DP + "PREDICTOR": _one_of(*(_S1X_PREDICTORS + _AMA_PREDICTORS)),
    _DP + "NUM_COARSE_SEGM_CHANNELS": _one_of(2, 15),
    _DP + "DECODER_NORM": _one_of(""),
    _DP + "UV_CONFIDENCE.TYPE": _one_of("iid_iso", "indep_aniso"),
    _DP + "DEEPLAB.NORM": _one_of("GN", ""),
    _DP + "SEMSEG_ON": _one_of(False),
    _DP + "MID_ON": _one_of(False),
    _DP + "RCNN_HEAD_ON": _one_of(True),
    "INPUT.FORMAT": _one_of("BGR", "RGB"),
    "INPUT.RANDOM_FLIP": _one_of("horizontal", "vertical", "none"),
    "SOLVER.WARMUP_METHOD": _one_of("linear", "constant"),
    "SOLVER.CLIP_GRADIENTS.CLIP_TYPE": _one_of("value", "norm"),
    "SOLVER.LR_SCHEDULER_NAME": _one_of("WarmupMultiStepLR"),
    "INPUT.MIN_SIZE_TRAIN_SAMPLING": _one_of("choice", "range"),
}


def _check_supported(key: str, value: Any) -> None:
    rule = SUPPORTED_VALUES.get(key)
    if rule is not None and not rule[0](value):
        raise ConfigError(f"{key}={value!r} is not supported; supported: {rule[1]}")


# --------------------------------------------------------------------------------------------
# Key lookup, decoding and type coercion
# --------------------------------------------------------------------------------------------
def _unknown_key(key: str) -> ConfigError:
    hint = difflib.get_close_matches(key, list(_all_leaf_keys()), n=1)
    more = f"; did you mean {hint[0]!r}?" if hint else ""
    return ConfigError(f"unknown config key {key!r}: Detectron2, its DensePose project and the "
                       f"AMANet fork define no such key{more}")


def _all_leaf_keys(node: Mapping[str, Any] = KNOWN_KEYS, prefix: str = ""):
    for name, spec in node.items():
        if isinstance(spec, dict):
            yield from _all_leaf_keys(spec, f"{prefix}{name}.")
        else:
            yield prefix + name


def _kind_of(key: str) -> str:
    """The value kind of a dotted Detectron2 key; ``ConfigError`` if no one defines it."""
    node: Any = KNOWN_KEYS
    for part in key.split("."):
        if node == OPEN:
            return OPEN
        if not isinstance(node, dict) or part not in node:
            raise _unknown_key(key)
        node = node[part]
    if isinstance(node, dict):
        raise ConfigError(f"{key} is a group of keys, not a single value; set one of its keys "
                          f"({', '.join(sorted(node))})")
    return node


def _decode(value: Any, wants_str: bool) -> Any:
    """Detectron2's decoding of string values: ``literal_eval``, falling back to the string.

    For a string-typed key the literal is kept only when it is itself a string (``"'a b'"``).
    """
    if not isinstance(value, str):
        return value
    try:
        decoded = ast.literal_eval(value)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return value
    if wants_str and not isinstance(decoded, str):
        return value
    return decoded


_KIND_CHECK = {
    INT: (lambda v: isinstance(v, int) and not isinstance(v, bool), "an integer"),
    FLOAT: (lambda v: isinstance(v, (int, float)) and not isinstance(v, bool), "a number"),
    BOOL: (lambda v: isinstance(v, bool), "a boolean"),
    STR: (lambda v: isinstance(v, str), "a string"),
    SEQ: (lambda v: isinstance(v, (list, tuple)), "a list"),
}


def _check_kind(key: str, value: Any, kind: str) -> Any:
    """Decode ``value`` for a key we do not map and check it against the key's kind."""
    if kind in (ANY, OPEN):
        return value
    value = _decode(value, wants_str=kind == STR)
    ok, what = _KIND_CHECK[kind]
    if not ok(value):
        raise ConfigError(f"{key}: expected {what}, got {value!r} ({type(value).__name__})")
    return value


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Coerce a decoded value to the dataclass field type ``tp`` (``ConfigError`` if it cannot)."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    bad = ConfigError(f"{key}: expected {_type_name(tp)}, got {value!r} ({type(value).__name__})")
    if tp is bool:
        if not isinstance(value, bool):
            raise bad
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise bad
        return value
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise bad
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0], key) for v in value)
        if len(value) != len(args):
            raise ConfigError(f"{key}: expected {len(args)} values, got {len(value)}: {value!r}")
        return tuple(_coerce(v, a, key) for v, a in zip(value, args))
    if origin is dict:
        if not isinstance(value, Mapping):
            raise bad
        return {_coerce(k, args[0], key): _coerce(v, args[1], f"{key}.{k}")
                for k, v in value.items()}
    return value


def _field_type(cfg: Config, path: FieldPath) -> Any:
    """The declared type of the field at ``path``."""
    obj: Any = cfg
    tp: Any = type(cfg)
    for name in path:
        if not is_dataclass(obj):                       # an entry of a dict field
            return typing.get_args(tp)[1]
        tp = typing.get_type_hints(type(obj))[name]
        obj = getattr(obj, name)
    return tp


def _set_field(cfg: Config, path: FieldPath, value: Any) -> None:
    obj: Any = cfg
    for name in path[:-1]:
        obj = getattr(obj, name)
    if isinstance(obj, dict):
        obj[path[-1]] = value
    else:
        setattr(obj, path[-1], value)


def _own_field_path(cfg: Config, key: str) -> FieldPath:
    """Path of a lower-case dotted key of our own format (``densepose.mask_gate_threshold``)."""
    path = tuple(key.split("."))
    obj: Any = cfg
    for i, name in enumerate(path):
        if isinstance(obj, dict) and i == len(path) - 1:
            return path
        if not is_dataclass(obj) or name not in {f.name for f in fields(obj)}:
            raise ConfigError(f"unknown config key {key!r}: not a field of the amanet config")
        obj = getattr(obj, name)
    if is_dataclass(obj):
        raise ConfigError(f"{key} is a group of fields, not a single value")
    return path


# --------------------------------------------------------------------------------------------
# Applying Detectron2 keys
# --------------------------------------------------------------------------------------------
def _apply_key(cfg: Config, key: str, value: Any) -> None:
    """Check one Detectron2 key/value and write it into ``cfg`` when it maps onto a field."""
    kind = _kind_of(key)
    path = D2_TO_FIELD.get(key)
    if path is None:
        _check_supported(key, _check_kind(key, value, kind))
        return
    tp = _field_type(cfg, path)
    value = _coerce(_decode(value, wants_str=tp is str), tp, key)
    _check_supported(key, value)
    family = FAMILY_ONLY_KEYS.get(key)
    if family is not None and family != cfg.family:
        logger.debug("%s only applies to the %s family; ignored for %s", key, family, cfg.family)
        return
    if key == HEAD_KEY and _family_of(value) != cfg.family:
        raise ConfigError(f"{key}={value!r} would change the model family from {cfg.family!r} "
                          f"to {_family_of(value)!r}; pass it to load_config() so that "
                          "the right preset is used")
    _set_field(cfg, path, value)
    if key == _DP + "POOLER_RESOLUTION" and cfg.family == FAMILY_AMANET:
        # The AMA head pools p2..p5 at R, R/2, R/2, R/4 (the fork: 32, 16, 16, 8).
        if value < 4 or value % 4:
            raise ConfigError(f"{key}={value} is not supported with DensePoseAMAHead; "
                              "supported: a multiple of 4 (p2..p5 are pooled at R, R/2, R/2, R/4)")
        cfg.densepose.ama_pooler_resolutions = (value, value // 2, value // 2, value // 4)


def _apply_flat(cfg: Config, flat: Mapping[str, Any]) -> None:
    """Apply the keys of one file (already flattened); see :data:`_PREFERRED_KEY`."""
    for key, value in flat.items():
        preferred = _PREFERRED_KEY.get((cfg.family, key))
        if preferred is not None and preferred in flat:
            logger.debug("%s ignored: %s is set too", key, preferred)
            continue
        _apply_key(cfg, key, value)


def _apply_pairs(cfg: Config, pairs: Sequence[Tuple[str, Any]]) -> None:
    for key, value in pairs:
        if key[:1].islower():
            path = _own_field_path(cfg, key)
            tp = _field_type(cfg, path)
            _set_field(cfg, path, _coerce(_decode(value, wants_str=tp is str), tp, key))
        else:
            _apply_key(cfg, key, value)


def _family_of(head_name: Any) -> str:
    try:
        return family_of_head(head_name)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def _finalize(cfg: Config) -> Config:
    """Normalise equivalent spellings, then check the cross-key rules; returns ``cfg``."""
    dp, bb, rpn = cfg.densepose, cfg.backbone, cfg.rpn
    if cfg.family not in FAMILIES:
        raise ConfigError(f"family={cfg.family!r} is not supported; supported: {list(FAMILIES)}")
    if _family_of(dp.name) != cfg.family:
        raise ConfigError(f"{HEAD_KEY}={dp.name!r} does not match family {cfg.family!r}")
    if cfg.family == FAMILY_S1X:
        if dp.predictor_name not in _S1X_PREDICTORS:
            raise ConfigError(f"{_DP}PREDICTOR_NAME={dp.predictor_name!r} is not supported with "
                              f"{dp.name}; supported: {', '.join(_S1X_PREDICTORS)}")
        # Detectron2 builds the confidence layers from the UV_ / SEGM_CONFIDENCE switches
        # whichever of the two predictor names is set: one spelling per model.
        with_conf = dp.uv_confidence_enabled or dp.segm_confidence_enabled
        dp.predictor_name = _S1X_PREDICTORS[1 if with_conf else 0]
        if dp.kpt_on:
            raise ConfigError(f"MODEL.KEYPOINT_ON / {_DP}KPT_ON=True is not supported with "
                              f"{dp.name}; supported: False (keypoints exist only in the "
                              "AMANet family)")
    else:
        for key, on in (("UV_CONFIDENCE.ENABLED", dp.uv_confidence_enabled),
                        ("SEGM_CONFIDENCE.ENABLED", dp.segm_confidence_enabled)):
            if on:
                raise ConfigError(f"{_DP}{key}=True is not supported with {dp.name}; "
                                  "supported: False (confidences are Detectron2 chart outputs)")
        if dp.predictor_name not in _AMA_PREDICTORS:
            raise ConfigError(f"{_DP}PREDICTOR={dp.predictor_name!r} is not supported with "
                              f"{dp.name}; supported: {', '.join(_AMA_PREDICTORS)}")
        if dp.decoder_on:
            raise ConfigError(f"{_DP}DECODER_ON=True is not supported with {dp.name}; "
                              "supported: False")
        r = tuple(dp.ama_pooler_resolutions)
        if len(r) != 4 or r != (r[0], r[0] // 2, r[0] // 2, r[0] // 4) or r[0] % 4:
            raise ConfigError(f"densepose.ama_pooler_resolutions={list(r)} is not supported; "
                              "supported: [R, R/2, R/2, R/4] with R a multiple of 4")
        if dp.heatmap_size != 2 * r[0]:
            raise ConfigError(f"{_DP}HEATMAP_SIZE={dp.heatmap_size} is not supported with "
                              f"{_DP}POOLER_RESOLUTION={r[0]} and {dp.name}; supported: "
                              f"{2 * r[0]} (the head up-samples p2's RoI features 2x)")
        dp.pooler_resolution = r[0]      # one spelling of the same number
        if tuple(cfg.roi_heads.in_features) != ("p2", "p3", "p4", "p5"):
            raise ConfigError(f"MODEL.ROI_HEADS.IN_FEATURES={list(cfg.roi_heads.in_features)} is "
                              f"not supported with {dp.name}; supported: ['p2', 'p3', 'p4', 'p5']")
    missing = [s for s in _RES_STAGES if s not in bb.out_features]
    if missing:
        raise ConfigError(f"MODEL.RESNETS.OUT_FEATURES={list(bb.out_features)} is not supported: "
                          f"it lacks {missing}; supported: a list containing {list(_RES_STAGES)} "
                          "(the FPN inputs)")
    if bb.depth in (18, 34):
        # Detectron2 requires 64; narrower multiples of 8 are our extension for small models.
        if bb.res2_out_channels > 64 or bb.res2_out_channels % 8:
            raise ConfigError(f"MODEL.RESNETS.RES2_OUT_CHANNELS={bb.res2_out_channels} is not "
                              f"supported with MODEL.RESNETS.DEPTH={bb.depth}; supported: 64 "
                              "(Detectron2) or a narrower multiple of 8")
        if bb.res5_dilation != 1 or bb.num_groups != 1:
            raise ConfigError(f"MODEL.RESNETS.RES5_DILATION={bb.res5_dilation}, NUM_GROUPS="
                              f"{bb.num_groups} is not supported with MODEL.RESNETS.DEPTH="
                              f"{bb.depth}; supported: 1 and 1")
    for key, per_level in (("MODEL.ANCHOR_GENERATOR.SIZES", rpn.anchor_sizes),
                           ("MODEL.ANCHOR_GENERATOR.ASPECT_RATIOS", rpn.aspect_ratios)):
        if len(per_level) not in (1, len(rpn.in_features)):
            raise ConfigError(f"{key} has {len(per_level)} entries; supported: 1 or one per "
                              f"MODEL.RPN.IN_FEATURES ({len(rpn.in_features)})")
    return cfg


# --------------------------------------------------------------------------------------------
# YAML files
# --------------------------------------------------------------------------------------------
def _read_yaml(path: Path) -> Dict[str, Any]:
    """One YAML file as a mapping; ``ConfigError`` with the path and reason otherwise."""
    if not path.exists():
        raise ConfigError(f"{path}: no such config file")
    if not path.is_file():
        raise ConfigError(f"{path}: not a file")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read: {exc}") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        reason = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{path}: not valid YAML ({reason}{where})") from exc
    if data is None:
        raise ConfigError(f"{path}: the file is empty")
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of config keys at the top level, "
                          f"got {type(data).__name__}")
    return data


def _merge_into(base: Dict[str, Any], child: Mapping[str, Any]) -> Dict[str, Any]:
    """Detectron2's merge of a file into its base: child wins, mappings merge recursively."""
    for key, value in child.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _merge_into(base[key], value)
        else:
            base[key] = value
    return base


def _load_chain(path: Path, stack: Tuple[Path, ...] = ()) -> Dict[str, Any]:
    """A YAML file merged over its ``_BASE_`` chain (relative to the including file)."""
    path = path.resolve()
    if path in stack:
        chain = " -> ".join(str(p) for p in stack + (path,))
        raise ConfigError(f"{path}: _BASE_ cycle: {chain}")
    data = _read_yaml(path)
    base_name = data.pop("_BASE_", None)
    if base_name is None:
        return data
    if not isinstance(base_name, str) or not base_name:
        raise ConfigError(f"{path}: _BASE_ must be a file name, got {base_name!r}")
    if base_name.startswith(("http://", "https://")):
        raise ConfigError(f"{path}: _BASE_={base_name!r}: URLs are not supported")
    base_path = Path(base_name).expanduser()
    if not base_path.is_absolute():
        base_path = path.parent / base_path
    shipped = CONFIGS_DIR / base_name
    if not base_path.exists() and Path(base_name).name == base_name and shipped.is_file():
        # A zoo file copied out of projects/DensePose/configs without its base: the base
        # Detectron2 ships is shipped here too.
        logger.info("%s: _BASE_ %s not found beside it; using amanet's copy", path, base_name)
        base_path = shipped
    base = _load_chain(base_path, stack + (path,))
    return _merge_into(base, data)


def _flatten(raw: Mapping[Any, Any], node: Mapping[str, Any] = KNOWN_KEYS, prefix: str = "",
             out: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """Nested Detectron2 mapping -> ``{dotted key: value}``, rejecting unknown keys."""
    out = {} if out is None else out
    for name, value in raw.items():
        key = f"{prefix}{name}"
        spec = node.get(name) if isinstance(name, str) else None
        if spec is None:
            raise _unknown_key(key)
        if isinstance(spec, dict):
            if not isinstance(value, dict):
                raise ConfigError(f"{key}: expected a mapping of sub-keys "
                                  f"({', '.join(sorted(spec))}), got {value!r}")
            _flatten(value, spec, key + ".", out)
        elif isinstance(value, dict) and spec != OPEN:
            raise ConfigError(f"{key}: expected a single value, got a mapping")
        else:
            out[key] = value
    return out


def _is_own_format(raw: Mapping[Any, Any]) -> bool:
    return "family" in raw and all(isinstance(k, str) and k.islower() for k in raw)


def _resolve(path_or_preset: str) -> Path:
    """A config path as given, else the shipped file of that name in :data:`CONFIGS_DIR`."""
    path = Path(path_or_preset).expanduser()
    if path.exists():
        return path
    for candidate in (CONFIGS_DIR / path_or_preset, CONFIGS_DIR / f"{path_or_preset}.yaml"):
        if path.name == str(path) and candidate.is_file():
            return candidate
    return path


def _parse_overrides(overrides: Optional[Sequence[str]]) -> List[Tuple[str, Any]]:
    """``[K1, V1, K2, V2, ...]`` -> ``[(K1, V1), ...]``; values are decoded when applied."""
    if not overrides:
        return []
    if isinstance(overrides, str):
        raise ConfigError(f"overrides must be a list of KEY VALUE strings, got the string "
                          f"{overrides!r}")
    items = list(overrides)
    if len(items) % 2:
        raise ConfigError(f"overrides must be KEY VALUE pairs; key {items[-1]!r} has no value")
    pairs = list(zip(items[0::2], items[1::2]))
    for key, _ in pairs:
        if not isinstance(key, str) or not key:
            raise ConfigError(f"override keys must be non-empty strings, got {key!r}")
    return pairs


# --------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------
def load_config(path_or_preset: str, overrides: Optional[Sequence[str]] = ()) -> Config:
    """Build a :class:`Config` from a preset name or a YAML file, then apply ``overrides``.

    Args:
        path_or_preset: a preset name (``densepose_rcnn_R_50_FPN_s1x``,
            ``densepose_AMA_R_50_FPN_s1x``, ``s1x``, ``amanet``), a path to a Detectron2-style
            YAML (``_BASE_`` chains, short or fully dumped) or to a :func:`dump_config` file,
            or the name of a file shipped in ``amanet/configs``.
        overrides: Detectron2-style ``[KEY, VALUE, ...]`` (see :func:`merge_overrides`).

    Raises:
        ConfigError: naming the file and key that cannot be read or honoured.
    """
    pairs = _parse_overrides(overrides)
    name = str(path_or_preset)
    if name in PRESETS and not Path(name).is_file():
        cfg = preset(name)
        _apply_pairs(cfg, pairs)
        return _finalize(cfg)
    path = _resolve(name)
    raw = _load_chain(path)
    if _is_own_format(raw):
        cfg = config_from_dict(raw)
    else:
        try:
            flat = _flatten(raw)
            head = flat.get(HEAD_KEY)
            if HEAD_KEY in dict(pairs):      # the override decides the family
                head = dict(pairs)[HEAD_KEY]
                flat.pop(HEAD_KEY, None)
            if head is None:
                raise ConfigError(f"{HEAD_KEY} is not set; supported: "
                                  f"{', '.join(HEAD_FAMILIES)}")
            cfg = preset(_family_of(_decode(head, wants_str=True)))
            _apply_flat(cfg, flat)
        except ConfigError as exc:
            raise ConfigError(f"{path}: {exc}") from exc
    _apply_pairs(cfg, pairs)
    logger.debug("loaded %s config from %s", cfg.family, path)
    return _finalize(cfg)


def merge_overrides(cfg: Config, overrides: Sequence[str]) -> Config:
    """Apply Detectron2-style ``[KEY, VALUE, ...]`` overrides to ``cfg`` (mutated and returned).

    Values are decoded like Detectron2 (``ast.literal_eval``, falling back to the string) and
    coerced to the field's type. Keys are Detectron2 keys (``MODEL.ROI_HEADS.SCORE_THRESH_TEST``)
    or lower-case paths of our own fields (``densepose.mask_gate_threshold``). The model family
    cannot change here (use :func:`load_config`). On error ``cfg`` is left unchanged.
    """
    updated = cfg.clone()
    _apply_pairs(updated, _parse_overrides(overrides))
    _finalize(updated)
    for f in fields(cfg):
        setattr(cfg, f.name, getattr(updated, f.name))
    return cfg


def dump_config(cfg: Config) -> str:
    """``cfg`` as YAML of :meth:`Config.to_dict`: our own format, read by :func:`load_config`
    and :func:`config_from_dict`."""
    return yaml.safe_dump(cfg.to_dict(), sort_keys=False, default_flow_style=None)


def config_from_dict(d: Mapping[str, Any]) -> Config:
    """Rebuild a :class:`Config` from :meth:`Config.to_dict` output (e.g. from a checkpoint).

    Fields missing from ``d`` take the value of the family's preset; unknown fields and wrong
    types are ``ConfigError``.
    """
    if not isinstance(d, Mapping):
        raise ConfigError(f"a config dict must be a mapping, got {type(d).__name__}")
    family = d.get("family", FAMILY_S1X)
    if family not in FAMILIES:
        raise ConfigError(f"family={family!r} is not supported; supported: {list(FAMILIES)}")
    cfg = preset(family)
    _fill(cfg, d, "")
    return _finalize(cfg)


def _fill(obj: Any, d: Mapping[str, Any], prefix: str) -> None:
    hints = typing.get_type_hints(type(obj))
    for name, value in d.items():
        key = f"{prefix}{name}"
        if name not in hints:
            raise ConfigError(f"unknown config field {key!r}")
        current = getattr(obj, name)
        if is_dataclass(current):
            if not isinstance(value, Mapping):
                raise ConfigError(f"{key}: expected a mapping, got {value!r}")
            _fill(current, value, key + ".")
        else:
            setattr(obj, name, _coerce(value, hints[name], key))
