"""TensorRT deployment: the ONNX compatibility checker, the CLI, the calibration data, and (when
TensorRT + a GPU are present) engine build/run against ONNX Runtime.

Without TensorRT everything but the last group runs: the checker on small hand-made graphs and
on the real exported s1x graph, ``export/to_trt.py`` (missing TensorRT -> exit 2 with one line;
``--check-only``), ``build_engine`` / ``TensorRTRunner`` raising ``TensorRTUnavailable``.
"""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from amanet.deploy import tensorrt as trtmod  # noqa: E402
from amanet.deploy.tensorrt import (TRT10_ONNX_OPS, TRT10_UNSUPPORTED_ONNX_OPS,  # noqa: E402
                                    TensorRTUnavailable, check_trt_compatibility)
from scratch import scratch_dir

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "export" / "to_trt.py"
HAVE_TRT = trtmod.tensorrt_available()
needs_trt = pytest.mark.skipif(not HAVE_TRT, reason="TensorRT not installed / no GPU")
no_trt = pytest.mark.skipif(HAVE_TRT, reason="TensorRT is installed here")

M, S, P = 4, 8, 5   # rows, heatmap size, parts of the hand-made graphs


# --------------------------------------------------------------------------------------------
# Hand-made graphs shaped like a max_detections export
# --------------------------------------------------------------------------------------------
def _meta(max_detections=M, **config_overrides):
    rpn = {"in_features": ["p2", "p3", "p4", "p5", "p6"], "pre_nms_topk_test": 1000,
           "post_nms_topk_test": 1000}
    rpn.update(config_overrides)
    outputs = ["boxes", "scores", "classes", "gate", "fine_segm", "u", "v"]
    if max_detections > 0:
        outputs.append("num_detections")
    return {"amanet_export_format": trtmod._EXPORT_FORMAT, "family": "s1x",
            "input": {"layout": "CHW", "channels": "BGR", "range": "0..255",
                      "min_size_test": 64, "max_size_test": 128, "size_divisibility": 32},
            "outputs": outputs, "max_detections": max_detections, "heatmap_size": S,
            "num_parts": P, "gate_mode": 0, "gate_threshold": 0.5, "ops": "amanet",
            "config": {"rpn": rpn, "roi_heads": {"num_classes": 1},
                       "input": {"pixel_mean": [103.53, 116.28, 123.675], "format": "BGR"}}}


def _c(name, value, dtype=np.int64):
    return numpy_helper.from_array(np.asarray(value, dtype=dtype), name)


