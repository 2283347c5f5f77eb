"""The optional parts of amanet and what they need (read by ``setup.py`` by file path, so it
imports nothing but the standard library).

``pip install amanet`` brings what every command needs (torch, numpy, OpenCV, Pillow, PyYAML,
tqdm); each extra below adds one feature's libraries: ``pip install 'amanet[video]'``. A
command that reaches a missing one fails with :func:`missing_extra_message`'s one line.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Tuple

#: extra -> its requirements
EXTRAS: Dict[str, List[str]] = {
    "onnx": ["onnx>=1.16", "onnxruntime>=1.18"],           # export onnx, backend onnxruntime
    "openvino": ["onnx>=1.16", "openvino>=2024.4"],       # backend openvino
    "video": ["av>=12.0"],                                # amanet video (PyAV / FFmpeg)
    "train": ["pycocotools>=2.0.7", "matplotlib>=3.7"],   # train, evaluate, benchmark figures
}
EXTRAS["all"] = sorted({r for reqs in EXTRAS.values() for r in reqs})

#: optional top-level module -> (what it is, what needs it, its pip distribution, the extra that
#: installs it or None where no extra does); ``amanet doctor`` reports each
OPTIONAL_MODULES: Dict[str, Tuple[str, str, str, Optional[str]]] = {
    "onnxruntime": ("ONNX Runtime", "backend onnxruntime", "onnxruntime", "onnx"),
    "openvino": ("OpenVINO", "backend openvino", "openvino", "openvino"),
    "tensorrt": ("TensorRT", "backend tensorrt, NVIDIA GPUs", "tensorrt", None),
    "av": ("PyAV", "amanet video (PyAV, FFmpeg)", "av", "video"),
    "cv2": ("OpenCV", "pictures, video smoothing (OpenCV)", "opencv-python-headless", None),
    "pycocotools": ("pycocotools", "evaluation, training data", "pycocotools", "train"),
    "matplotlib": ("matplotlib", "benchmark charts", "matplotlib", "train"),
    "onnx": ("ONNX", "ONNX export checks", "onnx", "onnx"),
}

#: top-level module -> (what it is, the extra that installs it)
MODULE_EXTRA: Dict[str, Tuple[str, str]] = {
    name: (what, extra) for name, (what, _, _, extra) in OPTIONAL_MODULES.items() if extra}


def missing_extra_message(error: ImportError) -> Optional[str]:
    """One line for a :class:`ModuleNotFoundError` of an optional library (``None`` for any
    other import error: that is a bug or a broken install, and keeps its traceback)."""
    name = (getattr(error, "name", None) or "").split(".")[0]
    if name not in MODULE_EXTRA:
        return None
    what, extra = MODULE_EXTRA[name]
    return (f"this needs {what} (module '{name}'), which is not installed: "
            f"pip install 'amanet[{extra}]'")
