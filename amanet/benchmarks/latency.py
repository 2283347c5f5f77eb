"""End-to-end latency per backend x precision x image size x threads, with an eager stage
breakdown, each row's ratio to fp32 eager of the same run and its achieved GFLOP/s against the
peak this machine reaches on a conv of the heads' size (measured by the benchmark itself).

Each (backend, precision, size, threads) case runs in its own subprocess, so its peak RSS and
thread settings are its own. The number of detections is forced (score threshold 0, a fixed
``DETECTIONS_PER_IMAGE``) so runs are comparable whatever the weights detect; the measured
count is reported next to the forced one. Timings are medians of ``runs`` after ``warmup``.
"""
from __future__ import annotations

import json
import logging
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

logger = logging.getLogger(__name__)

# Artifact file per (backend, precision): OpenVINO runs the fp32 ONNX file in fp32 and bf16; a
# TorchScript export is made in the precision it runs; int8 is a quantized ONNX export.
EXPORTED = {("torchscript", "fp32"): "model.ts", ("torchscript", "bf16"): "model_bf16.ts",
            ("torchscript", "fp16"): "model_fp16.ts", ("onnxruntime", "fp32"): "model.onnx",
            ("openvino", "fp32"): "model.onnx", ("openvino", "bf16"): "model.onnx",
            ("onnxruntime", "int8"): "model_int8.onnx", ("openvino", "int8"): "model_int8.onnx"}
# What each backend can be asked to run here (others are skipped, not failed: see Predictor).
BACKEND_PRECISIONS = {"eager": ("fp32", "bf16", "fp16"), "torchscript": ("fp32", "bf16", "fp16"),
                      "onnxruntime": ("fp32", "int8"), "openvino": ("fp32", "bf16", "int8"),
                      "tensorrt": ("fp32",)}
#: the backends and precisions a CUDA device runs here (fp16 is CUDA-only)
CUDA_BACKENDS = ("eager", "torchscript", "tensorrt")


@dataclass
class Case:
    backend: str
    height: int
    width: int
    threads: int
    detections: int
    family: str
    precision: str = "fp32"
    device: str = "cpu"


@dataclass
class Result:
    case: Case
    median_ms: float
    p90_ms: float
    min_ms: float
    images_per_s: float
    peak_rss_mb: float
    detections_found: int
    stages_ms: Dict[str, float] = field(default_factory=dict)
    stage_gflops: Dict[str, float] = field(default_factory=dict)
    gflops: float = 0.0          # the model's work for this input (eager fp32 FLOP count)


# -- the model under test ----------------------------------------------------------------------
def bench_model(family: str, detections: int, weights: Optional[str] = None):
    """Preset model with forced detections; smoke-initialised weights unless ``weights``."""
    from ..checkpoint import load_weights
    from ..config import load_config
    from ..modeling.model import build_model
    from ..modeling.smoke_init import smoke_init_

    cfg = load_config(family, ["MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0",
                               "TEST.DETECTIONS_PER_IMAGE", str(detections)])
    model = build_model(cfg)
    if weights:
        load_weights(model, weights)
    else:
        smoke_init_(model, seed=0)
    return model.eval()


def bench_image(height: int, width: int) -> torch.Tensor:
    """The bundled photo stretched to ``[3, H, W]`` float (BGR, 0..255)."""
    from PIL import Image

    from ..assets import PHOTO
    rgb = Image.open(PHOTO).convert("RGB").resize((width, height), Image.BILINEAR)
    bgr = np.ascontiguousarray(np.asarray(rgb)[:, :, ::-1].transpose(2, 0, 1))
    return torch.from_numpy(bgr).float()


def export_artifacts(model, out_dir: Path, precisions: Sequence[str] = ("fp32",),
                     calibration=None) -> Dict[Tuple[str, str], Path]:
    """The TorchScript export in each precision, the (fp32) ONNX export and, for int8, the
    quantized ONNX export calibrated with ``calibration`` (images or layer ranges)."""
    from ..deploy.onnx import export_onnx
    from ..deploy.torchscript import export_torchscript

    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {key: out_dir / name for key, name in EXPORTED.items()}
    for precision in precisions:
        if ("torchscript", precision) in paths:
            export_torchscript(model, paths[("torchscript", precision)], precision=precision)
    export_onnx(model, paths[("onnxruntime", "fp32")])  # OpenVINO runs the same file
    if "int8" in precisions:
        export_onnx(model, paths[("openvino", "int8")], precision="int8",
                    calibration=calibration)
    return paths


