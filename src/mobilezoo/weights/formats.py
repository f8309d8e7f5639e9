"""Reading checkpoint files safely: ``.pdparams`` (without paddle), ``.pt/.pth``, ``.safetensors``.

Nothing here unpickles arbitrary objects. A ``.pdparams`` file is a plain pickle of ``{name: numpy.ndarray}``; it is
read by :class:`RestrictedUnpickler`, which resolves only the numpy array-reconstruction globals and refuses every
other global (``os.system``, ``builtins.eval``, ...) with :class:`UnsafeCheckpointError`. ``.pt/.pth`` go through
``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import io
import pickle
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..data.safe_pickle import RestrictedUnpickler as _SafeUnpickler

__all__ = [
    "CheckpointError",
    "RestrictedUnpickler",
    "UnsafeCheckpointError",
    "detect_format",
    "read_pdparams",
    "read_state_dict",
    "torch_load",
]

PADDLE_NAME_TABLE_KEY = "StructuredToParameterName@@"


class CheckpointError(ValueError):
    """A checkpoint that cannot be read or does not fit the model."""


class UnsafeCheckpointError(CheckpointError):
    """A pickle that asks for something other than numpy arrays and plain containers."""


class RestrictedUnpickler(_SafeUnpickler):
    """Unpickler that only builds numpy arrays, dicts, lists, tuples and plain scalars (refusals raise
    :class:`UnsafeCheckpointError`)."""

    error = UnsafeCheckpointError


def _to_tensor(value: Any, key: str, path: Path) -> torch.Tensor:
    if isinstance(value, tuple) and len(value) == 2 and isinstance(value[0], str):
        value = value[1]  # paddle.save of a bare tensor: (internal_name, ndarray)
    if isinstance(value, np.ndarray):
        if value.dtype == object:
            raise CheckpointError(f"{path}: tensor {key!r} has dtype object")
        return torch.from_numpy(np.ascontiguousarray(value))
    if isinstance(value, (int, float, np.generic)):
        return torch.as_tensor(value)
    raise CheckpointError(f"{path}: entry {key!r} is a {type(value).__name__}, not an array")


def read_pdparams(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a PaddlePaddle ``.pdparams`` state dict without paddle, as ``{structured_name: tensor}``."""
    path = Path(path)
    try:
        with path.open("rb") as f:
            obj = RestrictedUnpickler(f).load()
    except UnsafeCheckpointError:
        raise
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError) as e:
        raise CheckpointError(f"{path}: corrupt or truncated .pdparams file ({type(e).__name__}: {e})") from None
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path}: expected a dict of tensors, found {type(obj).__name__}")
    out: dict[str, torch.Tensor] = {}
    for k, v in obj.items():
        if k == PADDLE_NAME_TABLE_KEY:
            continue
        out[str(k)] = _to_tensor(v, str(k), path)
    if not out:
        raise CheckpointError(f"{path}: contains no tensors")
    return out


def detect_format(path: str | Path) -> str:
    """'pdparams' | 'torch' | 'safetensors', from the suffix, else from the first bytes; anything else is a
    :class:`CheckpointError` naming the formats read."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".pdparams":
        return "pdparams"
    if suffix == ".safetensors":
        return "safetensors"
    if suffix in (".pt", ".pth", ".bin", ".ckpt", ".tar"):
        return "torch"
    with path.open("rb") as f:
        head = f.read(9)
    if head[:2] == b"PK":
        return "torch"  # torch's zip format
    if head[:1] == b"\x80":
        return "pdparams"  # a bare pickle
    if len(head) == 9 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") < path.stat().st_size:
        return "safetensors"  # an 8-byte header length, then the JSON header
    raise CheckpointError(
        f"{path}: unknown checkpoint format (expected .pdparams, .pt/.pth, .safetensors, a save_pretrained folder "
        "or a training .ckpt)"
    )


def _unwrap(obj: Any, path: Path) -> dict[str, torch.Tensor]:
    """Accept a bare state dict or a training checkpoint holding one (``model``/``state_dict``/``ema``)."""
    if isinstance(obj, dict):
        for key in ("state_dict", "model", "model_state", "model_state_dict", "module"):
            inner = obj.get(key)
            if isinstance(inner, dict) and inner and all(isinstance(v, torch.Tensor) for v in inner.values()):
                obj = inner
                break
        tensors = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
        if tensors:
            return {k.removeprefix("module."): v for k, v in tensors.items()}
    raise CheckpointError(f"{path}: no state dict found (top-level type {type(obj).__name__})")


def read_state_dict(path: str | Path) -> tuple[dict[str, torch.Tensor], str]:
    """Read any supported checkpoint file; returns ``(tensors, format)``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    fmt = detect_format(path)
    if fmt == "pdparams":
        return read_pdparams(path), fmt
    if fmt == "safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path)), fmt
        except (SafetensorError, OSError) as e:
            raise CheckpointError(f"{path}: corrupt or truncated .safetensors file ({e})") from None
    return _unwrap(torch_load(path), path), fmt


def torch_load(path: Path) -> Any:
    """``torch.load(weights_only=True)`` with one-line errors: an unsafe pickle refused (naming the object it asks
    for), a corrupt or truncated file (never PyTorch's advice to load it with ``weights_only=False``)."""
    try:
        return torch.load(io.BytesIO(path.read_bytes()), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        glob = re.search(r"GLOBAL (\S+)", str(e), re.IGNORECASE)
        if glob:
            raise UnsafeCheckpointError(
                f"{path}: refused: the pickle asks for the Python object {glob.group(1)}, and only tensors and plain "
                "data are loaded (weights_only)"
            ) from None
        why = re.search(r"WeightsUnpickler error: \s*([^\n]+)", str(e))
        raise CheckpointError(
            f"{path}: corrupt or not a PyTorch checkpoint ({why.group(1).strip() if why else 'unreadable pickle'})"
        ) from None
    except (RuntimeError, EOFError, ValueError, OSError) as e:
        first = str(e).split(". ")[0].strip() or type(e).__name__
        raise CheckpointError(f"{path}: corrupt or truncated PyTorch checkpoint ({first})") from None
