"""Command line of ``bench/latency.py`` and ``amanet bench``."""
import argparse
import json
import platform
import sys
from pathlib import Path

import torch

from ..runtime import memory
from . import latency as L


def parse_size(text):
    h, w = text.lower().split("x")
    return int(h), int(w)


def main(argv=None):
    p = argparse.ArgumentParser(prog="amanet bench", description="End-to-end latency per backend x image size x threads")
    p.add_argument("--families", nargs="+", default=["amanet", "s1x"])
    p.add_argument("--backends", nargs="+", default=["eager", "torchscript", "onnxruntime"],
                   choices=["eager", "torchscript", "onnxruntime", "openvino", "tensorrt"])
    p.add_argument("--precisions", nargs="+", default=["fp32"],
                   choices=["fp32", "bf16", "fp16", "int8"],
                   help="each backend runs those it can (eager, torchscript, openvino: fp32 and "
                   "bf16; onnxruntime fp32; int8: openvino and onnxruntime on a quantized "
                   "export calibrated on the benchmark's input; fp16: eager and torchscript on "
                   "CUDA); fp32 eager always runs: every row's ratio is to it")
    p.add_argument("--device", default="cpu",
                   help="cpu, or cuda (eager, torchscript, tensorrt; times to completion)")
    p.add_argument("--sizes", nargs="+", type=parse_size, default=[(800, 1216)],
                   help="HxW of the (already resized) model input")
    p.add_argument("--threads", nargs="+", type=int, default=[2])
    p.add_argument("--detections", nargs="+", type=int, default=[5, 20])
    p.add_argument("--runs", type=int, default=10)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--weights", help="checkpoint (default: smoke-initialised random weights)")
    p.add_argument("--out", default="bench_out")
    p.add_argument("--compare", help="an earlier latency.json: print other/this ratios")
    p.add_argument("--quick", action="store_true", help="tiny sizes, 1 run (CI smoke mode)")
    args = p.parse_args(argv)
    if args.quick:
        args.sizes, args.runs, args.warmup, args.detections = [(128, 160)], 1, 0, [2]
    cuda = args.device.startswith("cuda")
    if cuda and not torch.cuda.is_available():
        raise ValueError(f"--device {args.device}: no CUDA device visible to torch (`amanet "
                         "doctor` says what this install has)")
    if "fp16" in args.precisions and not cuda:
        raise ValueError("precision fp16 needs --device cuda (on the CPU use bf16 or fp32)")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    memory.retain_freed_memory()  # here for the exports; each timed case applies it too
    results = L.run_all(args.families, args.backends, args.sizes, args.threads, args.detections,
                        args.runs, args.warmup, out / "artifacts", args.weights,
                        precisions=args.precisions, device=args.device)
    cpu = L.cpu_info()
    peak = L.conv_peak(max(args.threads), runs=1 if args.quick else 5,
                       int8="int8" in args.precisions and not cuda)
    gpu = torch.cuda.get_device_name(0) if cuda else None
    meta = {"torch": torch.__version__, "device": args.device, "gpu": gpu,
            "machine": platform.processor() or platform.machine(),
            "cpu": cpu, "conv_peak_tflops": peak,
            "runs": args.runs, "warmup": args.warmup, "weights": args.weights or "smoke-init",
            "malloc": memory.policy()}
    doc = L.to_json(results, meta)
    (out / "latency.json").write_text(json.dumps(doc, indent=1))
    table = L.markdown_table(results, peak, cpu)
    if gpu:
        table = f"GPU: {gpu} (torch {torch.__version__}, CUDA {torch.version.cuda})\n\n" + table
    (out / "latency.md").write_text(table + "\n")
    L.bar_chart(results, out / "latency.png")
    print(table)
    if args.compare:
        print()
        print(L.compare(doc, json.loads(Path(args.compare).read_text())))
    return 0

