"""The one BatchNorm-folding utility (export, quantization and benchmarks all use it).

Every BatchNorm in the zoo sits right after a bias-free conv inside a :class:`ConvBNAct`, so folding is local:
``w' = w * gamma / sqrt(var + eps)`` per output channel, ``b' = beta - mean * gamma / sqrt(var + eps)``.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from .layers import ConvBNAct

__all__ = ["fold_conv_bn", "fuse_bn"]


@torch.no_grad()
def fold_conv_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    """A conv with bias computing ``bn(conv(x))`` in eval mode (float64 arithmetic, cast back)."""
    fused = nn.Conv2d(
        conv.in_channels,
        conv.out_channels,
        conv.kernel_size,
        conv.stride,
        conv.padding,
        conv.dilation,
        conv.groups,
        bias=True,
        padding_mode=conv.padding_mode,
    ).to(device=conv.weight.device, dtype=conv.weight.dtype)
    scale = bn.weight.double() / torch.sqrt(bn.running_var.double() + bn.eps)
    fused.weight.copy_((conv.weight.double() * scale.view(-1, 1, 1, 1)).to(conv.weight.dtype))
    bias = conv.bias.double() if conv.bias is not None else torch.zeros_like(scale)
    fused.bias.copy_(((bias - bn.running_mean.double()) * scale + bn.bias.double()).to(conv.weight.dtype))
    return fused


def fuse_bn(model: nn.Module, inplace: bool = False) -> nn.Module:
    """Fold every ConvBNAct's BatchNorm into its conv (the BN becomes ``nn.Identity``); returns an eval-mode model."""
    model = model if inplace else copy.deepcopy(model)
    model.eval()
    for m in model.modules():
        if isinstance(m, ConvBNAct) and isinstance(m.bn, nn.BatchNorm2d):
            m.conv = fold_conv_bn(m.conv, m.bn)
            m.bn = nn.Identity()
    return model
