"""The numerical gate: every configuration is compared with fp32 eager PyTorch before it is timed.

A fast wrong answer is reported as ``wrong``, not fast. The comparison is on logits for the same input:
``rel = max|got - ref| / max|ref|`` must stay within the precision's tolerance, the output must be finite and of the
reference's shape. Top-1 / top-5 agreement with the reference are recorded beside it (with random weights they are
informative, not a criterion: near-ties flip under bf16 rounding).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch

__all__ = ["TOLERANCE", "GateResult", "check"]

TOLERANCE = {"fp32": 2e-3, "fp16": 0.05, "bf16": 0.2, "int8": 0.35}
"""Largest allowed max|diff| / max|ref| of logits per precision (CUDA fp32 may use TF32: 1e-2 there). bf16 keeps 8
significant bits, so ~50 layers of it move the largest of 1000 logits by ~10%; a wrong graph (other weights, a
missing layer, permuted channels) moves it by ~100%."""


@dataclass(frozen=True)
class GateResult:
    ok: bool
    max_abs_diff: float
    rel_diff: float
    tol: float
    top1_agree: float
    top5_agree: float
    message: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def tolerance(precision: str, device: str = "cpu") -> float:
    tol = TOLERANCE.get(precision)
    if tol is None:
        raise ValueError(f"unknown precision {precision!r}; choose from {', '.join(TOLERANCE)}")
    return max(tol, 1e-2) if device.startswith("cuda") and precision == "fp32" else tol


def _topk_agreement(ref: torch.Tensor, got: torch.Tensor, k: int) -> float:
    k = min(k, ref.shape[1])
    a, b = ref.topk(k, dim=1).indices, got.topk(k, dim=1).indices
    if k == 1:
        return float((a == b).float().mean())
    return sum(set(x.tolist()) == set(y.tolist()) for x, y in zip(a, b)) / ref.shape[0]


def check(ref: Any, got: Any, precision: str = "fp32", *, tol: float | None = None, device: str = "cpu") -> GateResult:
    """Compare ``got`` logits with the fp32 eager reference ``ref`` (tensors or arrays, N x classes)."""
    ref_t = torch.as_tensor(ref).detach().float().cpu()
    got_t = torch.as_tensor(got).detach().float().cpu()
    tol = tolerance(precision, device) if tol is None else tol
    if got_t.shape != ref_t.shape:
        got_t = got_t.reshape(ref_t.shape) if got_t.numel() == ref_t.numel() else got_t
    if got_t.shape != ref_t.shape:
        msg = f"output shape {tuple(got_t.shape)} != reference {tuple(ref_t.shape)}"
        return GateResult(False, float("inf"), float("inf"), tol, 0.0, 0.0, msg)
    if not torch.isfinite(got_t).all():
        return GateResult(False, float("inf"), float("inf"), tol, 0.0, 0.0, "non-finite output")
    diff = float((got_t - ref_t).abs().max())
    scale = float(ref_t.abs().max())
    rel = diff / scale if scale > 0 else (0.0 if diff == 0 else float("inf"))
    ok = rel <= tol
    msg = "" if ok else f"max|diff|/max|ref| = {rel:.3g} > {tol:g} ({precision})"
    return GateResult(ok, diff, rel, tol, _topk_agreement(ref_t, got_t, 1), _topk_agreement(ref_t, got_t, 5), msg)
