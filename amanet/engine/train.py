"""The trainer: SGD with warm-up and multi-step decay, checkpoints with exact resume, DDP.

One :class:`Trainer` per process. The optimisation follows Detectron2's defaults (the seed's
``train_net.py``):

- SGD with momentum; parameter groups as ``get_default_optimizer_params``: biases use
  ``BASE_LR * BIAS_LR_FACTOR`` and ``WEIGHT_DECAY_BIAS`` (default: ``WEIGHT_DECAY``),
  normalisation layers ``WEIGHT_DECAY_NORM``; frozen parameters are left out;
- ``WarmupMultiStepLR``: factor ``warmup_factor * (1 - a) + a`` with ``a = t / warmup_iters``
  (linear) or ``warmup_factor`` (constant) during warm-up, times ``gamma ** #(steps <= t)``;
- optional gradient clipping (``SOLVER.CLIP_GRADIENTS``: by value, or by the global norm);
- mixed precision (``SOLVER.AMP.ENABLED``): fp16 autocast with a gradient scaler on CUDA,
  bf16 autocast on the CPU (bf16 has fp32's range: no scaler); the fused ops' autocast kernels
  keep the losses and the detection math in fp32;
- periodic checkpoints ``model_<iter>.pth`` and ``model_final.pth`` (our checkpoint format +
  optimizer, scheduler, grad-scaler, RNG states of every process, data-stream state and the
  iteration) and the ``last_checkpoint`` pointer; ``resume`` continues from it exactly;
- a JSON-lines metrics log (``metrics.jsonl``: iteration, lr, every loss, time) and a
  loss-curve PNG (``loss_curve.png``), tqdm progress on the main process;
- data parallel training through ``torch.distributed`` (:mod:`amanet.engine.launch`): every
  process takes its own shard of each global batch (``SOLVER.IMS_PER_BATCH`` in total) and
  DDP averages the gradients. The losses are normalised per image
  (:mod:`amanet.losses`), so P processes with B/P images each compute the same update as one
  process with B images.

Determinism: the data order, augmentation and RoI sampling are functions of
``(SEED, iteration, batch slot)`` (:mod:`amanet.engine.loader`) and the model has no dropout,
so on CPU an interrupted and resumed run reproduces the uninterrupted run bit for bit.
"""
from __future__ import annotations

import bisect
import json
import logging
import os
import random
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from ..checkpoint import match_state_dict, read_checkpoint, save_checkpoint
from ..config import Config
from ..config.detectron2_yaml import dump_config
from ..modeling.model import build_model
from ..modeling.training import TrainingModel, check_trainable
from ..runtime.precision import autocast, check_precision
from . import launch as L

logger = logging.getLogger(__name__)

__all__ = ["build_optimizer", "WarmupMultiStep", "build_scheduler", "Trainer",
           "load_training_state", "last_checkpoint", "plot_metrics", "rng_state",
           "set_rng_state", "initial_weights"]

LAST_CHECKPOINT = "last_checkpoint"
METRICS_FILE = "metrics.jsonl"
CURVE_FILE = "loss_curve.png"
_NORM_TYPES = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm, nn.GroupNorm,
               nn.InstanceNorm2d, nn.LayerNorm, nn.LocalResponseNorm)


# ----------------------------------------------------------------------------------------------
# Optimizer and schedule
# ----------------------------------------------------------------------------------------------
def build_optimizer(model: nn.Module, solver) -> torch.optim.SGD:
    """SGD over the trainable parameters with Detectron2's default parameter groups."""
    wd_bias = solver.weight_decay if solver.weight_decay_bias is None else solver.weight_decay_bias
    groups: List[Dict[str, Any]] = []
    seen = set()
    for module in model.modules():
        for name, p in module.named_parameters(recurse=False):
            if not p.requires_grad or id(p) in seen:
                continue
            seen.add(id(p))
            lr, wd = solver.base_lr, solver.weight_decay
            if isinstance(module, _NORM_TYPES):
                wd = solver.weight_decay_norm
            if name == "bias":
                lr = solver.base_lr * solver.bias_lr_factor
                wd = wd_bias
            groups.append({"params": [p], "lr": lr, "weight_decay": wd})
    # merge groups with identical hyper-parameters (fewer, larger groups; same update)
    merged: Dict[Tuple[float, float], Dict[str, Any]] = {}
    for g in groups:
        key = (g["lr"], g["weight_decay"])
        if key in merged:
            merged[key]["params"].extend(g["params"])
        else:
            merged[key] = {"params": list(g["params"]), "lr": g["lr"],
                           "weight_decay": g["weight_decay"]}
    return torch.optim.SGD(list(merged.values()), lr=solver.base_lr, momentum=solver.momentum,
                           nesterov=solver.nesterov)