def make_graph(path, *, input_dims=(3, "height", "width"), opset=17, dynamic_fine=False,
               topk_k=None, extra_nodes=(), extra_inits=(), extra_outputs=(), roi_attrs=None,
               meta=None, declared_static=True, dynamic_outputs=False):
    """A small DensePose-like graph: RoiAlign on the image, TopK, Gather, NonMaxSuppression,
    Conv; outputs named like amanet's with ``M`` fixed rows (or data-dependent rows)."""
    rng = np.random.default_rng(0)
    rois = np.array([[2, 2, 30, 30], [0, 0, 16, 40], [8, 4, 24, 20], [1, 1, 31, 31]], np.float32)
    inits = [
        _c("rois", rois, np.float32), _c("batch_idx", [0] * M),
        _c("ax0", [0]), _c("ax01", [0, 1]), _c("k", [M] if topk_k is None else topk_k),
        _c("w_fine", rng.normal(size=(P, 3, 1, 1)) * 0.01, np.float32),
        _c("zero_i64", 0), _c("max_out", [100]), _c("iou", [0.5], np.float32),
        _c("s0", [0]), _c("e1", [1]), _c("e2", [2]), _c("a1", [1]),
    ]
    roi_kw = dict(output_height=S, output_width=S, sampling_ratio=2, spatial_scale=1.0,
                  coordinate_transformation_mode="half_pixel", mode="avg")
    if roi_attrs is not None:
        roi_kw = {k: v for k, v in {**roi_kw, **roi_attrs}.items() if v is not None}
    nodes = [
        helper.make_node("Unsqueeze", ["image", "ax0"], ["x"]),
        helper.make_node("RoiAlign", ["x", "rois", "batch_idx"], ["pooled"], **roi_kw),
        helper.make_node("ReduceMean", ["pooled"], ["pm"], axes=[1, 2, 3], keepdims=0),
        helper.make_node("TopK", ["pm", "k"], ["scores_k", "idx"], axis=-1, largest=1, sorted=1),
        helper.make_node("Div", ["scores_k", "c255"], ["scores_all"]),
        helper.make_node("Gather", ["rois", "idx"], ["boxes_all"], axis=0),
        helper.make_node("Mul", ["idx", "zero_i64"], ["classes_all"]),
        helper.make_node("Slice", ["pooled", "s0", "e2", "a1"], ["gate_all"]),
        helper.make_node("Conv", ["pooled", "w_fine"], ["fine_segm_all"]),
        helper.make_node("Sigmoid", ["fine_segm_all"], ["u_all"]),
        helper.make_node("Tanh", ["fine_segm_all"], ["v_all"]),
        helper.make_node("Unsqueeze", ["boxes_all", "ax0"], ["boxes3"]),
        helper.make_node("Unsqueeze", ["scores_all", "ax01"], ["scores3"]),
        helper.make_node("NonMaxSuppression", ["boxes3", "scores3", "max_out", "iou"], ["sel"]),
        helper.make_node("Shape", ["sel"], ["sel_shape"]),
        helper.make_node("Slice", ["sel_shape", "s0", "e1"], ["num_detections"]),
    ]
    inits.append(_c("c255", 255.0, np.float32))
    names = ["boxes", "scores", "classes", "gate", "fine_segm", "u", "v"]
    shapes = {"boxes": [M, 4], "scores": [M], "classes": [M], "gate": [M, 2, S, S],
              "fine_segm": [M, P, S, S], "u": [M, P, S, S], "v": [M, P, S, S]}
    types = {n: TensorProto.FLOAT for n in names}
    types["classes"] = TensorProto.INT64
    dyn = set(names) if dynamic_outputs else ({"fine_segm"} if dynamic_fine else set())
    for n in names:
        if n in dyn:   # rows cut to the NMS count: a data-dependent first dimension
            nodes.append(helper.make_node("Slice", [f"{n}_all", "s0", "num_detections", "ax0"],
                                          [n]))
        else:
            nodes.append(helper.make_node("Identity", [f"{n}_all"], [n]))
    nodes += list(extra_nodes)
    inits += list(extra_inits)
    outputs = []
    for n in names:
        dims = shapes[n] if (declared_static or n not in dyn) else ["d"] + shapes[n][1:]
        outputs.append(helper.make_tensor_value_info(n, types[n], dims))
    if not dynamic_outputs:
        outputs.append(helper.make_tensor_value_info("num_detections", TensorProto.INT64, [1]))
    outputs += list(extra_outputs)
    graph = helper.make_graph(nodes, "mini", [helper.make_tensor_value_info(
        "image", TensorProto.FLOAT, list(input_dims))], outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    if meta is None:
        meta = _meta(0 if dynamic_outputs else M)
    if meta is not False:
        entry = model.metadata_props.add()
        entry.key, entry.value = "amanet", json.dumps(meta, sort_keys=True)
    onnx.save(model, str(path))
    return Path(path)


@pytest.fixture
def good(tmp_path):
    return make_graph(tmp_path / "good.onnx")


def _has(problems, *words):
    return any(all(w in p for w in words) for p in problems)


# --------------------------------------------------------------------------------------------
# The checker on hand-made graphs
# --------------------------------------------------------------------------------------------
def test_operator_table_facts():
    for op in ("RoiAlign", "NonMaxSuppression", "NonZero", "TopK", "Resize", "Conv",
               "ConvTranspose", "Gather", "Loop", "If", "IsInf", "Mod"):
        assert op in TRT10_ONNX_OPS
    assert "3840" in TRT10_ONNX_OPS["TopK"]
    assert not set(TRT10_ONNX_OPS) & TRT10_UNSUPPORTED_ONNX_OPS
    assert {"Unique", "Compress", "SequenceAt", "MaxRoiPool"} <= TRT10_UNSUPPORTED_ONNX_OPS


def test_metadata_constants_agree_with_the_exporter(good):
    # tensorrt.py repeats two constants so that it does not import the model code
    from amanet.deploy import metadata
    from amanet.deploy.onnx import METADATA_KEY, read_metadata

    assert trtmod._ONNX_METADATA_KEY == METADATA_KEY
    assert trtmod._EXPORT_FORMAT == metadata.FORMAT_VERSION
    assert trtmod.read_onnx_metadata(good) == read_metadata(good)


def test_good_graph_passes(good):
    onnx.checker.check_model(onnx.load(str(good)), full_check=True)
    assert check_trt_compatibility(good) == []


def test_good_graph_runs_in_onnxruntime(good):
    ort = pytest.importorskip("onnxruntime")
    sess = ort.InferenceSession(str(good), providers=["CPUExecutionProvider"])
    img = np.random.default_rng(1).uniform(0, 255, (3, 40, 48)).astype(np.float32)
    outs = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, {"image": img})))
    assert outs["fine_segm"].shape == (M, P, S, S) and outs["num_detections"].shape == (1,)


