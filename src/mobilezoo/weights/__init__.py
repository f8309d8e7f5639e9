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

from ..models.registry import ModelEntry, get_entry
from .convert import CheckpointMismatchError, MatchReport, match_state_dict, paddle_to_torch
from .formats import CheckpointError, UnsafeCheckpointError, read_pdparams, read_state_dict

__all__ = [
    "CONFIG_NAME",
    "WEIGHTS_NAME",
    "CheckpointError",
    "CheckpointMismatchError",
    "UnsafeCheckpointError",
    "apply_pretrained",
    "load_weights",
    "read_config",
    "read_pdparams",
    "read_state_dict",
    "save_pretrained",
]

log = logging.getLogger("mobilezoo.weights")
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"


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


def _resolve(pretrained: Any, entry: ModelEntry) -> Path:
    if pretrained is True:
        from .hub import fetch_pretrained

        return fetch_pretrained(entry)  # converted safetensors, in our names
    s = str(pretrained)
    if s.startswith(("http://", "https://")):
        from .hub import download

        return download(s)
    return Path(s).expanduser()


def apply_pretrained(
    entry: ModelEntry, pretrained: Any, *, num_classes: int = 1000, in_chans: int = 3, **kwargs: Any
) -> nn.Module:
    """``create_model(..., pretrained=...)``: build, then load True / a file / URL / a ``save_pretrained`` dir."""
    if isinstance(pretrained, str) and pretrained in ("torchvision", "timm"):
        from .ecosystems import fetch_foreign

        path, source = fetch_foreign(entry, pretrained), pretrained
    else:
        path, source = _resolve(pretrained, entry), "auto"
    if path.is_dir():
        return _load_pretrained_dir(entry, path, num_classes=num_classes, in_chans=in_chans, **kwargs)
    model = entry.builder(entry.config, num_classes=num_classes, in_chans=in_chans, **kwargs)
    model.model_name = entry.name
    load_weights(model, entry, path, source=source)
    return model


def save_pretrained(model: nn.Module, directory: str | Path, *, class_names: list[str] | None = None) -> Path:
    """Write ``model.safetensors`` + ``config.json`` (model name, classes, default_cfg) into ``directory``.

    ``create_model(name, pretrained=directory)`` (or ``load_pretrained(directory)``) rebuilds it.
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


def _load_pretrained_dir(entry: ModelEntry, directory: Path, *, num_classes: int, in_chans: int, **kwargs) -> nn.Module:
    cfg = read_config(directory)
    saved = get_entry(cfg["model_name"])
    if saved.arch != entry.arch:
        raise CheckpointMismatchError(f"{directory} holds a {saved.name}, not a {entry.name}")
    model = entry.builder(entry.config, num_classes=num_classes, in_chans=in_chans, **kwargs)
    model.model_name = entry.name
    load_weights(model, entry, directory / WEIGHTS_NAME, source="mobilezoo")
    if cfg.get("class_names") and num_classes == cfg["num_classes"]:
        model.class_names = list(cfg["class_names"])
    return model