class WarmupMultiStep:
    """LR multiplier of iteration ``t`` (Detectron2's ``WarmupMultiStepLR``)."""

    def __init__(self, steps: Sequence[int], gamma: float, warmup_factor: float,
                 warmup_iters: int, warmup_method: str):
        if list(steps) != sorted(steps):
            raise ValueError(f"SOLVER.STEPS must be increasing, got {tuple(steps)}")
        if warmup_method not in ("linear", "constant"):
            raise ValueError(f"SOLVER.WARMUP_METHOD={warmup_method!r}: linear or constant")
        self.steps = tuple(int(s) for s in steps)
        self.gamma = float(gamma)
        self.warmup_factor = float(warmup_factor)
        self.warmup_iters = int(warmup_iters)
        self.warmup_method = warmup_method

    def __call__(self, t: int) -> float:
        factor = 1.0
        if t < self.warmup_iters:
            if self.warmup_method == "constant":
                factor = self.warmup_factor
            else:
                a = t / self.warmup_iters
                factor = self.warmup_factor * (1 - a) + a
        return factor * self.gamma ** bisect.bisect_right(self.steps, t)


def build_scheduler(optimizer: torch.optim.Optimizer, solver) -> torch.optim.lr_scheduler.LambdaLR:
    fn = WarmupMultiStep(solver.steps, solver.gamma, solver.warmup_factor, solver.warmup_iters,
                         solver.warmup_method)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, fn)


