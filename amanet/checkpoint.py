"""Checkpoints: read Detectron2 / AMANet files safely, check them strictly, write our own.

Accepted inputs:
- Detectron2 model-zoo pickles ``{"model": {name: ndarray}, ...}`` (``.pkl``), read by a
  restricted unpickler that admits numpy arrays and plain containers only;
- torch files ``{"model": state_dict}`` or a bare state_dict (``.pth``/``.pt``), read with
  ``torch.load(weights_only=True)``;
- our own format (``.pth`` with ``{"amanet_format": 1, "model": ..., "config": ...}``).

Nothing in an untrusted file is executed. Our module names equal Detectron2's, so conversion is
a strict name/shape check plus dropping the training-only keys we know about.
"""
from __future__ import annotations

import logging
import os
import pickle
import zipfile
from typing import Any, Dict, List, Mapping, Optional, Tuple

import numpy as np
import torch

from .config import Config

logger = logging.getLogger(__name__)

AMANET_FORMAT = 1

# Keys of published checkpoints that belong to parts we do not run at inference.
IGNORED_PREFIXES: Tuple[str, ...] = (
    "roi_heads.keypoint_head.",          # AMANet trains a Keypoint R-CNN head alongside
    "roi_heads.keypoint_predictor.",
    "roi_heads.mask_head.",
    "roi_heads.semantic_mask_head.",
    "pixel_mean", "pixel_std",
)


class CheckpointError(ValueError):
    """A checkpoint that cannot be read or does not fit the model; the message names why."""


