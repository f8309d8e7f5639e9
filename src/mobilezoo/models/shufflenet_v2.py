"""ShuffleNetV2 (Ma et al. 2018), as PaddleClas 2.6 builds it (``model_zoo/shufflenet_v2.py``).

Same layout as torchvision's ``shufflenet_v2_x*`` (stem conv + max-pool, [4, 8, 4] units, split / branch / concat /
shuffle(2), 1x1 last conv, pool, Linear); PaddleClas adds the x0_25 / x0_33 widths and a swish variant.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import nn

from ..peers import same_network_names
from .base import ZooModel
from .layers import ConvBNAct, channel_shuffle
from .registry import ModelEntry, register


class WidthRow(NamedTuple):
    """One column of the paper's Table 5: stem, stage2..4 output channels, Conv5."""

    stem: int
    stages: tuple[int, int, int]
    last: int


REPEATS = (4, 8, 4)
WIDTHS: dict[str, WidthRow] = {
    "x0_25": WidthRow(24, (24, 48, 96), 512),
    "x0_33": WidthRow(24, (32, 64, 128), 512),
    "x0_5": WidthRow(24, (48, 96, 192), 1024),
    "x1_0": WidthRow(24, (116, 232, 464), 1024),
    "x1_5": WidthRow(24, (176, 352, 704), 1024),
    "x2_0": WidthRow(24, (244, 488, 976), 2048),
}


@dataclass(frozen=True)
class ShuffleNetV2Config:
    width: str
    act: str = "relu"


class ShuffleUnit(nn.Module):
    """Basic unit (stride 1): split -> branch(right half) -> concat -> shuffle."""

    def __init__(self, chs: int, act: str) -> None:
        super().__init__()
        half = chs // 2
        self.conv_pw = ConvBNAct(half, half, 1, act=act)
        self.conv_dw = ConvBNAct(half, half, 3, 1, groups=half, act=None)
        self.conv_pwl = ConvBNAct(half, half, 1, act=act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1, x2 = x.chunk(2, dim=1)
        out = torch.cat((x1, self.conv_pwl(self.conv_dw(self.conv_pw(x2)))), dim=1)
        return channel_shuffle(out, 2)


class ShuffleDownUnit(nn.Module):
    """Downsampling unit (stride 2): both branches see the whole input -> concat -> shuffle."""

    def __init__(self, in_chs: int, out_chs: int, act: str) -> None:
        super().__init__()
        half = out_chs // 2
        self.branch1_dw = ConvBNAct(in_chs, in_chs, 3, 2, groups=in_chs, act=None)
        self.branch1_pwl = ConvBNAct(in_chs, half, 1, act=act)
        self.branch2_pw = ConvBNAct(in_chs, half, 1, act=act)
        self.branch2_dw = ConvBNAct(half, half, 3, 2, groups=half, act=None)
        self.branch2_pwl = ConvBNAct(half, half, 1, act=act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b1 = self.branch1_pwl(self.branch1_dw(x))
        b2 = self.branch2_pwl(self.branch2_dw(self.branch2_pw(x)))
        return channel_shuffle(torch.cat((b1, b2), dim=1), 2)


class ShuffleNetV2(ZooModel):
    def __init__(
        self,
        cfg: ShuffleNetV2Config,
        num_classes: int = 1000,
        in_chans: int = 3,
        drop_rate: float = 0.0,
        small_input: int = 0,
    ) -> None:
        super().__init__()
        w = WIDTHS[cfg.width]
        stem_stride = 1 if small_input else 2
        self.stem = nn.Sequential()
        self.stem.add_module("conv", ConvBNAct(in_chans, w.stem, 3, stem_stride, act=cfg.act))
        self.stem.add_module("pool", nn.Identity() if small_input else nn.MaxPool2d(3, 2, 1))
        chs = w.stem
        stages, steps = [], [("stem.conv", chs, stem_stride), ("stem", chs, stem_stride)]
        for i, (out, n) in enumerate(zip(w.stages, REPEATS)):
            units = [ShuffleDownUnit(chs, out, cfg.act)]
            units += [ShuffleUnit(out, cfg.act) for _ in range(n - 1)]
            stages.append(nn.Sequential(*units))
            steps.append((f"blocks.{i}", out, 2))
            chs = out
        self.blocks = nn.Sequential(*stages)
        self.final_conv = ConvBNAct(chs, w.last, 1, act=cfg.act)
        self._init_feature_info(steps, int(small_input))
        self._init_head(w.last, num_classes, drop_rate=drop_rate, first_conv="stem.conv.conv")


def paddle_keymap(model: ShuffleNetV2) -> dict[str, str]:
    m = {"stem.conv": "_conv1", "final_conv": "_last_conv", "head.fc": "_fc"}
    for i, stage in enumerate(model.blocks):
        for j in range(len(stage)):
            ours, pd = f"blocks.{i}.{j}", f"{i + 2}_{j + 1}"
            if j == 0:
                m[f"{ours}.branch1_dw"] = f"{pd}._conv_dw_1"
                m[f"{ours}.branch1_pwl"] = f"{pd}._conv_linear_1"
                m[f"{ours}.branch2_pw"] = f"{pd}._conv_pw_2"
                m[f"{ours}.branch2_dw"] = f"{pd}._conv_dw_2"
                m[f"{ours}.branch2_pwl"] = f"{pd}._conv_linear_2"
            else:
                m[f"{ours}.conv_pw"] = f"{pd}._conv_pw"
                m[f"{ours}.conv_dw"] = f"{pd}._conv_dw"
                m[f"{ours}.conv_pwl"] = f"{pd}._conv_linear"
    return m


# torchvision's names for the same networks (mobilezoo.peers): shufflenet_v2_x0_5 ... x2_0
_SAME = {arch: (peer,) for peer, arch in same_network_names().items()}

for _width in WIDTHS:
    _name = f"ShuffleNetV2_{_width}"
    register(
        ModelEntry(
            _name,
            "ShuffleNetV2",
            ShuffleNetV2,
            ShuffleNetV2Config(_width),
            aliases=(("ShuffleNetV2",) if _width == "x1_0" else ()) + _SAME.get(_name, ()),
            paddle_arch=_name,
            paddle_keymap=paddle_keymap,
        )
    )
register(
    ModelEntry(
        "ShuffleNetV2_swish",
        "ShuffleNetV2",
        ShuffleNetV2,
        ShuffleNetV2Config("x1_0", act="swish"),
        aliases=("shufflenet_v2_swish",),
        paddle_arch="ShuffleNetV2_swish",
        paddle_keymap=paddle_keymap,
    )
)
