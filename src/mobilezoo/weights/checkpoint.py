"""Reading mobilezoo training checkpoints (``.ckpt``) for inference: the file is read with
``torch.load(weights_only=True)`` (tensors and plain data only) and holds what a consumer needs to rebuild the model
without the training run (model name, constructor options, class names, eval preprocessing). Writing them, and the
resume state they also carry, is the trainer's (:mod:`mobilezoo.train.checkpoint`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from ..models.registry import build_model
from .convert import CheckpointMismatchError, match_state_dict
from .formats import CheckpointError, torch_load

__all__ = [
    "FORMAT",
    "is_train_checkpoint",
    "load_checkpoint",
    "load_checkpoint_model",
    "model_from_checkpoint",
    "read_train_checkpoint",
]

FORMAT = "mobilezoo-train/1"


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """A mobilezoo training checkpoint; anything else (missing, another format, corrupt, unsafe) is a one-line
    error."""
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"{path} is a folder, not a training checkpoint (.ckpt)")
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    ck = read_train_checkpoint(path)
    if ck is None:
        raise CheckpointError(f"{path}: not a mobilezoo training checkpoint (.ckpt written by `mobilezoo train`)")
    return ck


def read_train_checkpoint(path: str | Path) -> dict[str, Any] | None:
    """The training checkpoint in ``path``, or None for a file in another format (a state dict, .safetensors,
    .pdparams...). A PyTorch file that cannot be read safely raises :class:`CheckpointError`."""
    path = Path(path)
    with path.open("rb") as f:
        if f.read(2) != b"PK":  # torch.save's zip format; anything else is not ours
            return None
    ck = torch_load(path)
    return ck if is_train_checkpoint(ck) else None


def is_train_checkpoint(obj: Any) -> bool:
    return isinstance(obj, dict) and obj.get("format") == FORMAT


def model_from_checkpoint(ck: dict[str, Any] | str | Path, weights: str = "model", **overrides: Any) -> nn.Module:
    """Rebuild the trained model (name, options, classes, eval preprocessing) from a checkpoint; ``overrides`` are
    builder options that replace the recorded ones (e.g. ``drop_rate``)."""
    source = "checkpoint" if isinstance(ck, dict) else str(ck)
    if not isinstance(ck, dict):
        ck = load_checkpoint(ck)
    model = build_model(ck["model_name"], num_classes=ck["num_classes"], **{**ck.get("model_kwargs", {}), **overrides})
    state = ck[weights] if ck.get(weights) is not None else ck["model"]
    mapped, report = match_state_dict(model, state)
    if not report.ok:
        raise CheckpointMismatchError(f"{source} does not fit {ck['model_name']}: {report.describe()}")
    model.load_state_dict(mapped, strict=False)  # complete but for num_batches_tracked (checked above)
    model.default_cfg = {**model.default_cfg, **ck.get("default_cfg", {})}
    model.class_names = list(ck.get("class_names") or [])
    return model.eval()


def load_checkpoint_model(name: str | None, checkpoint: str | Path, num_classes: int | None = None) -> nn.Module:
    """A zoo model with a checkpoint's weights, in eval mode: :func:`mobilezoo.weights.load_model`."""
    from . import load_model

    return load_model(name, checkpoint, num_classes=num_classes)
