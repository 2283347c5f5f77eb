"""Dataset names -> DensePose-COCO files, for ``DATASETS.TRAIN`` / ``DATASETS.TEST``.

A name resolves, in this order, to:

1. a set registered in this process with :func:`register_dataset` (``name, json_path,
   image_root``), or listed in the ``AMANET_DATASET_REGISTRY`` environment variable
   (``name=json_path:image_root`` entries separated by ``;``);
2. one of Detectron2's DensePose-COCO names (``densepose_coco_2014_train``, ``..._minival``,
   ``..._minival_100``, ``..._valminusminival``), found under ``$AMANET_DATASETS`` (default
   ``./datasets``) in Detectron2's layout (``coco/annotations/densepose_*.json``,
   ``coco/{train,val}2014/``);
3. a synthetic set ``synthetic_<split>_<N>[_s<seed>][_<H>x<W>]`` (for example
   ``synthetic_train_64`` or ``synthetic_val_16_s7_128x160``): ``N`` images of the synthetic
   DensePose world (:mod:`amanet.data.synthetic`), generated on first use into
   ``$AMANET_CACHE/synthetic/<name>`` (default cache ``~/.cache/amanet``) and reused after.
   The seed defaults to 0 for ``train``, 1 for ``val``, 2 for ``test`` (other splits: 3).

So the seed's command lines run unchanged on synthetic data: with
``AMANET_SYNTHETIC_FALLBACK=N`` set, a DensePose-COCO name whose files are missing is replaced
by ``synthetic_<split>_<N>`` (with a warning) instead of failing.
"""
from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

logger = logging.getLogger(__name__)

__all__ = ["DatasetSpec", "register_dataset", "resolve_dataset", "load_dataset", "list_datasets",
           "SYNTHETIC_RE", "DatasetError"]


class DatasetError(ValueError):
    """A dataset name that cannot be resolved or whose files are missing."""


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    json_path: str
    image_root: str


_REGISTRY: Dict[str, DatasetSpec] = {}

#: Detectron2's DensePose-COCO names: (annotation file, image folder) under ``<root>/coco``.
BUILTIN: Dict[str, Tuple[str, str]] = {
    "densepose_coco_2014_train": ("annotations/densepose_train2014.json", "train2014"),
    "densepose_coco_2014_minival": ("annotations/densepose_minival2014.json", "val2014"),
    "densepose_coco_2014_minival_100": ("annotations/densepose_minival2014_100.json", "val2014"),
    "densepose_coco_2014_valminusminival": ("annotations/densepose_valminusminival2014.json",
                                            "val2014"),
}

SYNTHETIC_RE = re.compile(r"^synthetic_(?P<split>[a-z]+)_(?P<n>\d+)"
                          r"(?:_s(?P<seed>\d+))?(?:_(?P<h>\d+)x(?P<w>\d+))?$")
_SPLIT_SEEDS = {"train": 0, "val": 1, "test": 2}


def register_dataset(name: str, json_path: str, image_root: str) -> None:
    """Make ``name`` resolve to a DensePose-COCO JSON and its image folder."""
    if not name:
        raise DatasetError("a dataset name must be a non-empty string")
    _REGISTRY[name] = DatasetSpec(name, str(json_path), str(image_root))


def _env_registry() -> Dict[str, DatasetSpec]:
    out = {}
    for entry in filter(None, os.environ.get("AMANET_DATASET_REGISTRY", "").split(";")):
        name, sep, rest = entry.partition("=")
        json_path, sep2, root = rest.rpartition(":")
        if not sep or not sep2:
            raise DatasetError(f"AMANET_DATASET_REGISTRY entry {entry!r}: expected "
                               "name=json_path:image_root")
        out[name.strip()] = DatasetSpec(name.strip(), json_path, root)
    return out


def list_datasets() -> List[str]:
    """Registered and built-in names (synthetic names are open-ended)."""
    return sorted(set(_REGISTRY) | set(_env_registry()) | set(BUILTIN))


def cache_dir() -> Path:
    return Path(os.environ.get("AMANET_CACHE", Path.home() / ".cache" / "amanet")).expanduser()


