"""Profiler: params, MACs (FLOPs = 2 x MACs), per-layer costs, memory access cost, peak activations, file sizes."""

from __future__ import annotations

from torch import nn

from .counter import (
    LayerStats,
    ProfileResult,
    block_table,
    count_macs,
    count_params,
    file_sizes,
    profile_model,
)

__all__ = [
    "LayerStats",
    "ProfileResult",
    "block_table",
    "count_macs",
    "count_params",
    "file_sizes",
    "profile",
    "profile_model",
]


def profile(model: str | nn.Module, input_size: int | tuple[int, int] = 224, batch_size: int = 1) -> ProfileResult:
    """Profile a zoo model by name (or any ``nn.Module``) on one batch of ``input_size`` images."""
    if isinstance(model, str):
        from ..factory import create_model

        model = create_model(model, weights="random")  # counts do not depend on weight values
    return profile_model(model, input_size=input_size, batch_size=batch_size)
