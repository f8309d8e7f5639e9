"""Export to each engine's own format (the engines of :mod:`mobilezoo.backends` that have one), and the check every
export gets: the artifact opened on its engine and compared with the PyTorch model on the same images (an engine
that cannot run on this OS, Core ML off Apple's: its structural validation instead).

Every artifact carries the same metadata (model name, class names, preprocessing, precision; inside an ONNX file, in
a ``<artifact>.json`` sidecar otherwise: :mod:`mobilezoo.backends.artifact`), so ``mobilezoo.runtime.load(path)``
knows what it is running.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from .. import backends
from .._deps import MissingDependencyError
from ..backends import artifact

__all__ = ["FORMATS", "ExportCheck", "check_export", "export"]

FORMATS = backends.formats()
"""``onnx``, ``torchscript``, ``openvino``, ``ncnn``: from the engine registry."""


def export(
    model: nn.Module,
    fmt: str,
    out_dir: str | Path,
    *,
    fp16: bool = False,
    class_names: list[str] | None = None,
    input_size: int | None = None,
) -> Path:
    """Export ``model`` to ``out_dir/<model_name><suffix>`` in ``fmt`` (BatchNorm folded); returns the artifact's path.

    ``input_size`` (the example input's side) defaults to the crop size of the model's eval preprocessing.
    """
    engine = backends.for_format(fmt)
    missing = engine.available()
    if missing:
        raise MissingDependencyError(f"cannot export {fmt}: {missing}")
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    precision = "fp16" if fp16 else "fp32"
    return engine.export(model, out_dir, precision=precision, class_names=class_names, input_size=input_size)


@dataclass
class ExportCheck:
    path: Path
    backend: str
    max_abs_diff: float
    max_abs_logit: float
    top5_agreement: float
    validated: str = ""
    """For an engine that cannot run here (Core ML off Apple's OSes): what its structural check verified instead
    (the numbers are then NaN: nothing was run)."""

    def line(self) -> str:
        if self.validated:
            return f"{self.path.name}: {self.validated}"
        return (
            f"{self.path.name}: max |diff| {self.max_abs_diff:.3g} (logits up to {self.max_abs_logit:.3g}), "
            f"top-5 agreement {self.top5_agreement:.0%}"
        )


def check_export(model: nn.Module, path: str | Path, images: list | torch.Tensor) -> ExportCheck:
    """Run the artifact on its engine and the (unfused, eval-mode) PyTorch model on the same input and compare.

    ``images`` are PIL images (real photos, through the shared preprocessing) or an already preprocessed NCHW tensor.
    """
    from ..data import eval_preprocess

    path = Path(path)
    engine = backends.get(artifact.engine_for(path))
    precision = artifact.read_metadata(path).get("precision", "fp32")
    if engine.available() is None and engine.unsupported("fp32", "cpu"):  # installed, yet runs nothing on this OS
        nan = float("nan")
        return ExportCheck(path, engine.name, nan, nan, nan, validated=engine.validate(path, model))
    session = engine.open(path, precision=precision)
    if isinstance(images, torch.Tensor):
        x = images
    else:
        pre = eval_preprocess(model)
        x = torch.stack([pre(im) for im in images])
    was_training = model.training
    model.eval()
    with torch.no_grad():
        ref = model(x).float()
    model.train(was_training)
    got = session(x).float()
    n, k = x.shape[0], min(5, ref.shape[1])  # a model with fewer than 5 classes: its top-k
    agree = sum(set(a.tolist()) == set(b.tolist()) for a, b in zip(ref.topk(k, 1).indices, got.topk(k, 1).indices)) / n
    return ExportCheck(path, engine.name, float((ref - got).abs().max()), float(ref.abs().max()), agree)
