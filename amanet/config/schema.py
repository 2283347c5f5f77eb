"""The model configuration: small dataclasses, one per part of the model.

Field names follow Detectron2's config keys in lower case (``MODEL.RPN.NMS_THRESH`` ->
``cfg.rpn.nms_thresh``) so that a Detectron2 YAML maps onto them one to one; the mapping
itself lives in :mod:`amanet.config.detectron2_yaml`.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field, fields, is_dataclass
from typing import Any, Dict, List, Optional, Tuple

FAMILY_S1X = "s1x"          # Detectron2's DensePose chart models (V1ConvX / DeepLab heads)
FAMILY_AMANET = "amanet"    # AMANet (DensePoseAMAHead + TaskTransformerAMAPredictorV2)
FAMILIES = (FAMILY_S1X, FAMILY_AMANET)


@dataclass
class InputConfig:
    """Test-time resize and pixel normalisation (``INPUT.*``, ``MODEL.PIXEL_*``)."""
    min_size_test: int = 800
    max_size_test: int = 1333
    format: str = "BGR"
    pixel_mean: Tuple[float, float, float] = (103.53, 116.28, 123.675)
    pixel_std: Tuple[float, float, float] = (1.0, 1.0, 1.0)
    size_divisibility: int = 32
    # training-time augmentation (used by the trainer only)
    min_size_train: Tuple[int, ...] = (640, 672, 704, 736, 768, 800)
    min_size_train_sampling: str = "choice"   # choice: one of min_size_train; range: [lo, hi]
    max_size_train: int = 1333
    random_flip: str = "horizontal"


@dataclass
class BackboneConfig:
    """ResNet + FPN (``MODEL.RESNETS.*``, ``MODEL.FPN.*``, ``MODEL.BACKBONE.*``)."""
    depth: int = 50
    norm: str = "FrozenBN"
    stride_in_1x1: bool = True
    num_groups: int = 1
    width_per_group: int = 64
    stem_out_channels: int = 64
    res2_out_channels: int = 256
    res5_dilation: int = 1
    out_features: Tuple[str, ...] = ("res2", "res3", "res4", "res5")
    freeze_at: int = 2
    fpn_out_channels: int = 256
    fpn_norm: str = ""
    fpn_fuse_type: str = "sum"


@dataclass
class RPNConfig:
    """Anchors and proposal generation (``MODEL.RPN.*``, ``MODEL.ANCHOR_GENERATOR.*``)."""
    in_features: Tuple[str, ...] = ("p2", "p3", "p4", "p5", "p6")
    anchor_sizes: Tuple[Tuple[float, ...], ...] = ((32,), (64,), (128,), (256,), (512,))
    aspect_ratios: Tuple[Tuple[float, ...], ...] = ((0.5, 1.0, 2.0),)
    anchor_offset: float = 0.0
    bbox_reg_weights: Tuple[float, float, float, float] = (1.0, 1.0, 1.0, 1.0)
    nms_thresh: float = 0.7
    min_size: float = 0.0
    pre_nms_topk_test: int = 1000
    post_nms_topk_test: int = 1000
    pre_nms_topk_train: int = 2000
    post_nms_topk_train: int = 1000
    # training
    batch_size_per_image: int = 256
    positive_fraction: float = 0.5
    iou_thresholds: Tuple[float, ...] = (0.3, 0.7)
    iou_labels: Tuple[int, ...] = (0, -1, 1)
    smooth_l1_beta: float = 0.0
    loss_weight: float = 1.0


@dataclass
class ROIHeadsConfig:
    """Box head and detection post-processing (``MODEL.ROI_HEADS.*``, ``MODEL.ROI_BOX_HEAD.*``)."""
    in_features: Tuple[str, ...] = ("p2", "p3", "p4", "p5")
    num_classes: int = 1
    score_thresh_test: float = 0.05
    nms_thresh_test: float = 0.5
    detections_per_image: int = 100
    pooler_resolution: int = 7
    pooler_sampling_ratio: int = 2
    pooler_type: str = "ROIAlign"          # ROIAlign (aligned=False) | ROIAlignV2 (aligned=True)
    num_fc: int = 2
    fc_dim: int = 1024
    bbox_reg_weights: Tuple[float, float, float, float] = (10.0, 10.0, 5.0, 5.0)
    cls_agnostic_bbox_reg: bool = False
    # training
    batch_size_per_image: int = 512
    positive_fraction: float = 0.25
    iou_thresholds: Tuple[float, ...] = (0.5,)
    smooth_l1_beta: float = 0.0
    proposal_append_gt: bool = True


@dataclass
class DensePoseConfig:
    """The DensePose branch (``MODEL.ROI_DENSEPOSE_HEAD.*``).

    ``name`` selects the head and so the family: ``DensePoseV1ConvXHead`` and
    ``DensePoseDeepLabHead`` are Detectron2's chart family (``s1x``), ``DensePoseAMAHead`` is
    AMANet. Detectron2's confidence outputs are switched on by ``uv_confidence_*`` /
    ``segm_confidence_*`` (its ``UV_CONFIDENCE`` / ``SEGM_CONFIDENCE`` groups).
    """
    name: str = "DensePoseV1ConvXHead"
    predictor_name: str = "DensePoseChartPredictor"
    num_patches: int = 24
    num_coarse_segm_channels: int = 2
    conv_head_dim: int = 512
    conv_head_kernel: int = 3
    num_stacked_convs: int = 8
    deconv_kernel: int = 4
    up_scale: int = 2
    heatmap_size: int = 112
    pooler_resolution: int = 28
    pooler_sampling_ratio: int = 2
    pooler_type: str = "ROIAlign"
    # s1x decoder (DECODER_ON)
    decoder_on: bool = True
    decoder_conv_dims: int = 256
    decoder_num_classes: int = 256
    decoder_common_stride: int = 4
    decoder_norm: str = ""
    # DensePoseDeepLabHead (ROI_DENSEPOSE_HEAD.DEEPLAB.*)
    deeplab_norm: str = "GN"
    deeplab_nonlocal_on: int = 0            # Detectron2 spells this flag as an int
    # Detectron2's confidence estimation (UV_CONFIDENCE.*, SEGM_CONFIDENCE.*)
    uv_confidence_enabled: bool = False
    uv_confidence_type: str = "iid_iso"     # iid_iso: sigma_2 | indep_aniso: + kappa_u, kappa_v
    uv_confidence_epsilon: float = 0.01
    segm_confidence_enabled: bool = False
    segm_confidence_epsilon: float = 0.01
    # AMANet multi-path pooling: output size per FPN level p2..p5
    ama_pooler_resolutions: Tuple[int, ...] = (32, 16, 16, 8)
    ama_num_ann_index: int = 15           # the AMANet "S" output (coarse parts)
    kpt_on: bool = False
    num_keypoints: int = 17
    # post-processing: AMANet gates parts by softmax(body mask)[1] > this
    mask_gate_threshold: float = 0.3
    # training
    fg_iou_threshold: float = 0.7
    heatmap_loss_weights: Dict[str, float] = field(default_factory=lambda: {
        "point_regression": 0.01, "part": 1.0, "index": 5.0, "inter": 0.5})


@dataclass
class SolverConfig:
    """Training schedule (``SOLVER.*``)."""
    ims_per_batch: int = 16
    base_lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 1e-4
    max_iter: int = 130000
    steps: Tuple[int, ...] = (100000, 120000)
    gamma: float = 0.1
    warmup_factor: float = 0.1
    warmup_iters: int = 1000
    warmup_method: str = "linear"
    checkpoint_period: int = 5000
    clip_gradients: bool = False
    clip_value: float = 1.0
    clip_type: str = "value"               # value | norm (SOLVER.CLIP_GRADIENTS.CLIP_TYPE)
    clip_norm_type: float = 2.0
    # Detectron2's optimizer parameter groups
    bias_lr_factor: float = 1.0
    weight_decay_bias: Optional[float] = None   # None: same as weight_decay
    weight_decay_norm: float = 0.0
    nesterov: bool = False
    amp: bool = False                      # SOLVER.AMP.ENABLED (used only where CUDA exists)
    eval_period: int = 0                   # TEST.EVAL_PERIOD (0: evaluate at the end only)


@dataclass
class DatasetsConfig:
    """Training / test data (``DATASETS.TRAIN``, ``DATASETS.TEST``): names resolved by
    :mod:`amanet.data.registry` (registered sets, the DensePose-COCO names, ``synthetic_*``)."""
    train: Tuple[str, ...] = ("densepose_coco_2014_train", "densepose_coco_2014_valminusminival")
    test: Tuple[str, ...] = ("densepose_coco_2014_minival",)


@dataclass
class Config:
    """Everything needed to build, run and train one model."""
    family: str = FAMILY_S1X
    device: str = "cpu"
    weights: str = ""
    input: InputConfig = field(default_factory=InputConfig)
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    rpn: RPNConfig = field(default_factory=RPNConfig)
    roi_heads: ROIHeadsConfig = field(default_factory=ROIHeadsConfig)
    densepose: DensePoseConfig = field(default_factory=DensePoseConfig)
    solver: SolverConfig = field(default_factory=SolverConfig)
    datasets: DatasetsConfig = field(default_factory=DatasetsConfig)
    output_dir: str = "./output"
    seed: int = -1

    def clone(self) -> "Config":
        return copy.deepcopy(self)

    def to_dict(self) -> Dict[str, Any]:
        return _to_dict(self)


def _to_dict(obj: Any) -> Any:
    if is_dataclass(obj):
        return {f.name: _to_dict(getattr(obj, f.name)) for f in fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [_to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: _to_dict(v) for k, v in obj.items()}
    return obj


def s1x_config() -> Config:
    """Detectron2 ``densepose_rcnn_R_50_FPN_s1x`` (DESIGN.md §4)."""
    return Config(family=FAMILY_S1X)


def amanet_config() -> Config:
    """AMANet ``densepose_AMA_R_50_FPN_s1x`` (DESIGN.md §3)."""
    cfg = Config(family=FAMILY_AMANET)
    dp = cfg.densepose
    dp.name = "DensePoseAMAHead"
    dp.predictor_name = "TaskTransformerAMAPredictorV2"
    dp.conv_head_dim = 256
    dp.pooler_resolution = 32
    dp.heatmap_size = 64
    dp.decoder_on = False
    dp.kpt_on = True
    dp.fg_iou_threshold = 0.65
    # the AMANet fork's loss weights (its config.py defaults + INTER_WEIGHTS and the keypoint
    # LOSS_WEIGHT of the YAML), DESIGN.md §3
    dp.heatmap_loss_weights = {"point_regression": 0.1, "part": 0.3, "index": 2.0,
                               "inter": 0.5, "body_mask": 2.0, "keypoint": 0.5}
    cfg.solver = SolverConfig(ims_per_batch=4, base_lr=0.002, max_iter=260000,
                              steps=(200000, 240000), warmup_factor=0.01)
    cfg.rpn.pre_nms_topk_train = 1200
    cfg.roi_heads.batch_size_per_image = 384
    cfg.roi_heads.smooth_l1_beta = 0.5
    return cfg


HEAD_V1CONVX = "DensePoseV1ConvXHead"
HEAD_DEEPLAB = "DensePoseDeepLabHead"
HEAD_AMA = "DensePoseAMAHead"
#: ``ROI_DENSEPOSE_HEAD.NAME`` -> model family.
HEAD_FAMILIES = {HEAD_V1CONVX: FAMILY_S1X, HEAD_DEEPLAB: FAMILY_S1X, HEAD_AMA: FAMILY_AMANET}


def zoo_config(depth: int = 50, deeplab: bool = False, confidence: str = "",
               legacy: bool = False) -> Config:
    """One of Detectron2's DensePose chart model-zoo configs
    (``projects/DensePose/configs/densepose_rcnn_R_{depth}_FPN[_DL][_WC1|_WC2|_WC1M|_WC2M]_s1x``,
    ``..._s1x_legacy``), the values its YAML sets over ``Base-DensePose-RCNN-FPN``.

    ``confidence``: ``""``, ``"WC1"`` (iid_iso UV confidence), ``"WC2"`` (indep_aniso), and
    with an ``M`` suffix also the segmentation confidences."""
    if confidence not in ("", "WC1", "WC2", "WC1M", "WC2M"):
        raise ValueError(f"unknown confidence variant {confidence!r}")
    if legacy and (deeplab or confidence):
        raise ValueError("the legacy zoo configs have neither DeepLab head nor confidences")
    cfg = s1x_config()
    cfg.backbone.depth = depth
    dp = cfg.densepose
    if deeplab:
        dp.name = HEAD_DEEPLAB
    if confidence:
        dp.uv_confidence_enabled = True
        dp.uv_confidence_type = "iid_iso" if confidence.startswith("WC1") else "indep_aniso"
        dp.segm_confidence_enabled = confidence.endswith("M")
        dp.heatmap_loss_weights["point_regression"] = 0.0005
        cfg.solver.clip_gradients = True
        if confidence == "WC1" and not deeplab:
            cfg.solver.warmup_factor = 0.025
    if legacy:
        dp.num_coarse_segm_channels = 15
        dp.pooler_resolution = 14
        dp.heatmap_size = 56
        dp.decoder_on = False
        dp.heatmap_loss_weights.update(index=2.0, part=0.3, point_regression=0.1)
        cfg.solver.base_lr = 0.002
    return cfg


def zoo_name(depth: int, deeplab: bool, confidence: str, legacy: bool) -> str:
    """The zoo config's file stem (``densepose_rcnn_R_101_FPN_DL_WC2M_s1x``)."""
    parts = [f"densepose_rcnn_R_{depth}_FPN"] + (["DL"] if deeplab else []) + \
        ([confidence] if confidence else []) + ["s1x"] + (["legacy"] if legacy else [])
    return "_".join(parts)


