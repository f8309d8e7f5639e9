"""Build the metadata table that :mod:`mobilezoo.metadata` ships and reads without torch, from the registry, the
weights catalog and the built networks (``scripts/make_model_table.py`` writes it; a test rebuilds and compares)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

from torch import nn

from ..factory import create_model
from ..models.registry import ModelEntry, get_entry, list_models
from ..reference import reference_table
from ..weights.catalog import weights_info
from ..weights.hub import PADDLE_HOST, paddle_url
from .counter import block_table, profile_model

__all__ = ["arch_row", "build_table", "model_row"]

INPUT_SIZE = 224


@contextlib.contextmanager
def _default_host() -> Iterator[None]:
    """URLs on PaddleClas's own host while the table is built (``metadata.weights_url`` applies a mirror later)."""
    saved = os.environ.pop("MOBILEZOO_WEIGHTS_HOST", None)
    try:
        yield
    finally:
        if saved is not None:
            os.environ["MOBILEZOO_WEIGHTS_HOST"] = saved


def _reference_name(e: ModelEntry) -> str | None:
    """The row of PaddleClas's published table that describes this name (as ``reference.reference_row``)."""
    if not (e.paddle_arch or e.weights_tag):
        return None
    table = reference_table()
    return next((n for n in (e.name, *e.aliases) if n in table), None)


def _weights(name: str) -> dict[str, Any] | None:
    w = weights_info(name)
    if w is None:
        return None
    t = w.transforms
    return {
        "url": w.url,
        "file_name": w.file_name,
        "top1": w.top1,
        "top5": w.top5,
        "params": w.params,
        "macs": w.macs,
        "sha256": w.sha256,
        "dataset": w.dataset,
        "license": w.license,
        "eval": {"resize_short": t.resize_short, "interpolation": t.interpolation, "crop_size": t.crop_size},
    }


def model_row(name: str) -> dict[str, Any]:
    """Everything ``list`` and ``info`` say about one registry name that is not a count of its network (its
    torchvision / timm peers: :mod:`mobilezoo.peers`, torch-free)."""
    with _default_host():
        e = get_entry(name)
        return {
            "name": e.name,
            "family": e.family,
            "arch": e.arch,
            "aliases": list(e.aliases),
            "config": repr(e.config),
            "source": e.source,
            "paddle_arch": e.paddle_arch,
            "weights_tag": e.weights_tag,
            "notes": e.notes,
            "reference": _reference_name(e),
            "pretrained_url": paddle_url(e),
            "weights": _weights(e.name),
        }


def _json(v: Any) -> Any:
    if isinstance(v, (tuple, list)):
        return [_json(x) for x in v]
    if isinstance(v, dict):
        return {k: _json(x) for k, x in v.items()}
    return v


def arch_row(model: nn.Module, input_size: int = INPUT_SIZE) -> dict[str, Any]:
    """A built network's counts at ``input_size`` (params, MACs, FLOPs, memory, sizes, per-block table)."""
    prof = profile_model(model, input_size=input_size)
    return _json(
        {
            "params": prof.params,
            "macs": prof.macs,
            "flops": prof.flops,
            "mem_access_bytes": prof.mem_access_bytes,
            "peak_activation_bytes": prof.peak_activation_bytes,
            "size_bytes": [prof.size_fp32_bytes, prof.size_fp16_bytes, prof.size_int8_bytes],
            "num_features": model.num_features,
            "default_cfg": model.default_cfg,
            "blocks": block_table(model, prof),
        }
    )


def build_table(archs: bool = True) -> dict[str, Any]:
    """The whole table (``archs=False``: without the per-architecture counts, which build every network)."""
    names = list_models()
    return {
        "generated_by": "scripts/make_model_table.py",
        "input_size": INPUT_SIZE,
        "weights_host": PADDLE_HOST,
        "models": [model_row(n) for n in names],
        "archs": {a: arch_row(create_model(a, weights="random")) for a in list_models(archs_only=True)}
        if archs
        else {},
    }