# -- safe reading -----------------------------------------------------------------------------
class _RestrictedUnpickler(pickle.Unpickler):
    """Admits only what numpy arrays and plain containers need; anything else is refused."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("collections", "OrderedDict"),
        ("builtins", "set"),
        ("builtins", "frozenset"),
        ("builtins", "slice"),
        ("builtins", "bytearray"),
        ("_codecs", "encode"),
    }

    def find_class(self, module: str, name: str):
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise CheckpointError(
            f"refusing to load {module}.{name} from a checkpoint pickle: only numpy arrays "
            "and plain containers are allowed (the file may be malicious or not a checkpoint)")


def _load_pickle(path: str) -> Any:
    with open(path, "rb") as f:
        try:
            return _RestrictedUnpickler(f, encoding="latin1").load()
        except CheckpointError:
            raise
        except Exception as e:  # truncated or not a pickle at all
            raise CheckpointError(f"{path}: not a readable pickle checkpoint ({e})") from e


def _load_torch(path: str) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise CheckpointError(f"{path}: refused by the safe loader (weights_only=True): "
                              f"{str(e).splitlines()[0]}") from e
    except Exception as e:
        raise CheckpointError(f"{path}: not a readable torch checkpoint ({e})") from e


def read_checkpoint(path: str) -> Tuple[Dict[str, torch.Tensor], Optional[Dict[str, Any]]]:
    """Read any supported file: ``(state_dict of float tensors, embedded config dict or None)``."""
    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint not found: {path}")
    if os.path.getsize(path) == 0:
        raise CheckpointError(f"checkpoint is empty: {path}")
    obj = _load_torch(path) if zipfile.is_zipfile(path) else _load_pickle(path)
    cfg_dict = None
    if isinstance(obj, Mapping) and obj.get("amanet_format") is not None:
        if obj["amanet_format"] != AMANET_FORMAT:
            raise CheckpointError(f"{path}: amanet checkpoint format {obj['amanet_format']} is "
                                  f"not supported (expected {AMANET_FORMAT})")
        cfg_dict = obj.get("config")
    if isinstance(obj, Mapping) and "model" in obj and isinstance(obj["model"], Mapping):
        obj = obj["model"]
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{path}: expected a dict of tensors, got {type(obj).__name__}")
    state = {}
    for k, v in obj.items():
        if not isinstance(k, str):
            raise CheckpointError(f"{path}: non-string key {k!r}")
        if isinstance(v, np.ndarray):
            v = torch.from_numpy(np.ascontiguousarray(v))
        if not isinstance(v, torch.Tensor):
            raise CheckpointError(f"{path}: entry {k!r} is a {type(v).__name__}, not an array")
        state[k] = v
    return state, cfg_dict


# -- matching against a model ------------------------------------------------------------------
def match_state_dict(model: torch.nn.Module, state: Mapping[str, torch.Tensor]
                     ) -> Dict[str, torch.Tensor]:
    """Check names and shapes strictly; returns the state converted to the model's dtypes.

    Raises :class:`CheckpointError` listing every missing, unexpected or mis-shaped key.
    """
    expected = model.state_dict()
    ignored = [k for k in state if k not in expected and k.startswith(IGNORED_PREFIXES)]
    if ignored:
        logger.info("ignoring %d checkpoint entries of parts not used at inference (%s...)",
                    len(ignored), ignored[0])
    unexpected = sorted(k for k in state if k not in expected and k not in ignored)
    missing = sorted(k for k in expected if k not in state)
    shape = sorted(f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(v.shape)}"
                   for k, v in expected.items() if k in state and state[k].shape != v.shape)
    if not (missing or unexpected or shape):
        return {k: state[k].to(expected[k].dtype) for k in expected}
    guess = guess_config(state)
    hint = ""
    limit = 8
    if guess is not None:
        hint = (f"; its keys are those of {guess[0]} ({guess[1]}): pass that config "
                f"(--config {guess[0]})")
        limit = 3  # the name says it; a few keys are enough to see why
    problems: List[str] = []
    if missing:
        problems.append(f"{len(missing)} missing: " + ", ".join(_abbrev(missing, limit)))
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected: " + ", ".join(_abbrev(unexpected, limit)))
    if shape:
        problems.append(f"{len(shape)} mis-shaped: " + "; ".join(_abbrev(shape, limit)))
    raise CheckpointError("checkpoint does not match the model (family "
                          f"{getattr(model, 'family', '?')}){hint}: " + " | ".join(problems))


def guess_config(state: Mapping[str, torch.Tensor]) -> Optional[Tuple[str, str]]:
    """The preset whose model has this checkpoint's layout, read from its keys and shapes:
    ``(preset name, what gave it away)``, or None when it is not a DensePose R-CNN."""
    from .config.schema import zoo_name

    head = "roi_heads.densepose_head."
    pred = "roi_heads.densepose_predictor."
    if not any(k.startswith(head) for k in state):
        return None
    res4 = {k.split(".")[3] for k in state if k.startswith("backbone.bottom_up.res4.")}
    depth = {6: 50, 23: 101}.get(len(res4), 50)
    if any(k.startswith(head + "ama_") for k in state):
        return "densepose_AMA_R_50_FPN_s1x", "AMA head"
    deeplab = any(k.startswith(head + "ASPP.") for k in state)
    coarse = state.get(pred + "ann_index_lowres.weight")
    legacy = coarse is not None and coarse.ndim == 4 and int(coarse.shape[1]) == 15 and \
        not any(k.startswith("roi_heads.decoder.") for k in state)
    conf = ""
    if pred + "sigma_2_lowres.weight" in state:
        conf = "WC2" if pred + "kappa_u_lowres.weight" in state else "WC1"
        if pred + "fine_segm_confidence_lowres.weight" in state:
            conf += "M"
    what = [f"ResNet-{depth}", "DeepLab head" if deeplab else "V1ConvX head"]
    what += [{"WC1": "iid_iso UV confidence", "WC2": "indep_aniso UV confidence"}[conf[:3]]] \
        if conf else []
    what += ["segmentation confidence"] if conf.endswith("M") else []
    what += ["15 coarse channels, no decoder"] if legacy else []
    return zoo_name(depth, deeplab, conf, legacy), ", ".join(what)


def _abbrev(items: List[str], limit: int = 8) -> List[str]:
    return items if len(items) <= limit else items[:limit] + [f"... ({len(items) - limit} more)"]


def load_weights(model: torch.nn.Module, path: str) -> torch.nn.Module:
    """Load ``path`` into ``model`` strictly (AMANet's folded weights are refreshed)."""
    state, _ = read_checkpoint(path)
    model.load_state_dict(match_state_dict(model, state), strict=True)
    logger.info("loaded %s", path)
    return model


def save_checkpoint(model: torch.nn.Module, cfg: Config, path: str,
                    extra: Optional[Dict[str, Any]] = None, half: bool = False) -> None:
    """Write our own format: the state_dict plus the config that builds the model.

    ``half`` stores floating tensors as float16 (half the file; :func:`load_weights` casts them
    back to the model's dtype, so only the weights' rounding changes: ~5e-4 relative)."""
    state = model.state_dict()
    if half:
        state = {k: v.half() if v.is_floating_point() else v for k, v in state.items()}
    payload = {"amanet_format": AMANET_FORMAT, "model": state, "config": cfg.to_dict()}
    if extra:
        payload.update(extra)
    tmp = path + ".tmp"
    torch.save(payload, tmp)
    os.replace(tmp, path)


def config_of_checkpoint(path: str) -> Optional[Config]:
    """The config embedded in one of our checkpoints, if any."""
    from .config import config_from_dict

    _, cfg_dict = read_checkpoint(path)
    return None if cfg_dict is None else config_from_dict(cfg_dict)


def convert(src: str, dst: str, cfg: Optional[Config] = None, half: bool = False) -> Config:
    """Read a Detectron2/AMANet checkpoint, check it against ``cfg``'s model, write ours.

    ``cfg`` may be omitted for one of our own checkpoints (a training checkpoint, for example),
    which embeds its config; optimizer and other training state are dropped. Returns the config.
    """
    from .modeling.model import build_model

    if cfg is None:
        cfg = config_of_checkpoint(src)
        if cfg is None:
            raise CheckpointError(f"{src} does not embed a config: give one (--config)")
    model = build_model(cfg)
    load_weights(model, src)
    save_checkpoint(model, cfg, dst, half=half)
    logger.info("converted %s -> %s (family %s)", src, dst, cfg.family)
    return cfg

