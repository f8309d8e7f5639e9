"""Map foreign state dicts (PaddleClas today; torchvision/timm plug in the same way) onto zoo models.

Each family file declares ``paddle_keymap(model) -> {our module path: PaddleClas module path}``; this file expands
it to tensors by module type, so the per-family knowledge is only the module names:

- ``ConvBNAct``: ``conv.weight`` <- ``{p}.conv.weight`` or ``{p}._conv.weight``; BN ``weight/bias`` and
  ``running_mean/running_var`` <- ``_mean/_variance`` under ``{p}.bn`` or ``{p}._batch_norm``;
- ``Conv2d``: ``weight/bias``; a 2-D source (PaddleClas Linear, stored [in, out]) is transposed to ``[out, in, 1, 1]``;
- ``Linear``: ``weight`` transposed from Paddle's ``[in, out]``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from ..models.layers import ConvBNAct
from ..models.registry import ModelEntry
from .formats import CheckpointError

__all__ = ["CheckpointMismatchError", "MatchReport", "match_state_dict", "paddle_classes", "paddle_to_torch"]


class CheckpointMismatchError(CheckpointError):
    """The checkpoint does not fit the model; the message lists missing, unexpected and mis-shaped tensors."""


@dataclass
class MatchReport:
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[tuple[str, str, tuple[int, ...], tuple[int, ...]]] = field(default_factory=list)
    """(source name, our name, source shape, model shape)"""

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched)

    def describe(self, limit: int = 12) -> str:
        parts = []
        shapes = [f"{s} {list(ss)} (model {o} {list(os)})" for s, o, ss, os in self.mismatched]
        for title, items in (("missing", self.missing), ("unexpected", self.unexpected), ("wrong shape", shapes)):
            if items:
                shown = ", ".join(items[:limit]) + (f", ... ({len(items) - limit} more)" if len(items) > limit else "")
                parts.append(f"{len(items)} {title}: {shown}")
        return "; ".join(parts)


_BN_SOURCES = {"weight": "weight", "bias": "bias", "running_mean": "_mean", "running_var": "_variance"}


def _pick(src: dict[str, torch.Tensor], prefixes: tuple[str, ...], leaf: str) -> str:
    names = [f"{p}.{leaf}" for p in prefixes]
    return next((n for n in names if n in src), names[0])


def _expand(model: nn.Module, keymap: dict[str, str], src: dict[str, torch.Tensor]) -> dict[str, tuple[str, str]]:
    """our tensor name -> (source tensor name, conversion kind)."""
    out: dict[str, tuple[str, str]] = {}
    for ours, theirs in keymap.items():
        mod = model.get_submodule(ours)
        if isinstance(mod, ConvBNAct):
            out[f"{ours}.conv.weight"] = (_pick(src, (f"{theirs}.conv", f"{theirs}._conv"), "weight"), "same")
            bn = (f"{theirs}.bn", f"{theirs}._batch_norm")
            for t, s in _BN_SOURCES.items():
                out[f"{ours}.bn.{t}"] = (_pick(src, bn, s), "same")
        elif isinstance(mod, nn.Conv2d):
            out[f"{ours}.weight"] = (f"{theirs}.weight", "conv")
            if mod.bias is not None:
                out[f"{ours}.bias"] = (f"{theirs}.bias", "same")
        elif isinstance(mod, nn.Linear):
            out[f"{ours}.weight"] = (f"{theirs}.weight", "linear")
            out[f"{ours}.bias"] = (f"{theirs}.bias", "same")
        elif isinstance(mod, nn.Identity):
            continue  # a classifier removed with num_classes=0
        else:
            raise TypeError(f"paddle keymap entry {ours!r} is a {type(mod).__name__}; expected ConvBNAct/Conv2d/Linear")
    return out


def _convert(t: torch.Tensor, kind: str, target_shape: torch.Size) -> torch.Tensor:
    if kind == "linear" and t.ndim == 2:
        t = t.t()
    elif kind == "conv" and t.ndim == 2:
        t = t.t().reshape(target_shape)
    return t.contiguous()


def paddle_classes(model: nn.Module, entry: ModelEntry, src: dict[str, torch.Tensor]) -> int | None:
    """The class count of a PaddleClas state dict for ``entry``: the columns of the tensor its keymap reads the
    classifier from (a PaddleClas Linear is stored ``[in, out]``); None if it has none."""
    if entry.paddle_keymap is None:
        return None
    ours = getattr(model, "default_cfg", {}).get("classifier", "head.fc") + ".weight"
    theirs = _expand(model, entry.paddle_keymap(model), src).get(ours, ("",))[0]
    t = src.get(theirs)
    return int(t.shape[1]) if t is not None and t.ndim == 2 else None


def paddle_to_torch(
    model: nn.Module, entry: ModelEntry, src: dict[str, torch.Tensor]
) -> tuple[dict[str, torch.Tensor], MatchReport]:
    """Translate a PaddleClas state dict into ``model``'s names; report what does not fit."""
    if entry.paddle_keymap is None:
        raise CheckpointError(f"{entry.name} is not a PaddleClas architecture; a .pdparams file cannot fit it")
    plan = _expand(model, entry.paddle_keymap(model), src)
    own = model.state_dict()
    report = MatchReport()
    out: dict[str, torch.Tensor] = {}
    for ours, (theirs, kind) in plan.items():
        if theirs not in src:
            report.missing.append(theirs)
            continue
        t = src[theirs]
        if kind != "same" and t.ndim == 2 and t.numel() == own[ours].numel():
            t = _convert(t, kind, own[ours].shape)
        if tuple(t.shape) != tuple(own[ours].shape):
            report.mismatched.append((theirs, ours, tuple(src[theirs].shape), tuple(own[ours].shape)))
            continue
        out[ours] = t.to(own[ours].dtype)
    used = {theirs for theirs, _ in plan.values()}
    report.unexpected = [k for k in src if k not in used]
    return out, report


def match_state_dict(model: nn.Module, src: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], MatchReport]:
    """Compare a state dict in our own names with the model's (``num_batches_tracked`` is optional)."""
    own = model.state_dict()
    report = MatchReport()
    out: dict[str, torch.Tensor] = {}
    for k, v in own.items():
        if k not in src:
            if not k.endswith("num_batches_tracked"):
                report.missing.append(k)
            continue
        if tuple(src[k].shape) != tuple(v.shape):
            report.mismatched.append((k, k, tuple(src[k].shape), tuple(v.shape)))
            continue
        out[k] = src[k].to(v.dtype)
    report.unexpected = [k for k in src if k not in own]
    return out, report