def int8_ranges(family: str, images: Sequence[torch.Tensor], weights: Optional[str] = None,
                detections: int = 20) -> Dict[str, Tuple[float, float]]:
    """Layer ranges for the int8 export, calibrated on the benchmark's inputs with
    ``detections`` forced: the same weights with fewer (or no) forced detections use them too
    (a model that detects nobody cannot calibrate its DensePose head)."""
    from ..deploy.quantize import calibrate

    return calibrate(bench_model(family, detections, weights), images)


# -- one case, in the current process ----------------------------------------------------------
def _make_backend(case: Case, artifact: Optional[str], weights: Optional[str]):
    from ..modeling.inference_prep import prepare_for_inference
    from ..runtime import backends as b

    device = torch.device(case.device)
    if case.backend == "eager":  # prepared as the Predictor prepares it
        model = prepare_for_inference(bench_model(case.family, case.detections, weights))
        return b.EagerBackend(model.to(device), device, case.precision)
    if case.backend == "torchscript":
        return b.TorchScriptBackend(artifact, device)
    if case.backend == "onnxruntime":
        return b.OnnxRuntimeBackend(artifact, ["CPUExecutionProvider"], threads=case.threads)
    if case.backend == "openvino":
        return b.OpenVINOBackend(artifact, case.precision, threads=case.threads)
    if case.backend == "tensorrt":
        return b.TensorRTBackend(artifact)
    raise ValueError(f"unknown backend {case.backend!r}")


def time_case(case: Case, artifact: Optional[str], runs: int, warmup: int,
              weights: Optional[str] = None) -> Result:
    from ..runtime.memory import retain_freed_memory

    retain_freed_memory()  # what the Predictor runs with
    torch.set_num_threads(case.threads)
    backend = _make_backend(case, artifact, weights)
    image = bench_image(case.height, case.width).to(case.device)
    cuda = case.device.startswith("cuda")

    def run():
        result = backend(image)
        if cuda:        # GPU work is asynchronous: time it to completion
            torch.cuda.synchronize()
        return result

    out: Dict[str, torch.Tensor] = {}
    for _ in range(warmup):
        out = run()
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        out = run()
        times.append((time.perf_counter() - t0) * 1e3)
    times.sort()
    med = statistics.median(times)
    res = Result(case=case, median_ms=med, p90_ms=times[min(len(times) - 1,
                                                              int(round(0.9 * (len(times) - 1))))],
                 min_ms=times[0], images_per_s=1e3 / med,
                 peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                 detections_found=int(out["boxes"].shape[0]) if out else 0)
    if case.backend == "eager" and not cuda:   # the stage clock is a CPU one
        res.stages_ms, res.stage_gflops = stage_breakdown(backend.model, image, runs,
                                                          case.precision)
    return res


def stage_breakdown(model, image: torch.Tensor, runs: int, precision: str = "fp32"
                    ) -> Tuple[Dict[str, float], Dict[str, float]]:
    """Median ms and GFLOPs of backbone, RPN, box head, DensePose head and post-processing."""
    from torch.utils.flop_counter import FlopCounterMode

    from ..runtime.backends import flat_outputs
    from ..runtime.precision import autocast
    from ..runtime.predictor import Predictor

    post = Predictor.__new__(Predictor)  # only its post-processing is used
    post.cfg = model.cfg
    post.whole_image_iuv = True
    h, w = int(image.shape[1]), int(image.shape[2])

    def stages(counters=None):
        def run(name, fn):
            if counters is not None:
                with FlopCounterMode(display=False) as fc:
                    r = fn()
                counters[name] = fc.get_total_flops() / 1e9
                return r
            t0 = time.perf_counter()
            r = fn()
            times.setdefault(name, []).append((time.perf_counter() - t0) * 1e3)
            return r

        with torch.no_grad(), autocast(precision, torch.device("cpu")):
            batch, sizes = model.preprocess([image])
            feats = run("backbone", lambda: model.backbone(batch))
            props = run("rpn", lambda: model.proposal_generator(feats, sizes)[0])
            dets = run("box_head", lambda: model.roi_heads.detect(feats, props, sizes))
            run("densepose", lambda: model.attach_densepose(feats, dets))
            flat = flat_outputs(dets[0], list(model.densepose_channels()))
            run("postprocess", lambda: post._postprocess(flat, (h, w), (h, w)))

    times: Dict[str, List[float]] = {}
    for _ in range(max(runs, 1)):
        stages()
    flops: Dict[str, float] = {}
    stages(flops)
    return {k: statistics.median(v) for k, v in times.items()}, flops