# ----------------------------------------------------------------------------------------------
# RNG states (stored in checkpoints; weights_only-loadable)
# ----------------------------------------------------------------------------------------------
def rng_state() -> Dict[str, Any]:
    py = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state = {"python": [py[0], list(py[1]), py[2]],
             "numpy": {"name": name, "keys": torch.from_numpy(keys.astype(np.int64)),
                       "pos": int(pos), "has_gauss": int(has_gauss), "cached": float(cached)},
             "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Dict[str, Any]) -> None:
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    n = state["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"],
                         n["has_gauss"], n["cached"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# ----------------------------------------------------------------------------------------------
# Checkpoints
# ----------------------------------------------------------------------------------------------
def last_checkpoint(output_dir: str) -> Optional[str]:
    """Path named by ``<output_dir>/last_checkpoint``, if it exists."""
    pointer = Path(output_dir) / LAST_CHECKPOINT
    if not pointer.is_file():
        return None
    path = Path(output_dir) / pointer.read_text().strip()
    return str(path) if path.is_file() else None


def load_training_state(path: str) -> Dict[str, Any]:
    return torch.load(path, map_location="cpu", weights_only=True)


def initial_weights(model: nn.Module, cfg: Config, seed: int) -> str:
    """Fill ``model`` before training: ``MODEL.WEIGHTS`` if given and readable (matching keys
    and shapes are loaded, the rest keeps its initialisation), else a variance-preserving
    random initialisation seeded by ``seed`` (Detectron2's module defaults assume an ImageNet
    backbone and diverge from scratch). Returns a description for the log."""
    from ..modeling.smoke_init import smoke_init_

    smoke_init_(model, seed=seed)
    weights = cfg.weights
    if not weights:
        return f"random initialisation (seed {seed})"
    if "://" in weights and not os.path.isfile(weights):
        logger.warning("MODEL.WEIGHTS=%s cannot be fetched here (no network access to model "
                       "zoos); training from a random initialisation", weights)
        return f"random initialisation (seed {seed}); {weights} not available"
    state, _ = read_checkpoint(weights)
    own = model.state_dict()
    usable = {k: v for k, v in state.items() if k in own and tuple(v.shape) == tuple(own[k].shape)}
    skipped = sorted(k for k in state if k not in usable)
    missing = sorted(k for k in own if k not in usable)
    if not usable:
        raise ValueError(f"MODEL.WEIGHTS={weights}: no parameter matches the model "
                         f"({len(skipped)} entries of other names or shapes)")
    model.load_state_dict({**own, **{k: v.to(own[k].dtype) for k, v in usable.items()}})
    if skipped or missing:
        logger.warning("MODEL.WEIGHTS=%s: loaded %d tensors; %d checkpoint entries unused "
                       "(e.g. %s), %d model tensors keep their initialisation (e.g. %s)",
                       weights, len(usable), len(skipped), skipped[:3], len(missing), missing[:3])
    return f"{weights} ({len(usable)} tensors)"


# ----------------------------------------------------------------------------------------------
# Metrics
# ----------------------------------------------------------------------------------------------
def plot_metrics(metrics_path: str, png_path: str) -> bool:
    """Loss curves (total and each term, log scale) from a metrics JSON-lines file."""
    rows = []
    try:
        with open(metrics_path) as f:
            rows = [json.loads(line) for line in f if line.strip()]
    except FileNotFoundError:
        return False
    rows = [r for r in rows if "total_loss" in r]
    if not rows:
        return False
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    its = [r["iteration"] for r in rows]
    keys = sorted({k for r in rows for k in r if k.startswith("loss_")})
    fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(13, 4.5))
    total = np.array([r["total_loss"] for r in rows], dtype=np.float64)
    ax0.plot(its, total, lw=0.8, alpha=0.5, label="total")
    k = len(total) // 20
    if k > 1:
        smooth = np.convolve(total, np.ones(k) / k, mode="valid")
        ax0.plot(its[k - 1:], smooth, lw=1.6, label=f"total (mean of {k})")
    ax0.set_xlabel("iteration")
    ax0.set_ylabel("loss")
    ax0.set_title("total loss")
    ax0.legend()
    for key in keys:
        vals = [max(r.get(key, float("nan")), 1e-8) for r in rows]
        ax1.plot(its, vals, lw=0.9, label=key.replace("loss_", ""))
    ax1.set_yscale("log")
    ax1.set_xlabel("iteration")
    ax1.set_title("loss terms")
    ax1.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    tmp = png_path + ".tmp.png"
    fig.savefig(tmp, dpi=90)
    plt.close(fig)
    os.replace(tmp, png_path)
    return True


# ----------------------------------------------------------------------------------------------
# The trainer
# ----------------------------------------------------------------------------------------------
class Trainer:
    """Train ``cfg``'s model on a :class:`~amanet.engine.loader.TrainingStream`.

    Args:
        cfg: the config (``solver.*``, ``output_dir``).
        stream: this process's data stream.
        seed: the run's seed (initialisation and data; the same on every process).
        device: torch device of this process.
        resume: continue from ``<output_dir>/last_checkpoint`` when it exists.
        progress: tqdm bar on the main process.
        evaluator: optional ``callable(model, iteration) -> dict`` run on the main process
            every ``solver.eval_period`` iterations (and never on the others).
        log_period: write a metrics line every this many iterations (and the last one).
    """

    def __init__(self, cfg: Config, stream, seed: int, device: torch.device,
                 resume: bool = False, progress: bool = True, evaluator=None,
                 log_period: int = 1):
        self.cfg = cfg
        self.stream = stream
        self.seed = int(seed)
        self.device = device
        self.rank = L.get_rank()
        self.world_size = L.get_world_size()
        self.main = self.rank == 0
        self.output_dir = Path(cfg.output_dir)
        self.progress = progress
        self.evaluator = evaluator
        self.log_period = max(1, int(log_period))
        self.max_iter = int(cfg.solver.max_iter)

        torch.manual_seed(self.seed)
        self.model = build_model(cfg).to(device)
        self.init_note = ""
        self.start_iter = 0
        resume_from = last_checkpoint(str(self.output_dir)) if resume else None
        if resume_from is None:
            self.init_note = initial_weights(self.model, cfg, self.seed)
        self.model.train()
        self.module = TrainingModel(self.model)
        self.optimizer = build_optimizer(self.model, cfg.solver)
        self.scheduler = build_scheduler(self.optimizer, cfg.solver)
        self.use_amp = bool(cfg.solver.amp)
        self.amp_precision = "fp16" if device.type == "cuda" else "bf16"
        if self.use_amp:
            check_precision(self.amp_precision, device)
            logger.info("mixed precision: %s autocast on %s", self.amp_precision, device.type)
        self.scaler = (torch.amp.GradScaler("cuda") if self.use_amp and device.type == "cuda"
                       else None)
        if resume_from is not None:
            self._resume(resume_from)
        if self.world_size > 1:
            from torch.nn.parallel import DistributedDataParallel as DDP

            ids = [device.index] if device.type == "cuda" else None
            self.ddp = DDP(self.module, device_ids=ids, broadcast_buffers=False,
                           find_unused_parameters=False)
        else:
            self.ddp = self.module
        self.metrics_path = self.output_dir / METRICS_FILE
        from concurrent.futures import ThreadPoolExecutor
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="amanet-data")
        self._prefetch: Dict[int, Any] = {}

    # -- checkpoints --------------------------------------------------------------------------
    def _resume(self, path: str) -> None:
        state = load_training_state(path)
        self.model.load_state_dict(match_state_dict(self.model, state["model"]), strict=True)
        if "optimizer" in state:
            self.optimizer.load_state_dict(state["optimizer"])
        if "scheduler" in state:
            self.scheduler.load_state_dict(state["scheduler"])
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        rngs = state.get("rng") or []
        if len(rngs) == self.world_size:
            set_rng_state(rngs[self.rank])
        elif rngs:
            logger.warning("checkpoint RNG states are for %d processes, this run has %d: the "
                           "global RNGs are not restored (the data stream is unaffected)",
                           len(rngs), self.world_size)
        saved_seed = state.get("seed")
        if saved_seed is not None and int(saved_seed) != self.seed:
            raise ValueError(f"{path} was trained with seed {saved_seed}, this run has "
                             f"{self.seed}: set SEED {saved_seed} to resume it")
        self.start_iter = int(state.get("iteration", -1)) + 1
        self.init_note = f"resumed from {path} at iteration {self.start_iter}"

    def _gather_rng(self) -> List[Dict[str, Any]]:
        mine = rng_state()
        if self.world_size == 1:
            return [mine]
        out: List[Any] = [None] * self.world_size
        dist.all_gather_object(out, mine)
        return out

    def save(self, name: str, iteration: int) -> Optional[str]:
        """Checkpoint after ``iteration`` (collective: every process must call it)."""
        rngs = self._gather_rng()
        if not self.main:
            return None
        self.output_dir.mkdir(parents=True, exist_ok=True)
        path = self.output_dir / f"{name}.pth"
        self.model.roi_heads.fold()  # keep AMANet's folded inference conv fresh
        extra = {"optimizer": self.optimizer.state_dict(),
                 "scheduler": self.scheduler.state_dict(),
                 "scaler": self.scaler.state_dict() if self.scaler is not None else {},
                 "iteration": int(iteration), "seed": self.seed, "rng": rngs,
                 "data": self.stream.state_dict(), "world_size": self.world_size}
        save_checkpoint(self.model, self.cfg, str(path), extra=extra)
        tmp = self.output_dir / (LAST_CHECKPOINT + ".tmp")
        tmp.write_text(path.name)
        os.replace(tmp, self.output_dir / LAST_CHECKPOINT)
        logger.info("saved %s", path)
        return str(path)

    # -- one step -------------------------------------------------------------------------------
    def _reduce(self, values: Dict[str, torch.Tensor]) -> Dict[str, float]:
        keys = sorted(values)
        vec = torch.stack([values[k].detach().float() for k in keys])
        if self.world_size > 1:
            dist.all_reduce(vec)
            vec /= self.world_size
        return {k: float(v) for k, v in zip(keys, vec.cpu())}

    def _load(self, iteration: int):
        """This process's batch of ``iteration``, loaded one iteration ahead in a thread (the
        stream is a pure function of the iteration, so prefetching changes nothing)."""
        pending = self._prefetch.pop(iteration, None)
        samples = pending.result() if pending is not None else self.stream.batch(iteration)
        if iteration + 1 < self.max_iter:
            self._prefetch[iteration + 1] = self._pool.submit(self.stream.batch, iteration + 1)
        return samples

    def step(self, iteration: int) -> Dict[str, float]:
        t0 = time.perf_counter()
        samples = self._load(iteration)
        images = [s.image.to(self.device) for s in samples]
        targets = [s.targets for s in samples]
        seeds = [s.sample_seed for s in samples]
        t1 = time.perf_counter()
        amp = (autocast(self.amp_precision, self.device) if self.use_amp else nullcontext())
        with amp:
            losses = self.ddp(images, targets, seeds)
        total = sum(losses.values())
        if not torch.isfinite(total.detach()):
            raise FloatingPointError(
                f"loss became {float(total.detach())} at iteration {iteration}: "
                + ", ".join(f"{k}={float(v.detach()):.4g}" for k, v in losses.items())
                + " (from scratch, enable SOLVER.CLIP_GRADIENTS or lower SOLVER.BASE_LR)")
        self.optimizer.zero_grad(set_to_none=True)
        if self.scaler is not None:
            self.scaler.scale(total).backward()
            self.scaler.unscale_(self.optimizer)
        else:
            total.backward()
        self._clip()
        lr = self.optimizer.param_groups[0]["lr"]
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.scheduler.step()
        logged = self._reduce(losses)
        logged["total_loss"] = sum(logged.values())
        logged.update(iteration=iteration, lr=lr, data_time=t1 - t0,
                      time=time.perf_counter() - t0)
        logged.update({f"stat_{k}": v for k, v in self.module.last_stats.items()})
        return logged

    def _clip(self) -> None:
        s = self.cfg.solver
        if not s.clip_gradients:
            return
        params = [p for p in self.model.parameters() if p.grad is not None]
        if s.clip_type == "value":
            torch.nn.utils.clip_grad_value_(params, s.clip_value)
        else:
            torch.nn.utils.clip_grad_norm_(params, s.clip_value, s.clip_norm_type)

    # -- the loop -------------------------------------------------------------------------------
    def train(self) -> Dict[str, Any]:
        cfg = self.cfg
        if self.main:
            self.output_dir.mkdir(parents=True, exist_ok=True)
            (self.output_dir / "config.yaml").write_text(dump_config(cfg))
            logger.info("training %s for %d iterations (%d images per batch, %d process(es)); "
                        "%s", cfg.family, self.max_iter, cfg.solver.ims_per_batch,
                        self.world_size, self.init_note)
            if self.start_iter == 0 and self.metrics_path.exists():
                self.metrics_path.unlink()
            elif self.metrics_path.exists():
                self._truncate_metrics(self.start_iter)
        period = int(cfg.solver.checkpoint_period)
        bar = None
        if self.main and self.progress:
            from tqdm import tqdm
            bar = tqdm(total=self.max_iter, initial=self.start_iter, desc="train", unit="it",
                       dynamic_ncols=True)
        last: Dict[str, float] = {}
        out: Dict[str, Any] = {"start_iter": self.start_iter}
        try:
            for it in range(self.start_iter, self.max_iter):
                last = self.step(it)
                final = it + 1 == self.max_iter
                if self.main and ((it + 1) % self.log_period == 0 or final):
                    with open(self.metrics_path, "a") as f:
                        f.write(json.dumps(last) + "\n")
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{last['total_loss']:.3f}", lr=f"{last['lr']:.2g}")
                elif self.main and ((it + 1) % 20 == 0 or final):
                    logger.info("iter %d/%d  total_loss %.4f  %s  lr %.3g  %.3f s/it", it + 1,
                                self.max_iter, last["total_loss"],
                                "  ".join(f"{k[5:]} {v:.4f}" for k, v in sorted(last.items())
                                          if k.startswith("loss_")), last["lr"], last["time"])
                if period > 0 and (it + 1) % period == 0 and not final:
                    self.save(f"model_{it:07d}", it)
                    if self.main:
                        plot_metrics(str(self.metrics_path), str(self.output_dir / CURVE_FILE))
                ep = int(cfg.solver.eval_period)
                if self.evaluator is not None and ep > 0 and (it + 1) % ep == 0 and not final:
                    self._evaluate(it)
        finally:
            if bar is not None:
                bar.close()
            for pending in self._prefetch.values():
                pending.cancel()
            self._prefetch.clear()
            self._pool.shutdown(wait=True)
        if self.start_iter < self.max_iter:
            out["final"] = self.save("model_final", self.max_iter - 1)
        if self.main:
            plot_metrics(str(self.metrics_path), str(self.output_dir / CURVE_FILE))
        out["last_metrics"] = last
        if self.evaluator is not None:
            out["eval"] = self._evaluate(self.max_iter - 1)
        return out

    def _evaluate(self, iteration: int):
        result = None
        if self.main:
            self.model.eval()
            self.model.roi_heads.fold()
            try:
                result = self.evaluator(self.model, iteration)
            finally:
                self.model.train()
        L.barrier()
        return result

    def _truncate_metrics(self, start_iter: int) -> None:
        """Drop metrics lines of iterations >= ``start_iter`` (a resumed run rewrites them)."""
        with open(self.metrics_path) as f:
            rows = [line for line in f if line.strip()]
        keep = [r for r in rows if json.loads(r).get("iteration", -1) < start_iter]
        with open(self.metrics_path, "w") as f:
            f.writelines(keep)


