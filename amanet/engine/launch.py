"""Process groups: torchrun's environment, or our own launcher spawning N local processes.

``amanet train --num-gpus N`` (or ``--num-processes N``) calls :func:`launch`, which spawns N
workers (``torch.multiprocessing``, spawn start method), each joining one process group:
NCCL with one GPU per process when CUDA is available, gloo on CPU. Under ``torchrun`` (the
``WORLD_SIZE``/``RANK``/``LOCAL_RANK`` variables are set) nothing is spawned and
:func:`init_from_env` joins the group torchrun describes. Multi-node: ``--num-machines`` /
``--machine-rank`` / ``--dist-url tcp://host:port`` as in Detectron2's launcher.
"""
from __future__ import annotations

import logging
import os
import socket
from datetime import timedelta
from typing import Any, Callable, Optional, Sequence

import torch
import torch.distributed as dist

logger = logging.getLogger(__name__)

__all__ = ["launch", "init_from_env", "default_backend", "get_rank", "get_world_size",
           "is_main_process", "barrier", "free_port"]

DEFAULT_TIMEOUT = timedelta(minutes=30)


def default_backend(use_cuda: bool) -> str:
    return "nccl" if use_cuda else "gloo"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def get_rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def get_world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def is_main_process() -> bool:
    return get_rank() == 0


def barrier() -> None:
    if get_world_size() > 1:
        dist.barrier()


def init_from_env(use_cuda: bool, backend: Optional[str] = None) -> bool:
    """Join the process group described by torchrun's variables; False if there is none."""
    if dist.is_initialized():
        return True
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return False
    backend = backend or default_backend(use_cuda)
    if use_cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend, init_method="env://", timeout=DEFAULT_TIMEOUT)
    logger.info("joined process group: rank %d of %d (%s)", dist.get_rank(), world, backend)
    return True


def launch(main_func: Callable[..., Any], num_processes: int, args: Sequence[Any] = (),
           num_machines: int = 1, machine_rank: int = 0, dist_url: str = "auto",
           backend: Optional[str] = None, use_cuda: Optional[bool] = None) -> None:
    """Run ``main_func(*args)`` in ``num_processes`` local processes (x ``num_machines``).

    With a world size of 1 it simply calls ``main_func(*args)`` in this process.
    """
    world = num_processes * num_machines
    if use_cuda is None:
        use_cuda = torch.cuda.is_available()
    if world <= 1:
        main_func(*args)
        return
    if use_cuda and torch.cuda.device_count() < num_processes:
        raise RuntimeError(f"{num_processes} processes per machine requested but only "
                           f"{torch.cuda.device_count()} GPUs are visible")
    if dist_url == "auto":
        if num_machines != 1:
            raise ValueError("--dist-url auto only works on one machine; pass tcp://host:port")
        dist_url = f"tcp://127.0.0.1:{free_port()}"
    backend = backend or default_backend(use_cuda)
    import torch.multiprocessing as mp

    mp.start_processes(_worker, nprocs=num_processes, join=True, start_method="spawn",
                       args=(main_func, world, num_processes, machine_rank, dist_url, backend,
                             use_cuda, tuple(args)))


def _worker(local_rank: int, main_func, world: int, num_local: int, machine_rank: int,
            dist_url: str, backend: str, use_cuda: bool, args) -> None:
    rank = machine_rank * num_local + local_rank
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(local_rank),
                      LOCAL_WORLD_SIZE=str(num_local))
    if dist_url.startswith("tcp://"):
        host, _, port = dist_url[len("tcp://"):].rpartition(":")
        os.environ.setdefault("MASTER_ADDR", host)
        os.environ.setdefault("MASTER_PORT", port)
    if use_cuda:
        torch.cuda.set_device(local_rank)
    dist.init_process_group(backend, init_method=dist_url, world_size=world, rank=rank,
                            timeout=DEFAULT_TIMEOUT)
    try:
        dist.barrier()
        main_func(*args)
    finally:
        dist.destroy_process_group()