# -- many cases, each in a subprocess ----------------------------------------------------------
def run_all(families: Sequence[str], backends: Sequence[str], sizes: Sequence[Tuple[int, int]],
            threads: Sequence[int], detections: Sequence[int], runs: int, warmup: int,
            work_dir: Path, weights: Optional[str] = None, progress: bool = True,
            precisions: Sequence[str] = ("fp32",), device: str = "cpu") -> List[Result]:
    """Every case on ``device``; a (backend, precision) pair the backend cannot run there is
    left out. fp32 eager is always measured (the reference of every row's ratio)."""
    from tqdm import tqdm

    cuda = device.startswith("cuda")
    pairs = [(b, p) for b in backends for p in precisions if p in BACKEND_PRECISIONS[b]
             and (b in CUDA_BACKENDS if cuda else p != "fp16")]
    if ("eager", "fp32") not in pairs:
        pairs.insert(0, ("eager", "fp32"))
    cases = [Case(b, h, w, t, d, f, p, device) for f in families for d in detections for b, p in pairs
             for (h, w) in sizes for t in threads]
    artifacts: Dict[Tuple[str, int], Dict[Tuple[str, str], Path]] = {}
    results = []
    for case in tqdm(cases, desc="latency", disable=not progress):
        key = (case.family, case.detections)
        artifact = None
        if (case.backend, case.precision) in EXPORTED:
            if key not in artifacts:
                ranges = None
                if "int8" in precisions:
                    ranges = int8_ranges(case.family, [bench_image(h, w) for h, w in sizes],
                                         weights)
                artifacts[key] = export_artifacts(bench_model(case.family, case.detections,
                                                              weights),
                                                  work_dir / f"{case.family}_d{case.detections}",
                                                  precisions, ranges)
            artifact = str(artifacts[key][(case.backend, case.precision)])
        results.append(_run_in_subprocess(case, artifact, runs, warmup, weights))
    flops: Dict[Tuple[str, int, int, int], float] = {}
    for r in results:  # the eager rows counted the model's FLOPs; every row of that input shares it
        if r.stage_gflops:
            flops[(r.case.family, r.case.detections, r.case.height, r.case.width)] = \
                sum(r.stage_gflops.values())
    for r in results:
        r.gflops = flops.get((r.case.family, r.case.detections, r.case.height, r.case.width), 0.0)
    return results


# -- the machine -------------------------------------------------------------------------------
def cpu_info() -> Dict[str, Any]:
    """CPU model and the ISA flags that decide reduced-precision speed (from /proc/cpuinfo)."""
    model, flags = platform.processor() or platform.machine(), set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                model = value.strip()
            elif key.strip() == "flags":
                flags = set(value.split())
    except OSError as e:  # not Linux: the model name from platform, no flags to report
        logger.warning("cannot read /proc/cpuinfo (%s): the ISA flags are not reported", e)
    wanted = ["avx2", "fma", "avx512f", "avx512_bf16", "avx512_fp16", "avx512_vnni", "avx_vnni",
              "amx_bf16", "amx_tile", "amx_int8"]
    return {"model": model, "isa": [f for f in wanted if f in flags],
            "cores": os.cpu_count()}