# ----------------------------------------------------------------------------------------------
# Entry points (one process; the CLI and the launcher call these)
# ----------------------------------------------------------------------------------------------
def resolve_seed(cfg: Config, resume: bool) -> int:
    """``SEED`` if set (>= 0); else the resumed checkpoint's seed; else a fresh random seed
    (drawn on the main process and shared with the others)."""
    if cfg.seed >= 0:
        return int(cfg.seed)
    ckpt = last_checkpoint(cfg.output_dir) if resume else None
    if ckpt is not None:
        saved = load_training_state(ckpt).get("seed")
        if saved is not None:
            return int(saved)
    seed = int.from_bytes(os.urandom(4), "little") & 0x7FFFFFFF
    if L.get_world_size() > 1:
        t = torch.tensor([seed], dtype=torch.int64)
        if dist.get_backend() == "nccl":
            t = t.cuda()
        dist.broadcast(t, 0)
        seed = int(t.item())
    return seed


def select_device(cfg: Config, prefer_cuda: Optional[bool] = None) -> torch.device:
    """This process's device: CUDA (``LOCAL_RANK``'s GPU) when asked for and present."""
    want_cuda = cfg.device.startswith("cuda") if prefer_cuda is None else prefer_cuda
    if want_cuda and not torch.cuda.is_available():
        logger.warning("CUDA requested but not available: training on the CPU")
        want_cuda = False
    if want_cuda:
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return torch.device("cpu")


