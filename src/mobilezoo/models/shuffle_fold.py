"""ShuffleNetV2's channel shuffles folded into the convolutions that read them (the ``shuffle_fold`` rewrite).

A stride-1 unit computes ``shuffle(concat(x1, branch(x2)))`` with ``(x1, x2)`` the two halves of its input; a
downsampling unit ``shuffle(concat(branch1(x), branch2(x)))``. The shuffle and the split are permutations of
channels, so no tensor needs to be in the shuffled order: every logical channel of a stage is a channel of one of
the stage's *sources* (the two branch outputs of its downsampling unit, the branch output of each stride-1 unit).
A stride-1 unit's branch reads its half as a concat of contiguous slices of those sources, in any order, because that
order is folded into the columns of the branch's first 1x1 conv; the stage's output is one concat of slices, its
order folded into whatever reads it next (the next stage's depthwise and 1x1 convs, or the final 1x1 conv). What is
left of the glue is one concat per unit of half its channels (the original: a split, a concat of all channels and a
reshape-transpose-reshape copy) and one concat per stage.

Exact in real arithmetic: the same weights, their rows or columns permuted; the products are summed in another
order, so the float results differ by rounding only.
"""

from __future__ import annotations

import torch
from torch import nn

from .shufflenet_v2 import ShuffleDownUnit, ShuffleUnit

__all__ = ["FoldedShuffleStage", "fold_shuffles"]

Seg = tuple[int, int]
"""A logical channel's place: (source index, channel of that source)."""

Run = tuple[int, int, int]
"""A contiguous slice of one source: (source index, start, stop)."""


def _runs(chans: list[Seg]) -> list[Run]:
    """The slices that hold ``chans``: per source (in source order), its channels as maximal contiguous runs."""
    by: dict[int, list[int]] = {}
    for s, c in chans:
        by.setdefault(s, []).append(c)
    out: list[Run] = []
    for s in sorted(by):
        cs = sorted(by[s])
        start = prev = cs[0]
        for c in cs[1:]:
            if c != prev + 1:
                out.append((s, start, prev + 1))
                start = c
            prev = c
        out.append((s, start, prev + 1))
    return out


def _physical(chans: list[Seg]) -> tuple[list[Run], list[int]]:
    """The slices that hold ``chans`` and, per physical channel of their concat, its index in ``chans``."""
    runs = _runs(chans)
    pos = {seg: j for j, seg in enumerate(chans)}
    return runs, [pos[(s, c)] for s, a, b in runs for c in range(a, b)]


@torch.no_grad()
def _read_permuted(conv: nn.Conv2d, perm: list[int]) -> None:
    """``conv`` given an input whose physical channel ``q`` is its logical channel ``perm[q]``: a full conv's
    columns are permuted; a depthwise conv's channels are (its output is then permuted alike)."""
    idx = torch.tensor(perm, dtype=torch.long)
    if conv.groups == 1:
        conv.weight.copy_(conv.weight[:, idx])
    elif conv.groups == conv.in_channels == conv.out_channels:
        conv.weight.copy_(conv.weight[idx])
        if conv.bias is not None:
            conv.bias.copy_(conv.bias[idx])
    else:
        raise ValueError(f"cannot permute the input of a conv with {conv.groups} groups")


def _gather(srcs: list[torch.Tensor], runs: list[tuple[int, int, int]]) -> torch.Tensor:
    """The concat of the slices ``runs`` of ``srcs`` (TorchScript-scriptable: explicit loop, spelled-out types). A
    slice that is a whole source is the source itself: an exported graph gets no no-op slice (Core ML's converter
    rejects the alias ``torch.export`` makes of one)."""
    parts: list[torch.Tensor] = []
    for run in runs:
        src = srcs[run[0]]
        parts.append(src if run[1] == 0 and run[2] == src.shape[1] else src[:, run[1] : run[2]])
    return parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)


class FoldedShuffleStage(nn.Module):
    """One ShuffleNetV2 stage without its shuffles: the units' convs (permuted), which slices each stride-1 unit's
    branch reads (``plans``), and the slices that make the stage's output (``out_plan``). Scriptable (the TorchScript
    export): ``torch.jit.script`` infers the plans' types from their values, never empty lists."""

    def __init__(self, down: ShuffleDownUnit, units: list[ShuffleUnit], plans: list[list[Run]], out_plan: list[Run]):
        super().__init__()
        self.down = down
        self.units = nn.ModuleList(units)
        self.plans, self.out_plan = plans, out_plan

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        d = self.down
        srcs = [d.branch1_pwl(d.branch1_dw(x)), d.branch2_pwl(d.branch2_dw(d.branch2_pw(x)))]
        for i, unit in enumerate(self.units):
            srcs.append(unit.conv_pwl(unit.conv_dw(unit.conv_pw(_gather(srcs, self.plans[i])))))
        return _gather(srcs, self.out_plan)

    def extra_repr(self) -> str:
        return f"pieces per unit={[len(p) for p in self.plans]}, output pieces={len(self.out_plan)}"


def _fold_stage(stage: nn.Sequential, perm_in: list[int]) -> tuple[FoldedShuffleStage, list[int]]:
    """``stage`` folded for an input in the order ``perm_in``; and the order of the stage's output."""
    down, units = stage[0], list(stage[1:])
    for conv in (down.branch1_dw.conv, down.branch1_pwl.conv, down.branch2_pw.conv):
        _read_permuted(conv, perm_in)  # (the depthwise output keeps that order: branch1_pwl reads it so)
    half = down.branch1_pwl.conv.out_channels
    logical: list[Seg] = [seg for k in range(half) for seg in ((0, k), (1, k))]  # shuffle(concat(b1, b2))
    plans = []
    for src, unit in enumerate(units, start=2):
        n = len(logical) // 2
        x1, x2 = logical[:n], logical[n:]
        runs, perm = _physical(x2)
        _read_permuted(unit.conv_pw.conv, perm)
        plans.append(runs)
        logical = [seg for k in range(n) for seg in (x1[k], (src, k))]  # shuffle(concat(x1, branch(x2)))
    out_plan, perm_out = _physical(logical)
    return FoldedShuffleStage(down, units, plans, out_plan), perm_out


def _is_shufflenet_v2(model: nn.Module) -> bool:
    blocks, final = getattr(model, "blocks", None), getattr(model, "final_conv", None)
    if not isinstance(blocks, nn.Sequential) or not len(blocks) or final is None:
        return False
    return all(
        isinstance(s, nn.Sequential)
        and isinstance(s[0], ShuffleDownUnit)
        and all(isinstance(u, ShuffleUnit) for u in s[1:])
        for s in blocks
    )


def fold_shuffles(model: nn.Module) -> int:
    """Fold every stage of a (BatchNorm-folded) ShuffleNetV2 in place; returns the number of stages folded (0 for
    any other network)."""
    if not _is_shufflenet_v2(model):
        return 0
    perm = list(range(model.blocks[0][0].branch1_dw.conv.in_channels))
    for i in range(len(model.blocks)):
        model.blocks[i], perm = _fold_stage(model.blocks[i], perm)
    _read_permuted(model.final_conv.conv, perm)
    return len(model.blocks)
