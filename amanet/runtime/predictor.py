"""Predictor: image in (path or array, any size), flat typed :class:`Prediction` out."""
from __future__ import annotations

import logging
from typing import (TYPE_CHECKING, Dict, Iterable, Iterator, List, Optional, Sequence,
                    Tuple, Union)

import numpy as np
import torch

from ..checkpoint import config_of_checkpoint, load_weights
from ..config import Config, load_config, merge_overrides
from ..data.image_io import ImageLike, as_bgr_uint8
from ..data.transforms import model_input
from ..deploy.graph import GATE_OUTPUT
from ..modeling import postprocess as pp
from ..modeling.box_ops import clip_boxes, nonempty
from ..modeling.families import densepose_output_channels
from ..modeling.inference_prep import prepare_for_inference
from ..modeling.model import build_model
from ..modeling.predictors.chart import CONFIDENCE_FIELDS
from ..modeling.smoke_init import smoke_init_
from ..ops.iuv_paste import iuv_paste, mode_for_family
from .backends import (BACKENDS, EagerBackend, OnnxRuntimeBackend, OpenVINOBackend,
                       TensorRTBackend, TorchScriptBackend, artifact_config, backend_for_path)
from .memory import retain_freed_memory
from .precision import PrecisionError, check_eager_precision, check_precision
from .result import Prediction

if TYPE_CHECKING:
    from .tracking import TemporalSmoother

logger = logging.getLogger(__name__)

# What each export backend can run besides fp32: OpenVINO lowers the fp32 ONNX graph to bf16 /
# fp16; a TorchScript export runs the precision it was exported in; ONNX Runtime runs the fp32
# graph; a TensorRT engine's precision is fixed when it is built.
_PRECISION_HINT = {
    "torchscript": "a TorchScript export runs the precision it was exported in "
                   "(export/to_torchscript.py --precision bf16); use backend eager or openvino "
                   "to choose at run time",
    "onnxruntime": "ONNX Runtime runs the fp32 ONNX graph (or an int8 export); backend "
                   "openvino runs it in bf16",
    "tensorrt": "a TensorRT engine's precision is chosen when it is built "
                "(export/to_trt.py --precision); leave precision unset here",
}


_INT8_EXPORT = ("amanet export onnx --precision int8 --calibration IMAGES writes one "
                "(post-training quantization)")


def _load_backend(name: str, path: str, device: torch.device, precision: Optional[str],
                  threads: Optional[int]):
    """The backend over an export, and the precision it runs (``precision=None``: the export's
    own; else it must be one the backend can run, checked before the file is opened where the
    answer does not depend on it)."""
    if name in ("onnxruntime", "openvino"):
        return _load_onnx_backend(name, path, device, precision, threads)
    if name == "tensorrt" and precision not in (None, "fp32"):
        raise PrecisionError(f"precision {precision} is not available with backend {name}: "
                             f"{_PRECISION_HINT[name]}")
    if name == "torchscript":
        backend = TorchScriptBackend(path, device)
        exported = backend.meta.get("precision", "fp32")
        if precision not in (None, exported):
            raise PrecisionError(f"precision {precision} is not available with backend "
                                 f"torchscript: {path} computes in {exported}; "
                                 f"{_PRECISION_HINT[name]}")
        return backend, check_precision(exported, device)
    return TensorRTBackend(path), "fp32"