def build_stream(cfg: Config, seed: int):
    """The training data of ``DATASETS.TRAIN`` for this process."""
    from ..data.registry import load_dataset
    from .loader import TrainingStream, filter_records

    if not cfg.datasets.train:
        raise ValueError("DATASETS.TRAIN is empty: nothing to train on")
    records: List[Any] = []
    symmetry = None
    for name in cfg.datasets.train:
        recs, spec = load_dataset(name)
        logger.info("%s: %d images (%s)", name, len(recs), spec.json_path)
        records.extend(recs)
        if symmetry is None:
            symmetry = _dataset_symmetry(spec)
    return TrainingStream(filter_records(records), cfg, seed, L.get_rank(), L.get_world_size(),
                          symmetry=symmetry)


def _dataset_symmetry(spec) -> Any:
    """The flip symmetry of a dataset: the synthetic world's own; for other data Detectron2's
    ``UV_symmetry_transforms.mat`` (or our ``.npz``) named by ``AMANET_UV_SYMMETRY`` or found
    as ``$AMANET_DATASETS/UV_symmetry_transforms.mat``; else None (flips are skipped)."""
    from ..data import registry

    if registry.SYNTHETIC_RE.match(spec.name):
        from ..data.synthetic import synthetic_symmetry
        return synthetic_symmetry()
    from ..data.augment import FlipSymmetry

    path = os.environ.get("AMANET_UV_SYMMETRY") or str(
        registry.datasets_root() / "UV_symmetry_transforms.mat")
    if not os.path.isfile(path):
        return None
    return FlipSymmetry.from_npz(path) if path.endswith(".npz") else FlipSymmetry.from_mat(path)


