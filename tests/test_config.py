"""Config loading: presets, Detectron2 YAML (short and dumped), overrides, errors, round trip."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from fixtures_path import fixture_dir

from amanet.config import (FAMILY_AMANET, FAMILY_S1X, Config, ConfigError, amanet_config,
                           config_from_dict, dump_config, load_config, merge_overrides, preset,
                           s1x_config)
from amanet.config.detectron2_yaml import (CONFIGS_DIR, D2_TO_FIELD, KNOWN_KEYS, PRESET_FILES,
                                           SUPPORTED_VALUES, _all_leaf_keys)
from amanet.config.schema import PRESETS

DATA = Path(__file__).resolve().parent / "data" / "configs"
AMA_YAML = DATA / "densepose_AMA_R_50_FPN_s1x.yaml"
S1X_YAML = DATA / "densepose_rcnn_R_50_FPN_s1x.yaml"


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def _flat_keys(d, prefix=""):
    for k, v in d.items():
        if isinstance(v, dict) and v:
            yield from _flat_keys(v, f"{prefix}{k}.")
        else:
            yield prefix + k


# ---------------------------------------------------------------------------- presets
@pytest.mark.parametrize("name", sorted(PRESET_FILES))
def test_preset_names_match_shipped_yaml(name):
    by_name = load_config(name)
    from_file = load_config(str(CONFIGS_DIR / PRESET_FILES[name]))
    assert by_name == from_file == preset(name)


ZOO_FIXTURES = ["R_50_FPN_s1x", "R_50_FPN_DL_s1x", "R_101_FPN_DL_WC2M_s1x", "R_50_FPN_WC1_s1x",
                "R_50_FPN_s1x_legacy"]
#: The 22 chart configs of Detectron2's projects/DensePose/configs (literal list).
ZOO_NAMES = [f"densepose_rcnn_R_{d}_FPN{h}{c}_s1x" for d in (50, 101) for h in ("", "_DL")
             for c in ("", "_WC1", "_WC2", "_WC1M", "_WC2M")] + \
    ["densepose_rcnn_R_50_FPN_s1x_legacy", "densepose_rcnn_R_101_FPN_s1x_legacy"]


@pytest.mark.parametrize("fixture", ZOO_FIXTURES)
def test_zoo_files_presets_and_dumps_agree(fixture):
    """Detectron2's own zoo file (with its _BASE_, which is not beside it: amanet ships the
    base), its preset name and the full cfg.dump() of the run build the same config (the dump
    carries the fixture's test-time overrides, applied here to the other two)."""
    root = fixture_dir(f"d2_zoo/{fixture}")
    dump = load_config(str(root / "config_effective.yaml"))
    overrides = ["MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.05", "TEST.DETECTIONS_PER_IMAGE", "6",
                 "INPUT.MIN_SIZE_TEST", "512", "INPUT.MAX_SIZE_TEST", "768"]
    from_file = load_config(str(root / "config.yaml"), overrides)
    by_name = load_config(f"densepose_rcnn_{fixture}", overrides)
    model_parts = ("backbone", "rpn", "densepose", "input")
    for part in model_parts:
        assert getattr(from_file, part) == getattr(by_name, part), part
        assert getattr(dump, part) == getattr(by_name, part), part
    assert dump.roi_heads.detections_per_image == by_name.roi_heads.detections_per_image == 6


def test_every_zoo_chart_config_is_a_preset():
    from amanet.modeling.model import build_model

    assert sorted(n for n in PRESETS if n.startswith("densepose_rcnn_")) == sorted(ZOO_NAMES)
    cfg = load_config("densepose_rcnn_R_101_FPN_DL_WC2M_s1x")
    dp = cfg.densepose
    assert cfg.backbone.depth == 101 and dp.name == "DensePoseDeepLabHead"
    assert dp.uv_confidence_enabled and dp.uv_confidence_type == "indep_aniso"
    assert dp.segm_confidence_enabled
    assert dp.predictor_name == "DensePoseChartWithConfidencePredictor"
    legacy = load_config("densepose_rcnn_R_101_FPN_s1x_legacy").densepose
    assert (legacy.num_coarse_segm_channels, legacy.pooler_resolution, legacy.heatmap_size,
            legacy.decoder_on) == (15, 14, 56, False)
    wc1 = build_model(load_config("densepose_rcnn_R_50_FPN_WC1_s1x"))
    keys = {k for k in wc1.state_dict() if "densepose_predictor" in k}
    assert "roi_heads.densepose_predictor.sigma_2_lowres.weight" in keys
    assert not any("kappa" in k or "segm_confidence" in k for k in keys)


def test_zoo_style_yaml_with_missing_base_and_dump_roundtrip(tmp_path):
    """A user's copy of a zoo file (its _BASE_ not beside it), and our dump of the result."""
    (tmp_path / "densepose_rcnn_R_50_FPN_DL_WC1M_s1x.yaml").write_text(
        '_BASE_: "Base-DensePose-RCNN-FPN.yaml"\n'
        "MODEL:\n  RESNETS:\n    DEPTH: 50\n  ROI_DENSEPOSE_HEAD:\n"
        '    NAME: "DensePoseDeepLabHead"\n    UV_CONFIDENCE:\n      ENABLED: True\n'
        '      TYPE: "iid_iso"\n    SEGM_CONFIDENCE:\n      ENABLED: True\n'
        "    POINT_REGRESSION_WEIGHTS: 0.0005\n"
        "SOLVER:\n  CLIP_GRADIENTS:\n    ENABLED: True\n  MAX_ITER: 130000\n"
        "  STEPS: (100000, 120000)\n")
    cfg = load_config(str(tmp_path / "densepose_rcnn_R_50_FPN_DL_WC1M_s1x.yaml"))
    assert cfg == load_config("densepose_rcnn_R_50_FPN_DL_WC1M_s1x")
    (tmp_path / "dump.yaml").write_text(dump_config(cfg))
    assert load_config(str(tmp_path / "dump.yaml")) == cfg


@pytest.mark.parametrize("key, value, says", [
    ("MODEL.ROI_DENSEPOSE_HEAD.UV_CONFIDENCE.TYPE", "gaussian", "iid_iso"),
    ("MODEL.ROI_DENSEPOSE_HEAD.DEEPLAB.NORM", "BN", "'GN'"),
])
def test_zoo_values_we_cannot_honour(key, value, says):
    with pytest.raises(ConfigError, match=says):
        load_config("densepose_rcnn_R_50_FPN_DL_s1x", [key, value])


def test_confidences_refused_for_amanet():
    with pytest.raises(ConfigError, match="SEGM_CONFIDENCE.ENABLED=True is not supported with "
                                          "DensePoseAMAHead"):
        load_config("amanet", ["MODEL.ROI_DENSEPOSE_HEAD.SEGM_CONFIDENCE.ENABLED", "True"])


def test_shipped_yaml_equal_python_presets():
    assert load_config(str(CONFIGS_DIR / "densepose_rcnn_R_50_FPN_s1x.yaml")) == s1x_config()
    assert load_config(str(CONFIGS_DIR / "densepose_AMA_R_50_FPN_s1x.yaml")) == amanet_config()
    # a bare file name resolves to the shipped file
    assert load_config("densepose_AMA_R_50_FPN_s1x.yaml") == amanet_config()


def test_d2_to_field_covers_known_keys_only():
    known = set(_all_leaf_keys())
    assert set(D2_TO_FIELD) <= known
    assert set(SUPPORTED_VALUES) <= known


# ---------------------------------------------------------------------------- Detectron2 dumps
def test_fixture_config_yaml_loads():
    root = fixture_dir("d2_s1x")
    raw = yaml.safe_load((root / "config.yaml").read_text())
    cfg = load_config(str(root / "config.yaml"))
    assert cfg.family == FAMILY_S1X
    expected = s1x_config()
    expected.roi_heads.score_thresh_test = 0.0   # as dumped
    assert cfg == expected
    assert cfg.densepose.predictor_name == "DensePoseChartPredictor"  # confidence-free twin
    known = set(_all_leaf_keys())
    assert set(_flat_keys(raw)) <= known         # every key of the dump is in the table


def test_fixture_config_effective_yaml_loads():
    cfg = load_config(str(fixture_dir("d2_s1x") / "config_effective.yaml"))
    assert cfg.family == FAMILY_S1X
    assert cfg.input.min_size_test == 512
    assert cfg.input.max_size_test == 768
    assert cfg.roi_heads.score_thresh_test == pytest.approx(0.05)
    assert cfg.roi_heads.detections_per_image == 10
    assert cfg.roi_heads.bbox_reg_weights == (10.0, 10.0, 5.0, 5.0)   # from the YAML alias
    assert cfg.rpn.anchor_sizes == ((32,), (64,), (128,), (256,), (512,))
    assert cfg.device == "cpu"


def test_fixture_config_with_test_overrides_equals_effective():
    root = fixture_dir("d2_s1x")
    cfg = load_config(str(root / "config.yaml"), [
        "MODEL.DEVICE", "cpu", "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.05",
        "TEST.DETECTIONS_PER_IMAGE", "10", "INPUT.MIN_SIZE_TEST", "512",
        "INPUT.MAX_SIZE_TEST", "768"])
    assert cfg == load_config(str(root / "config_effective.yaml"))


# ---------------------------------------------------------------------------- short YAML chains
def test_amanet_yaml_chain():
    cfg = load_config(str(AMA_YAML))
    assert cfg.family == FAMILY_AMANET
    dp = cfg.densepose
    assert (dp.conv_head_dim, dp.heatmap_size, dp.pooler_resolution) == (256, 64, 32)
    assert dp.name == "DensePoseAMAHead"
    assert dp.predictor_name == "TaskTransformerAMAPredictorV2"
    assert dp.kpt_on and not dp.decoder_on
    assert cfg.input.min_size_train == (640, 672, 704, 736, 768, 800)   # tuple string parsed
    assert cfg.solver.steps == (200000, 240000)
    assert cfg == amanet_config()


def test_s1x_model_zoo_chain():
    cfg = load_config(str(S1X_YAML))
    assert cfg.family == FAMILY_S1X
    assert cfg.weights == "detectron2://ImageNetPretrained/MSRA/R-50.pkl"
    cfg.weights = ""
    assert cfg == s1x_config()


def test_child_overrides_base_and_dicts_merge(tmp_path):
    _write(tmp_path, "base.yaml", "MODEL:\n  ROI_DENSEPOSE_HEAD:\n    NAME: DensePoseV1ConvXHead\n"
                                  "  RPN:\n    NMS_THRESH: 0.6\n    PRE_NMS_TOPK_TEST: 500\n")
    sub = tmp_path / "sub"
    sub.mkdir()
    child = _write(sub, "child.yaml", "_BASE_: ../base.yaml\nMODEL:\n  RPN:\n    NMS_THRESH: 0.8\n")
    cfg = load_config(str(child))
    assert cfg.rpn.nms_thresh == pytest.approx(0.8)
    assert cfg.rpn.pre_nms_topk_test == 500


def test_head_override_selects_family(tmp_path):
    cfg = load_config(str(S1X_YAML), ["MODEL.ROI_DENSEPOSE_HEAD.NAME", "DensePoseAMAHead",
                                      "MODEL.ROI_DENSEPOSE_HEAD.PREDICTOR_NAME",
                                      "TaskTransformerAMAPredictorV2"])
    assert cfg.family == FAMILY_AMANET


def test_own_format_file(tmp_path):
    cfg = amanet_config()
    cfg.roi_heads.score_thresh_test = 0.3
    path = _write(tmp_path, "dumped.yaml", dump_config(cfg))
    assert load_config(str(path)) == cfg


# ---------------------------------------------------------------------------- overrides
def test_merge_overrides_values_and_types():
    cfg = s1x_config()
    out = merge_overrides(cfg, ["MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.5",
                                "OUTPUT_DIR", "work_dirs/x",
                                "MODEL.ANCHOR_GENERATOR.SIZES", "[[16], [32], [64], [128], [256]]",
                                "INPUT.MIN_SIZE_TRAIN", "(600, 700)",
                                "MODEL.RESNETS.STRIDE_IN_1X1", "False",
                                "MODEL.PIXEL_STD", "[57.375, 57.12, 58.395]",
                                "densepose.mask_gate_threshold", "0.4",
                                "SOLVER.BASE_LR", "0.02",
                                "DATALOADER.NUM_WORKERS", "2"])            # accepted, ignored
    assert out is cfg
    assert cfg.roi_heads.score_thresh_test == 0.5
    assert cfg.output_dir == "work_dirs/x"
    assert cfg.rpn.anchor_sizes == ((16.0,), (32.0,), (64.0,), (128.0,), (256.0,))
    assert cfg.input.min_size_train == (600, 700)
    assert cfg.backbone.stride_in_1x1 is False
    assert cfg.input.pixel_std == (57.375, 57.12, 58.395)
    assert cfg.densepose.mask_gate_threshold == 0.4
    assert cfg.solver.base_lr == 0.02


def test_int_accepted_for_float_field():
    cfg = merge_overrides(s1x_config(), ["MODEL.RPN.NMS_THRESH", "1"])
    assert cfg.rpn.nms_thresh == 1.0 and isinstance(cfg.rpn.nms_thresh, float)


def test_keypoint_on_aliases_kpt_on():
    cfg = merge_overrides(amanet_config(), ["MODEL.KEYPOINT_ON", "False"])
    assert cfg.densepose.kpt_on is False


@pytest.mark.parametrize("overrides, words", [
    (["MODEL.RPN.NMS_THRESHOLD", "0.5"], ["MODEL.RPN.NMS_THRESHOLD", "unknown", "NMS_THRESH"]),
    (["FOO.BAR", "1"], ["FOO.BAR", "unknown"]),
    (["densepose.no_such_field", "1"], ["densepose.no_such_field"]),
    (["MODEL.ROI_HEADS.SCORE_THRESH_TEST", "high"], ["MODEL.ROI_HEADS.SCORE_THRESH_TEST", "float"]),
    (["MODEL.RESNETS.DEPTH", "50.0"], ["MODEL.RESNETS.DEPTH", "int"]),
    (["MODEL.PIXEL_MEAN", "[1, 2]"], ["MODEL.PIXEL_MEAN", "3 values"]),
    (["SOLVER.BASE_LR_END", "fast"], ["SOLVER.BASE_LR_END", "number"]),     # an ignored key
    (["MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.5", "MODEL.DEVICE"], ["MODEL.DEVICE", "no value"]),
    (["MODEL.RPN", "1"], ["MODEL.RPN", "group"]),
])
def test_override_errors_name_the_key(overrides, words):
    with pytest.raises(ConfigError) as info:
        merge_overrides(s1x_config(), overrides)
    for word in words:
        assert word in str(info.value)


def test_failed_merge_leaves_config_unchanged():
    cfg = s1x_config()
    with pytest.raises(ConfigError):
        merge_overrides(cfg, ["MODEL.RPN.NMS_THRESH", "0.1", "MODEL.RESNETS.NORM", "GN"])
    assert cfg == s1x_config()


def test_family_cannot_change_on_built_config():
    with pytest.raises(ConfigError, match="MODEL.ROI_DENSEPOSE_HEAD.NAME"):
        merge_overrides(s1x_config(), ["MODEL.ROI_DENSEPOSE_HEAD.NAME", "DensePoseAMAHead"])


# ---------------------------------------------------------------------------- unsupported values
@pytest.mark.parametrize("key, value", [
    ("MODEL.RESNETS.NORM", "GN"),
    ("MODEL.RESNETS.DEPTH", "152"),
    ("MODEL.RESNETS.DEFORM_ON_PER_STAGE", "[False, True, True, True]"),
    ("MODEL.META_ARCHITECTURE", "RetinaNet"),
    ("MODEL.PROPOSAL_GENERATOR.NAME", "PrecomputedProposals"),
    ("MODEL.MASK_ON", "True"),
    ("MODEL.ROI_DENSEPOSE_HEAD.UV_CONFIDENCE.TYPE", "'gaussian'"),
    ("MODEL.ROI_DENSEPOSE_HEAD.NAME", "DensePoseDeepLabHeadV2"),
    ("MODEL.BACKBONE.NAME", "build_resnet_backbone"),
    ("MODEL.FPN.NORM", "GN"),
    ("INPUT.FORMAT", "YUV"),
    ("MODEL.ROI_BOX_HEAD.NUM_CONV", "4"),
    ("MODEL.ROI_BOX_HEAD.NAME", "FastRCNNConvHead"),
    ("MODEL.ROI_HEADS.NAME", "CascadeROIHeads"),
    ("MODEL.ROI_BOX_HEAD.POOLER_TYPE", "ROIPool"),
    ("MODEL.ROI_DENSEPOSE_HEAD.PREDICTOR_NAME", "DensePoseEmbeddingPredictor"),
    ("MODEL.ROI_DENSEPOSE_HEAD.DECODER_NORM", "GN"),
    ("MODEL.KEYPOINT_ON", "True"),                      # no keypoint head in the s1x family
    ("MODEL.RESNETS.OUT_FEATURES", "['res3', 'res4', 'res5']"),
])
def test_unsupported_value_names_key_and_value(key, value):
    with pytest.raises(ConfigError) as info:
        merge_overrides(s1x_config(), [key, value])
    msg = str(info.value)
    assert key in msg or key.rsplit(".", 1)[-1] in msg
    assert value.strip("'").split(",")[0].strip("[") in msg     # the value given
    assert "; supported: " in msg, msg        # what would be accepted, not just "unsupported"


def test_unsupported_head_name_in_file(tmp_path):
    path = _write(tmp_path, "x.yaml",
                  "MODEL:\n  ROI_DENSEPOSE_HEAD:\n    NAME: DensePoseChartHRNetHead\n")
    with pytest.raises(ConfigError, match="DensePoseChartHRNetHead.*supported"):
        load_config(str(path))


def test_amanet_rejects_decoder():
    with pytest.raises(ConfigError, match="DECODER_ON"):
        load_config(str(AMA_YAML), ["MODEL.ROI_DENSEPOSE_HEAD.DECODER_ON", "True"])


def test_ama_pooler_resolution_sets_the_four_paths():
    cfg = load_config("amanet", ["MODEL.ROI_DENSEPOSE_HEAD.POOLER_RESOLUTION", "16",
                                 "MODEL.ROI_DENSEPOSE_HEAD.HEATMAP_SIZE", "32"])
    assert cfg.densepose.ama_pooler_resolutions == (16, 8, 8, 4)
    assert cfg.densepose.pooler_resolution == 16
    assert config_from_dict(cfg.to_dict()) == cfg


@pytest.mark.parametrize("overrides, words", [
    (["MODEL.ROI_DENSEPOSE_HEAD.POOLER_RESOLUTION", "18"], ["POOLER_RESOLUTION=18", "multiple of 4"]),
    (["MODEL.ROI_DENSEPOSE_HEAD.POOLER_RESOLUTION", "16"], ["HEATMAP_SIZE=64", "supported: 32"]),
    (["densepose.ama_pooler_resolutions", "(16, 16, 8, 4)"], ["[16, 16, 8, 4]", "R/2"]),
])
def test_ama_pooler_resolution_errors(overrides, words):
    with pytest.raises(ConfigError) as err:
        load_config("amanet", overrides)
    for w in words:
        assert w in str(err.value)


def test_unsupported_value_in_file_names_file_and_key(tmp_path):
    path = _write(tmp_path, "gn.yaml", f"_BASE_: {S1X_YAML}\nMODEL:\n  RESNETS:\n    NORM: GN\n")
    with pytest.raises(ConfigError) as info:
        load_config(str(path))
    msg = str(info.value)
    assert "gn.yaml" in msg and "MODEL.RESNETS.NORM='GN'" in msg and "FrozenBN" in msg


def test_unknown_key_in_file(tmp_path):
    path = _write(tmp_path, "u.yaml", f"_BASE_: {S1X_YAML}\nMODEL:\n  RPN:\n    NMS_TRESH: 0.5\n")
    with pytest.raises(ConfigError, match=r"MODEL\.RPN\.NMS_TRESH"):
        load_config(str(path))


def test_wrong_type_in_file(tmp_path):
    path = _write(tmp_path, "t.yaml",
                  f"_BASE_: {S1X_YAML}\nMODEL:\n  ROI_HEADS:\n    SCORE_THRESH_TEST: high\n")
    with pytest.raises(ConfigError, match=r"MODEL\.ROI_HEADS\.SCORE_THRESH_TEST"):
        load_config(str(path))


def test_open_nodes_accept_any_subkey(tmp_path):
    path = _write(tmp_path, "o.yaml",
                  f"_BASE_: {S1X_YAML}\nDATASETS:\n  CATEGORY_MAPS:\n    my_set: {{1: 1}}\n")
    assert load_config(str(path)).family == FAMILY_S1X


# ---------------------------------------------------------------------------- file errors
def test_missing_file(tmp_path):
    path = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError, match="nope.yaml.*no such"):
        load_config(str(path))


