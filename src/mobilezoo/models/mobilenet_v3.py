"""MobileNetV3 large/small (Howard et al. 2019), as PaddleClas 2.6 builds it (``legendary_models/mobilenet_v3.py``).

PaddleClas details kept here: the expand 1x1 conv exists even when exp == in; widths go through ``make_divisible(8)``
except the SE width (plain ``C // 4``) and the 1280 head; the SE gate is ``clip(0.2x + 0.5, 0, 1)`` (not torch's
hardsigmoid); the stem uses hardswish; the head is pool -> 1x1 conv 1280 (no bias, no BN) -> hardswish ->
``Dropout(0.2, mode="downscale_in_infer")`` (eval multiplies by 0.8) -> Linear.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import nn

from .base import ZooModel
from .layers import ConvBNAct, SqueezeExcite, make_divisible
from .registry import ModelEntry, register, register_weights_variant


class BneckRow(NamedTuple):
    """One row of the paper's Tables 1/2: kernel, expansion size, output channels, SE, activation, stride."""

    k: int
    exp: int
    c: int
    se: bool
    act: str
    s: int


LARGE: tuple[BneckRow, ...] = (
    BneckRow(3, 16, 16, False, "relu", 1),
    BneckRow(3, 64, 24, False, "relu", 2),
    BneckRow(3, 72, 24, False, "relu", 1),
    BneckRow(5, 72, 40, True, "relu", 2),
    BneckRow(5, 120, 40, True, "relu", 1),
    BneckRow(5, 120, 40, True, "relu", 1),
    BneckRow(3, 240, 80, False, "hardswish", 2),
    BneckRow(3, 200, 80, False, "hardswish", 1),
    BneckRow(3, 184, 80, False, "hardswish", 1),
    BneckRow(3, 184, 80, False, "hardswish", 1),
    BneckRow(3, 480, 112, True, "hardswish", 1),
    BneckRow(3, 672, 112, True, "hardswish", 1),
    BneckRow(5, 672, 160, True, "hardswish", 2),
    BneckRow(5, 960, 160, True, "hardswish", 1),
    BneckRow(5, 960, 160, True, "hardswish", 1),
)
SMALL: tuple[BneckRow, ...] = (
    BneckRow(3, 16, 16, True, "relu", 2),
    BneckRow(3, 72, 24, False, "relu", 2),
    BneckRow(3, 88, 24, False, "relu", 1),
    BneckRow(5, 96, 40, True, "hardswish", 2),
    BneckRow(5, 240, 40, True, "hardswish", 1),
    BneckRow(5, 240, 40, True, "hardswish", 1),
    BneckRow(5, 120, 48, True, "hardswish", 1),
    BneckRow(5, 144, 48, True, "hardswish", 1),
    BneckRow(5, 288, 96, True, "hardswish", 2),
    BneckRow(5, 576, 96, True, "hardswish", 1),
    BneckRow(5, 576, 96, True, "hardswish", 1),
)
STEM = 16
HEAD = 1280
TABLES = {"large": (LARGE, 960), "small": (SMALL, 576)}  # rows, last_second_conv width


@dataclass(frozen=True)
class MobileNetV3Config:
    mode: str  # "large" | "small"
    scale: float


class InvertedResidualSE(nn.Module):
    def __init__(self, in_chs: int, mid_chs: int, out_chs: int, k: int, stride: int, se: bool, act: str) -> None:
        super().__init__()
        self.residual = stride == 1 and in_chs == out_chs
        self.conv_pw = ConvBNAct(in_chs, mid_chs, 1, act=act)
        self.conv_dw = ConvBNAct(mid_chs, mid_chs, k, stride, groups=mid_chs, act=act)
        self.se = SqueezeExcite(mid_chs, mid_chs // 4, gate="hardsigmoid_paddle") if se else nn.Identity()
        self.conv_pwl = ConvBNAct(mid_chs, out_chs, 1, act=None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv_pwl(self.se(self.conv_dw(self.conv_pw(x))))
        return x + y if self.residual else y


class MobileNetV3(ZooModel):
    bn_weight_decay = False  # PaddleClas: ParamAttr(regularizer=L2Decay(0.0)) on every BatchNorm's gamma/beta

    def __init__(
        self,
        cfg: MobileNetV3Config,
        num_classes: int = 1000,
        in_chans: int = 3,
        drop_rate: float = 0.2,
        drop_mode: str = "downscale_in_infer",
        small_input: int = 0,
    ) -> None:
        super().__init__()
        rows, last_second = TABLES[cfg.mode]
        s = cfg.scale
        chs = make_divisible(STEM * s)
        stem_stride = 1 if small_input else 2
        self.stem = ConvBNAct(in_chans, chs, 3, stem_stride, act="hardswish")
        blocks, steps = [], [("stem", chs, stem_stride)]
        for i, r in enumerate(rows):
            out = make_divisible(r.c * s)
            blocks.append(InvertedResidualSE(chs, make_divisible(r.exp * s), out, r.k, r.s, r.se, r.act))
            steps.append((f"blocks.{i}", out, r.s))
            chs = out
        self.blocks = nn.Sequential(*blocks)
        last = make_divisible(last_second * s)
        self.final_conv = ConvBNAct(chs, last, 1, act="hardswish")
        self._init_feature_info(steps, int(small_input))
        hidden = nn.Sequential(nn.Conv2d(last, HEAD, 1, bias=False), nn.Hardswish())
        self._init_head(last, num_classes, hidden=hidden, hidden_chs=HEAD, drop_rate=drop_rate, drop_mode=drop_mode)


def paddle_keymap(model: MobileNetV3) -> dict[str, str]:
    m = {"stem": "conv", "final_conv": "last_second_conv", "head.hidden.0": "last_conv", "head.fc": "fc"}
    for i, blk in enumerate(model.blocks):
        m[f"blocks.{i}.conv_pw"] = f"blocks.{i}.expand_conv"
        m[f"blocks.{i}.conv_dw"] = f"blocks.{i}.bottleneck_conv"
        m[f"blocks.{i}.conv_pwl"] = f"blocks.{i}.linear_conv"
        if isinstance(blk.se, SqueezeExcite):
            m[f"blocks.{i}.se.conv_reduce"] = f"blocks.{i}.mid_se.conv1"
            m[f"blocks.{i}.se.conv_expand"] = f"blocks.{i}.mid_se.conv2"
    return m


VARIANTS = {"x0_35": 0.35, "x0_5": 0.5, "x0_75": 0.75, "x1_0": 1.0, "x1_25": 1.25}
SSLD = {("large", "x1_0"), ("small", "x1_0"), ("small", "x0_35")}

for _mode in ("large", "small"):
    for _suffix, _scale in VARIANTS.items():
        _name = f"MobileNetV3_{_mode}_{_suffix}"
        _entry = register(
            ModelEntry(
                _name,
                "MobileNetV3",
                MobileNetV3,
                MobileNetV3Config(_mode, _scale),
                paddle_arch=_name,
                paddle_keymap=paddle_keymap,
            )
        )
        if (_mode, _suffix) in SSLD:
            register_weights_variant(_entry, f"{_name}_ssld", "ssld")
        if (_mode, _suffix) == ("large", "x1_0"):
            # until the int8 artefact lands, the int8 name resolves to the fp32 architecture
            register_weights_variant(_entry, f"{_name}_ssld_int8", "ssld_int8")
