"""ShuffleNetV1 (Zhang et al. 2018), from the paper's Table 1 (PaddleClas has no ShuffleNetV1).

Unit (paper Fig. 2 b/c, as in Megvii's reference code): 1x1 group conv (ungrouped for the very first unit, whose
input is the 24-channel stem) + BN + ReLU -> channel shuffle(g) -> 3x3 depthwise (stride) + BN -> 1x1 group conv + BN;
stride 1 adds the identity then ReLU; stride 2 concatenates a 3x3/2 average-pooled shortcut with ReLU(branch), so
the branch outputs ``out - in`` channels. The bottleneck width is a quarter of the stage's output channels.

Width multiplier s (paper Sec. 4.1.1, "ShuffleNet s x"): every stage width is ``s`` times the 1x column, rounded to a
multiple of 4g so that the group convs divide evenly; the stem is ``24 s`` rounded to a multiple of g (Megvii's
reference code uses the same 12/16/48 stems where it has the width).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from .base import ZooModel
from .layers import ConvBNAct, channel_shuffle, make_divisible
from .registry import ModelEntry, register


class GroupColumn(NamedTuple):
    """One column of the paper's Table 1: groups g and the output channels of stages 2-4 at 1x."""

    g: int
    stages: tuple[int, int, int]
    paper_mflops: int  # "Complexity" row of Table 1 (multiply-adds, 1x)


STEM = 24
REPEATS = (4, 8, 4)  # 1 stride-2 unit + 3 / 7 / 3 stride-1 units
COLUMNS: dict[int, GroupColumn] = {
    1: GroupColumn(1, (144, 288, 576), 143),
    2: GroupColumn(2, (200, 400, 800), 140),
    3: GroupColumn(3, (240, 480, 960), 137),
    4: GroupColumn(4, (272, 544, 1088), 133),
    8: GroupColumn(8, (384, 768, 1536), 137),
}
SCALES = {"x0_5": 0.5, "x1_0": 1.0, "x1_5": 1.5, "x2_0": 2.0}
# Paper Table 2/8 complexity figures for g=3 at other widths (MFLOPs = multiply-adds)
PAPER_MFLOPS_G3 = {"x0_5": 38, "x1_0": 137, "x1_5": 292, "x2_0": 524}


@dataclass(frozen=True)
class ShuffleNetV1Config:
    groups: int
    scale: float

    def widths(self) -> tuple[int, tuple[int, ...]]:
        g = self.groups
        stem = make_divisible(STEM * self.scale, g) if self.scale != 1.0 else STEM
        stages = tuple(c if self.scale == 1.0 else make_divisible(c * self.scale, 4 * g) for c in COLUMNS[g].stages)
        return stem, stages


class ShuffleV1Unit(nn.Module):
    def __init__(self, in_chs: int, out_chs: int, groups: int, stride: int, first_group: bool) -> None:
        super().__init__()
        self.stride = stride
        self.groups = groups
        mid = out_chs // 4
        branch_out = out_chs - in_chs if stride == 2 else out_chs
        self.conv_pw = ConvBNAct(in_chs, mid, 1, groups=1 if first_group else groups, act="relu")
        self.conv_dw = ConvBNAct(mid, mid, 3, stride, groups=mid, act=None)
        self.conv_pwl = ConvBNAct(mid, branch_out, 1, groups=groups, act=None)
        self.pool = nn.AvgPool2d(3, 2, 1) if stride == 2 else nn.Identity()  # the downsampling unit's shortcut

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv_pw(x)
        if self.groups > 1:
            y = channel_shuffle(y, self.groups)
        y = self.conv_pwl(self.conv_dw(y))
        if self.stride == 1:
            return F.relu(x + y)
        return torch.cat((self.pool(x), F.relu(y)), dim=1)


class ShuffleNetV1(ZooModel):
    def __init__(
        self,
        cfg: ShuffleNetV1Config,
        num_classes: int = 1000,
        in_chans: int = 3,
        drop_rate: float = 0.0,
        small_input: int = 0,
    ) -> None:
        super().__init__()
        stem, widths = cfg.widths()
        stem_stride = 1 if small_input else 2
        self.stem = nn.Sequential()
        self.stem.add_module("conv", ConvBNAct(in_chans, stem, 3, stem_stride, act="relu"))
        self.stem.add_module("pool", nn.Identity() if small_input else nn.MaxPool2d(3, 2, 1))
        chs = stem
        stages, steps = [], [("stem.conv", chs, stem_stride), ("stem", chs, stem_stride)]
        for i, (out, n) in enumerate(zip(widths, REPEATS)):
            units = [ShuffleV1Unit(chs, out, cfg.groups, 2, first_group=i == 0)]
            units += [ShuffleV1Unit(out, out, cfg.groups, 1, first_group=False) for _ in range(n - 1)]
            stages.append(nn.Sequential(*units))
            steps.append((f"blocks.{i}", out, 2))
            chs = out
        self.blocks = nn.Sequential(*stages)
        self.final_conv = nn.Identity()
        self._init_feature_info(steps, int(small_input))
        self._init_head(chs, num_classes, drop_rate=drop_rate, first_conv="stem.conv.conv")


for _g in COLUMNS:
    for _suffix, _scale in SCALES.items():
        _paper = COLUMNS[_g].paper_mflops if _scale == 1.0 else PAPER_MFLOPS_G3.get(_suffix) if _g == 3 else None
        register(
            ModelEntry(
                f"ShuffleNetV1_g{_g}_{_suffix}",
                "ShuffleNetV1",
                ShuffleNetV1,
                ShuffleNetV1Config(_g, _scale),
                aliases=(f"shufflenet_v1_g{_g}_{_suffix}",),
                source="paper (Zhang et al. 2018, Table 1); not in PaddleClas",
                extra={"paper_mmacs": _paper} if _paper else {},
            )
        )
