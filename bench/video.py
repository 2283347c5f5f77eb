#!/usr/bin/env python
"""Video throughput of `amanet video` against the plain per-frame loop, in one run.

    .venv/bin/python bench/video.py --sizes 512x512 720x1280 --detections 1 3 --frames 8 \
        --cases eager:fp32 eager:bf16 openvino:bf16 eager:bf16:k3 eager:bf16:smooth \
        --out bench_video
    .venv/bin/python bench/video.py --quick --out /tmp/v        # CI smoke mode

Writes video.json, video.md (table, CPU model and ISA) and video.png into --out.
"""
import argparse
import json
import logging
import platform
import sys
from pathlib import Path

from amanet.benchmarks import video as V
from amanet.benchmarks.cli import parse_size
from amanet.benchmarks.latency import cpu_info


def parse_case(text):
    """``backend[:precision[:option...]]`` -> (backend, precision, K, smooth, B); options:
    ``kK`` the model on every K-th frame (amanet video --keyframe-interval K), ``smooth`` (amanet
    video --smooth), ``bB`` B model frames at a time (amanet video --batch B). ``eager:bf16:k3:b2``
    """
    backend, *rest = text.split(":")
    precision, options = (rest[0] if rest else ""), rest[1:]
    every, smooth, batch = 1, False, 1
    for option in options:
        number = option[1:].isdigit() and int(option[1:]) >= 1
        if option == "smooth" and not smooth:
            smooth = True
        elif option[:1] == "k" and number and every == 1:
            every = int(option[1:])
        elif option[:1] == "b" and number and batch == 1:
            batch = int(option[1:])
        else:
            raise argparse.ArgumentTypeError(f"{text!r}: expected backend[:precision[:kK]"
                                             "[:bB][:smooth]], K, B >= 1")
    return backend, precision or "fp32", every, smooth, batch


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--family", default="s1x")
    p.add_argument("--sizes", nargs="+", type=parse_size, default=[(512, 512), (720, 1280)],
                   help="HxW of the clips")
    p.add_argument("--detections", nargs="+", type=int, default=[1, 3])
    p.add_argument("--cases", nargs="+", type=parse_case,
                   default=[("eager", "fp32"), ("eager", "bf16"), ("openvino", "bf16")],
                   help="backend:precision[:kK][:bB][:smooth] run through amanet video, kK: "
                   "the model on every K-th frame (--keyframe-interval K), bB: B frames at a "
                   "time (--batch B), smooth: --smooth; the loop baseline, eager fp32, always "
                   "runs first")
    p.add_argument("--frames", type=int, default=8)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="cpu", help="cpu or cuda (the loop runs there too)")
    p.add_argument("--vis", default="magicanimate")
    p.add_argument("--out", default="bench_video")
    p.add_argument("--quick", action="store_true",
                   help="one tiny clip, 2 frames, eager fp32: every frame, key frames, "
                   "smoothed, batched; OpenVINO int8 with key frames")
    args = p.parse_args(argv)
    if args.quick:
        args.sizes, args.detections, args.frames = [(96, 128)], [1], 2
        args.cases = [("eager", "fp32", 1, False, 1), ("eager", "fp32", 2, False, 1),
                      ("eager", "fp32", 1, True, 1), ("eager", "fp32", 1, False, 2),
                      ("openvino", "int8", 2, False, 1)]
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results = V.run_all(args.family, args.sizes, args.detections, args.cases, args.frames,
                        out / "work", args.threads, args.vis, args.device)
    cpu = cpu_info()
    header = (f"CPU: {cpu.get('model', platform.processor())} ({cpu.get('cores', '?')} cores), "
              f"ISA: {' '.join(cpu.get('isa', []))}; {args.family}, {args.threads} threads, "
              f"random weights, detections forced, --vis {args.vis}")
    if args.device != "cpu":
        import torch
        header += f"; device {args.device}: {torch.cuda.get_device_name(args.device)}"
    table = V.markdown_table(results, header)
    (out / "video.md").write_text(table + "\n")
    (out / "video.json").write_text(json.dumps(V.to_json(results, {"cpu": cpu,
                                                                   "args": vars(args)}),
                                               indent=1, default=str))
    V.bar_chart(results, out / "video.png")
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
