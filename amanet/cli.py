"""The ``amanet`` command: predict, video, convert, train (and evaluate), export, bench.

``amanet predict IMAGES... --config CFG --weights W --out DIR [KEY VALUE ...]`` writes, per
image, the pictures ``--vis`` names as ``<name>_<vis>.png`` (default ``iuv``: RGB = I, U, V, and
``overlay``; Detectron2's ``dp_segm``, ``dp_u``, ``dp_v``, ``bbox``, ``magicanimate``,
``parts``: :mod:`amanet.viz`), ``<name>.json`` (DensePose-COCO results) and, for models with confidences (the zoo's WC* configs),
``<name>_confidences.npz``. Detectron2-style ``KEY VALUE`` overrides may follow the images.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import re
import sys
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

from .assets import DEMO_MODEL, PHOTO, SYNTHETIC_IMAGE
from .errors import AmanetError

logger = logging.getLogger("amanet")

_KEY_RE = re.compile(r"^[A-Z][A-Z0-9_]*(\.[A-Z0-9_]+)+$|^[A-Z][A-Z0-9_]+$")


def split_overrides(tokens: Sequence[str]) -> Tuple[List[str], List[str]]:
    """Separate image paths from trailing Detectron2 ``KEY VALUE`` pairs."""
    paths: List[str] = []
    overrides: List[str] = []
    i = 0
    while i < len(tokens):
        tok = tokens[i]
        if _KEY_RE.match(tok) and not os.path.exists(tok):
            if i + 1 >= len(tokens):
                raise AmanetError(f"config override {tok} has no value")
            overrides += [tok, tokens[i + 1]]
            i += 2
        else:
            paths.append(tok)
            i += 1
    return paths, overrides


def _check_picture_args(args: argparse.Namespace) -> list:
    """Precision, picture names and colormap checked before anything is loaded or printed."""
    from .runtime.precision import check_eager_precision, check_precision
    from .viz import COLORMAPS, parse_styles

    if args.precision:
        (check_eager_precision if args.backend == "eager" else check_precision)(
            args.precision, args.device)
    styles = parse_styles(args.vis)
    if args.cmap is not None and args.cmap not in COLORMAPS:
        raise AmanetError(f"unknown --cmap {args.cmap!r}; known: {', '.join(COLORMAPS)}")
    return styles


def _build_predictor(args: argparse.Namespace, overrides: List[str], demo_input: bool = False):
    """The Predictor the options ask for: ``(predictor, demo image or None)``. Neither --config
    nor --weights: the bundled demo model (eager)."""
    from .runtime import Predictor

    config, weights = args.config, args.weights
    use_demo_model = config is None and weights is None and args.backend == "eager"
    if use_demo_model:
        if not DEMO_MODEL.is_file():
            raise AmanetError(f"the bundled demo model {DEMO_MODEL} is missing (broken install?); "
                              "give --config and --weights")
        weights = str(DEMO_MODEL)
    if args.backend != "eager" and not weights:
        raise AmanetError(f"--backend {args.backend} needs --weights EXPORTED_MODEL")
    if weights is None:
        # Random weights detect "people" everywhere; 10 keep the demo quick on a CPU.
        overrides = ["TEST.DETECTIONS_PER_IMAGE", "10"] + overrides
        print("note: no --weights given, the model's weights are RANDOM: the output only shows "
              "that the pipeline runs, not what a trained model sees", file=sys.stderr)
    elif use_demo_model and not args.quiet:
        print(f"note: using the bundled demo model ({DEMO_MODEL.name}), trained on synthetic "
              "people only: it is not meant for real photos", file=sys.stderr)
    if args.backend != "eager":
        predictor = Predictor(None, weights, device=args.device, backend=args.backend,
                              precision=args.precision, threads=args.threads)
    else:
        predictor = Predictor(config, weights, overrides=overrides, device=args.device,
                              precision=args.precision, threads=args.threads)
    demo = str(SYNTHETIC_IMAGE if use_demo_model else PHOTO) if demo_input else None
    return predictor, demo


def cmd_predict(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from .data.image_io import expand_images, read_image
    from .runtime.video import check_count

    styles = _check_picture_args(args)
    check_count(args.batch, "--batch", 1)
    paths, overrides = split_overrides(args.inputs)
    overrides += list(args.opts or [])
    images = expand_images(paths)
    if not images and not args.demo:
        raise AmanetError("no input images (give image files or folders, or --demo)")
    predictor, demo = _build_predictor(args, overrides, args.demo)
    if demo:
        images.insert(0, Path(demo))
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    predict_many = predictor.batched(args.batch)
    gate = predictor.cfg.densepose.mask_gate_threshold
    failures = 0
    bar = tqdm(total=len(images), desc="predict", unit="img",
               disable=len(images) < 2 or args.quiet)
    for start in range(0, len(images), args.batch):
        read = []
        for path in images[start:start + args.batch]:
            try:
                read.append((path, read_image(path)))
            except AmanetError as e:
                logger.error("%s", e)
                failures += 1
        try:
            preds = predict_many([bgr for _, bgr in read])
        except AmanetError as e:
            logger.error("%s: %s", ", ".join(str(path) for path, _ in read), e)
            failures += len(read)
            preds = []
        for (path, bgr), pred in zip(read, preds):
            _save_prediction(args, predictor, out_dir, path, bgr, pred, styles, gate)
        bar.update(len(images[start:start + args.batch]))
    bar.close()
    return 1 if failures else 0


def _save_prediction(args, predictor, out_dir: Path, path: Path, bgr, pred, styles,
                     gate: float) -> None:
    """``<stem>_<style>.png`` for each style, ``<stem>.json`` and the confidences of one
    image."""
    from .viz import render, save_picture

    stem = path.stem
    for style in styles:
        picture = render(bgr, pred, style, args.cmap, args.alpha, gate)
        save_picture(out_dir / f"{stem}_{style}.png", picture, style)
    doc = {"image": str(path), "height": pred.image_size[0], "width": pred.image_size[1],
           "family": predictor.family, "random_weights": predictor.random_weights,
           "num_detections": len(pred), "results": pred.to_coco_json(image_id=stem)}
    if pred.save_confidences(out_dir / f"{stem}_confidences.npz"):
        doc["confidences"] = f"{stem}_confidences.npz"
    with open(out_dir / f"{stem}.json", "w") as f:
        json.dump(doc, f)
    if not args.quiet:
        print(f"{path}: {len(pred)} people -> {out_dir / stem}_{{{','.join(styles)}}}.png, "
              ".json")


def cmd_video(args: argparse.Namespace) -> int:
    """``amanet video IN OUT``: DensePose pictures of every frame (see amanet.runtime.video)."""
    from .runtime.lookahead import check_lookahead
    from .runtime.video import check_count, check_keyframe_interval, run_video, should_overlap
    from .viz import render

    styles = _check_picture_args(args)
    for given, flag in ((args.smooth_alpha, "--smooth-alpha"),
                        (args.smooth_lookahead, "--smooth-lookahead")):
        if given is not None and not args.smooth:
            raise ValueError(f"{flag} needs --smooth")
    if args.smooth_lookahead is not None:
        check_lookahead(args.smooth_lookahead)
    check_keyframe_interval(args.keyframe_interval)     # before the model loads
    check_count(args.batch, "--batch", 1)
    if args.smooth and args.keyframe_interval > 1:
        raise ValueError("--smooth and --keyframe-interval > 1 do not go together: choose one")
    overrides = list(args.opts or [])
    predictor, _ = _build_predictor(args, overrides)
    predict_many = predictor.batched(args.batch)       # before any output is opened
    gate = predictor.cfg.densepose.mask_gate_threshold

    def draw(frame, pred, style):
        return render(frame, pred, style, args.cmap, args.alpha, gate)

    smoother = predictor.video_smoother(
        args.smooth, args.keyframe_interval, args.smooth_lookahead,
        **({} if args.smooth_alpha is None else {"dense_alpha": args.smooth_alpha}))
    summary = run_video(predictor.predict, args.input, args.output, styles, draw=draw,
                        npz_dir=args.save_npz, progress=not args.quiet, smoother=smoother,
                        keyframe_interval=args.keyframe_interval,
                        overlap=should_overlap(predictor.device.type), batch_size=args.batch,
                        predict_many=predict_many)
    if not args.quiet:
        people = summary["people_per_frame"]
        smoothing = summary["smoothing"]
        tracked = ""
        if smoothing:
            tracked = f", {smoothing['tracks']} people tracked"
            if smoothing["lookahead"]:
                tracked += f" (smoothed looking {smoothing['lookahead']} frames ahead)"
        if summary["keyframe_interval"] > 1:
            tracked += (f", the model run on {summary['predicted_frames']} key frames (every "
                        f"{summary['keyframe_interval']}, and the last frame)")
        rate = (f"a variable frame rate (average {summary['fps']:.3f} fps; each frame's time "
                "kept)" if summary["variable_frame_rate"] else f"{summary['fps']:.3f} fps")
        print(f"{args.input}: {summary['frames']} frames at {rate}, "
              f"{sum(people) / max(len(people), 1):.1f} people per frame{tracked} -> "
              f"{', '.join(summary['outputs'].values())}")
    return 0


def cmd_convert(args: argparse.Namespace) -> int:
    from .checkpoint import convert
    from .config import load_config

    if args.config is None and args.opts:
        raise AmanetError("--opts needs --config (overrides apply to a given config)")
    # No --config: the config embedded in an amanet checkpoint.
    cfg = None if args.config is None else load_config(args.config, list(args.opts or []))
    cfg = convert(args.src, args.dst, cfg, half=args.half)
    print(f"wrote {args.dst} ({cfg.family})")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from .engine.train import run_cli

    return run_cli(args)


def _is_number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


def _add_model_options(pr: argparse.ArgumentParser) -> None:
    """The model, backend and picture options ``predict`` and ``video`` share."""
    pr.add_argument("--config", help="preset name (amanet, s1x, densepose_AMA_R_50_FPN_s1x, any "
                    "Detectron2 chart zoo config such as densepose_rcnn_R_101_FPN_DL_WC2M_s1x) "
                    "or a Detectron2-style YAML")
    pr.add_argument("--weights", help="checkpoint (.pkl/.pth, Detectron2 or amanet format); "
                    "without --config and --weights: the bundled demo model")
    pr.add_argument("--device", default="cpu")
    pr.add_argument("--backend", default="eager",
                    choices=["eager", "torchscript", "onnxruntime", "openvino", "tensorrt"],
                    help="eager (checkpoint in --weights) or an exported model in --weights "
                    "(openvino runs the .onnx export)")
    pr.add_argument("--precision", default=None, choices=["fp32", "bf16", "fp16", "int8"],
                    help="compute precision: bf16 on a CPU with AVX512-BF16/AMX (eager, "
                    "openvino) or a CUDA GPU; fp16 on CUDA; int8: an int8 ONNX export "
                    "(openvino, onnxruntime). Default: fp32, or the export's own. "
                    "Post-processing stays fp32")
    pr.add_argument("--threads", type=int, default=None, help="CPU threads (default: all)")
    pr.add_argument("--cmap", default=None,
                    help="colormap of the Detectron2 pictures (default: theirs: parula; "
                         "viridis for magicanimate)")
    pr.add_argument("--alpha", type=float, default=None,
                    help="opacity of the Detectron2 pictures (default 0.7; magicanimate 1)")
    pr.add_argument("--opts", nargs="+", metavar="KEY VALUE", help="config overrides")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="amanet", description=__doc__.split("\n")[0])
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)

    pr = sub.add_parser("predict", help="DensePose on images: IUV PNG, overlay PNG, JSON")
    pr.add_argument("inputs", nargs="*", metavar="IMAGE|KEY VALUE",
                    help="image files or folders, then optional Detectron2 KEY VALUE overrides")
    pr.add_argument("--out", default="out", help="output folder (default: out)")
    pr.add_argument("--demo", action="store_true",
                    help="add a bundled image: the synthetic one with the demo model (no --config "
                    "and no --weights), the photo otherwise")
    pr.add_argument("--batch", type=int, default=1, metavar="B",
                    help="run the model on up to B images of one size at a time (backend eager; "
                    "meant for a GPU: 2-4%% faster on a 2-core CPU)")
    pr.add_argument("--vis", default="iuv,overlay", metavar="NAMES",
                    help="pictures to write as <name>_<vis>.png, comma-separated: dp_segm, dp_u, "
                         "dp_v, bbox (as Detectron2's apply_net.py show draws them), "
                         "magicanimate, parts (part index 0..24), iuv, overlay "
                         "(default: iuv,overlay)")
    _add_model_options(pr)
    pr.add_argument("-q", "--quiet", action="store_true")
    pr.set_defaults(func=cmd_predict)

    vi = sub.add_parser("video", help="DensePose on every frame of a video: pictures as a video "
                        "or PNG frames")
    vi.add_argument("input", help="a video file (anything FFmpeg reads) or a folder of frames")
    vi.add_argument("output", help="an .mp4/.mkv/.mov (H.264, the input's frame rate and size) or "
                    "a folder of PNG frames; with several --vis, <name>_<vis> each")
    vi.add_argument("--vis", default="magicanimate", metavar="NAMES",
                    help="pictures, comma-separated (as for predict; default: magicanimate)")
    vi.add_argument("--save-npz", default=None, metavar="DIR",
                    help="also write each frame's raw result as DIR/frame_NNNNNN.npz")
    vi.add_argument("--smooth", action="store_true",
                    help="track people across frames (track_ids in the .npz) and smooth their "
                    "boxes and DensePose outputs over time: parts stop flickering")
    vi.add_argument("--smooth-alpha", type=float, default=None, metavar="A",
                    help="with --smooth: weight of the current frame's DensePose outputs, in "
                    "(0, 1]; lower is smoother, 1 only tracks (default: 0.4 looking ahead, "
                    "0.5 without)")
    vi.add_argument("--smooth-lookahead", type=int, default=None, metavar="N",
                    help="with --smooth: frames looked ahead, so that smoothing does not lag "
                    "behind motion (default: 4; 0: causal, no delay)")
    vi.add_argument("--keyframe-interval", type=int, default=1, metavar="K",
                    help="run the model on every K-th frame only and fill the frames between "
                    "from the key frames on both sides, along the optical flow (nearly K times "
                    "the frames/s; costs accuracy where people move fast, see README; not with "
                    "--smooth)")
    vi.add_argument("--batch", type=int, default=1, metavar="B",
                    help="run the model on B frames at a time (backend eager; meant for a GPU: "
                    "2-4%% faster on a 2-core CPU, see README)")
    _add_model_options(vi)
    vi.add_argument("-q", "--quiet", action="store_true")
    vi.set_defaults(func=cmd_video)

    cv = sub.add_parser("convert", help="Detectron2/AMANet checkpoint -> amanet checkpoint")
    cv.add_argument("src")
    cv.add_argument("dst")
    cv.add_argument("--config", help="preset name or Detectron2-style YAML (default: the config "
                    "embedded in an amanet checkpoint)")
    cv.add_argument("--opts", nargs="+", metavar="KEY VALUE", help="config overrides")
    cv.add_argument("--half", action="store_true",
                    help="store the weights as float16 (half the file; loaded back as float32)")
    cv.set_defaults(func=cmd_convert)

    tr = sub.add_parser("train", help="train or evaluate (the seed's train_net.py command line)")
    tr.add_argument("--config-file", required=True, metavar="FILE",
                    help="Detectron2-style YAML (a shipped config name also works) or preset")
    tr.add_argument("--num-gpus", type=int, default=None,
                    help="processes per machine, one GPU each (gloo processes on a CPU host)")
    tr.add_argument("--num-processes", type=int, default=None,
                    help="processes per machine on the CPU (gloo), even if CUDA is present")
    tr.add_argument("--num-machines", type=int, default=1)
    tr.add_argument("--machine-rank", type=int, default=0)
    tr.add_argument("--dist-url", default="auto", help="tcp://host:port of rank 0 (multi-node)")
    tr.add_argument("--eval-only", action="store_true", help="evaluate MODEL.WEIGHTS only")
    tr.add_argument("--resume", action="store_true",
                    help="continue from OUTPUT_DIR/last_checkpoint if it exists")
    tr.add_argument("--log-period", type=int, default=1, help="metrics line every N iterations")
    tr.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    tr.add_argument("opts", nargs=argparse.REMAINDER, metavar="KEY VALUE",
                    help="Detectron2-style config overrides (OUTPUT_DIR x MODEL.WEIGHTS y ...)")
    tr.set_defaults(func=cmd_train)

    ex = sub.add_parser("export", add_help=False,
                        help="export the deployable graph: torchscript | onnx | trt (see "
                        "`amanet export torchscript --help`)")
    ex.add_argument("args", nargs=argparse.REMAINDER)
    ex.set_defaults(func=cmd_export)

    dr = sub.add_parser("doctor", help="what this install can do: versions, op kernels and their "
                        "GPU archs, GPUs, backends, CPU ISA (paste it into bug reports)")
    dr.add_argument("--json", action="store_true", help="the report as JSON")
    dr.set_defaults(func=cmd_doctor)

    be = sub.add_parser("bench", add_help=False,
                        help="end-to-end latency per backend (see `amanet bench --help`)")
    be.add_argument("args", nargs=argparse.REMAINDER)
    be.set_defaults(func=cmd_bench)
    return p


def cmd_export(args: argparse.Namespace) -> int:
    rest = list(args.args)
    if rest and rest[0] in ("trt", "tensorrt"):
        from .deploy.cli_trt import main as trt_main
        return trt_main(rest[1:])
    from .deploy.cli import main as export_main
    return export_main(rest)


def cmd_doctor(args: argparse.Namespace) -> int:
    from .doctor import collect, format_report

    report = collect()
    print(json.dumps(report, indent=1, default=str) if args.json else format_report(report))
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from .benchmarks.cli import main as bench_main
    return bench_main(list(args.args))


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    passthrough = {"export": cmd_export, "bench": cmd_bench}
    if argv and argv[0] in passthrough:
        # their own parsers read every argument in its order (argparse's REMAINDER would split
        # `--out DIR` between itself and the leftovers)
        args = argparse.Namespace(command=argv[0], args=argv[1:], func=passthrough[argv[0]],
                                  verbose=False)
        extra = []
    else:
        # Images and KEY VALUE overrides may come after options too (argparse stops collecting
        # a positional list at the first option), so leftovers of `predict` are more inputs.
        args, extra = parser.parse_known_args(argv)
    if extra:
        unknown = [e for e in extra if e.startswith("-") and not _is_number(e)]
        if args.command in ("export", "bench"):
            args.args = list(args.args) + extra
        elif args.command != "predict" or unknown:
            parser.error(f"unrecognized arguments: {' '.join(unknown or extra)}")
        else:
            args.inputs = list(args.inputs) + extra
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        from .runtime.memory import retain_freed_memory

        retain_freed_memory()  # every command builds large tensors: reuse freed memory
        return args.func(args)
    except (AmanetError, ValueError, FileNotFoundError) as e:
        # Config, checkpoint and input errors carry a user-facing message.
        print(f"error: {e}", file=sys.stderr)
        return 2
    except ModuleNotFoundError as e:
        from .extras import missing_extra_message

        message = missing_extra_message(e)
        if message is None:
            raise
        print(f"error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
