"""The CUDA architectures the op library is built for (read by ``setup.py`` by file path, so
it imports nothing but the standard library).

Precedence: ``AMANET_CUDA_ARCHS``, then the user's own ``TORCH_CUDA_ARCH_LIST``, then
:data:`DEFAULT_ARCHS`. The default ends in ``+PTX``: GPUs newer than its last architecture
(Blackwell, sm_100 / sm_120) JIT-compile that PTX instead of finding no kernel image.
"""
from __future__ import annotations

import re
from typing import List, Mapping

#: CUDA 13 has no sm_70: Volta users need a CUDA 12 toolchain and their own list
DEFAULT_ARCHS = "7.5;8.0;8.6;8.9;9.0+PTX"


def resolve_arch_list(env: Mapping[str, str]) -> str:
    """The ``TORCH_CUDA_ARCH_LIST`` to build with, from the environment ``env``."""
    for key in ("AMANET_CUDA_ARCHS", "TORCH_CUDA_ARCH_LIST"):
        value = env.get(key, "").strip()
        if value:
            return value
    return DEFAULT_ARCHS


def arch_names(arch_list: str) -> List[str]:
    """``"8.6;9.0+PTX"`` -> ``["sm_86", "sm_90", "compute_90"]`` (separators ``;``, ``,`` or
    space, as torch accepts); ``ValueError`` on an entry that is not ``X.Y[a][+PTX]``."""
    names = []
    for entry in re.split(r"[;, ]+", arch_list.strip()):
        if not entry:
            continue
        m = re.fullmatch(r"(\d+)\.(\d)([af]?)(\+PTX)?", entry)
        if not m:
            raise ValueError(f"CUDA architecture {entry!r} is not of the form X.Y[+PTX] "
                             f"(in {arch_list!r})")
        num = f"{m.group(1)}{m.group(2)}{m.group(3)}"
        names.append(f"sm_{num}")
        if m.group(4):
            names.append(f"compute_{num}")
    return names
