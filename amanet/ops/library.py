"""Loading the ``amanet._C`` op library and the one switch between fused and reference ops.

The fused ops are used when the library is built and loaded, unless ``AMANET_OPS=reference``
is set in the environment or :func:`set_backend` says otherwise. Every op wrapper asks
:func:`use_fused` at call time, so the switch works on a model that is already built.
"""
from __future__ import annotations

import contextlib
import logging
import os
from typing import Iterator, Optional

import torch

logger = logging.getLogger(__name__)

_BACKENDS = ("fused", "reference")
_backend: Optional[str] = None
_load_error: Optional[str] = None
_loaded = False


def load_library() -> bool:
    """Import ``amanet._C`` (registers ``torch.ops.amanet.*``); False with a logged reason."""
    global _loaded, _load_error
    if _loaded:
        return True
    if _load_error is not None:
        return False
    try:
        from .. import _C  # noqa: F401
        _loaded = True
    except ImportError as e:
        _load_error = (f"amanet._C is not available ({e}); build it with "
                       "`python setup.py build_ext --inplace` (the Makefile does)")
        logger.warning("%s; using the reference ops", _load_error)
    return _loaded


def require_library() -> None:
    """Like :func:`load_library` but raises with the reason when the library is missing."""
    if not load_library():
        raise RuntimeError(_load_error)


def build_info() -> str:
    """Which kernels the library holds: ``"cpu"`` or ``"cpu+cuda13.0(sm_75;...)"``."""
    require_library()
    return torch.ops.amanet.build_info()


def set_backend(name: str) -> None:
    """``"fused"`` (the csrc ops) or ``"reference"`` (plain PyTorch), for every op."""
    global _backend
    if name not in _BACKENDS:
        raise ValueError(f"ops backend must be one of {_BACKENDS}, got {name!r}")
    if name == "fused":
        require_library()
    _backend = name


def get_backend() -> str:
    if _backend is not None:
        return _backend
    env = os.environ.get("AMANET_OPS", "fused").strip().lower()
    if env not in _BACKENDS:
        raise ValueError(f"AMANET_OPS must be one of {_BACKENDS}, got {env!r}")
    if env == "fused" and not load_library():
        return "reference"
    return env


def use_fused() -> bool:
    return get_backend() == "fused"


@contextlib.contextmanager
def backend(name: str) -> Iterator[None]:
    """Temporarily switch the ops backend: ``with backend("reference"): ...``."""
    global _backend
    previous = _backend
    set_backend(name)
    try:
        yield
    finally:
        _backend = previous