def test_unsupported_op_reported_by_name(tmp_path):
    path = make_graph(tmp_path / "bad.onnx", extra_nodes=[
        helper.make_node("Unique", ["pm"], ["uniq"], name="my_unique")],
        extra_outputs=[helper.make_tensor_value_info("uniq", TensorProto.FLOAT, None)],
        meta=False)
    problems = check_trt_compatibility(path)
    assert _has(problems, "Unique", "not supported", "my_unique"), problems


def test_custom_domain_op_reported(tmp_path):
    path = make_graph(tmp_path / "custom.onnx", extra_nodes=[
        helper.make_node("roi_align", ["x", "rois"], ["custom"], domain="amanet")],
        meta=False)
    model = onnx.load(str(path))
    model.opset_import.append(helper.make_opsetid("amanet", 1))
    onnx.save(model, str(path))
    assert _has(check_trt_compatibility(path), "amanet::roi_align", "plugin")


def test_unsupported_op_inside_subgraph_reported(tmp_path):
    then_g = helper.make_graph([helper.make_node("Unique", ["pm"], ["t_out"])], "then", [],
                               [helper.make_tensor_value_info("t_out", TensorProto.FLOAT, None)])
    else_g = helper.make_graph([helper.make_node("Identity", ["pm"], ["e_out"])], "else", [],
                               [helper.make_tensor_value_info("e_out", TensorProto.FLOAT, None)])
    path = make_graph(tmp_path / "if.onnx", extra_inits=[_c("flag", True, np.bool_)],
                      extra_nodes=[helper.make_node("If", ["flag"], ["if_out"],
                                                    then_branch=then_g, else_branch=else_g)],
                      extra_outputs=[helper.make_tensor_value_info("if_out", TensorProto.FLOAT,
                                                                   None)], meta=False)
    problems = check_trt_compatibility(path)
    assert _has(problems, "Unique"), problems


def test_if_branches_with_same_output_name_reported(tmp_path):
    branch = lambda name: helper.make_graph(  # noqa: E731
        [helper.make_node("Identity", ["pm"], ["same"])], name, [],
        [helper.make_tensor_value_info("same", TensorProto.FLOAT, None)])
    path = make_graph(tmp_path / "if2.onnx", extra_inits=[_c("flag", True, np.bool_)],
                      extra_nodes=[helper.make_node("If", ["flag"], ["if_out"],
                                                    then_branch=branch("a"),
                                                    else_branch=branch("b"))],
                      extra_outputs=[helper.make_tensor_value_info("if_out", TensorProto.FLOAT,
                                                                   None)], meta=False)
    assert _has(check_trt_compatibility(path), "If", "same tensor name")


def test_dynamic_densepose_output_reported(tmp_path):
    # fine_segm's rows are cut to the NMS count; the graph *declares* [M, P, S, S] anyway:
    # the checker must re-infer shapes and not trust the declaration.
    path = make_graph(tmp_path / "dyn.onnx", dynamic_fine=True)
    problems = check_trt_compatibility(path)
    assert _has(problems, "fine_segm", "not static"), problems
    assert not _has(problems, "'gate'") and not _has(problems, "'boxes'")


def test_dynamic_outputs_fine_when_max_detections_is_zero(tmp_path):
    path = make_graph(tmp_path / "dyn0.onnx", dynamic_outputs=True)
    assert check_trt_compatibility(path) == []


def test_wrong_static_output_shape_reported(tmp_path):
    meta = _meta(M)
    meta["num_parts"] = P + 1
    path = make_graph(tmp_path / "parts.onnx", meta=meta)
    assert _has(check_trt_compatibility(path), "fine_segm", "expected")


@pytest.mark.parametrize("dims,words", [
    (("c", "height", "width"), ("channel",)),
    ((1, 3, "height", "width"), ("[3, H, W]",)),
])
def test_image_input_dynamic_dims(tmp_path, dims, words):
    path = make_graph(tmp_path / "in.onnx", input_dims=dims)
    assert _has(check_trt_compatibility(path), *words)


def test_static_hw_input_is_fine(tmp_path):
    assert check_trt_compatibility(make_graph(tmp_path / "s.onnx", input_dims=(3, 32, 48))) == []


def test_topk_k_bounds(tmp_path):
    # K = 5000 constant: too large
    path = make_graph(tmp_path / "k.onnx", topk_k=[5000], meta=False)
    assert _has(check_trt_compatibility(path), "TopK", "3840")


