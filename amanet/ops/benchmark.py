"""Fused-vs-reference op timing (the logic behind ``bench/ops.py``).

Every benchmark case lives in :data:`CASES`, a registry ``{group: [factory, ...]}`` filled with
the :func:`register` decorator; a factory takes ``quick`` (tiny sizes for CI) and returns a list
of :class:`Case` (one per table row). To add rows for another op, write a factory in this module
(or any module imported before :func:`run`) under a new group name, e.g.::

    @register("paste")
    def _paste_cases(quick):
        ...
        return [Case("paste", "iuv_paste 20 boxes", "800x1216", fused_fn, reference_fn, min_bytes)]

Times are medians of ``repeats`` calls after ``warmup`` calls (``time.perf_counter``; fused and
reference calls alternate so that a drifting machine load hits both alike). Achieved
bandwidth is ``min_bytes / median``, where ``min_bytes`` is the least traffic the op must move
(the byte minimums documented in ``csrc/ops/common/*.h``), and is compared with a memcpy
bandwidth measured in the same run (``dst.copy_(src)``, read + write, into memory that is
already mapped). The run uses the product's memory policy
(:func:`amanet.runtime.memory.retain_freed_memory`, printed as ``malloc``), under which
freed memory is reused; with ``AMANET_MALLOC=system`` every fresh large allocation costs page
faults instead (``clone`` row): both the fused and the reference ops pay them, the reference
more since it allocates more.
"""
from __future__ import annotations

import os
import platform
import statistics
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence

import torch

from . import library


@dataclass
class Case:
    group: str
    name: str
    shape: str
    fused: Optional[Callable[[], object]]
    reference: Optional[Callable[[], object]]
    min_bytes: int = 0  # least traffic of the fused (or, when fused is None, the reference) call
    note: str = ""


@dataclass
class Row:
    case: Case
    fused_ms: Optional[float]      # medians
    reference_ms: Optional[float]
    fused_min_ms: Optional[float] = None
    reference_min_ms: Optional[float] = None

    @property
    def speedup(self) -> Optional[float]:
        if self.fused_ms is None or self.reference_ms is None:
            return None
        return self.reference_ms / self.fused_ms

    def gbps(self) -> Optional[float]:
        ms = self.fused_ms if self.fused_ms is not None else self.reference_ms
        if not self.case.min_bytes or not ms:
            return None
        return self.case.min_bytes / (ms * 1e-3) / 1e9


@dataclass
class Report:
    rows: List[Row]
    memcpy_gbps: float
    clone_gbps: float
    threads: int
    info: Dict[str, str] = field(default_factory=dict)

    def markdown(self) -> str:
        lines = [
            f"threads {self.threads}; memcpy (copy_ into mapped memory, read+write) "
            f"{self.memcpy_gbps:.1f} GB/s; clone (fresh allocation) {self.clone_gbps:.1f} GB/s; "
            + "; ".join(f"{k} {v}" for k, v in self.info.items()),
            "",
            "ms: median (fastest run) of the timed calls; speed-up and GB/s from the medians.",
            "",
            "| case | shape | fused ms | reference ms | speed-up | GB/s (min bytes) | % of memcpy | note |",
            "|---|---|---:|---:|---:|---:|---:|---|",
        ]
        for r in self.rows:
            gbps = r.gbps()
            lines.append("| {} | {} | {} | {} | {} | {} | {} | {} |".format(
                r.case.name, r.case.shape, _fmt(r.fused_ms, r.fused_min_ms), _fmt(r.reference_ms, r.reference_min_ms),
                "-" if r.speedup is None else f"{r.speedup:.2f}x",
                "-" if gbps is None else f"{gbps:.1f}",
                "-" if gbps is None else f"{100 * gbps / self.memcpy_gbps:.0f}%",
                r.case.note))
        return "\n".join(lines)


def _fmt(ms: Optional[float], fastest: Optional[float] = None) -> str:
    if ms is None:
        return "-"
    one = lambda t: f"{t:.3f}" if t < 10 else f"{t:.1f}"  # noqa: E731
    return one(ms) if fastest is None else f"{one(ms)} ({one(fastest)})"


CASES: Dict[str, List[Callable[[bool], List[Case]]]] = {}


def register(group: str):
    """Decorator: add a case factory ``f(quick) -> [Case]`` to ``group``."""
    def wrap(factory):
        CASES.setdefault(group, []).append(factory)
        return factory
    return wrap