def conv_peak(threads: int, runs: int = 5, int8: bool = False) -> Dict[str, float]:
    """Achieved TFLOP/s of a 3x3 conv at the DensePose head's size (20 RoIs x 512 ch x 28x28,
    channels-last), fp32 and bf16 in PyTorch and, with ``int8``, the int8 conv of a quantized
    ONNX graph in OpenVINO (TOP/s): the ceiling the table's GFLOP/s are read against."""
    torch.set_num_threads(threads)
    out = {}
    n, c, hw = 20, 512, 28
    flops = 2 * n * c * c * 9 * hw * hw
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        x = torch.randn(n, c, hw, hw).to(dtype).contiguous(memory_format=torch.channels_last)
        w = torch.randn(c, c, 3, 3).to(dtype).contiguous(memory_format=torch.channels_last)
        with torch.no_grad():
            for _ in range(2):
                torch.nn.functional.conv2d(x, w, padding=1)
            times = []
            for _ in range(runs):
                t0 = time.perf_counter()
                torch.nn.functional.conv2d(x, w, padding=1)
                times.append(time.perf_counter() - t0)
        out[name] = flops / statistics.median(times) / 1e12
    if int8:
        out["int8"] = _int8_conv_peak(threads, runs, n, c, hw)
    return out


def _int8_conv_peak(threads: int, runs: int, n: int, c: int, hw: int) -> float:
    """TOP/s of one quantized 3x3 conv (uint8 input, int8 weights) compiled by OpenVINO."""
    import tempfile

    import openvino as ov

    from ..deploy.quantize import FakeQuant

    x = torch.rand(n, c, hw, hw)
    layer = FakeQuant(torch.nn.Conv2d(c, c, 3, padding=1, bias=False), 0.0, 1.0).eval()
    with tempfile.TemporaryDirectory() as tmp:
        path = str(Path(tmp) / "conv_int8.onnx")
        with torch.no_grad():
            torch.onnx.export(layer, (x,), path, dynamo=False, opset_version=17)
        compiled = ov.Core().compile_model(path, "CPU", {"INFERENCE_NUM_THREADS": threads,
                                                         "PERFORMANCE_HINT": "LATENCY"})
    request = compiled.create_infer_request()
    feed = {0: x.numpy()}
    for _ in range(2):
        request.infer(feed)
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        request.infer(feed)
        times.append(time.perf_counter() - t0)
    return 2 * n * c * c * 9 * hw * hw / statistics.median(times) / 1e12


def _run_in_subprocess(case: Case, artifact: Optional[str], runs: int, warmup: int,
                       weights: Optional[str]) -> Result:
    spec = {"case": asdict(case), "artifact": artifact, "runs": runs, "warmup": warmup,
            "weights": weights}
    env = dict(os.environ, OMP_NUM_THREADS=str(case.threads))
    proc = subprocess.run([sys.executable, "-m", "amanet.benchmarks.latency", json.dumps(spec)],
                          capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"benchmark case {case} failed:\n{proc.stderr[-2000:]}")
    data = json.loads(proc.stdout.strip().splitlines()[-1])
    data["case"] = Case(**data["case"])
    return Result(**data)


# -- reports -----------------------------------------------------------------------------------
def to_json(results: List[Result], meta: Dict[str, Any]) -> Dict[str, Any]:
    return {"meta": meta, "results": [asdict(r) for r in results]}


def from_json(doc: Dict[str, Any]) -> List[Result]:
    """The results of a latency.json (to render its tables again)."""
    out = []
    for r in doc["results"]:
        r = dict(r)
        r["case"] = Case(**r["case"])
        out.append(Result(**r))
    return out


def _eager_fp32(results: List[Result], case: Case) -> Optional[Result]:
    for r in results:
        c = r.case
        if (c.backend, c.precision, c.family, c.detections, c.height, c.width, c.threads) == \
                ("eager", "fp32", case.family, case.detections, case.height, case.width,
                 case.threads):
            return r
    return None