def datasets_root() -> Path:
    return Path(os.environ.get("AMANET_DATASETS", "datasets")).expanduser()


def _split_of(name: str) -> str:
    for key in ("train", "valminusminival", "minival", "val", "test"):
        if key in name:
            return "train" if key in ("train", "valminusminival") else (
                "test" if key == "test" else "val")
    return "train"


def resolve_dataset(name: str, generate: bool = True) -> DatasetSpec:
    """``name`` -> :class:`DatasetSpec` (generating a synthetic set if needed and allowed)."""
    if name in _REGISTRY:
        return _REGISTRY[name]
    env = _env_registry()
    if name in env:
        return env[name]
    if name in BUILTIN:
        ann, images = BUILTIN[name]
        root = datasets_root() / "coco"
        spec = DatasetSpec(name, str(root / ann), str(root / images))
        if Path(spec.json_path).is_file():
            return spec
        fallback = os.environ.get("AMANET_SYNTHETIC_FALLBACK")
        if fallback:
            synth = f"synthetic_{_split_of(name)}_{int(fallback)}"
            logger.warning("%s: %s not found; AMANET_SYNTHETIC_FALLBACK is set, using %s",
                           name, spec.json_path, synth)
            return resolve_dataset(synth, generate)
        raise DatasetError(
            f"dataset {name!r}: {spec.json_path} not found. Put DensePose-COCO under "
            f"$AMANET_DATASETS (now {datasets_root()}) in Detectron2's layout, register the "
            "files (amanet.data.registry.register_dataset or AMANET_DATASET_REGISTRY), use a "
            "synthetic set (DATASETS.TRAIN \"('synthetic_train_64',)\") or set "
            "AMANET_SYNTHETIC_FALLBACK=<images> to substitute one")
    m = SYNTHETIC_RE.match(name)
    if m:
        return _synthetic(name, m, generate)
    known = ", ".join(list_datasets())
    raise DatasetError(f"unknown dataset {name!r}; known: {known}, or synthetic_<split>_<N>"
                       "[_s<seed>][_<H>x<W>]")


@contextlib.contextmanager
def _file_lock(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _synthetic(name: str, m: "re.Match[str]", generate: bool) -> DatasetSpec:
    split = m.group("split")
    n = int(m.group("n"))
    seed = int(m.group("seed")) if m.group("seed") else _SPLIT_SEEDS.get(split, 3)
    out = cache_dir() / "synthetic" / name
    marker = out / "DONE"
    if not marker.is_file():
        if not generate:
            raise DatasetError(f"synthetic dataset {name!r} is not generated yet ({out})")
        # One process generates (others wait on the lock, then reuse the result).
        with _file_lock(cache_dir() / "synthetic" / f".{name}.lock"):
            if not marker.is_file():
                _generate(out, n, seed, m.group("h"), m.group("w"))
    json_path = (out / "json_path").read_text().strip()
    return DatasetSpec(name, str(out / json_path), str(out))


def _generate(out: Path, n: int, seed: int, h: Optional[str], w: Optional[str]) -> None:
    from . import synthetic

    kwargs: Dict[str, Any] = {}
    if h and w:
        kwargs["image_size"] = (int(h), int(w))
    tmp = Path(tempfile.mkdtemp(prefix=out.name + ".", dir=out.parent))
    try:
        logger.info("generating synthetic dataset %s (%d images, seed %d)", out.name, n, seed)
        json_path = Path(synthetic.generate_dataset(str(tmp), num_images=n, seed=seed, **kwargs))
        rel = json_path.resolve().relative_to(tmp.resolve())
        (tmp / "json_path").write_text(str(rel))
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
        (out / "DONE").write_text("ok\n")
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def load_dataset(name: str) -> Tuple[List[Dict[str, Any]], DatasetSpec]:
    """The records of ``name`` (:func:`amanet.data.densepose_coco.load_densepose_coco`)."""
    from .densepose_coco import load_densepose_coco

    spec = resolve_dataset(name)
    return load_densepose_coco(spec.json_path, spec.image_root), spec