def _zoo_presets() -> Dict[str, Any]:
    out: Dict[str, Any] = {}
    for depth in (50, 101):
        for deeplab in (False, True):
            for conf in ("", "WC1", "WC2", "WC1M", "WC2M"):
                out[zoo_name(depth, deeplab, conf, False)] = (
                    lambda d=depth, dl=deeplab, c=conf: zoo_config(d, dl, c))
        out[zoo_name(depth, False, "", True)] = lambda d=depth: zoo_config(d, legacy=True)
    return out


#: Every chart config of Detectron2's DensePose model zoo (22), AMANet, and the family names.
PRESETS = {
    **_zoo_presets(),
    "densepose_AMA_R_50_FPN_s1x": amanet_config,
    FAMILY_S1X: s1x_config,
    FAMILY_AMANET: amanet_config,
}


def preset(name: str) -> Config:
    """A fresh config for a named preset (see :data:`PRESETS`)."""
    try:
        return PRESETS[name]()
    except KeyError:
        raise ValueError(f"unknown preset {name!r}; known: {sorted(PRESETS)}") from None


def family_of_head(head_name: str) -> str:
    """Map ``ROI_DENSEPOSE_HEAD.NAME`` to a model family."""
    try:
        return HEAD_FAMILIES[head_name]
    except (KeyError, TypeError):
        raise ValueError(f"MODEL.ROI_DENSEPOSE_HEAD.NAME={head_name!r} is not supported; "
                         "supported: DensePoseV1ConvXHead, DensePoseDeepLabHead (Detectron2's "
                         "chart family), DensePoseAMAHead (AMANet)") from None


def list_field_names(obj: Any) -> List[str]:
    return [f.name for f in fields(obj)]
