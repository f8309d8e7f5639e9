"""Training checkpoints: written atomically, read with ``torch.load(weights_only=True)`` (tensors and plain data only).

A checkpoint holds everything an exact resume needs (model, optimizer, scheduler, grad scaler, EMA, RNG states,
epoch and position in the epoch) and everything a consumer needs to rebuild the model without the training run
(model name, constructor options, class names, eval preprocessing).
"""

from __future__ import annotations

import os
import random
import tempfile
from pathlib import Path
from typing import Any

import torch

from ..weights.checkpoint import FORMAT, is_train_checkpoint, load_checkpoint, model_from_checkpoint

__all__ = ["FORMAT", "is_train_checkpoint", "load_checkpoint", "model_from_checkpoint", "rng_state", "save_checkpoint"]


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