def test_empty_file(tmp_path):
    path = _write(tmp_path, "empty.yaml", "# nothing\n")
    with pytest.raises(ConfigError, match="empty.yaml.*empty"):
        load_config(str(path))


def test_not_a_mapping(tmp_path):
    path = _write(tmp_path, "list.yaml", "- 1\n- 2\n")
    with pytest.raises(ConfigError, match="list.yaml.*mapping"):
        load_config(str(path))


def test_unparseable_yaml_chains_cause(tmp_path):
    path = _write(tmp_path, "bad.yaml", "MODEL: [1, 2\n")
    with pytest.raises(ConfigError, match="bad.yaml.*YAML") as info:
        load_config(str(path))
    assert isinstance(info.value.__cause__, yaml.YAMLError)


def test_missing_base(tmp_path):
    path = _write(tmp_path, "child.yaml", "_BASE_: missing-base.yaml\n")
    with pytest.raises(ConfigError, match="missing-base.yaml"):
        load_config(str(path))


def test_base_cycle(tmp_path):
    _write(tmp_path, "a.yaml", "_BASE_: b.yaml\n")
    _write(tmp_path, "b.yaml", "_BASE_: a.yaml\n")
    with pytest.raises(ConfigError, match="cycle"):
        load_config(str(tmp_path / "a.yaml"))


