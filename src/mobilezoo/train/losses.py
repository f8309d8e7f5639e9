"""Losses in PaddleClas's definitions: label-smoothed CE and the distillation losses of its SSLD recipes."""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["DISTILL_LOSSES", "classification_loss", "distill_loss"]

DISTILL_LOSSES = ("dce", "dml", "kl")


def classification_loss(logits: torch.Tensor, target: torch.Tensor, smoothing: float = 0.0) -> torch.Tensor:
    """PaddleClas ``CELoss``: ``(1-eps)*onehot + eps/K`` targets (torch's ``label_smoothing`` is the same formula).

    Samples labelled -1 (unlabeled data in distillation) are ignored; a batch with none labelled gives 0.
    """
    if not (target >= 0).any():
        return logits.sum() * 0.0
    return F.cross_entropy(logits.float(), target, label_smoothing=smoothing, ignore_index=-1)


def distill_loss(student: torch.Tensor, teacher: torch.Tensor, kind: str = "dce", temperature: float = 1.0):
    """Student logits vs frozen teacher logits.

    - ``dce``: PaddleClas ``DistillationCELoss``: CE of the student against ``softmax(teacher / T)``;
    - ``dml``: PaddleClas ``DMLLoss`` (SSLD): ``(KL(s||t) + KL(t||s)) / 2`` on the softmax outputs (Jensen-Shannon
      style, symmetric);
    - ``kl``: Hinton's ``KL(softmax(t/T) || softmax(s/T)) * T^2``.
    """
    s, t = student.float() / temperature, teacher.float().detach() / temperature
    log_ps, log_pt = F.log_softmax(s, 1), F.log_softmax(t, 1)
    if kind == "dce":
        return -(log_pt.exp() * log_ps).sum(1).mean()
    if kind == "dml":
        kl_st = F.kl_div(log_pt, log_ps, log_target=True, reduction="batchmean")  # KL(s || t)
        kl_ts = F.kl_div(log_ps, log_pt, log_target=True, reduction="batchmean")  # KL(t || s)
        return (kl_st + kl_ts) / 2
    if kind == "kl":
        return F.kl_div(log_ps, log_pt, log_target=True, reduction="batchmean") * temperature**2
    raise ValueError(f"unknown distillation loss {kind!r}; choose from {', '.join(DISTILL_LOSSES)}")
