"""One runtime API over every engine: ``load(...)`` gives an object with ``predict`` and ``__call__``.

The engines are :mod:`mobilezoo.backends`' (an exported artifact on its format's engine, or a zoo model exported on
the fly); every one shares the preprocessing of :mod:`mobilezoo.data.transforms`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..data import EvalPreprocess, eval_preprocess, load_image
from ..models.base import min_input_size
from ..reference import class_names_for
from ..weights.checkpoint import load_checkpoint_model

__all__ = ["Prediction", "Runtime", "load", "load_checkpoint_model"]


@dataclass
class Prediction:
    source: str
    indices: list[int]
    scores: list[float]
    names: list[str]

    def as_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "topk": [{"index": i, "name": n, "score": s} for i, n, s in zip(self.indices, self.names, self.scores)],
        }


@dataclass
class Runtime:
    """A model ready to classify: an engine session (:mod:`mobilezoo.backends`) with the model's name, class names
    and preprocessing. ``rt(x)`` gives float32 logits for a preprocessed NCHW batch; ``rt.predict`` takes images."""

    session: Any
    model_name: str = ""
    class_names: list[str] = field(default_factory=list)
    preprocess: EvalPreprocess = field(default_factory=EvalPreprocess)
    min_input_size: int = 1
    """the network's smallest input side (its total stride); a smaller batch is refused, naming it"""

    @property
    def backend(self) -> str:
        return self.session.backend

    @property
    def precision(self) -> str:
        return self.session.precision

    @property
    def device(self) -> str:
        return self.session.device

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        if h < self.min_input_size or w < self.min_input_size:
            m = self.min_input_size
            raise ValueError(f"input {h}x{w} is below {self.model_name}'s minimum of {m}x{m} pixels (its total stride)")
        return self.session(x)

    def _name(self, i: int) -> str:
        return self.class_names[i] if i < len(self.class_names) else str(i)

    def predict(self, images: Any, topk: int = 5, batch_size: int = 16) -> list[Prediction]:
        """Classify image paths, PIL images, or an already preprocessed NCHW tensor."""
        if isinstance(images, torch.Tensor):
            batches, sources = [images], [f"tensor[{i}]" for i in range(images.shape[0])]
        else:
            items = [images] if isinstance(images, (str, Path)) or not isinstance(images, Sequence) else list(images)
            sources = [str(i) if isinstance(i, (str, Path)) else f"image[{n}]" for n, i in enumerate(items)]
            tensors = [self.preprocess(load_image(i) if isinstance(i, (str, Path)) else i) for i in items]
            batches = [torch.stack(tensors[i : i + batch_size]) for i in range(0, len(tensors), batch_size)]
        out: list[Prediction] = []
        for b in batches:
            probs = torch.softmax(self(b).float(), dim=1)
            k = min(topk, probs.shape[1])
            scores, idx = probs.topk(k, dim=1)
            for s_row, i_row in zip(scores.tolist(), idx.tolist()):
                out.append(Prediction(sources[len(out)], i_row, s_row, [self._name(i) for i in i_row]))
        return out


def _build(model: str | nn.Module, weights: Any, num_classes: int | None) -> nn.Module:
    if isinstance(model, nn.Module):
        if weights is not None:
            raise ValueError("weights= applies to a zoo model name; this nn.Module already has its weights")
        return model.eval()
    from ..factory import create_model

    return create_model(model, weights=weights, num_classes=num_classes).eval()


CHECKPOINT_SUFFIXES = (".ckpt", ".pdparams", ".pth", ".pt", ".safetensors")


def _is_checkpoint(path: Path) -> bool:
    """A training ``.ckpt``, a ``.pdparams``/``.pth``/``.pt``/``.safetensors`` file or a ``save_pretrained`` folder
    (not an artifact, such as a ``.torchscript.pt``)."""
    from ..backends import artifact

    if path.is_dir():
        return (path / "config.json").is_file() and (path / "model.safetensors").is_file()
    return path.is_file() and path.name.lower().endswith(CHECKPOINT_SUFFIXES) and not artifact.is_artifact(path)