def test_self_base_cycle(tmp_path):
    path = _write(tmp_path, "self.yaml", "_BASE_: ./self.yaml\n")
    with pytest.raises(ConfigError, match="cycle"):
        load_config(str(path))


def test_head_name_required(tmp_path):
    path = _write(tmp_path, "nohead.yaml", "MODEL:\n  DEVICE: cpu\n")
    with pytest.raises(ConfigError, match="MODEL.ROI_DENSEPOSE_HEAD.NAME"):
        load_config(str(path))


# ---------------------------------------------------------------------------- dump / rebuild
@pytest.mark.parametrize("make", [s1x_config, amanet_config])
def test_dump_round_trip(make):
    cfg = make()
    cfg.input.min_size_test = 640
    cfg.rpn.anchor_sizes = ((16.0, 24.0), (32.0,), (64.0,), (128.0,), (256.0,))
    text = dump_config(cfg)
    rebuilt = config_from_dict(yaml.safe_load(text))
    assert rebuilt == cfg
    assert isinstance(rebuilt.rpn.anchor_sizes[0], tuple)
    assert config_from_dict(cfg.to_dict()) == cfg
    assert dump_config(rebuilt) == text


def test_config_from_dict_errors_and_defaults():
    with pytest.raises(ConfigError, match="rpn.nms_threshold"):
        config_from_dict({"family": "s1x", "rpn": {"nms_threshold": 0.5}})
    with pytest.raises(ConfigError, match="input.min_size_test"):
        config_from_dict({"family": "s1x", "input": {"min_size_test": "big"}})
    with pytest.raises(ConfigError, match="family"):
        config_from_dict({"family": "yolo"})
    partial = config_from_dict({"family": "amanet", "roi_heads": {"score_thresh_test": 0.2}})
    expected = amanet_config()
    expected.roi_heads.score_thresh_test = 0.2
    assert partial == expected
    assert isinstance(partial, Config)


def test_known_keys_table_is_nested_dict():
    assert "MODEL" in KNOWN_KEYS and isinstance(KNOWN_KEYS["MODEL"]["RESNETS"], dict)
