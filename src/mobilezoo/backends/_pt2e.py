"""Post-training int8 in PyTorch's PT2E flow, shared by the engines whose own quantizer is a PT2E quantizer
(ExecuTorch's ``XNNPACKQuantizer``, LiteRT's ``PT2EQuantizer``): the BatchNorm-folded model captured with
``torch.export``, annotated by the engine's quantizer, observed on real calibration images, converted to a graph
with quantize/dequantize pairs that the engine's converter lowers to int8 kernels."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["pt2e_quantize"]


def pt2e_quantize(
    net: nn.Module, calib: torch.Tensor, quantizer, *, fold_quantize: bool = True
) -> torch.fx.GraphModule:
    """``net`` (eval, BN folded) quantized by ``quantizer``, its observers fed ``calib`` one image at a time (the
    graph is captured for batch 1, the artifact's shape)."""
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    if calib.ndim != 4 or len(calib) == 0:
        raise ValueError(f"calibration images must be a non-empty N x C x H x W batch, not {tuple(calib.shape)}")
    calib = calib.float()
    gm = prepare_pt2e(torch.export.export(net.eval(), (calib[:1],)).module(), quantizer)
    with torch.no_grad():
        for i in range(len(calib)):
            gm(calib[i : i + 1])
    return convert_pt2e(gm, fold_quantize=fold_quantize)
