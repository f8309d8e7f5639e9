"""Training checkpoints: written atomically, read with ``torch.load(weights_only=True)`` (tensors and plain data only).

A checkpoint holds everything an exact resume needs (model, optimizer, scheduler, grad scaler, EMA, RNG states,
epoch and position in the epoch) and everything a consumer needs to rebuild the model without the training run
(model name, constructor options, class names, eval preprocessing).
"""

from __future__ import annotations

import io
import os
import pickle
import random
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

__all__ = ["FORMAT", "is_train_checkpoint", "load_checkpoint", "model_from_checkpoint", "rng_state", "save_checkpoint"]

FORMAT = "mobilezoo-train/1"


def save_checkpoint(state: dict[str, Any], path: str | Path) -> Path:
    """Atomic: a crash while writing never leaves a half file under ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        torch.save({"format": FORMAT, **state}, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    from ..weights.formats import CheckpointError, UnsafeCheckpointError

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
    from ..models import create_model

    if not isinstance(ck, dict):
        ck = load_checkpoint(ck)
    model = create_model(ck["model_name"], num_classes=ck["num_classes"], **ck.get("model_kwargs", {}))
    state = ck[weights] if ck.get(weights) is not None else ck["model"]
    model.load_state_dict(state)
    model.default_cfg = {**model.default_cfg, **ck.get("default_cfg", {})}
    model.class_names = list(ck.get("class_names") or [])
    return model.eval()


def rng_state() -> dict[str, Any]:
    st: dict[str, Any] = {"torch": torch.get_rng_state(), "python": list(_py_state())}
    if torch.cuda.is_available():
        st["cuda"] = torch.cuda.get_rng_state_all()
    return st


def _py_state():
    version, internal, gauss = random.getstate()
    return version, list(internal), gauss


def set_rng_state(st: dict[str, Any]) -> None:
    torch.set_rng_state(st["torch"])
    version, internal, gauss = st["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in st and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(st["cuda"])
