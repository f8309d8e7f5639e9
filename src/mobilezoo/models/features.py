"""Features-only networks (timm's ``features_only=True``): a zoo network cut after the last feature level asked for,
returning the feature maps at its ``feature_info`` levels instead of logits.

The levels come from each family's table (:meth:`ZooModel._init_feature_info`): the last module at each reduction,
2, 4, 8, 16 and 32 at the default input, as timm numbers them (index 0 is stride 2). :class:`FeatureNet` keeps the
zoo network's own ``stem`` and ``blocks`` modules under the same names, so its state dict is the full network's
minus ``final_conv`` and the head (and minus the blocks after the last level kept), and any checkpoint of the full
network loads into it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

__all__ = ["DEFAULT_OUT_INDICES", "FeatureInfo", "FeatureNet", "take_indices"]

DEFAULT_OUT_INDICES = 4
"""The last four levels: strides 4, 8, 16, 32 (indices 1-4; index 0 is the stride-2 map)."""


def take_indices(model: Any, indices: int | Sequence[int] | None) -> list[int]:
    """Absolute, sorted ``feature_info`` indices: an int n is the last n levels, None all; negatives count back."""
    n = len(model.feature_info)
    name = getattr(model, "model_name", "") or type(model).__name__
    levels = ", ".join(f"{i}: stride {f['reduction']}" for i, f in enumerate(model.feature_info))
    if indices is None:
        indices = n
    if isinstance(indices, int):
        if not 0 < indices <= n:
            raise ValueError(f"{name} has {n} feature levels ({levels}); cannot take the last {indices}")
        return list(range(n - indices, n))
    out = []
    for i in indices:
        if not isinstance(i, int) or not -n <= i < n:
            raise ValueError(f"out_indices {tuple(indices)}: {name} has {n} feature levels ({levels})")
        out.append(i % n)
    if not out:
        raise ValueError("out_indices is empty")
    return sorted(set(out))


class FeatureInfo:
    """timm's ``FeatureInfo``: the level dicts (``num_chs``, ``reduction``, ``module``, ``index``) and the levels
    a features-only network returns (``out_indices``)."""

    def __init__(self, info: list[dict[str, Any]], out_indices: Sequence[int]) -> None:
        self.info = [dict(f) for f in info]
        self.out_indices = tuple(out_indices)

    def get(self, key: str, idx: int | Sequence[int] | None = None) -> Any:
        if idx is None:
            return [self.info[i][key] for i in self.out_indices]
        if isinstance(idx, int):
            return self.info[idx][key]
        return [self.info[i][key] for i in idx]

    def get_dicts(self, keys: Sequence[str] | None = None, idx: Sequence[int] | None = None) -> list[dict[str, Any]]:
        rows = [self.info[i] for i in (self.out_indices if idx is None else idx)]
        return [dict(r) if keys is None else {k: r[k] for k in keys} for r in rows]

    def channels(self, idx: int | Sequence[int] | None = None) -> Any:
        return self.get("num_chs", idx)

    def reduction(self, idx: int | Sequence[int] | None = None) -> Any:
        return self.get("reduction", idx)

    def module_name(self, idx: int | Sequence[int] | None = None) -> Any:
        return self.get("module", idx)

    def __getitem__(self, item: int) -> dict[str, Any]:
        return self.info[item]

    def __len__(self) -> int:
        return len(self.info)

    def __repr__(self) -> str:
        return f"FeatureInfo(channels={self.channels()}, reduction={self.reduction()})"


def _step(module: str, split_stem: bool) -> int:
    """A level's position in forward order: the stem's step(s) (``stem.conv``, ``stem``), then each block."""
    stem_steps = 2 if split_stem else 1
    if module == "stem.conv":
        return 0
    if module == "stem":
        return stem_steps - 1
    return stem_steps + int(module.split(".")[1])


class FeatureNet(nn.Module):
    """A zoo network's ``stem`` and ``blocks`` (the same modules, under the same names) returning the feature maps
    at ``out_indices`` (indices into the network's ``feature_info``), shallowest first. Scriptable and exportable
    (``torch.export``) like the classifier.

    ``prune``: drop the blocks after the last level kept (what ``features_only`` does); without it the view keeps
    every block (:meth:`ZooModel.forward_intermediates` uses it to return the last block's output too).
    """

    __jit_unused_properties__ = ["pretrained_cfg"]  # noqa: RUF012 (TorchScript reads these two)
    __constants__ = ["split_stem", "stem_steps"]  # noqa: RUF012 (constants: the unused stem branch is not compiled)

    def __init__(self, model: nn.Module, out_indices: int | Sequence[int] | None = None, *, prune: bool = True) -> None:
        super().__init__()
        take = take_indices(model, DEFAULT_OUT_INDICES if out_indices is None else out_indices)
        self.split_stem = isinstance(model.stem, nn.Sequential) and hasattr(model.stem, "pool")
        self.stem_steps = 2 if self.split_stem else 1
        self.take = [_step(model.feature_info[i]["module"], self.split_stem) for i in take]
        self.stem = model.stem
        last_block = max(self.take) - self.stem_steps
        self.blocks = model.blocks[: last_block + 1] if prune else model.blocks
        self.feature_info = FeatureInfo(model.feature_info, take)
        self.model_name = getattr(model, "model_name", "")
        self.default_cfg = dict(getattr(model, "default_cfg", {}))

    @property
    def pretrained_cfg(self) -> dict[str, Any]:
        return self.default_cfg

    def levels(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """The last module's output and the feature maps asked for."""
        out: list[torch.Tensor] = []
        if self.split_stem:
            x = self.stem.conv(x)
            if 0 in self.take:
                out.append(x)
            x = self.stem.pool(x)
        else:
            x = self.stem(x)
        if self.stem_steps - 1 in self.take:
            out.append(x)
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i + self.stem_steps in self.take:
                out.append(x)
        return x, out

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.levels(x)[1]