def train_worker(cfg_dict: Dict[str, Any], options: Dict[str, Any]) -> Dict[str, Any]:
    """Train in this process (already inside a process group when there are several)."""
    from ..config import config_from_dict

    cfg = config_from_dict(cfg_dict)
    use_cuda = options.get("use_cuda")
    L.init_from_env(bool(use_cuda) and torch.cuda.is_available())
    device = select_device(cfg, use_cuda)
    world = L.get_world_size()
    if device.type == "cpu" and world > 1:
        local = int(os.environ.get("LOCAL_WORLD_SIZE", world))
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // local))
    resume = bool(options.get("resume"))
    seed = resolve_seed(cfg, resume)
    stream = build_stream(cfg, seed)
    evaluator = None
    if options.get("evaluate", True) and cfg.datasets.test:
        from .inference import make_evaluator
        evaluator = make_evaluator(cfg)
    trainer = Trainer(cfg, stream, seed, device, resume=resume,
                      progress=options.get("progress", True), evaluator=evaluator,
                      log_period=options.get("log_period", 1))
    return trainer.train()


def _config_path(name: str) -> str:
    """The seed's relative ``configs/<file>.yaml`` falls back to our shipped copy."""
    from ..config.detectron2_yaml import CONFIGS_DIR

    p = Path(name).expanduser()
    if p.exists():
        return str(p)
    shipped = CONFIGS_DIR / p.name
    if p.suffix in (".yaml", ".yml") and shipped.is_file():
        logger.info("%s not found; using the shipped %s", name, shipped)
        return str(shipped)
    return name


