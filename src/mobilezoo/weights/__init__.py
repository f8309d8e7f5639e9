"""Pretrained weights: safe reading, PaddleClas conversion, loading into zoo models, save/load of fine-tuned models."""

from __future__ import annotations

import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..models.base import default_cfg
from ..models.registry import ModelEntry, build_model, get_entry, list_models
from .checkpoint import model_from_checkpoint, read_train_checkpoint
from .choice import (
    FOREIGN,
    PUBLISHED,
    RANDOM,
    NoPublishedWeightsError,
    WeightsChoice,
    model_name_in,
    resolve_weights,
    resolve_weights_path,
    weights_keyword,
)
from .convert import CheckpointMismatchError, MatchReport, match_state_dict, paddle_classes, paddle_to_torch
from .formats import CheckpointError, UnsafeCheckpointError, detect_format, read_pdparams, read_state_dict

__all__ = [
    "CONFIG_NAME",
    "WEIGHTS_NAME",
    "CheckpointError",
    "CheckpointMismatchError",
    "NoPublishedWeightsError",
    "UnsafeCheckpointError",
    "WeightsChoice",
    "apply_pretrained",
    "load_model",
    "load_weights",
    "read_config",
    "read_pdparams",
    "read_state_dict",
    "resolve_weights",
    "save_pretrained",
]

log = logging.getLogger("mobilezoo.weights")
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
PREPROCESS_KEYS = ("input_size", "resize_short", "crop_size", "crop_pct", "interpolation", "mean", "std")


def _looks_paddle(src: dict[str, torch.Tensor]) -> bool:
    return any(k.endswith("._mean") or k.endswith("._variance") for k in src)


