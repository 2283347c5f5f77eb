"""amanet: a deployable inference engine for AMANet and Detectron2 DensePose models."""
import importlib.abc
import sys

__version__ = "0.1.0"


class _TorchBeforeOps(importlib.abc.MetaPathFinder):
    """``import amanet._C`` as the first import of a process: the op library links torch's
    shared libraries (libc10, libtorch), which only ``import torch`` puts in the process, so
    import torch first. Finds nothing itself: the normal finders load the extension."""

    def find_spec(self, name, path, target=None):
        if name == __name__ + "._C":
            import torch  # noqa: F401
        return None


sys.meta_path.insert(0, _TorchBeforeOps())
