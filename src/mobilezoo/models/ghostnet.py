"""GhostNet (Han et al. 2020), as PaddleClas 2.6 builds it (``model_zoo/ghostnet.py``).

PaddleClas details kept here (they differ from Huawei's / timm's GhostNet): widths use ``make_divisible(v, 4)``; the SE
block is Linear ``C -> C//4`` -> ReLU -> Linear -> ``clip(x, 0, 1)`` (kept here as 1x1 convs, same weights); the head
after pooling is a 1x1 conv 1280 + BN + ReLU (no conv bias) and ``Dropout(0.2)`` (identity at eval).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import nn

from .base import ZooModel
from .layers import ConvBNAct, SqueezeExcite, make_divisible
from .registry import ModelEntry, register, register_weights_variant


class GhostRow(NamedTuple):
    """One row of the paper's Table 1: kernel, expansion (#exp), output channels, SE, stride."""

    k: int
    exp: int
    c: int
    se: bool
    s: int


BLOCKS: tuple[GhostRow, ...] = (
    GhostRow(3, 16, 16, False, 1),
    GhostRow(3, 48, 24, False, 2),
    GhostRow(3, 72, 24, False, 1),
    GhostRow(5, 72, 40, True, 2),
    GhostRow(5, 120, 40, True, 1),
    GhostRow(3, 240, 80, False, 2),
    GhostRow(3, 200, 80, False, 1),
    GhostRow(3, 184, 80, False, 1),
    GhostRow(3, 184, 80, False, 1),
    GhostRow(3, 480, 112, True, 1),
    GhostRow(3, 672, 112, True, 1),
    GhostRow(5, 672, 160, True, 2),
    GhostRow(5, 960, 160, False, 1),
    GhostRow(5, 960, 160, True, 1),
    GhostRow(5, 960, 160, False, 1),
    GhostRow(5, 960, 160, True, 1),
)
STEM = 16
LAST = 960
HEAD = 1280


@dataclass(frozen=True)
class GhostNetConfig:
    scale: float


class GhostModule(nn.Module):
    """Primary 1x1 conv to ceil(out/2) channels, cheap 3x3 depthwise of that, concatenated (not sliced)."""

    def __init__(self, in_chs: int, out_chs: int, relu: bool) -> None:
        super().__init__()
        init = math.ceil(out_chs / 2)
        act = "relu" if relu else None
        self.primary_conv = ConvBNAct(in_chs, init, 1, act=act)
        self.cheap_operation = ConvBNAct(init, init, 3, groups=init, act=act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.primary_conv(x)
        return torch.cat((x, self.cheap_operation(x)), dim=1)


class GhostBottleneck(nn.Module):
    def __init__(self, in_chs: int, mid_chs: int, out_chs: int, k: int, stride: int, se: bool) -> None:
        super().__init__()
        self.ghost1 = GhostModule(in_chs, mid_chs, relu=True)
        self.conv_dw = ConvBNAct(mid_chs, mid_chs, k, stride, groups=mid_chs, act=None) if stride > 1 else nn.Identity()
        self.se = SqueezeExcite(mid_chs, mid_chs // 4, gate="clip01") if se else nn.Identity()
        self.ghost2 = GhostModule(mid_chs, out_chs, relu=False)
        if stride == 1 and in_chs == out_chs:
            self.shortcut = nn.Identity()
        else:
            self.shortcut = nn.Sequential(
                ConvBNAct(in_chs, in_chs, k, stride, groups=in_chs, act=None),
                ConvBNAct(in_chs, out_chs, 1, act=None),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.ghost2(self.se(self.conv_dw(self.ghost1(x))))
        return y + self.shortcut(x)


class GhostNet(ZooModel):
    bn_weight_decay = False  # PaddleClas: ParamAttr(regularizer=L2Decay(0.0)) on every BatchNorm's gamma/beta

    def __init__(
        self,
        cfg: GhostNetConfig,
        num_classes: int = 1000,
        in_chans: int = 3,
        drop_rate: float = 0.2,
        small_input: int = 0,
    ) -> None:
        super().__init__()
        s = cfg.scale
        chs = make_divisible(STEM * s, 4)
        stem_stride = 1 if small_input else 2
        self.stem = ConvBNAct(in_chans, chs, 3, stem_stride, act="relu")
        blocks, steps = [], [("stem", chs, stem_stride)]
        for i, r in enumerate(BLOCKS):
            out = make_divisible(r.c * s, 4)
            blocks.append(GhostBottleneck(chs, make_divisible(r.exp * s, 4), out, r.k, r.s, r.se))
            steps.append((f"blocks.{i}", out, r.s))
            chs = out
        self.blocks = nn.Sequential(*blocks)
        last = make_divisible(LAST * s, 4)
        self.final_conv = ConvBNAct(chs, last, 1, act="relu")
        self._init_feature_info(steps, int(small_input))
        hidden = ConvBNAct(last, HEAD, 1, act="relu")
        self._init_head(last, num_classes, hidden=hidden, hidden_chs=HEAD, drop_rate=drop_rate)


def paddle_keymap(model: GhostNet) -> dict[str, str]:
    m = {"stem": "conv1", "final_conv": "conv_last", "head.hidden": "fc_0", "head.fc": "fc_1"}
    for i, blk in enumerate(model.blocks):
        ours, pd = f"blocks.{i}", f"_ghostbottleneck_{i}"
        for g in ("1", "2"):
            for part in ("primary_conv", "cheap_operation"):
                m[f"{ours}.ghost{g}.{part}"] = f"{pd}.ghost_module_{g}.{part}"
        if isinstance(blk.conv_dw, ConvBNAct):
            m[f"{ours}.conv_dw"] = f"{pd}.depthwise_conv"
        if isinstance(blk.se, SqueezeExcite):
            m[f"{ours}.se.conv_reduce"] = f"{pd}.se_block.squeeze"
            m[f"{ours}.se.conv_expand"] = f"{pd}.se_block.excitation"
        if isinstance(blk.shortcut, nn.Sequential):
            m[f"{ours}.shortcut.0"] = f"{pd}.shortcut_depthwise"
            m[f"{ours}.shortcut.1"] = f"{pd}.shortcut_conv"
    return m


VARIANTS = {"x0_5": 0.5, "x1_0": 1.0, "x1_3": 1.3}

for _suffix, _scale in VARIANTS.items():
    _name = f"GhostNet_{_suffix}"
    _entry = register(
        ModelEntry(
            _name,
            "GhostNet",
            GhostNet,
            GhostNetConfig(_scale),
            paddle_arch=_name,
            paddle_keymap=paddle_keymap,
        )
    )
    if _suffix == "x1_3":
        register_weights_variant(_entry, f"{_name}_ssld", "ssld")