def _setup_worker_logging() -> None:
    root = logging.getLogger()
    if not root.handlers:
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if L.get_rank() != 0:
        root.setLevel(logging.WARNING)


def _cli_worker(cfg_dict: Dict[str, Any], options: Dict[str, Any]) -> None:
    _setup_worker_logging()
    out = train_worker(cfg_dict, options)
    if L.is_main_process():
        final = out.get("final")
        if final:
            print(f"final weights: {final}")
        if out.get("eval"):
            print(json.dumps(out["eval"], default=str))


def preflight(cfg: Config, num_gpus: Optional[int], eval_only: bool = False) -> None:
    """What can be checked before any worker starts, each failure one ``ValueError`` line
    (``amanet train`` prints it, exit status 2): the datasets resolve (a synthetic one is
    generated here, once, instead of in every worker), ``MODEL.WEIGHTS`` is a readable file
    (a zoo URL only warns: there is no network), ``OUTPUT_DIR`` is writable, and no more GPUs
    are asked for than are visible."""
    from ..data.registry import resolve_dataset

    names = list(cfg.datasets.test) if eval_only else \
        list(cfg.datasets.train) + list(cfg.datasets.test)
    if not eval_only and not cfg.datasets.train:
        raise ValueError("DATASETS.TRAIN is empty: name at least one dataset to train on")
    for name in names:
        spec = resolve_dataset(name)
        for what, path, check in (("annotations", spec.json_path, os.path.isfile),
                                  ("image folder", spec.image_root, os.path.isdir)):
            if not check(path):
                raise ValueError(f"dataset {name!r}: {what} {path} not found")
    weights = cfg.weights
    if weights and not ("://" in weights and not os.path.exists(weights)):
        if not os.path.isfile(weights):
            raise ValueError(f"MODEL.WEIGHTS={weights}: no such file")
        try:
            with open(weights, "rb") as f:
                f.read(1)
        except OSError as e:
            raise ValueError(f"MODEL.WEIGHTS={weights}: cannot be read ({e.strerror})") from None
    if cfg.output_dir and not eval_only:
        try:
            os.makedirs(cfg.output_dir, exist_ok=True)
            probe = os.path.join(cfg.output_dir, f".amanet_write_test_{os.getpid()}")
            with open(probe, "w") as f:
                f.write("ok")
            os.remove(probe)
        except OSError as e:
            raise ValueError(f"OUTPUT_DIR={cfg.output_dir} is not writable "
                             f"({e.strerror or e})") from None
    visible = torch.cuda.device_count()
    if num_gpus and visible and num_gpus > visible:
        raise ValueError(f"--num-gpus {num_gpus} but {visible} GPU(s) are visible "
                         f"(CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', 'unset')})")


