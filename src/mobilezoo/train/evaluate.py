"""Evaluation: top-1/top-5, per-class accuracy and the confusion matrix; the same code in training and ``eval``."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

__all__ = ["EvalResult", "evaluate", "plot_confusion"]


@dataclass
class EvalResult:
    top1: float
    top5: float
    loss: float
    count: int
    confusion: torch.Tensor = field(repr=False)
    class_names: list[str] = field(default_factory=list)
    skipped: int = 0
    """unreadable images left out (not in ``count``)"""

    @property
    def per_class(self) -> dict[str, float]:
        hits, totals = self.confusion.diag(), self.confusion.sum(1)
        names = self.class_names or [str(i) for i in range(len(totals))]
        return {n: (float(h) / float(t) * 100 if t else float("nan")) for n, h, t in zip(names, hits, totals)}

    def as_dict(self) -> dict[str, Any]:
        return {
            "top1": self.top1,
            "top5": self.top5,
            "loss": self.loss,
            "count": self.count,
            "skipped_unreadable": self.skipped,
            "per_class_top1": self.per_class,
            "confusion": self.confusion.tolist(),
            "class_names": self.class_names,
        }


@torch.no_grad()
def evaluate(model, batches: Iterable, num_classes: int, class_names: list[str] | None = None) -> EvalResult:
    """Top-1/top-5 in percent over ``(x, y[, idx])`` batches (fp32, eval mode)."""
    is_module = isinstance(model, nn.Module)  # or any callable tensor -> logits, e.g. a mobilezoo runtime
    was_training = is_module and model.training
    if is_module:
        model.eval()
    conf = torch.zeros(num_classes, num_classes, dtype=torch.int64)
    top5 = 0
    loss_sum = 0.0
    n = 0
    for batch in batches:
        x, y = batch[0], batch[1]
        logits = model(x).float()
        loss_sum += float(nn.functional.cross_entropy(logits, y, reduction="sum"))
        k = min(5, logits.shape[1])
        pred5 = logits.topk(k, 1).indices
        top5 += int((pred5 == y[:, None]).any(1).sum())
        conf += torch.bincount((y * num_classes + pred5[:, 0]).cpu(), minlength=num_classes**2).view_as(conf)
        n += len(y)
    if is_module:
        model.train(was_training)
    skipped = int(getattr(batches, "skipped", 0))  # the eval loaders count the unreadable images they left out
    if n == 0:
        raise ValueError("evaluation set is empty" + (f" ({skipped} unreadable images)" if skipped else ""))
    top1 = float(conf.diag().sum()) / n * 100
    return EvalResult(top1, top5 / n * 100, loss_sum / n, n, conf, list(class_names or []), skipped)


def plot_confusion(res: EvalResult, path: str | Path, title: str = "") -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    c = res.confusion.float()
    norm = c / c.sum(1, keepdim=True).clamp(min=1)
    k = len(c)
    fig, ax = plt.subplots(figsize=(max(4, k * 0.5 + 2), max(4, k * 0.5 + 1.5)))
    im = ax.imshow(norm.numpy(), cmap="Blues", vmin=0, vmax=1)
    names = res.class_names or [str(i) for i in range(k)]
    if k <= 40:
        ax.set_xticks(range(k), names, rotation=90, fontsize=8)
        ax.set_yticks(range(k), names, fontsize=8)
        if k <= 15:
            for i in range(k):
                for j in range(k):
                    v = int(c[i, j])
                    if v:
                        ax.text(
                            j,
                            i,
                            v,
                            ha="center",
                            va="center",
                            fontsize=7,
                            color="white" if norm[i, j] > 0.5 else "black",
                        )
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title or f"top-1 {res.top1:.2f}%  ({res.count} images)")
    fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