def time_ms(fn: Callable[[], object], repeats: int, warmup: int) -> tuple:
    """(median, fastest) wall time of ``fn()`` in ms after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(max(1, repeats)):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times), 1e3 * min(times)


def median_ms(fn: Callable[[], object], repeats: int, warmup: int) -> float:
    return time_ms(fn, repeats, warmup)[0]


def time_pair_ms(fused: Optional[Callable[[], object]], reference: Optional[Callable[[], object]],
                 repeats: int, warmup: int) -> tuple:
    """((median, fastest) of fused, (median, fastest) of reference), the two timed alternately
    (fused, reference, fused, ...) so that drifting machine load hits both alike."""
    fns = [fn for fn in (fused, reference) if fn is not None]
    for _ in range(warmup):
        for fn in fns:
            fn()
    times: Dict[int, List[float]] = {id(fn): [] for fn in fns}
    for _ in range(max(1, repeats)):
        for fn in fns:
            start = time.perf_counter()
            fn()
            times[id(fn)].append(time.perf_counter() - start)

    def stats(fn):
        if fn is None:
            return None, None
        t = times[id(fn)]
        return 1e3 * statistics.median(t), 1e3 * min(t)
    return stats(fused), stats(reference)


def memcpy_bandwidth(quick: bool, repeats: int) -> tuple:
    """(copy_ GB/s, clone GB/s) on a 256 MB float32 tensor (8 MB with ``quick``)."""
    src = torch.rand((2 if quick else 64) * 2 ** 20)
    dst = torch.empty_like(src)
    nbytes = 2 * src.numel() * src.element_size()
    copy = median_ms(lambda: dst.copy_(src), repeats, 2)
    clone = median_ms(lambda: src.clone(), repeats, 2)
    return nbytes / (copy * 1e-3) / 1e9, nbytes / (clone * 1e-3) / 1e9


def run(groups: Optional[Sequence[str]] = None, quick: bool = False, repeats: int = 7, warmup: int = 2,
        threads: int = 2) -> Report:
    from ..runtime.memory import policy as memory_policy, retain_freed_memory

    library.require_library()
    retain_freed_memory()
    torch.set_num_threads(threads)
    groups = list(CASES) if not groups else list(groups)
    unknown = [g for g in groups if g not in CASES]
    if unknown:
        raise ValueError(f"unknown benchmark group(s) {unknown}; known: {sorted(CASES)}")
    if quick:
        repeats, warmup = 1, 1
    memcpy, clone = memcpy_bandwidth(quick, max(repeats, 3))
    rows = []
    for group in groups:
        for factory in CASES[group]:
            for case in factory(quick):
                fused, ref = time_pair_ms(case.fused, case.reference, repeats, warmup)
                rows.append(Row(case, fused[0], ref[0], fused[1], ref[1]))
    info = {"torch": torch.__version__, "cpu": platform.processor() or platform.machine(),
            "malloc": memory_policy(),
            "THP_MEM_ALLOC_ENABLE": os.environ.get("THP_MEM_ALLOC_ENABLE", "unset")}
    return Report(rows, memcpy, clone, threads, info)


# --- aggregation -------------------------------------------------------------------------------

@register("aggregation")
def _aggregation_cases(quick: bool) -> List[Case]:
    from .aggregation import adaptive_aggregation_reference as reference

    fused_op = torch.ops.amanet.adaptive_aggregation
    sizes = [(2, 4, 16, 16, 16)] if quick else [(8, 4, 256, 64, 64), (32, 4, 256, 64, 64)]
    cases = []
    for n, p, c, h, w in sizes:
        shape = f"N{n} P{p} C{c} {h}x{w}"
        gen = torch.Generator().manual_seed(0)
        f = torch.randn(n, p, c, h, w, generator=gen)
        g = torch.rand(n, p, c, generator=gen)
        fr, gr = f.clone().requires_grad_(), g.clone().requires_grad_()
        d_s = torch.randn(n, c, h, w, generator=gen)
        # upstream gradients of the group sums, per group size (1: G itself, 2: the AMA stages)
        d_r = {k: torch.randn(n, p // k, c, h, w, generator=gen) for k in (1, 2)}
        e = f.element_size()
        x, y, npc = f.numel(), d_s.numel(), g.numel()
        f16, g16 = f.to(torch.bfloat16), g.to(torch.bfloat16)  # what bf16 inference runs

        def fwd_bwd(fn, group_size, fr=fr, gr=gr, d_s=d_s, d_r=d_r):
            groups, summed = fn(fr, gr, group_size)
            if group_size:
                return torch.autograd.grad([summed, groups], [fr, gr], [d_s, d_r[group_size]])
            return torch.autograd.grad([summed], [fr, gr], [d_s])

        def fwd_bytes(r):
            return e * (x + npc + r + y)

        def bwd_bytes(r):
            return e * (2 * x + y + r + 2 * npc)

        cases += [
            Case("aggregation", "aggregation fwd, S only (inference)", shape,
                 lambda f=f, g=g: fused_op(f, g, 0), lambda f=f, g=g: reference(f, g, 0),
                 fwd_bytes(0), "ref materialises G"),
            Case("aggregation", "aggregation fwd, S + stage sums G1+G2, G3+G4", shape,
                 lambda f=f, g=g: fused_op(f, g, 2), lambda f=f, g=g: reference(f, g, 2),
                 fwd_bytes(x // 2)),
            Case("aggregation", "aggregation fwd+bwd, grads of S and stage sums (AMA training)", shape,
                 lambda fb=fwd_bwd: fb(fused_op, 2), lambda fb=fwd_bwd: fb(reference, 2),
                 fwd_bytes(x // 2) + bwd_bytes(x // 2), "what the AMA head runs in training"),
            Case("aggregation", "aggregation fwd+bwd, grads of S and every G (group_size 1)", shape,
                 lambda fb=fwd_bwd: fb(fused_op, 1), lambda fb=fwd_bwd: fb(reference, 1),
                 fwd_bytes(x) + bwd_bytes(x), "G itself out: no model uses this"),
            Case("aggregation", "aggregation fwd+bwd, grad of S only", shape,
                 lambda fb=fwd_bwd: fb(fused_op, 0), lambda fb=fwd_bwd: fb(reference, 0),
                 fwd_bytes(0) + bwd_bytes(0), "ref: G unused"),
            Case("aggregation", "aggregation fwd, S only, bf16 (bf16 inference)", shape,
                 lambda f=f16, g=g16: fused_op(f, g, 0), lambda f=f16, g=g16: reference(f, g, 0),
                 2 * (x + npc + y), "fp32 accumulation; ref: bf16 torch ops"),
            Case("aggregation", "GAP: torch mean over H, W (kept in torch)", shape,
                 None, lambda f=f: f.mean((3, 4)), e * (x + npc), "torch; no channel_mean op"),
        ]
    return cases


# --- UV loss -----------------------------------------------------------------------------------

@register("uv_loss")
def _uv_loss_cases(quick: bool) -> List[Case]:
    from .uv_loss import MODE_AMANET, uv_interp_loss_reference as reference

    fused_op = torch.ops.amanet.uv_interp_loss
    rois, points, size = (4, 20, 16) if quick else (32, 196, 64)
    gen = torch.Generator().manual_seed(0)
    u = torch.randn(rois, 25, size, size, generator=gen).requires_grad_()
    v = torch.randn(rois, 25, size, size, generator=gen).requires_grad_()
    k = rois * points
    roi = torch.arange(rois).repeat_interleave(points)
    x = torch.rand(k, generator=gen) * size
    y = torch.rand(k, generator=gen) * size
    part = torch.randint(0, 25, (k,), generator=gen)
    tu, tv = torch.rand(k, generator=gen), torch.rand(k, generator=gen)
    args = (roi, x, y, part, tu, tv, MODE_AMANET, 1.0)
    e = u.element_size()
    point_bytes = k * (16 + 4 * e + 8 * e)
    maps = 2 * u.numel() * e

    def fwd_bwd(fn):
        return torch.autograd.grad(fn(u, v, *args), (u, v))

    shape = f"{rois} RoIs x {points} pts, 25x{size}x{size}"
    return [
        Case("uv_loss", "UV loss fwd", shape, lambda: fused_op(u.detach(), v.detach(), *args),
             lambda: reference(u.detach(), v.detach(), *args), point_bytes),
        Case("uv_loss", "UV loss fwd+bwd", shape, lambda: fwd_bwd(fused_op), lambda: fwd_bwd(reference),
             2 * point_bytes + maps, "min = zero-fill dU, dV once"),
    ]


# --- IUV paste ---------------------------------------------------------------------------------

@register("paste")
def _paste_cases(quick: bool) -> List[Case]:
    from .iuv_paste import MODE_AMANET, MODE_S1X, iuv_paste_fused, iuv_paste_reference

    boxes_n, (lo, hi), (height, width) = (3, (20, 60), (100, 120)) if quick else (20, (100, 600), (800, 1216))
    cases = []
    for mode, family, size in ((MODE_S1X, "s1x", 112), (MODE_AMANET, "AMANet", 64)):
        gen = torch.Generator().manual_seed(0)
        fine = torch.randn(boxes_n, 25, size, size, generator=gen)
        gate = torch.randn(boxes_n, 2, size, size, generator=gen)
        u = torch.rand(boxes_n, 25, size, size, generator=gen)
        v = torch.rand(boxes_n, 25, size, size, generator=gen)
        wh = torch.randint(lo, hi + 1, (boxes_n, 2), generator=gen)
        xy = torch.stack([torch.randint(0, max(1, width - lo), (boxes_n,), generator=gen),
                          torch.randint(0, max(1, height - lo), (boxes_n,), generator=gen)], 1)
        boxes = torch.cat([xy, wh], 1).long()
        scores = torch.rand(boxes_n, generator=gen)
        args = (fine, gate, u, v, boxes, scores, mode, 0.3, (height, width))
        pixels = int((wh[:, 0] * wh[:, 1]).sum())
        # Least traffic: read the fine-I and gate maps once (U, V are read only at the label's
        # channel), write the charts and the image. The op is compute-bound (~30 bilinear samples
        # per chart pixel), so its GB/s stays far below memcpy by nature.
        min_bytes = fine.element_size() * boxes_n * 27 * size * size + 3 * pixels + 3 * height * width
        cases.append(Case(
            "paste", f"iuv_paste {family} ({boxes_n} boxes {lo}..{hi} px, whole image)",
            f"{boxes_n}x[25,{size},{size}] -> {height}x{width}, {pixels / 1e6:.2f} Mpx charts",
            lambda args=args: iuv_paste_fused(*args), lambda args=args: iuv_paste_reference(*args),
            min_bytes, "ref: per-box postprocess + paste_iuv"))
    return cases


# --- ROIAlign ----------------------------------------------------------------------------------

def _image_boxes(n: int, height: float, width: float, lo: float, hi: float, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    wh = lo + torch.rand(n, 2, generator=gen) * (hi - lo)
    xy = torch.rand(n, 2, generator=gen) * (torch.tensor([width, height]) - wh).clamp(min=1)
    return torch.cat([xy, xy + wh], 1)


@register("roi_align")
def _roi_align_cases(quick: bool) -> List[Case]:
    from .roi_align import roi_align_fused, roi_align_reference

    k, c, (h, w) = (50, 16, (50, 76)) if quick else (1000, 256, (200, 304))
    gen = torch.Generator().manual_seed(0)
    feat = torch.randn(1, c, h, w, generator=gen)
    # box-head proposals on an 800x1216 image that FPN assigns to the stride-4 map (p2):
    # sqrt(area) < 112 px, i.e. <= 28 map pixels (adaptive grid up to 4x4 samples per bin)
    boxes = _image_boxes(k, 4.0 * h, 4.0 * w, 16, 112, 1)
    rois = torch.cat([torch.zeros(k, 1), boxes], 1)
    featg = feat.clone().requires_grad_()
    grad = torch.randn(k, c, 7, 7, generator=gen)

    def fwd_bwd(fn):
        return torch.autograd.grad(fn(featg, rois, 7, 0.25, 0, True), featg, grad)

    shape = f"{k} RoIs 7x7, [1,{c},{h},{w}], scale 1/4"
    note = "aligned, sampling_ratio 0; vs torchvision"
    return [
        Case("roi_align", "roi_align fwd", shape, lambda: roi_align_fused(feat, rois, 7, 0.25, 0, True),
             lambda: roi_align_reference(feat, rois, 7, 0.25, 0, True), 0, note),
        Case("roi_align", "roi_align fwd+bwd", shape, lambda: fwd_bwd(roi_align_fused),
             lambda: fwd_bwd(roi_align_reference), 0, note),
    ]


# --- NMS ---------------------------------------------------------------------------------------

@register("nms")
def _nms_cases(quick: bool) -> List[Case]:
    from .nms import batched_nms_fused, batched_nms_reference, nms_fused, nms_reference

    cases = []
    for n, thr in ((200, 0.7),) if quick else ((1000, 0.7), (10000, 0.7), (10000, 0.5)):
        boxes = _image_boxes(n, 800.0, 1216.0, 8, 300, n)
        scores = torch.rand(n, generator=torch.Generator().manual_seed(n + 1))
        kept = int(nms_fused(boxes, scores, thr).numel())
        cases.append(Case("nms", f"nms IoU>{thr}", f"{n} boxes ({kept} kept)",
                          lambda b=boxes, s=scores, t=thr: nms_fused(b, s, t),
                          lambda b=boxes, s=scores, t=thr: nms_reference(b, s, t), 0, "vs torchvision"))
    if not quick:
        n = 10000
        boxes = _image_boxes(n, 800.0, 1216.0, 8, 300, 7)
        scores = torch.rand(n, generator=torch.Generator().manual_seed(8))
        idxs = torch.randint(0, 5, (n,), generator=torch.Generator().manual_seed(9))
        cases.append(Case("nms", "batched_nms IoU>0.7, 5 levels", f"{n} boxes",
                          lambda: batched_nms_fused(boxes, scores, idxs, 0.7),
                          lambda: batched_nms_reference(boxes, scores, idxs, 0.7), 0,
                          "per-category strategy (numel > 4000)"))
    return cases