def test_topk_k_data_dependent_and_bounded(tmp_path):
    # The exporter's min(k, n) pattern: ReduceMin(Concat(const k, Shape-derived n)) is bounded
    # by the constant; a bare Shape-derived K is not.
    def model(name, bounded):
        nodes = [helper.make_node("Shape", ["image"], ["shp"]),
                 helper.make_node("Slice", ["shp", "e1", "e2"], ["n_h"])]
        if bounded:
            nodes += [helper.make_node("Concat", ["kconst", "n_h"], ["cand"], axis=0),
                      helper.make_node("ReduceMin", ["cand"], ["kmin"], keepdims=0),
                      helper.make_node("Reshape", ["kmin", "one"], ["kk"])]
        else:
            nodes += [helper.make_node("Identity", ["n_h"], ["kk"])]
        nodes += [helper.make_node("ReduceMean", ["image"], ["rows"], axes=[0, 2], keepdims=0),
                  helper.make_node("TopK", ["rows", "kk"], ["tv", "ti"])]
        g = helper.make_graph(nodes, "k", [helper.make_tensor_value_info(
            "image", TensorProto.FLOAT, [3, "h", "w"])],
            [helper.make_tensor_value_info("tv", TensorProto.FLOAT, None)],
            [_c("e1", [1]), _c("e2", [2]), _c("kconst", [1000]), _c("one", [1])])
        m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
        m.ir_version = 8
        onnx.save(m, str(tmp_path / name))
        return check_trt_compatibility(tmp_path / name)

    assert not _has(model("bounded.onnx", True), "TopK")
    assert _has(model("free.onnx", False), "TopK", "cannot be shown")


def test_roialign_rules(tmp_path):
    p1 = make_graph(tmp_path / "r1.onnx", roi_attrs={"sampling_ratio": None}, meta=False)
    assert _has(check_trt_compatibility(p1), "RoiAlign", "sampling_ratio")
    p2 = make_graph(tmp_path / "r2.onnx", roi_attrs={"coordinate_transformation_mode": "corner"},
                    meta=False)
    assert _has(check_trt_compatibility(p2), "RoiAlign", "corner")
    p3 = make_graph(tmp_path / "r3.onnx", roi_attrs={"mode": "max"}, meta=False)
    assert not _has(check_trt_compatibility(p3), "RoiAlign")


def test_resize_rules(tmp_path):
    def resize(name, **attrs):
        node = helper.make_node("Resize", ["x", "", "scales"], [name], **attrs)
        return make_graph(tmp_path / f"{name}.onnx", extra_nodes=[node],
                          extra_inits=[_c("scales", [1, 1, 2, 2], np.float32)],
                          extra_outputs=[helper.make_tensor_value_info(name, TensorProto.FLOAT,
                                                                       None)], meta=False)
    assert not _has(check_trt_compatibility(resize(
        "ok", mode="nearest", coordinate_transformation_mode="asymmetric",
        nearest_mode="floor")), "Resize")
    assert not _has(check_trt_compatibility(resize(
        "lin", mode="linear", coordinate_transformation_mode="half_pixel")), "Resize")
    assert _has(check_trt_compatibility(resize("cubic", mode="cubic")), "Resize", "cubic")
    assert _has(check_trt_compatibility(resize(
        "tfc", mode="linear", coordinate_transformation_mode="tf_crop_and_resize")),
        "Resize", "tf_crop_and_resize")


def test_maxpool_indices_and_dilations(tmp_path):
    nodes = [helper.make_node("MaxPool", ["x"], ["mp", "mpi"], kernel_shape=[2, 2],
                              name="pool_idx"),
             helper.make_node("MaxPool", ["x"], ["mp2"], kernel_shape=[2, 2], dilations=[2, 2],
                              name="pool_dil")]
    outs = [helper.make_tensor_value_info(n, t, None) for n, t in
            (("mp", TensorProto.FLOAT), ("mpi", TensorProto.INT64), ("mp2", TensorProto.FLOAT))]
    problems = check_trt_compatibility(make_graph(tmp_path / "mp.onnx", extra_nodes=nodes,
                                                  extra_outputs=outs, meta=False))
    assert _has(problems, "pool_idx", "Indices") and _has(problems, "pool_dil", "dilations")


def test_unsqueeze_axes_must_be_constant(tmp_path):
    nodes = [helper.make_node("Shape", ["ax0"], ["ax_dyn_shape"]),
             helper.make_node("Sub", ["ax_dyn_shape", "e1"], ["ax_dyn"]),
             helper.make_node("Unsqueeze", ["pm", "ax_dyn"], ["unsq"], name="dyn_unsq")]
    path = make_graph(tmp_path / "u.onnx", extra_nodes=nodes, extra_outputs=[
        helper.make_tensor_value_info("unsq", TensorProto.FLOAT, None)], meta=False)
    assert _has(check_trt_compatibility(path), "dyn_unsq", "axes", "constant")


def test_unsupported_element_type_reported(tmp_path):
    nodes = [helper.make_node("Cast", ["pm"], ["pm16"], to=TensorProto.UINT16, name="to_u16")]
    path = make_graph(tmp_path / "t.onnx", extra_nodes=nodes, extra_outputs=[
        helper.make_tensor_value_info("pm16", TensorProto.UINT16, None)], meta=False)
    problems = check_trt_compatibility(path)
    assert _has(problems, "UINT16"), problems


