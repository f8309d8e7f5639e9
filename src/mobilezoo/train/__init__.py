"""Training, evaluation and SSLD-style distillation of zoo models on image folders, file lists and CIFAR batches.

```python
from mobilezoo.train import TrainConfig, fit, load_recipe
name = "MobileNetV3_small_x1_0"
fit(TrainConfig(name, "../shared/data/cifar10", "runs/mv3s", load_recipe("cifar10", name, ["epochs=30"])))
```
"""

from .checkpoint import is_train_checkpoint, load_checkpoint, model_from_checkpoint, save_checkpoint
from .engine import (
    TrainConfig,
    TrainingDiverged,
    TrainingInterrupted,
    TrainResult,
    build_eval_loader,
    cosine_progress,
    fit,
)
from .evaluate import EvalResult, evaluate, plot_confusion
from .losses import classification_loss, distill_loss
from .recipes import Recipe, RecipeError, list_recipes, load_recipe, parse_overrides

__all__ = [
    "EvalResult",
    "Recipe",
    "RecipeError",
    "TrainConfig",
    "TrainResult",
    "TrainingDiverged",
    "TrainingInterrupted",
    "build_eval_loader",
    "classification_loss",
    "cosine_progress",
    "distill_loss",
    "evaluate",
    "evaluate_checkpoint",
    "fit",
    "is_train_checkpoint",
    "list_recipes",
    "load_checkpoint",
    "load_recipe",
    "model_from_checkpoint",
    "parse_overrides",
    "plot_confusion",
    "save_checkpoint",
]


def evaluate_checkpoint(
    checkpoint, data, *, device: str = "cpu", split: str = "eval", model: str | None = None
) -> EvalResult:
    """Evaluate a training checkpoint on a dataset exactly as its training run did (same preprocessing and loader).

    Any other weights (``.pdparams``, ``.pt``/``.pth``, ``.safetensors``, a ``save_pretrained`` folder) are read as
    :func:`mobilezoo.create_model` reads them, for ``model`` (or the model they record), with their preprocessing;
    their class count must be the dataset's."""
    from pathlib import Path

    from ..weights.checkpoint import read_train_checkpoint

    p = Path(checkpoint)
    if not p.exists():
        raise FileNotFoundError(f"checkpoint not found: {p}")
    ck = read_train_checkpoint(p) if p.is_file() else None
    if ck is None:
        return _evaluate_weights(p, data, device=device, split=split, model=model)
    if model is not None:
        from ..models import get_entry

        if get_entry(model).arch != get_entry(ck["model_name"]).arch:
            raise ValueError(f"{p} holds a {ck['model_name']}, not a {model}")
    return _evaluate_train_checkpoint(ck, data, device=device, split=split)


def _evaluate_train_checkpoint(ck: dict, data, *, device: str, split: str) -> EvalResult:
    import torch

    from ..data.datasets import open_split
    from ..data.transforms import eval_preprocess
    from .engine import _choose_mode, _device

    model = model_from_checkpoint(ck)
    recipe = Recipe(**{k: v for k, v in ck["recipe"].items() if k in Recipe.__dataclass_fields__})
    dev = _device(device)
    model.to(dev)
    if recipe.channels_last:
        model.to(memory_format=torch.channels_last)
    ds = open_split(data, split)
    if ds.class_names != ck["class_names"]:
        raise ValueError(
            f"{data}: classes {ds.class_names[:5]}... differ from the checkpoint's {ck['class_names'][:5]}..."
        )
    pre = eval_preprocess(model)
    mode = ck.get("data_mode") or _choose_mode(ds, recipe)
    loader = build_eval_loader(ds, pre, mode, dev, recipe.channels_last)
    return evaluate(model, loader, ck["num_classes"], ck["class_names"])


def _evaluate_weights(path, data, *, device: str, split: str, model: str | None) -> EvalResult:
    from ..data.datasets import open_split
    from ..data.transforms import eval_preprocess
    from ..weights import load_model
    from .engine import _choose_mode, _device

    net = load_model(model, path)
    ds = open_split(data, split)
    if net.num_classes != len(ds.class_names):
        raise ValueError(f"{path} has {net.num_classes} classes, {data} has {len(ds.class_names)}")
    names = list(getattr(net, "class_names", None) or [])
    if names and names != ds.class_names:
        raise ValueError(f"{data}: classes {ds.class_names[:5]}... differ from the checkpoint's {names[:5]}...")
    dev = _device(device)
    net.to(dev)
    loader = build_eval_loader(ds, eval_preprocess(net), _choose_mode(ds, Recipe()), dev, False)
    return evaluate(net, loader, net.num_classes, ds.class_names)
