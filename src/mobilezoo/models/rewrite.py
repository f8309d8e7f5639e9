"""Family-aware rewrites for deployment: the network an engine is given, not the one that is trained.

Each rewrite is exact in real arithmetic (the float results differ by rounding only; every export is still checked
against the unmodified eval-mode model) and applies where its pattern occurs in the zoo:

- ``se_gate``: MobileNetV3's SE gate ``clip(0.2 y + 0.5, 0, 1)`` of ``y = W s + b`` becomes ``clip(W' s + b', 0, 1)``
  with ``W' = 0.2 W`` and ``b' = 0.2 b + 0.5``: the gate is a plain clip (GhostNet's already is).

None of the first three applies to MobileNetV1/V2, ShuffleNetV1/V2 or GhostNet as PaddleClas builds them (GhostNet's
SE gate is already a clip and its head dropout is the ordinary kind, the identity at inference).
- ``head_scale``: Paddle's ``Dropout(mode="downscale_in_infer")`` multiplies the features by ``1 - p`` at inference
  (MobileNetV3's head: 0.8); folded into the classifier, ``fc(0.8 x) = (0.8 W) x + b``.
- ``hardswish_mul``: ``hardswish(x)`` written as ``x * hardsigmoid(x)`` (ONNX ``HardSigmoid`` + ``Mul`` rather than
  ``HardSwish``): the form some engines fuse into their conv kernels. Measured per engine
  (``benchmarks/rewrites_cpu.py``), not applied by default unless the measurement says so.
- ``shuffle_fold``: ShuffleNetV2's channel shuffles and splits folded into the convolutions that read them
  (:mod:`mobilezoo.models.shuffle_fold`): per unit one concat of half its channels instead of a split, a full concat
  and a reshape-transpose-reshape copy. On by default: measured 1.33x on OpenVINO and a tie on the other engines
  (``benchmarks/results/rewrites_cpu_shufflenet.md``); the folded stages script (the TorchScript export).

:func:`deploy_form` is what every exporter and the ``torch`` engine call: BatchNorm folded
(:func:`~mobilezoo.models.fuse.fuse_bn`), then the active rewrites (:data:`DEFAULT`, or those of
:func:`using`). :func:`applied` names the rewrites that changed a given model (recorded in artifact metadata).
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Callable, Iterator, Sequence

import torch
from torch import nn

from .fuse import fuse_bn
from .layers import Clip01, DownscaleDropout, HardSigmoidPaddle, SqueezeExcite
from .shuffle_fold import fold_shuffles

__all__ = ["DEFAULT", "REWRITES", "applied", "deploy_form", "rewrite", "using"]


@torch.no_grad()
def _se_gate(model: nn.Module) -> int:
    n = 0
    for m in model.modules():
        if isinstance(m, SqueezeExcite) and isinstance(m.gate, HardSigmoidPaddle):
            a, c, conv = m.gate.slope, m.gate.offset, m.conv_expand
            w, b = conv.weight.double() * a, conv.bias.double() * a + c
            conv.weight.copy_(w.to(conv.weight.dtype))
            conv.bias.copy_(b.to(conv.bias.dtype))
            m.gate = Clip01()
            n += 1
    return n


@torch.no_grad()
def _head_scale(model: nn.Module) -> int:
    head = getattr(model, "head", None)
    if head is None or not isinstance(getattr(head, "dropout", None), DownscaleDropout):
        return 0
    if not isinstance(head.fc, nn.Linear):  # a headless model: the scale stays where it is
        return 0
    head.fc.weight.copy_((head.fc.weight.double() * (1.0 - head.dropout.p)).to(head.fc.weight.dtype))
    head.dropout = nn.Identity()
    return 1


class HardSwishMul(nn.Module):
    """``x * hardsigmoid(x)`` (= ``hardswish(x)``), exported as ONNX ``HardSigmoid`` + ``Mul``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * nn.functional.hardsigmoid(x)


def _hardswish_mul(model: nn.Module) -> int:
    n = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.Hardswish):
                setattr(parent, name, HardSwishMul())
                n += 1
    return n


REWRITES: dict[str, Callable[[nn.Module], int]] = {
    "se_gate": _se_gate,
    "head_scale": _head_scale,
    "hardswish_mul": _hardswish_mul,
    "shuffle_fold": fold_shuffles,
}
"""name -> in-place rewrite returning how many places it changed."""

DEFAULT: tuple[str, ...] = ("se_gate", "head_scale", "shuffle_fold")
"""What :func:`deploy_form` applies unless :func:`using` says otherwise."""

_ACTIVE: contextvars.ContextVar[tuple[str, ...]] = contextvars.ContextVar("mobilezoo_rewrites", default=DEFAULT)


def _check(names: Sequence[str]) -> tuple[str, ...]:
    unknown = [n for n in names if n not in REWRITES]
    if unknown:
        raise ValueError(f"unknown rewrite {unknown[0]!r}; known: {', '.join(REWRITES)}")
    return tuple(names)


@contextlib.contextmanager
def using(names: Sequence[str]) -> Iterator[tuple[str, ...]]:
    """Exports and engines inside the block apply ``names`` (``()``: BatchNorm folding only)."""
    token = _ACTIVE.set(_check(names))
    try:
        yield _ACTIVE.get()
    finally:
        _ACTIVE.reset(token)


def rewrite(model: nn.Module, names: Sequence[str]) -> dict[str, int]:
    """Apply ``names`` to ``model`` in place, in order; returns name -> places changed."""
    return {n: REWRITES[n](model) for n in _check(names)}


def deploy_form(model: nn.Module) -> nn.Module:
    """A BatchNorm-folded eval-mode copy of ``model`` with the active rewrites applied (``model`` is untouched)."""
    net = fuse_bn(model)
    rewrite(net, _ACTIVE.get())
    return net.eval()


def applied(model: nn.Module) -> list[str]:
    """The active rewrites that change ``model`` (what :func:`deploy_form` did to it), for an artifact's metadata."""
    probe = fuse_bn(model)
    return [n for n, k in rewrite(probe, _ACTIVE.get()).items() if k]