def _adapt_in_chans(src_w: torch.Tensor, in_chans: int) -> torch.Tensor:
    """Stem weights for ``in_chans`` inputs from an RGB checkpoint (timm's rule: sum for 1, tile and rescale else)."""
    if in_chans == 1:
        return src_w.sum(dim=1, keepdim=True)
    reps = -(-in_chans // src_w.shape[1])
    return src_w.repeat(1, reps, 1, 1)[:, :in_chans] * (src_w.shape[1] / in_chans)


def load_weights(model: nn.Module, entry: ModelEntry, path: str | Path, *, source: str = "auto") -> MatchReport:
    """Load a checkpoint file into ``model`` (built for ``entry``), converting from PaddleClas names if needed.

    A classifier whose class count differs from the model's is skipped (the model keeps its freshly initialised
    classifier, and a warning says so); any other mismatch raises :class:`CheckpointMismatchError` listing the
    missing, unexpected and mis-shaped tensors.
    """
    src, fmt = read_state_dict(path)
    return _load_tensors(model, entry, path, src, fmt, source)


def _load_tensors(
    model: nn.Module, entry: ModelEntry, path: str | Path, src: dict[str, torch.Tensor], fmt: str, source: str
) -> MatchReport:
    if source == "auto":
        if fmt == "pdparams" or _looks_paddle(src):
            source = "paddle"
        elif "conv1.0.weight" in src and any(k.startswith("stage2.0.branch") for k in src):
            source = "torchvision"  # torchvision's ShuffleNetV2 layout
        else:
            source = "mobilezoo"
    if source == "paddle":
        mapped, report = paddle_to_torch(model, entry, src)
    elif source == "mobilezoo":
        mapped, report = match_state_dict(model, src)
    else:
        from .ecosystems import convert_foreign  # torchvision / timm checkpoints

        mapped, report = convert_foreign(model, entry, src, source)

    cfg = getattr(model, "default_cfg", {})
    classifier, stem = cfg.get("classifier", "head.fc") + ".", cfg.get("first_conv", "stem.conv") + ".weight"
    keep = []
    for theirs, ours, src_shape, own_shape in report.mismatched:
        if ours.startswith(classifier):
            log.warning(
                "%s: checkpoint classifier %s does not fit %s; %s re-initialised", path, src_shape, own_shape, ours
            )
        elif ours == stem and len(src_shape) == 4 and src_shape[0] == own_shape[0] and src_shape[2:] == own_shape[2:]:
            mapped[ours] = _adapt_in_chans(src[theirs], own_shape[1])
            log.warning("%s: stem weights adapted from %d to %d input channels", path, src_shape[1], own_shape[1])
        else:
            keep.append((theirs, ours, src_shape, own_shape))
    report.mismatched = keep
    if not report.ok:
        raise CheckpointMismatchError(
            f"{path} does not fit {entry.name} ({fmt}, read as {source} names): {report.describe()}"
        )
    model.load_state_dict(mapped, strict=False)
    return report


def _fetch(choice: WeightsChoice, entry: ModelEntry) -> tuple[Path, str]:
    """The local file or folder of a choice (published and URL weights downloaded once), and its name scheme."""
    if choice.kind == PUBLISHED:
        from .hub import fetch_pretrained

        return fetch_pretrained(entry), "mobilezoo"  # converted safetensors, in our names
    if choice.kind in FOREIGN:
        from .ecosystems import fetch_foreign

        return fetch_foreign(entry, choice.kind), choice.kind
    if choice.kind == "url":
        from .hub import download

        return download(choice.source), "auto"
    return choice.path, "auto"


def _classes_in(entry: ModelEntry, src: dict[str, torch.Tensor], fmt: str, **kwargs: Any) -> int | None:
    """The class count of a state dict's classifier: PaddleClas's (by the keymap), else ours or torchvision's."""
    if fmt == "pdparams" or _looks_paddle(src):
        return paddle_classes(build_model(entry.name, **kwargs), entry, src)
    w = src.get(default_cfg()["classifier"] + ".weight")
    if w is None:
        w = src.get("fc.weight")
    return int(w.shape[0]) if w is not None and w.ndim >= 2 else None


def apply_pretrained(
    entry: ModelEntry, pretrained: Any, *, num_classes: int | None = None, in_chans: int = 3, **kwargs: Any
) -> nn.Module:
    """Build ``entry`` with the weights asked for (:mod:`mobilezoo.weights.choice`: a :class:`WeightsChoice`, or
    anything :func:`resolve_weights` reads). ``num_classes=None``: the checkpoint's class count (1000 if it has no
    classifier); another count re-initialises the classifier, with a warning."""
    choice = pretrained if isinstance(pretrained, WeightsChoice) else resolve_weights(entry.name, pretrained)
    if choice.kind == RANDOM:
        return build_model(entry.name, num_classes=1000 if num_classes is None else num_classes, in_chans=in_chans,
                           **kwargs)  # fmt: skip
    path, source = _fetch(choice, entry)
    if path.is_dir():
        return _load_pretrained_dir(entry, path, num_classes=num_classes, in_chans=in_chans, **kwargs)
    ck = read_train_checkpoint(path) if detect_format(path) == "torch" else None
    if ck is not None:
        return _from_train_checkpoint(entry, path, ck, num_classes, in_chans, **kwargs)
    src, fmt = read_state_dict(path)
    named = model_name_in(path) if fmt == "safetensors" else None  # what mobilezoo's own files record
    if named and named in list_models() and get_entry(named).arch != entry.arch:
        raise CheckpointMismatchError(f"{path} holds a {named}, not a {entry.name}")
    if num_classes is None:
        num_classes = _classes_in(entry, src, fmt, in_chans=in_chans, **kwargs) or 1000
    model = build_model(entry.name, num_classes=num_classes, in_chans=in_chans, **kwargs)
    _load_tensors(model, entry, path, src, fmt, source)
    return model


def load_model(name: str | None, weights: Any = None, *, num_classes: int | None = None) -> nn.Module:
    """``create_model(name, weights=weights)`` in eval mode, for the commands: ``name=None`` takes the model that a
    checkpoint records (training ``.ckpt``, ``save_pretrained`` folder, mobilezoo ``.safetensors``)."""
    if name is None:
        if weights is None or weights_keyword(weights) is not None:
            raise ValueError("give the model name (--model NAME), or a checkpoint that records it (--ckpt PATH)")
        name = model_name_in(resolve_weights_path(weights))
        if name is None:
            raise ValueError(f"{weights} does not say which model it holds: give the model name (--model NAME)")
    return apply_pretrained(get_entry(name), resolve_weights(name, weights), num_classes=num_classes).eval()


def _from_train_checkpoint(
    entry: ModelEntry, path: Path, ck: dict[str, Any], num_classes: int | None, in_chans: int, **kwargs: Any
) -> nn.Module:
    if get_entry(ck["model_name"]).arch != entry.arch:
        raise CheckpointMismatchError(f"{path} holds a {ck['model_name']}, not a {entry.name}")
    if in_chans != 3:
        raise ValueError(f"{path}: in_chans={in_chans} does not apply to a training checkpoint (3-channel)")
    model = model_from_checkpoint(ck, **kwargs).train()
    model.model_name = entry.name
    if num_classes is not None and num_classes != model.num_classes:
        log.warning("%s: %d classes, not %d; classifier re-initialised", path, model.num_classes, num_classes)
        model.reset_classifier(num_classes)
        model.class_names = []
    return model


def save_pretrained(model: nn.Module, directory: str | Path, *, class_names: list[str] | None = None) -> Path:
    """Write ``model.safetensors`` + ``config.json`` (model name, classes, default_cfg, the layout's
    ``small_input`` level) into ``directory``.

    ``create_model(name, weights=directory)`` rebuilds it (with its class names, eval preprocessing and layout).
    """
    from safetensors.torch import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    name = getattr(model, "model_name", "")
    if not name:
        raise ValueError("model has no model_name; build it with mobilezoo.create_model")
    cfg = {
        "model_name": name,
        "num_classes": model.num_classes,
        "in_chans": _in_chans(model),
        "default_cfg": model.default_cfg,
        "class_names": class_names,
        "model_kwargs": {"small_input": int(getattr(model, "small_input", 0))},
        "format": "mobilezoo/1",
    }
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    _atomic_write(directory / WEIGHTS_NAME, lambda p: save_file(state, str(p), metadata={"model_name": name}))
    _atomic_write(directory / CONFIG_NAME, lambda p: p.write_text(json.dumps(cfg, indent=2, default=list)))
    return directory


def _in_chans(model: nn.Module) -> int:
    first = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
    return first.in_channels


def _atomic_write(path: Path, write) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def read_config(directory: str | Path) -> dict[str, Any]:
    p = Path(directory) / CONFIG_NAME
    if not p.is_file():
        raise CheckpointError(f"{directory}: no {CONFIG_NAME}; not a save_pretrained directory")
    return json.loads(p.read_text())


def _load_pretrained_dir(
    entry: ModelEntry, directory: Path, *, num_classes: int | None, in_chans: int, **kwargs
) -> nn.Module:
    cfg = read_config(directory)
    saved = get_entry(cfg["model_name"])
    if saved.arch != entry.arch:
        raise CheckpointMismatchError(f"{directory} holds a {saved.name}, not a {entry.name}")
    num_classes = cfg["num_classes"] if num_classes is None else num_classes
    kwargs = {**cfg.get("model_kwargs", {}), **kwargs}  # the layout it was saved with, unless asked otherwise
    model = build_model(entry.name, num_classes=num_classes, in_chans=in_chans, **kwargs)
    load_weights(model, entry, directory / WEIGHTS_NAME, source="mobilezoo")
    saved_cfg = cfg.get("default_cfg") or {}
    model.default_cfg = {**model.default_cfg, **{k: saved_cfg[k] for k in PREPROCESS_KEYS if k in saved_cfg}}
    if cfg.get("class_names") and num_classes == cfg["num_classes"]:
        model.class_names = list(cfg["class_names"])
    return model