def _load_artifact(
    path: Path, backend: str, device: str, threads: int | None, batch_size: int | None, precision: str = "fp32"
) -> Runtime:
    from ..backends import artifact, get

    path = artifact.find_artifact(path)
    expected = artifact.engine_for(path)
    if backend not in ("auto", expected):
        if not any(path.name.endswith(s) for s in get(backend).also_opens):
            raise ValueError(
                f"{path} is a {expected} artifact: backend must be {expected!r} (or 'auto'), not {backend!r}"
            )
        expected = backend
    artifact.check_content(path)  # a wrong or broken file: one line, before the engine's parser sees it
    meta = artifact.read_metadata(path)
    stored = meta.get("precision", "fp32")
    # an fp32 graph may run at a lower inference precision where the engine has one (OpenVINO bf16/fp16)
    precision = precision if stored == "fp32" and precision != "fp32" else stored
    if precision == "int8":
        from ..export.int8 import check_int8_runs_here

        check_int8_runs_here(path, meta)  # 8-bit weights on a CPU without VNNI: refused, not silently wrong
    session = get(expected).open(path, device=device, threads=threads, precision=precision, batch_size=batch_size)
    return Runtime(
        session,
        model_name=meta.get("model_name", path.name.split(".")[0]),
        class_names=class_names_for(None, meta),
        preprocess=eval_preprocess(meta.get("preprocess")),
        min_input_size=int(meta.get("min_input_size") or 1),
    )


def load(
    model_or_path: str | Path | nn.Module,
    backend: str = "auto",
    device: str = "cpu",
    threads: int | None = None,
    precision: str = "fp32",
    *,
    weights: str | Path | None = None,
    checkpoint: str | Path | None = None,
    num_classes: int | None = None,
    batch_size: int = 1,
    remeasure: bool = False,
) -> Runtime:
    """A runtime for a zoo name, an ``nn.Module``, or an exported artifact (a file, or an export folder holding one).

    A zoo name gets the weights :func:`mobilezoo.create_model` would give it: ``weights=None`` the published ones
    (an error for a name with none), ``"random"``, or a checkpoint path (``checkpoint=`` is the same, older spelling).

    ``backend="auto"``: an artifact runs on its format's engine; a zoo model or module runs on the fastest engine
    for this machine, found by a short measurement at ``batch_size`` (numerically checked against PyTorch) and
    cached (:mod:`mobilezoo.runtime.auto`; ``remeasure=True`` measures again). ``rt.auto`` says what was measured.
    Engines: :func:`mobilezoo.backends.names`.
    """
    from .. import backends
    from ..backends import artifact

    if backend != "auto":
        backends.get(backend)  # an unknown name: one line naming the choices
    if device == "cpu" or device.startswith("cpu:"):
        from ..measure.machine import check_threads

        check_threads(threads)  # beyond the cores this process may use: refused, never silently oversubscribed
    if threads:
        torch.set_num_threads(threads)
    if isinstance(model_or_path, (str, Path)):
        path = Path(model_or_path)
        if _is_checkpoint(path):  # weights, not an artifact: the zoo model they record, exported on the fly
            if weights is not None or checkpoint is not None:
                raise ValueError(f"{path} is a checkpoint: give it alone, or as weights= of a zoo name")
            from ..weights import load_model

            model_or_path = load_model(None, path, num_classes=num_classes)
        elif path.exists() or artifact.is_artifact(path):  # a file or an export folder (zoo names are not paths)
            return _load_artifact(path, backend, device, threads, batch_size, precision)
    if checkpoint is not None:
        if weights is not None and str(weights) != str(checkpoint):
            raise ValueError("give weights= or checkpoint= (the same thing), not both")
        weights = checkpoint
    model = _build(model_or_path, weights, num_classes)
    name = getattr(model, "model_name", type(model).__name__)
    common = {"model_name": name, "class_names": class_names_for(model), "preprocess": eval_preprocess(model),
              "min_input_size": min_input_size(model)}  # fmt: skip
    if backend == "auto":
        from .auto import load_auto

        return load_auto(model, device=device, threads=threads, precision=precision, batch_size=batch_size,
                         remeasure=remeasure, common=common)  # fmt: skip
    engine = backends.get(backend)
    reason = engine.unsupported(precision, device)
    if reason:
        raise ValueError(f"backend {backend!r} cannot run {precision} on {device}: {reason}")
    session = engine.open(model, device=device, threads=threads, precision=precision, batch_size=batch_size)
    return Runtime(session, **common)