def test_loop_scan_output_needs_constant_trip_count(tmp_path):
    body = helper.make_graph(
        [helper.make_node("Identity", ["cond_in"], ["cond_out"]),
         helper.make_node("Identity", ["pm"], ["scan_out"])], "body",
        [helper.make_tensor_value_info("iter", TensorProto.INT64, []),
         helper.make_tensor_value_info("cond_in", TensorProto.BOOL, [])],
        [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
         helper.make_tensor_value_info("scan_out", TensorProto.FLOAT, None)])
    nodes = [helper.make_node("ReduceMax", ["num_detections"], ["trip"], keepdims=0),
             helper.make_node("Loop", ["trip", "cond0"], ["scanned"], body=body,
                              name="the_loop")]
    path = make_graph(tmp_path / "loop.onnx", extra_nodes=nodes,
                      extra_inits=[_c("cond0", True, np.bool_)],
                      extra_outputs=[helper.make_tensor_value_info("scanned", TensorProto.FLOAT,
                                                                   None)], meta=False)
    assert _has(check_trt_compatibility(path), "the_loop", "trip count")


def test_opset_out_of_range(tmp_path):
    g = helper.make_graph([helper.make_node("Identity", ["image"], ["y"])], "o",
                          [helper.make_tensor_value_info("image", TensorProto.FLOAT, [3, 4, 4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3, 4, 4])])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 7)])
    m.ir_version = 3
    onnx.save(m, str(tmp_path / "o.onnx"))
    assert _has(check_trt_compatibility(tmp_path / "o.onnx"), "opset 7", "9..24")


def test_nms_box_limit_from_config(tmp_path):
    path = make_graph(tmp_path / "nms.onnx", meta=_meta(M, pre_nms_topk_test=2000))
    assert _has(check_trt_compatibility(path), "RPN NMS", "5000")


def test_missing_file():
    with pytest.raises(FileNotFoundError):
        check_trt_compatibility("/nonexistent/model.onnx")


# --------------------------------------------------------------------------------------------
# Calibration data (pure numpy) and profiles
# --------------------------------------------------------------------------------------------
def test_fit_to_shape_pads_and_crops():
    a = np.arange(2 * 3 * 5, dtype=np.float32).reshape(2, 3, 5)
    out = trtmod.fit_to_shape(a, (4, 3), fill=[-1, -2])
    assert out.shape == (2, 4, 3) and out.dtype == np.float32
    np.testing.assert_array_equal(out[:, :3], a[:, :, 1:4])        # center crop in W
    np.testing.assert_array_equal(out[0, 3], [-1] * 3)               # bottom pad, per channel
    np.testing.assert_array_equal(out[1, 3], [-2] * 3)


def test_prepare_calibration_image_matches_runtime_preprocessing():
    from amanet.data.transforms import resize_shortest_edge

    rng = np.random.default_rng(0)
    bgr = rng.integers(0, 256, (100, 200, 3), dtype=np.uint8)
    meta = _meta()
    out = trtmod.prepare_calibration_image(bgr, meta, (64, 96))
    ref = resize_shortest_edge(bgr, 64, 128).transpose(2, 0, 1).astype(np.float32)
    assert ref.shape == (3, 64, 128)
    assert out.shape == (3, 64, 96) and out.dtype == np.float32
    np.testing.assert_array_equal(out, ref[:, :, 16:112])           # center crop 128 -> 96

    small = rng.integers(0, 256, (20, 40, 3), dtype=np.uint8)        # upscaled to 64 x 128
    out2 = trtmod.prepare_calibration_image(small, meta, (80, 128))
    np.testing.assert_array_equal(out2[:, 64:, :],
                                  np.broadcast_to(np.float32([103.53, 116.28, 123.675])
                                                  .reshape(3, 1, 1), (3, 16, 128)))

    rgb_meta = _meta()
    rgb_meta["input"]["channels"] = "RGB"
    out3 = trtmod.prepare_calibration_image(bgr, rgb_meta, (64, 96))
    np.testing.assert_array_equal(out3, out[::-1])