def _load_onnx_backend(name: str, path: str, device: torch.device, precision: Optional[str],
                       threads: Optional[int]):
    """ONNX Runtime or OpenVINO over an ONNX export. An int8 export runs int8 (its quantized
    layers are in the graph); an fp32 one runs fp32, or bf16 / fp16 lowered by OpenVINO."""
    from ..deploy.onnx import read_metadata

    if name == "openvino" and device.type != "cpu":
        raise ValueError(f"backend openvino runs on the CPU here, not on {device}")
    if precision is not None:
        check_precision(precision, device)
    if name == "onnxruntime" and precision not in (None, "fp32", "int8"):
        raise PrecisionError(f"precision {precision} is not available with backend {name}: "
                             f"{_PRECISION_HINT[name]}")  # whatever the file holds
    meta = read_metadata(path)  # read once: the backend gets it
    exported = meta.get("precision", "fp32")
    if exported == "int8":
        if precision not in (None, "int8"):
            raise PrecisionError(f"{path} is an int8 export: it runs in int8 (leave precision "
                                 f"unset or int8), or export fp32 for precision {precision}")
        precision = "int8"
    elif precision == "int8":
        raise PrecisionError(f"precision int8 needs an int8 export, and {path} is {exported}: "
                             f"{_INT8_EXPORT}")
    precision = precision or "fp32"
    if name == "openvino":
        return OpenVINOBackend(path, precision, threads=threads or 0, meta=meta), precision
    if precision == "int8":
        logger.warning("ONNX Runtime runs this int8 export correctly but gained little from int8 "
                       "on the CPU it was measured on (README); backend openvino is the fast "
                       "int8 path")
    return OnnxRuntimeBackend(path, threads=threads or 0, meta=meta), precision


