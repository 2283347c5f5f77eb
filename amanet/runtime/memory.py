"""Process-wide CPU memory policy: keep freed heap memory for reuse.

glibc serves every allocation above its mmap threshold (128 KB, rising to at most 32 MB as
such blocks are freed) with a fresh ``mmap`` and returns it with ``munmap`` when freed, so each
large tensor the model makes starts on pages the kernel must fault in and zero again, one 4 KB
page at a time. A forward
pass at 800x1216 makes GBs of such tensors; on this project's machines (virtualised, where a
page fault is dear) eager inference ran 1.1-1.4x faster once freed memory was reused (README
"Memory policy").

:func:`retain_freed_memory` tells glibc to serve every allocation from its heap (no ``mmap``)
and never to give freed heap memory back to the kernel, the policy PyTorch's CUDA caching
allocator and ONNX Runtime's CPU arena follow for their own memory. The price: the process
keeps its peak heap size (RSS does not shrink after a large batch). The Predictor, the CLI
(predict, train, evaluate, bench, ...) and the benchmarks turn it on; ``AMANET_MALLOC=system``
leaves the C library's default alone. Library code that only builds models changes nothing.
Other C libraries (musl, macOS) have no such switch: the call logs that and returns False.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
from typing import Optional

logger = logging.getLogger(__name__)

ENV = "AMANET_MALLOC"
# glibc's mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_INT_MAX = 2 ** 31 - 1

_state: Optional[str] = None  # "retained", "system" or "unsupported" once decided


def _glibc_mallopt():
    """``mallopt`` of the running C library when it is glibc, else None."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.gnu_get_libc_version.restype = ctypes.c_char_p
        libc.gnu_get_libc_version()
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return None
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return mallopt


def retain_freed_memory() -> bool:
    """Make glibc keep freed memory for reuse, once per process. True when the policy is on.

    Honours ``AMANET_MALLOC=system`` (returns False and changes nothing). Safe to call many
    times; only the first call acts and logs.
    """
    global _state
    if _state is not None:
        return _state == "retained"
    choice = os.environ.get(ENV, "retain").strip().lower()
    if choice not in ("retain", "system"):
        raise ValueError(f"{ENV} must be 'retain' (default) or 'system', got {choice!r}")
    if choice == "system":
        _state = "system"
        logger.info("%s=system: the C library's default allocation policy is kept", ENV)
        return False
    mallopt = _glibc_mallopt()
    if mallopt is None:
        _state = "unsupported"
        logger.info("not glibc: freed memory is returned as the C library decides (%s has no effect)", ENV)
        return False
    # Order matters: with mmap off first, no large block allocated meanwhile can bypass the heap.
    if mallopt(_M_MMAP_MAX, 0) != 1 or mallopt(_M_TRIM_THRESHOLD, _INT_MAX) != 1:
        _state = "unsupported"
        logger.warning("glibc refused mallopt; freed memory is returned to the kernel as before")
        return False
    _state = "retained"
    logger.debug("glibc keeps freed memory for reuse (%s=system to turn off)", ENV)
    return True


def policy() -> str:
    """``'retained'``, ``'system'``, ``'unsupported'`` or ``'default'`` (not asked yet)."""
    return _state or "default"