def test_calibration_images_folder(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    for i in range(2):
        Image.fromarray(rng.integers(0, 256, (50, 70, 3), dtype=np.uint8)).save(
            tmp_path / f"im{i}.png")
    (tmp_path / "broken.jpg").write_bytes(b"not an image")
    (tmp_path / "notes.txt").write_text("skip me")
    images = trtmod.CalibrationImages(tmp_path, _meta(), (64, 96))
    assert len(images) == 3
    batches = list(images)
    assert len(batches) == 2 and all(b.shape == (3, 64, 96) for b in batches)
    with pytest.raises(trtmod.InputError):
        trtmod.CalibrationImages(tmp_path / "missing", _meta(), (64, 96))


def test_profiles():
    meta = {"input": {"min_size_test": 800, "max_size_test": 1333, "size_divisibility": 32}}
    assert trtmod.default_profile(meta) == ((32, 32), (800, 1067), (1333, 1333))
    assert trtmod.resolve_profile(meta, opt_hw=(640, 640))[1] == (640, 640)
    with pytest.raises(ValueError):
        trtmod.resolve_profile(meta, min_hw=(900, 32))
    with pytest.raises(ValueError):
        trtmod.resolve_profile(meta, max_hw=(0, 10))


# --------------------------------------------------------------------------------------------
# Without TensorRT: clear errors
# --------------------------------------------------------------------------------------------
@no_trt
def test_build_engine_without_tensorrt(good, tmp_path):
    with pytest.raises(TensorRTUnavailable) as e:
        trtmod.build_engine(good, tmp_path / "m.engine")
    assert "TensorRT" in str(e.value) and "\n" not in str(e.value)
    assert not (tmp_path / "m.engine").exists()


@no_trt
def test_runner_without_tensorrt(tmp_path):
    with pytest.raises(TensorRTUnavailable, match="TensorRT"):
        trtmod.TensorRTRunner(tmp_path / "m.engine")


def test_build_engine_validates_arguments_first(good, tmp_path):
    with pytest.raises(ValueError, match="precision"):
        trtmod.build_engine(good, tmp_path / "m.engine", precision="int4")
    with pytest.raises(ValueError, match="int8"):
        trtmod.build_engine(good, tmp_path / "m.engine", precision="int8")
    with pytest.raises(FileNotFoundError):
        trtmod.build_engine(tmp_path / "none.onnx", tmp_path / "m.engine")


@no_trt
def test_cli_without_tensorrt_one_line(tmp_path):
    # Run from another directory: the script must find the checkout's package by itself.
    r = subprocess.run([sys.executable, str(SCRIPT), "--config", "s1x", "--out",
                        str(tmp_path / "m.engine")], cwd=str(tmp_path), capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "TensorRT" in lines[0], r.stderr
    assert "Traceback" not in r.stderr
    assert not (tmp_path / "m.engine").exists()


def test_cli_check_only_on_bad_graph(tmp_path, capsys):
    from amanet.deploy.cli_trt import main

    path = make_graph(tmp_path / "dyn.onnx", dynamic_fine=True)
    assert main(["--onnx", str(path), "--check-only"]) == 1
    out = capsys.readouterr().out
    assert "fine_segm" in out and "problem" in out
    good_path = make_graph(tmp_path / "good.onnx")
    assert main(["--onnx", str(good_path), "--check-only"]) == 0
    assert "OK" in capsys.readouterr().out


def test_cli_argument_errors(tmp_path, capsys):
    from amanet.deploy.cli_trt import main

    with pytest.raises(SystemExit) as e:
        main(["--config", "s1x"])                       # no --out, not --check-only
    assert e.value.code == 2
    with pytest.raises(SystemExit):
        main(["--onnx", "a.onnx", "--weights", "w.pth", "--check-only"])
    with pytest.raises(SystemExit):
        main(["--out", str(tmp_path / "m.engine"), "--precision", "int8"])   # no calib data
    good_path = make_graph(tmp_path / "good.onnx")
    assert main(["--onnx", str(good_path), "--check-only", "--max-detections", "7"]) == 2
    assert "max_detections=4" in capsys.readouterr().err


# --------------------------------------------------------------------------------------------
# build_engine's control flow against a stand-in for the tensorrt module (records the calls;
# this checks our code paths, not TensorRT's API, which needs the real thing: see the end)
# --------------------------------------------------------------------------------------------
class _T:   # tensor
    def __init__(self, name, shape, dtype):
        self.name, self.shape, self.dtype = name, tuple(shape), dtype


class _Layer:
    def __init__(self, name, type_, outs):
        self.name, self.type, self._outs = name, type_, outs
        self.num_outputs = len(outs)
        self.precision, self.out_types = None, {}

    def get_output(self, i):
        return self._outs[i]

    def set_output_type(self, i, dt):
        self.out_types[i] = dt


def _fake_trt(parse_ok=True, build_ok=True):
    import types

    trt = types.SimpleNamespace(__version__="10.99.0", calls=[])
    trt.float32, trt.float16, trt.int32, trt.int64, trt.bool = "f32", "f16", "i32", "i64", "b"
    trt.Logger = type("Logger", (), {"WARNING": 2, "VERBOSE": 4,
                                     "__init__": lambda self, level: None})
    trt.init_libnvinfer_plugins = lambda lg, ns: trt.calls.append(("plugins", ns))
    trt.LayerType = types.SimpleNamespace(CONVOLUTION="conv", ELEMENTWISE="ew", NMS="nms",
                                          SHAPE="shape", PLUGIN_V3="plugin_v3", TOPK="topk")
    trt.MemoryPoolType = types.SimpleNamespace(WORKSPACE="workspace")
    trt.BuilderFlag = types.SimpleNamespace(FP16="FP16", INT8="INT8",
                                            PREFER_PRECISION_CONSTRAINTS="PREFER")

    class Calib:
        def __init__(self):
            trt.calls.append(("calibrator",))
    trt.IInt8EntropyCalibrator2 = Calib
    layers = [_Layer("conv", "conv", [_T("c", (1, 8, -1, -1), "f32")]),
              _Layer("deltas", "ew", [_T("d", (-1, 4), "f32")]),
              _Layer("nms", "nms", [_T("n", (-1, 3), "i32"), _T("k", (), "i32")]),
              _Layer("shape", "shape", [_T("s", (4,), "i64")]),
              _Layer("roialign", "plugin_v3", [_T("r", (-1, 8, 7, 7), "f32")])]
    network = types.SimpleNamespace(
        num_inputs=1, get_input=lambda i: _T("image", (3, -1, -1), "f32"),
        num_layers=len(layers), get_layer=lambda i: layers[i], layers=layers)

    class Err:
        def desc(self):
            return "No importer registered for op: Foo"

        def node_name(self):
            return "/foo/Foo"

        def node_operator(self):
            return "Foo"

    class Parser:
        num_errors = 0 if parse_ok else 1

        def __init__(self, net, lg):
            pass

        def parse_from_file(self, path):
            trt.calls.append(("parse", path))
            return parse_ok

        def get_error(self, i):
            return Err()

    class Profile:
        def set_shape(self, name, mn, op, mx):
            trt.calls.append(("profile", name, mn, op, mx))

    class Config:
        flags = set()

        def set_memory_pool_limit(self, pool, size):
            trt.calls.append(("pool", pool, size))

        def add_optimization_profile(self, p):
            trt.calls.append(("add_profile",))

        def set_flag(self, f):
            self.flags.add(f)

        def set_calibration_profile(self, p):
            trt.calls.append(("calibration_profile",))

    class Builder:
        def __init__(self, lg):
            pass

        def create_network(self, flags):
            trt.calls.append(("network", flags))
            return network

        def create_builder_config(self):
            trt.config = Config()
            return trt.config

        def create_optimization_profile(self):
            return Profile()

        def build_serialized_network(self, net, cfg):
            return b"ENGINE" if build_ok else None

    trt.Builder, trt.OnnxParser, trt.network = Builder, Parser, network
    return trt


def test_build_engine_flow_fp16(good, tmp_path, monkeypatch):
    fake = _fake_trt()
    monkeypatch.setattr(trtmod, "require_tensorrt", lambda: fake)
    engine = trtmod.build_engine(good, tmp_path / "out" / "m.engine", "fp16", opt_hw=(64, 96),
                                 workspace_gb=0.5)
    assert engine.read_bytes() == b"ENGINE"
    meta = json.loads(trtmod.side_file(engine).read_text())
    assert trtmod.side_file(engine).name == "m.engine.json"
    assert meta["outputs"] == _meta()["outputs"] and meta["max_detections"] == M
    assert meta["tensorrt"]["precision"] == "fp16"
    assert meta["tensorrt"]["profile"] == {"min": [32, 32], "opt": [64, 96], "max": [128, 128]}
    assert ("plugins", "") in fake.calls and ("network", 0) in fake.calls
    assert ("profile", "image", (3, 32, 32), (3, 64, 96), (3, 128, 128)) in fake.calls
    assert ("pool", "workspace", 1 << 29) in fake.calls
    assert fake.config.flags == {"FP16", "PREFER"}
    pinned = {layer.name for layer in fake.network.layers if layer.precision == "f32"}
    assert pinned == {"deltas", "nms", "roialign"}   # not the conv, not the int shape layer
    trtmod._parse_metadata(trtmod.side_file(engine).read_text(), "side file")   # runner's reader


def test_build_engine_flow_int8_and_errors(good, tmp_path, monkeypatch):
    from PIL import Image

    calib = tmp_path / "calib"
    calib.mkdir()
    Image.fromarray(np.zeros((40, 60, 3), np.uint8)).save(calib / "a.png")
    fake = _fake_trt()
    monkeypatch.setattr(trtmod, "require_tensorrt", lambda: fake)
    trtmod.build_engine(good, tmp_path / "q.engine", "int8", calib_images=calib)
    assert fake.config.flags == {"FP16", "INT8", "PREFER"}
    assert ("calibrator",) in fake.calls and ("calibration_profile",) in fake.calls
    cal = fake.config.int8_calibrator
    assert cal.get_batch_size() == 1 and cal.read_calibration_cache() is None
    cal.write_calibration_cache(b"cache")
    assert (tmp_path / "q.engine.calib").read_bytes() == b"cache"
    assert cal.read_calibration_cache() == b"cache"

    monkeypatch.setattr(trtmod, "require_tensorrt", lambda: _fake_trt(parse_ok=False))
    with pytest.raises(trtmod.TensorRTBuildError) as e:
        trtmod.build_engine(good, tmp_path / "p.engine")
    assert "No importer registered for op: Foo" in str(e.value) and "/foo/Foo" in str(e.value)
    monkeypatch.setattr(trtmod, "require_tensorrt", lambda: _fake_trt(build_ok=False))
    with pytest.raises(trtmod.TensorRTBuildError, match="failed to build"):
        trtmod.build_engine(good, tmp_path / "b.engine")
    assert not (tmp_path / "b.engine").exists()


# --------------------------------------------------------------------------------------------
# The real exported graph
# --------------------------------------------------------------------------------------------
@pytest.fixture(scope="module", params=["s1x", "densepose_rcnn_R_50_FPN_DL_WC2M_s1x",
                                        "densepose_rcnn_R_50_FPN_s1x_legacy"])
def real_onnx(request, tmp_path_factory):
    import torch

    from amanet.ops.library import load_library
    load_library()
    if not (hasattr(torch.ops.amanet, "nms") and hasattr(torch.ops.amanet, "roi_align")):
        pytest.skip("torch.ops.amanet lacks roi_align/nms (op library not built); cannot export")
    from amanet.config import load_config
    from amanet.deploy.onnx import export_onnx
    from amanet.modeling.model import build_model
    from amanet.modeling.smoke_init import smoke_init_

    torch.manual_seed(0)
    model = build_model(load_config(request.param))
    smoke_init_(model)
    out = scratch_dir(request, tmp_path_factory, "trt") / f"{request.param}_m8.onnx"
    return export_onnx(model, out, max_detections=8, example_hw=(128, 160))   # small: faster tracing


def test_real_graph_is_trt_compatible(real_onnx):
    from amanet.deploy.onnx import op_types, read_metadata

    meta = read_metadata(real_onnx)
    assert meta["max_detections"] == 8
    assert sorted(meta["output_channels"]) == sorted(meta["outputs"][3:-1])
    ops = set(op_types(real_onnx))
    assert {"RoiAlign", "NonMaxSuppression"} <= ops
    assert ops <= set(TRT10_ONNX_OPS)
    assert check_trt_compatibility(real_onnx) == []


def test_cli_check_only_real_graph(real_onnx):
    r = subprocess.run([sys.executable, str(SCRIPT), "--onnx", str(real_onnx), "--check-only"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "OK" in r.stdout


# --------------------------------------------------------------------------------------------
# With TensorRT + GPU: build and run against ONNX Runtime
# --------------------------------------------------------------------------------------------
def _ort_outputs(path, image):
    ort = pytest.importorskip("onnxruntime")
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return dict(zip([o.name for o in sess.get_outputs()], sess.run(None, {"image": image})))


@needs_trt
@pytest.mark.parametrize("dynamic", [False, True], ids=["fixed_rows", "data_dependent_rows"])
def test_engine_matches_onnxruntime(tmp_path, dynamic):
    path = make_graph(tmp_path / "g.onnx", dynamic_outputs=dynamic)
    engine = trtmod.build_engine(path, tmp_path / "g.engine", "fp32", (32, 32), (40, 48),
                                 (64, 64), workspace_gb=1)
    meta = json.loads(trtmod.side_file(engine).read_text())
    assert meta["tensorrt"]["profile"]["opt"] == [40, 48]
    runner = trtmod.TensorRTRunner(engine)
    image = np.random.default_rng(2).uniform(0, 255, (3, 40, 48)).astype(np.float32)
    got = dict(zip(runner.output_names, runner(image, as_numpy=True)))
    want = _ort_outputs(path, image)
    if not dynamic:
        n = int(want["num_detections"][0])
        assert int(got["num_detections"][0]) == n
        want = {k: (v if k == "num_detections" else v[:n]) for k, v in want.items()}
    for name, w in want.items():
        assert got[name].shape == w.shape, name
        np.testing.assert_allclose(got[name].astype(np.float64), w.astype(np.float64),
                                   rtol=1e-3, atol=1e-3, err_msg=name)
    with pytest.raises(trtmod.InputError, match="profile"):
        runner(np.zeros((3, 16, 16), np.float32))
