"""Reading mobilezoo training checkpoints (``.ckpt``) for inference: the file is read with
``torch.load(weights_only=True)`` (tensors and plain data only) and holds what a consumer needs to rebuild the model
without the training run (model name, constructor options, class names, eval preprocessing). Writing them, and the
resume state they also carry, is the trainer's (:mod:`mobilezoo.train.checkpoint`)."""

from __future__ import annotations

import io
import pickle
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..models.registry import build_model, get_entry
from .formats import CheckpointError, UnsafeCheckpointError

__all__ = ["FORMAT", "is_train_checkpoint", "load_checkpoint", "load_checkpoint_model", "model_from_checkpoint"]

FORMAT = "mobilezoo-train/1"


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        ck = torch.load(io.BytesIO(path.read_bytes()), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise UnsafeCheckpointError(f"{path}: refused by torch.load(weights_only=True) ({e})") from None
    except (RuntimeError, EOFError, ValueError) as e:
        raise CheckpointError(f"{path}: not a readable checkpoint ({e})") from None
    if not is_train_checkpoint(ck):
        raise CheckpointError(f"{path}: not a mobilezoo training checkpoint")
    return ck


def is_train_checkpoint(obj: Any) -> bool:
    return isinstance(obj, dict) and obj.get("format") == FORMAT


def model_from_checkpoint(ck: dict[str, Any] | str | Path, weights: str = "model") -> nn.Module:
    """Rebuild the trained model (name, options, classes, eval preprocessing) from a checkpoint."""
    if not isinstance(ck, dict):
        ck = load_checkpoint(ck)
    model = build_model(ck["model_name"], num_classes=ck["num_classes"], **ck.get("model_kwargs", {}))
    state = ck[weights] if ck.get(weights) is not None else ck["model"]
    model.load_state_dict(state)
    model.default_cfg = {**model.default_cfg, **ck.get("default_cfg", {})}
    model.class_names = list(ck.get("class_names") or [])
    return model.eval()


def load_checkpoint_model(name: str, checkpoint: str | Path, num_classes: int | None = None) -> nn.Module:
    """A zoo model with a checkpoint's weights; the class count and names come from the checkpoint when it has them."""
    from . import apply_pretrained, read_config, read_state_dict

    p = Path(checkpoint)
    if p.is_file() and p.suffix == ".ckpt":
        ck = load_checkpoint(p)
        if get_entry(ck["model_name"]).arch != get_entry(name).arch:
            raise ValueError(f"{p} holds a {ck['model_name']}, not a {name}")
        return model_from_checkpoint(ck)
    if p.is_dir():
        cfg = read_config(p)
        return apply_pretrained(get_entry(name), p, num_classes=num_classes or cfg["num_classes"]).eval()
    if num_classes is None:
        src, _ = read_state_dict(p)
        fc = next((v for k, v in src.items() if k.endswith("head.fc.weight")), None)
        num_classes = int(fc.shape[0]) if fc is not None else 1000
    return apply_pretrained(get_entry(name), p, num_classes=num_classes).eval()