class Predictor:
    """Run a DensePose model on single images, with any backend.

    Args:
        config: a preset name (``"amanet"``, ``"s1x"``, ...), a Detectron2-style YAML path, or a
            :class:`Config`. ``None`` takes the config embedded in ``weights`` (our checkpoint
            format) or in the exported artifact.
        weights: for ``backend="eager"`` a checkpoint (Detectron2 ``.pkl``/``.pth`` or ours;
            ``None`` = random smoke-test weights, with a warning); for the other backends the
            exported artifact (TorchScript ``.ts``, ONNX ``.onnx``, TensorRT ``.engine``).
        overrides: Detectron2-style ``KEY VALUE`` pairs (eager only: an export is fixed).
        device: ``"cpu"`` or ``"cuda"``.
        backend: ``"eager"``, ``"torchscript"``, ``"onnxruntime"``, ``"openvino"`` or
            ``"tensorrt"``.
        whole_image_iuv: also composite the per-person charts into one ``[3, H, W]`` map.
        precision: ``"fp32"``, ``"bf16"`` (CPU with AVX512-BF16 / AMX, or CUDA sm80+) or
            ``"fp16"`` (CUDA): the compute precision of eager (autocast) and OpenVINO; a
            TorchScript export runs the one it was exported in, an int8 ONNX export
            (:mod:`amanet.deploy.quantize`) runs ``"int8"`` on OpenVINO / ONNX Runtime.
            ``None`` (default): fp32, or the export's own. Box decoding, NMS and post-processing stay float32. A precision the
            device or backend cannot run raises
            :class:`~amanet.runtime.precision.PrecisionError`.
        threads: CPU threads for the backend (``None``: the library's default).

    An eager model is prepared for inference after its weights load (FrozenBN folded into the
    convs, channels-last weights: :mod:`amanet.modeling.inference_prep`), so ``self.model``
    is for running, not for saving: its state dict no longer has the norm entries.
    """

    def __init__(self, config: Union[str, Config, None] = "amanet", weights: Optional[str] = None,
                 overrides: Sequence[str] = (), device: str = "cpu", backend: str = "eager",
                 whole_image_iuv: bool = True, precision: Optional[str] = None,
                 threads: Optional[int] = None):
        if backend not in BACKENDS:
            raise ValueError(f"backend {backend!r} is not supported; choose from {BACKENDS}")
        retain_freed_memory()
        self.device = torch.device(device)
        if precision is not None:
            (check_eager_precision if backend == "eager" else check_precision)(precision,
                                                                               self.device)
        self.precision = precision or "fp32"
        if threads:
            torch.set_num_threads(int(threads))
        self.backend_name = backend
        self.whole_image_iuv = whole_image_iuv
        self.model = None
        if backend == "eager":
            cfg = self._resolve_config(config, weights)
            if overrides:
                merge_overrides(cfg, list(overrides))
            self.model = build_model(cfg).to(self.device)
            self.random_weights = weights is None
            if weights is None:
                smoke_init_(self.model, seed=0)
                logger.warning("no weights given: the model has RANDOM weights and its output "
                               "is meaningless except as a smoke test")
            else:
                load_weights(self.model, weights)
            self.model.eval()
            prepare_for_inference(self.model)
            self.backend = EagerBackend(self.model, self.device, self.precision)
        else:
            if not weights:
                raise ValueError(f"backend {backend!r} needs the exported artifact as weights=")
            if overrides:
                raise ValueError("config overrides cannot change an exported model; re-export")
            self.backend, self.precision = _load_backend(backend, weights, self.device,
                                                         precision, threads)
            cfg = artifact_config(self.backend.meta)
            self.random_weights = None  # unknown: an export does not record its weights' origin
        self.cfg = cfg

    @classmethod
    def from_export(cls, path: str, device: str = "cpu", backend: Optional[str] = None,
                    whole_image_iuv: bool = True, precision: Optional[str] = None,
                    threads: Optional[int] = None) -> "Predictor":
        """A predictor over an exported artifact; the backend follows the file's extension
        (``.onnx``: ONNX Runtime, or ``backend="openvino"``)."""
        return cls(None, path, device=device, backend=backend or backend_for_path(path),
                   whole_image_iuv=whole_image_iuv, precision=precision, threads=threads)

    @staticmethod
    def _resolve_config(config, weights) -> Config:
        if isinstance(config, Config):
            return config.clone()
        if config is None:
            embedded = config_of_checkpoint(weights) if weights else None
            if embedded is None:
                raise ValueError("no config given and the checkpoint does not embed one: pass "
                                 "config= (a preset name or a Detectron2 YAML)")
            return embedded
        return load_config(config)

    @property
    def family(self) -> str:
        return self.cfg.family

    def __call__(self, image: ImageLike) -> Prediction:
        return self.predict(image)

    def predict(self, image: ImageLike) -> Prediction:
        """One image (path, or ``[H, W, 3]`` BGR uint8 array) -> :class:`Prediction`."""
        x, orig_hw = self._model_input(image)
        return self._postprocess(self.backend(x), orig_hw, tuple(x.shape[1:]))

    def predict_many(self, images: Iterable[ImageLike], batch_size: int = 1
                     ) -> List[Prediction]:
        """:meth:`predict` for each image. ``batch_size`` B > 1: consecutive images of one
        resized size run through the model B at a time (the eager backend only: the exports
        take one image), with the same results as one at a time (tested); meant for a GPU (2-4 %
        more frames/s measured on a 2-core CPU, README)."""
        from .video import check_count

        batch_size = check_count(batch_size, "batch size", 1)
        if batch_size == 1:
            return [self.predict(im) for im in images]
        self.check_batching()
        out: List[Prediction] = []
        group: List[Tuple[torch.Tensor, Tuple[int, int]]] = []

        def run() -> None:
            outs = self.backend.run_many([x for x, _ in group])
            out.extend(self._postprocess(o, hw, tuple(x.shape[1:]))
                       for o, (x, hw) in zip(outs, group))
            group.clear()

        for im in images:
            x, hw = self._model_input(im)
            if group and (len(group) == batch_size or group[0][0].shape != x.shape):
                run()
            group.append((x, hw))
        if group:
            run()
        return out

    def check_batching(self) -> None:
        """One clear error where this backend cannot run a batch of images."""
        if not hasattr(self.backend, "run_many"):
            raise ValueError(f"a batch size > 1 needs backend eager: backend "
                             f"{self.backend_name} runs one image at a time (its export takes "
                             "one image)")

    def _model_input(self, image: ImageLike) -> Tuple[torch.Tensor, Tuple[int, int]]:
        """The resized model input ``[3, H', W']`` (float32, the config's channel order) and
        the image's ``(H, W)``."""
        bgr = as_bgr_uint8(image)
        return model_input(bgr, self.cfg.input).to(self.device), bgr.shape[:2]

    def predict_video(self, source, prefetch: int = 4, smooth: bool = False,
                      keyframe_interval: int = 1, batch_size: int = 1,
                      **smoothing) -> Iterator[Tuple[int, Prediction]]:
        """``(frame index, Prediction)`` for every frame of a video file or a folder of frames,
        streamed (memory does not grow with the video; frames decoded ``prefetch`` ahead in a
        thread where that does not take cores from inference,
        :func:`~amanet.runtime.video.should_overlap`). ``smooth``: people tracked across
        frames (``Prediction.track_ids``) and their boxes and DensePose outputs smoothed over
        time, looking a few frames ahead (``smoothing``: ``lookahead`` and the settings of
        :meth:`temporal_smoother`, see :meth:`video_smoother`). ``keyframe_interval`` K > 1:
        the model runs on every K-th frame only, the frames between are filled from the key
        frames on both sides (tracked, not smoothed). ``batch_size`` B > 1: the frames the model
        runs on go through it B at a time (:meth:`predict_many`; eager backend). Frames always
        come out in order. :func:`amanet.runtime.video.run_video` also draws and encodes."""
        from ..data.video_io import open_video
        from .video import predict_frames, should_overlap

        smoother = self.video_smoother(smooth, keyframe_interval, **smoothing)
        many = self.batched(batch_size)
        for i, _, pred in predict_frames(self.predict, open_video(source), prefetch, smoother,
                                         keyframe_interval, should_overlap(self.device.type),
                                         batch_size, many):
            yield i, pred

    def batched(self, batch_size: int):
        """``images -> predictions`` running ``batch_size`` images at a time (for
        :func:`~amanet.runtime.video.run_video`'s ``predict_many``), after one clear error for
        a bad batch size or a backend that cannot batch."""
        from .video import check_count

        if check_count(batch_size, "batch size", 1) > 1:
            self.check_batching()
        return lambda images: self.predict_many(images, batch_size)

    def video_smoother(self, smooth: bool = False, keyframe_interval: int = 1,
                       lookahead: Optional[int] = None, **settings):
        """What a video run passes its predictions through: ``None`` (every frame as the model
        sees it), a smoother (``smooth``), or, for a ``keyframe_interval`` > 1, a
        :class:`~amanet.runtime.keyframes.KeyframeInterpolator` (over a tracking-only
        :meth:`temporal_smoother`) that fills the frames between key frames from both sides.

        Smoothing looks ``lookahead`` frames ahead (default
        :data:`~amanet.runtime.lookahead.DEFAULT_LOOKAHEAD`; a
        :class:`~amanet.runtime.lookahead.LookaheadSmoother` with alpha
        :data:`~amanet.runtime.lookahead.LOOKAHEAD_ALPHA` unless ``settings`` say otherwise);
        ``lookahead=0`` is the causal :meth:`temporal_smoother` (no delay, for live video).
        ``settings``: :meth:`temporal_smoother`'s. Smoothing and key frames together are
        refused: measured, smoothing over carried frames lost up to 10 points of AP (README,
        "Key frames")."""
        from .keyframes import KeyframeInterpolator
        from .lookahead import (DEFAULT_LOOKAHEAD, LOOKAHEAD_ALPHA, LookaheadSmoother,
                                check_lookahead)
        from .video import check_keyframe_interval

        keyframe_interval = check_keyframe_interval(keyframe_interval)
        if smooth and keyframe_interval > 1:
            raise ValueError("smoothing and a keyframe interval > 1 do not go together (key "
                             "frames already track people; smoothing over carried frames costs "
                             "accuracy): choose one")
        if not smooth:
            if settings or lookahead is not None:
                given = sorted(settings) + (["lookahead"] if lookahead is not None else [])
                raise ValueError(f"smoothing settings {given} need smooth=True")
            if keyframe_interval > 1:
                return KeyframeInterpolator(self.temporal_smoother(box_alpha=1.0,
                                                                   dense_alpha=1.0))
            return None
        lookahead = check_lookahead(DEFAULT_LOOKAHEAD if lookahead is None else lookahead)
        if lookahead == 0:
            return self.temporal_smoother(**settings)
        settings = {"box_alpha": LOOKAHEAD_ALPHA, "dense_alpha": LOOKAHEAD_ALPHA, **settings}
        return LookaheadSmoother(self.temporal_smoother(**settings), lookahead)

    # -- post-processing -------------------------------------------------------------------
    def _postprocess(self, det, orig_hw, resized_hw) -> Prediction:
        h0, w0 = orig_hw
        h1, w1 = resized_hw
        boxes = det["boxes"].clone()
        boxes[:, 0::2] *= w0 / w1
        boxes[:, 1::2] *= h0 / h1
        boxes = clip_boxes(boxes, h0, w0)
        keep = nonempty(boxes)
        boxes = boxes[keep]
        scores = det["scores"][keep]
        classes = det["classes"][keep]
        names = list(densepose_output_channels(self.cfg))
        gate_key = names[0]
        dp = {gate_key: det[GATE_OUTPUT][keep]}
        dp.update({n: det[n][keep] for n in names[1:]})
        return self._assemble(boxes, scores, classes, dp, (h0, w0))

    def assemble(self, boxes: np.ndarray, scores: np.ndarray, classes: np.ndarray,
                 densepose: Dict[str, np.ndarray], image_size: Tuple[int, int]) -> Prediction:
        """The :class:`Prediction` of given detections: ``boxes`` float ``[D, 4]`` XYXY in the
        image's pixels, ``scores`` ``[D]``, ``classes`` ``[D]``, ``densepose`` the raw per-RoI
        outputs ``{field: [D, C, S, S]}`` (:attr:`Prediction.densepose`'s fields, gate first),
        ``image_size`` ``(H, W)``: charts, whole-image IUV and confidences as :meth:`predict`
        makes them (what :class:`~amanet.runtime.tracking.TemporalSmoother` rebuilds from
        smoothed outputs)."""
        names = list(densepose_output_channels(self.cfg))
        if list(densepose) != names:
            raise ValueError(f"densepose fields {list(densepose)} are not this model's {names}")
        return self._assemble(torch.as_tensor(np.asarray(boxes, np.float32)),
                              torch.as_tensor(np.asarray(scores, np.float32)),
                              torch.as_tensor(np.asarray(classes, np.int64)),
                              {k: torch.as_tensor(np.asarray(v, np.float32))
                               for k, v in densepose.items()}, tuple(image_size))

    def temporal_smoother(self, **settings) -> "TemporalSmoother":
        """A :class:`~amanet.runtime.tracking.TemporalSmoother` over this predictor's
        post-processing (``settings``: its ``box_alpha``, ``dense_alpha``, ``hysteresis``,
        ``iou_threshold``, ``max_missed``); one per video."""
        from .tracking import TemporalSmoother
        return TemporalSmoother(self.assemble, **settings)

    def _assemble(self, boxes: torch.Tensor, scores: torch.Tensor, classes: torch.Tensor,
                  dp: Dict[str, torch.Tensor], image_hw: Tuple[int, int]) -> Prediction:
        h0, w0 = image_hw
        names = list(dp)
        gate_key = names[0]
        xywh = pp.xyxy_to_xywh_int(boxes)
        # One fused call (amanet::iuv_paste) for all charts and the whole-image IUV.
        charts, iuv = iuv_paste(dp["fine_segm"], dp[gate_key], dp["u"], dp["v"], xywh, scores,
                                mode_for_family(self.family),
                                self.cfg.densepose.mask_gate_threshold, (h0, w0),
                                whole_image=self.whole_image_iuv)
        if iuv is not None:
            iuv = iuv.cpu().numpy()
        conf_names = [n for n in names if n in CONFIDENCE_FIELDS]
        chart_confidences = []
        if conf_names:
            chart_confidences = [
                {k: c.cpu().numpy() for k, c in pp.chart_confidences(
                    {n: dp[n][i] for n in conf_names}, charts[i][0], xywh[i]).items()}
                for i in range(len(charts))]
        return Prediction(
            image_size=(h0, w0),
            boxes=boxes.cpu().numpy().astype(np.float32),
            scores=scores.cpu().numpy().astype(np.float32),
            classes=classes.cpu().numpy().astype(np.int64),
            densepose={k: v.cpu().numpy() for k, v in dp.items()},
            charts=[c.cpu().numpy() for c in charts],
            chart_boxes=xywh.cpu().numpy().astype(np.int64).reshape(-1, 4),
            chart_confidences=chart_confidences,
            iuv=iuv,
        )