def markdown_table(results: List[Result], peak: Optional[Dict[str, float]] = None,
                   cpu: Optional[Dict[str, Any]] = None) -> str:
    """Rows with their ratio to fp32 eager of the same input, and GFLOP/s (% of the measured
    conv peak of the row's precision)."""
    lines = []
    if cpu:
        lines += [f"CPU: {cpu['model']} ({cpu['cores']} cores), ISA: {' '.join(cpu['isa'])}"]
    if peak:
        int8 = f", int8 (OpenVINO) {peak['int8']:.2f} TOP/s" if "int8" in peak else ""
        lines += [f"Conv peak (3x3, 20x512x28x28, channels-last): fp32 {peak['fp32']:.2f} "
                  f"TFLOP/s, bf16 {peak['bf16']:.2f} TFLOP/s{int8}", ""]
    lines += ["| family | backend | precision | size | threads | dets (forced/found) | median ms "
              "| p90 ms | min ms | img/s | peak RSS MB | vs fp32 eager | GFLOP/s (% peak) |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        c = r.case
        ref = _eager_fp32(results, c)
        ratio = f"{r.median_ms / ref.median_ms:.2f}x" if ref else "-"
        rate = "-"
        if r.gflops:
            gfs = r.gflops / (r.median_ms / 1e3)
            of_peak = f" ({100 * gfs / (1e3 * peak[c.precision]):.0f} %)" \
                if peak and c.precision in peak else ""
            rate = f"{gfs:.0f}{of_peak}"
        lines.append(f"| {c.family} | {c.backend} | {c.precision} | {c.height}x{c.width} | "
                     f"{c.threads} | {c.detections}/{r.detections_found} | {r.median_ms:.1f} | "
                     f"{r.p90_ms:.1f} | {r.min_ms:.1f} | {r.images_per_s:.2f} | "
                     f"{r.peak_rss_mb:.0f} | {ratio} | {rate} |")
    stage_rows = [r for r in results if r.stages_ms]
    if stage_rows:
        lines += ["", "| family | precision | size | dets | stage | median ms | GFLOPs | GFLOP/s |",
                  "|---|---|---|---|---|---|---|---|"]
        for r in stage_rows:
            c = r.case
            for stage, ms in r.stages_ms.items():
                gf = r.stage_gflops.get(stage, 0.0)
                rate = gf / (ms / 1e3) if ms > 0 else 0.0
                lines.append(f"| {c.family} | {c.precision} | {c.height}x{c.width} | "
                             f"{c.detections} | {stage} | {ms:.1f} | {gf:.1f} | {rate:.1f} |")
    return "\n".join(lines)


def bar_chart(results: List[Result], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [f"{r.case.family}\n{r.case.backend}\n{r.case.precision}"
              f"\n{r.case.height}x{r.case.width}\nt{r.case.threads} d{r.case.detections}"
              for r in results]
    fig, ax = plt.subplots(figsize=(max(6, 1.1 * len(results)), 4.5))
    colors = {"eager": "#4C72B0", "torchscript": "#55A868", "onnxruntime": "#C44E52",
              "openvino": "#DD8452", "tensorrt": "#8172B2"}
    ax.bar(range(len(results)), [r.median_ms for r in results],
           color=[colors.get(r.case.backend, "gray") for r in results])
    ax.set_xticks(range(len(results)))
    ax.set_xticklabels(labels, fontsize=7)
    ax.set_ylabel("median latency (ms)")
    ax.set_title("amanet end-to-end latency (CPU)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def compare(current: Dict[str, Any], other: Dict[str, Any]) -> str:
    """Ratios other/current of median latency for the cases both files hold."""
    def key(r):
        c = r["case"]
        return (c["family"], c["backend"], c.get("precision", "fp32"), c["height"], c["width"],
                c["threads"], c["detections"])

    theirs = {key(r): r for r in other["results"]}
    lines = ["| case | this ms | other ms | other/this |", "|---|---|---|---|"]
    for r in current["results"]:
        o = theirs.get(key(r))
        if o is None:
            continue
        lines.append(f"| {' '.join(map(str, key(r)))} | {r['median_ms']:.1f} | "
                     f"{o['median_ms']:.1f} | {o['median_ms'] / r['median_ms']:.2f} |")
    return "\n".join(lines)


def _worker(spec_json: str) -> None:
    spec = json.loads(spec_json)
    res = time_case(Case(**spec["case"]), spec["artifact"], spec["runs"], spec["warmup"],
                    spec.get("weights"))
    print(json.dumps(asdict(res)))


if __name__ == "__main__":  # the per-case subprocess
    logging.basicConfig(level=logging.WARNING)
    _worker(sys.argv[1])
