"""MobileNetV1 (Howard et al. 2017), as PaddleClas 2.6 builds it (``legendary_models/mobilenet_v1.py``).

Every conv is Conv -> BN -> ReLU; widths are plain ``int(c * scale)`` (no rounding to 8); the head is
pool -> Linear with no dropout.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

from torch import nn

from .base import ZooModel
from .layers import ConvBNAct
from .registry import ModelEntry, register, register_weights_variant


class DWSRow(NamedTuple):
    """One depthwise-separable block as the paper's Table 1 prints it: 3x3 dw (stride) then 1x1 to ``out``."""

    out: int
    stride: int


STEM = 32
BLOCKS: tuple[DWSRow, ...] = (
    DWSRow(64, 1),
    DWSRow(128, 2),
    DWSRow(128, 1),
    DWSRow(256, 2),
    DWSRow(256, 1),
    DWSRow(512, 2),
    *(DWSRow(512, 1),) * 5,
    DWSRow(1024, 2),
    DWSRow(1024, 1),
)


@dataclass(frozen=True)
class MobileNetV1Config:
    scale: float


class DepthwiseSeparable(nn.Module):
    def __init__(self, in_chs: int, out_chs: int, stride: int) -> None:
        super().__init__()
        self.dw = ConvBNAct(in_chs, in_chs, 3, stride, groups=in_chs, act="relu")
        self.pw = ConvBNAct(in_chs, out_chs, 1, act="relu")

    def forward(self, x):
        return self.pw(self.dw(x))


class MobileNetV1(ZooModel):
    def __init__(
        self,
        cfg: MobileNetV1Config,
        num_classes: int = 1000,
        in_chans: int = 3,
        drop_rate: float = 0.0,
        small_input: int = 0,
    ) -> None:
        super().__init__()
        s = cfg.scale
        chs = int(STEM * s)
        stem_stride = 1 if small_input else 2
        self.stem = ConvBNAct(in_chans, chs, 3, stem_stride, act="relu")
        blocks, steps = [], [("stem", chs, stem_stride)]
        for i, row in enumerate(BLOCKS):
            out = int(row.out * s)
            blocks.append(DepthwiseSeparable(chs, out, row.stride))
            steps.append((f"blocks.{i}", out, row.stride))
            chs = out
        self.blocks = nn.Sequential(*blocks)
        self.final_conv = nn.Identity()
        self._init_feature_info(steps, int(small_input))
        self._init_head(chs, num_classes, drop_rate=drop_rate)


def paddle_keymap(model: MobileNetV1) -> dict[str, str]:
    m = {"stem": "conv", "head.fc": "fc"}
    for i in range(len(model.blocks)):
        m[f"blocks.{i}.dw"] = f"blocks.{i}.depthwise_conv"
        m[f"blocks.{i}.pw"] = f"blocks.{i}.pointwise_conv"
    return m


VARIANTS = {"x0_25": 0.25, "x0_5": 0.5, "x0_75": 0.75, "x1_0": 1.0}

for _suffix, _scale in VARIANTS.items():
    _name = f"MobileNetV1_{_suffix}"
    _pd = "MobileNetV1" if _suffix == "x1_0" else _name
    _aliases = ("MobileNetV1",) if _suffix == "x1_0" else ()
    _cfg = MobileNetV1Config(_scale)
    _entry = register(
        ModelEntry(
            _name, "MobileNetV1", MobileNetV1, _cfg, aliases=_aliases, paddle_arch=_pd, paddle_keymap=paddle_keymap
        )
    )
    if _suffix == "x1_0":
        register_weights_variant(_entry, "MobileNetV1_ssld", "ssld", aliases=("MobileNetV1_x1_0_ssld",))
