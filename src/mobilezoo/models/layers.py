"""Building blocks shared by every family.

Every convolution in the zoo is a :class:`ConvBNAct` (conv without bias -> BatchNorm(eps=1e-5) -> activation), so
BatchNorm folding, the PaddleClas weight mapping and the profiler each have exactly one module type to understand.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = [
    "ACTIVATIONS",
    "Clip01",
    "ConvBNAct",
    "DownscaleDropout",
    "HardSigmoidPaddle",
    "SqueezeExcite",
    "channel_shuffle",
    "make_act",
    "make_divisible",
]


def make_divisible(v: float, divisor: int = 8, min_value: int | None = None) -> int:
    """Round ``v`` to a multiple of ``divisor``, never more than 10% down (TF/PaddleClas ``_make_divisible``)."""
    min_value = divisor if min_value is None else min_value
    new_v = max(min_value, int(v + divisor / 2) // divisor * divisor)
    if new_v < 0.9 * v:
        new_v += divisor
    return int(new_v)


class HardSigmoidPaddle(nn.Module):
    """``clip(slope * x + offset, 0, 1)``; PaddleClas's MobileNetV3 SE gate uses slope 0.2, offset 0.5.

    Not ``torch.nn.Hardsigmoid`` (slope 1/6): the difference changes every SE output.
    """

    def __init__(self, slope: float = 0.2, offset: float = 0.5) -> None:
        super().__init__()
        self.slope = slope
        self.offset = offset

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.clamp(x * self.slope + self.offset, 0.0, 1.0)

    def extra_repr(self) -> str:
        return f"slope={self.slope}, offset={self.offset}"


class Clip01(nn.Module):
    """``clip(x, 0, 1)``: the gate of PaddleClas's GhostNet SE block."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.clamp(x, 0.0, 1.0)


ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "relu6": nn.ReLU6,
    "hardswish": nn.Hardswish,
    "swish": nn.SiLU,
    "hardsigmoid_paddle": HardSigmoidPaddle,
    "clip01": Clip01,
}


def make_act(name: str | None) -> nn.Module:
    """Activation module by name (``None`` gives identity)."""
    if name is None:
        return nn.Identity()
    try:
        cls = ACTIVATIONS[name]
    except KeyError:
        raise ValueError(f"unknown activation {name!r}; known: {sorted(ACTIVATIONS)}") from None
    return cls()


class ConvBNAct(nn.Module):
    """Conv2d (no bias, 'same' padding ``(k-1)//2``) -> BatchNorm2d(eps=1e-5) -> activation."""

    def __init__(
        self,
        in_chs: int,
        out_chs: int,
        kernel_size: int = 1,
        stride: int = 1,
        groups: int = 1,
        act: str | None = "relu",
    ) -> None:
        super().__init__()
        self.conv = nn.Conv2d(
            in_chs, out_chs, kernel_size, stride=stride, padding=(kernel_size - 1) // 2, groups=groups, bias=False
        )
        self.bn = nn.BatchNorm2d(out_chs, eps=1e-5, momentum=0.1)
        self.act = make_act(act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))


class SqueezeExcite(nn.Module):
    """Global pool -> 1x1 conv (bias) -> ReLU -> 1x1 conv (bias) -> gate -> scale the input."""

    def __init__(self, chs: int, rd_chs: int, gate: str = "hardsigmoid_paddle") -> None:
        super().__init__()
        self.conv_reduce = nn.Conv2d(chs, rd_chs, 1, bias=True)
        self.act = nn.ReLU()
        self.conv_expand = nn.Conv2d(rd_chs, chs, 1, bias=True)
        self.gate = make_act(gate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.mean((2, 3), keepdim=True)
        s = self.conv_expand(self.act(self.conv_reduce(s)))
        return x * self.gate(s)


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    """ShuffleNet's channel shuffle: [N, g, C/g, H, W] -> transpose(1, 2) -> [N, C, H, W]."""
    n, c, h, w = x.shape
    x = x.view(n, groups, c // groups, h, w).transpose(1, 2).contiguous()
    return x.view(n, c, h, w)


class DownscaleDropout(nn.Module):
    """Paddle's ``Dropout(mode="downscale_in_infer")``.

    Training drops units *without* the 1/(1-p) rescale; inference multiplies by (1-p). PaddleClas's MobileNetV3 head
    uses it, so its weights only give PaddleClas's logits if eval scales the features by 0.8.
    """

    def __init__(self, p: float = 0.2) -> None:
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"dropout probability must be in [0, 1), got {p}")
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            if self.p == 0.0:
                return x
            keep = torch.empty_like(x).bernoulli_(1.0 - self.p)
            return x * keep
        return x * (1.0 - self.p)

    def extra_repr(self) -> str:
        return f"p={self.p}, mode=downscale_in_infer"


def classifier_dropout(p: float, mode: str) -> nn.Module:
    """Dropout before the classifier: ``upscale_in_train`` (torch's) or Paddle's ``downscale_in_infer``."""
    if p <= 0.0:
        return nn.Identity()
    if mode == "upscale_in_train":
        return nn.Dropout(p)
    if mode == "downscale_in_infer":
        return DownscaleDropout(p)
    raise ValueError(f"unknown dropout mode {mode!r}")
