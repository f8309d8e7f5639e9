"""MobileNetV2 (Sandler et al. 2018), as PaddleClas 2.6 builds it (``model_zoo/mobilenet_v2.py``).

Differences from torchvision's network, all kept here: the expand 1x1 conv exists even for t=1 (the first block is
32->32 1x1 + BN + ReLU6), widths are plain ``int(c * scale)`` (no rounding to 8), the first block of every stage has
no residual, the last conv is 1280 for scale <= 1 and ``int(1280 * scale)`` above, and there is no dropout.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import nn

from .base import ZooModel
from .layers import ConvBNAct
from .registry import ModelEntry, register, register_weights_variant


class BottleneckRow(NamedTuple):
    """One row of the paper's Table 2: expansion t, output channels c, repeats n, first stride s."""

    t: int
    c: int
    n: int
    s: int


STEM = 32
LAST = 1280
STAGES: tuple[BottleneckRow, ...] = (
    BottleneckRow(1, 16, 1, 1),
    BottleneckRow(6, 24, 2, 2),
    BottleneckRow(6, 32, 3, 2),
    BottleneckRow(6, 64, 4, 2),
    BottleneckRow(6, 96, 3, 1),
    BottleneckRow(6, 160, 3, 2),
    BottleneckRow(6, 320, 1, 1),
)


@dataclass(frozen=True)
class MobileNetV2Config:
    scale: float


class InvertedResidual(nn.Module):
    def __init__(self, in_chs: int, out_chs: int, stride: int, expand: int, residual: bool) -> None:
        super().__init__()
        mid = round(in_chs * expand)  # PaddleClas: int(round(in_c * t))
        self.residual = residual
        self.conv_pw = ConvBNAct(in_chs, mid, 1, act="relu6")
        self.conv_dw = ConvBNAct(mid, mid, 3, stride, groups=mid, act="relu6")
        self.conv_pwl = ConvBNAct(mid, out_chs, 1, act=None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv_pwl(self.conv_dw(self.conv_pw(x)))
        return x + y if self.residual else y


class MobileNetV2(ZooModel):
    def __init__(
        self,
        cfg: MobileNetV2Config,
        num_classes: int = 1000,
        in_chans: int = 3,
        drop_rate: float = 0.0,
        small_input: int = 0,
    ) -> None:
        super().__init__()
        s = cfg.scale
        chs = int(STEM * s)
        stem_stride = 1 if small_input else 2
        self.stem = ConvBNAct(in_chans, chs, 3, stem_stride, act="relu6")
        stages, steps = [], [("stem", chs, stem_stride)]
        for i, row in enumerate(STAGES):
            out = int(row.c * s)
            blocks = []
            for j in range(row.n):
                # PaddleClas: the first block of a stage never adds the residual, the others always do
                blocks.append(InvertedResidual(chs, out, row.s if j == 0 else 1, row.t, residual=j > 0))
                chs = out
            stages.append(nn.Sequential(*blocks))
            steps.append((f"blocks.{i}", out, row.s))
        self.blocks = nn.Sequential(*stages)
        last = LAST if s <= 1.0 else int(LAST * s)
        self.final_conv = ConvBNAct(chs, last, 1, act="relu6")
        self._init_feature_info(steps, int(small_input))
        self._init_head(last, num_classes, drop_rate=drop_rate)


def paddle_keymap(model: MobileNetV2) -> dict[str, str]:
    m = {"stem": "conv1", "final_conv": "conv9", "head.fc": "out"}
    for i, stage in enumerate(model.blocks):
        pd_stage = f"conv{i + 2}"
        for j in range(len(stage)):
            pd_block = f"{pd_stage}._first_block" if j == 0 else f"{pd_stage}.{pd_stage}_{j + 1}"
            m[f"blocks.{i}.{j}.conv_pw"] = f"{pd_block}._expand_conv"
            m[f"blocks.{i}.{j}.conv_dw"] = f"{pd_block}._bottleneck_conv"
            m[f"blocks.{i}.{j}.conv_pwl"] = f"{pd_block}._linear_conv"
    return m


# suffix -> (scale, PaddleClas constructor or None)
VARIANTS = {
    "x0_25": (0.25, "MobileNetV2_x0_25"),
    "x0_35": (0.35, None),  # from the comparison study; not in PaddleClas
    "x0_5": (0.5, "MobileNetV2_x0_5"),
    "x0_75": (0.75, "MobileNetV2_x0_75"),
    "x1_0": (1.0, "MobileNetV2"),
    "x1_4": (1.4, None),  # from the comparison study; not in PaddleClas
    "x1_5": (1.5, "MobileNetV2_x1_5"),
    "x2_0": (2.0, "MobileNetV2_x2_0"),
}

for _suffix, (_scale, _pd) in VARIANTS.items():
    _name = f"MobileNetV2_{_suffix}"
    _aliases = ("MobileNetV2",) if _suffix == "x1_0" else ()
    _entry = register(
        ModelEntry(
            _name,
            "MobileNetV2",
            MobileNetV2,
            MobileNetV2Config(_scale),
            aliases=_aliases,
            paddle_arch=_pd,
            paddle_keymap=paddle_keymap,
            source="paddleclas" if _pd else "comparison study (PaddleClas width rule int(c*scale))",
        )
    )
    if _suffix == "x1_0":
        register_weights_variant(_entry, "MobileNetV2_ssld", "ssld", aliases=("MobileNetV2_x1_0_ssld",))