def run_cli(args) -> int:
    """``amanet train``: the seed's ``train_net.py`` semantics (see :mod:`amanet.cli`)."""
    from ..config import load_config

    opts = list(args.opts or [])
    # flags written after the KEY VALUE pairs (argparse leaves them in the remainder)
    for flag, attr in (("--resume", "resume"), ("--eval-only", "eval_only")):
        while flag in opts:
            opts.remove(flag)
            setattr(args, attr, True)
    stray = [o for o in opts if o.startswith("--")]
    if stray:
        raise ValueError(f"unexpected option(s) among the KEY VALUE overrides: {stray}")
    cfg = load_config(_config_path(args.config_file), opts)
    if not args.eval_only:
        check_trainable(cfg)   # before any worker starts
    if int(os.environ.get("RANK", "0")) == 0:    # under torchrun: rank 0 checks for everyone
        preflight(cfg, args.num_gpus, args.eval_only)
    if args.eval_only:
        from .inference import evaluate_checkpoint

        if args.resume and last_checkpoint(cfg.output_dir):   # Detectron2's resume_or_load
            cfg.weights = last_checkpoint(cfg.output_dir)

        if (args.num_gpus or 1) > 1 or (args.num_processes or 1) > 1:
            logger.info("--eval-only runs in one process")
        device = "cuda" if cfg.device.startswith("cuda") and torch.cuda.is_available() else "cpu"
        summary = evaluate_checkpoint(cfg, device)
        print(json.dumps(summary, indent=1, default=str))
        return 0
    use_cuda = torch.cuda.is_available() and args.num_processes is None and (
        cfg.device.startswith("cuda") or args.num_gpus is not None)
    if use_cuda:
        cfg.device = "cuda"
    options = {"resume": bool(args.resume), "use_cuda": use_cuda,
               "progress": not getattr(args, "quiet", False),
               "log_period": getattr(args, "log_period", 1)}
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:    # under torchrun: one worker per process
        _cli_worker(cfg.to_dict(), options)
        return 0
    num = args.num_processes or args.num_gpus or 1
    if num > 1 and not use_cuda:
        logger.info("no GPU in use: %d gloo processes on the CPU", num * args.num_machines)
    L.launch(_cli_worker, num, args=(cfg.to_dict(), options), num_machines=args.num_machines,
             machine_rank=args.machine_rank, dist_url=args.dist_url, use_cuda=use_cuda)
    return 0
