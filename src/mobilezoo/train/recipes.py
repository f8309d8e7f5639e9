"""Training recipes as files: one per model family and dataset, shipped in ``mobilezoo/resources/recipes``.

A recipe file is TOML; ``base = "name"`` inherits another file, ``[models."glob"]`` tables override fields for
matching model names (PaddleClas's per-model yaml differences), and ``-o key=value`` overrides anything at the end.
``--recipe cifar10`` for a MobileNetV3 resolves to ``mobilenet_v3.cifar10.toml`` (falling back to ``cifar10.toml``).
"""

from __future__ import annotations

import dataclasses
import fnmatch
import re
import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

__all__ = ["Recipe", "RecipeError", "list_recipes", "load_recipe", "parse_overrides", "resolve_data_config"]


class RecipeError(ValueError):
    pass


@dataclass
class Recipe:
    name: str = "custom"
    description: str = ""
    dataset: str = ""
    epochs: int = 30
    total_steps: int = 0
    """optimizer steps in all; 0: every epoch in full. Set, the run ends after this many steps, inside its last
    epoch (``epochs`` must be the epochs they reach into), and the cosine reaches zero there: a run fitted to a
    wall-clock budget"""
    cosine_knot_step: int = 0
    cosine_knot_progress: float = 0.0
    """a cosine re-fitted mid-run (0: none): its progress runs linearly from the warm-up's end to
    ``cosine_knot_progress`` at step ``cosine_knot_step``, then linearly to 1 at the last step, so a budget run whose
    steps are re-fitted inside the cosine keeps its lr continuous"""
    batch_size: int = 128
    """per device; the global batch is batch_size x world size"""
    base_batch: int = 128
    """``lr`` is for this global batch; the lr used is ``lr * global_batch / base_batch``"""
    lr: float = 0.1
    schedule: str = "cosine"
    """cosine (per iteration, after a linear warmup from 0, down to 0) | piecewise (x gamma at milestone epochs)"""
    warmup_epochs: float = 0.0
    milestones: list[int] = field(default_factory=list)
    gamma: float = 0.1
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 0.0
    """coupled L2 (gradient += wd * w), as PaddleClas's L2Decay"""
    no_bn_decay: bool = False
    label_smoothing: float = 0.0
    augment: str = "imagenet"
    autoaugment: bool = False
    train_crop: int = 224
    eval_resize_short: int = 256
    eval_crop: int = 224
    small_input: int = 0
    """CIFAR-size inputs: 0 the ImageNet layout; 1 (or true) a stride-1 stem (ShuffleNets also drop the stem
    max-pool); 2 also the first downsampling block at stride 1 (MobileNets and GhostNet then end at 4x4 on 32 px)"""
    drop_rate: float | None = None
    """head dropout override (None: the model's default)"""
    ema_decay: float = 0.0
    grad_clip: float = 0.0
    accum_steps: int = 1
    """split each device batch into this many micro-batches (gradient accumulation)"""
    amp: str = "auto"
    """auto | bf16 | fp16 | none"""
    channels_last: bool = True
    compile: bool = False
    sync_bn: bool = False
    workers: int = 2
    data_mode: str = "auto"
    """auto | memory (decode once, augment whole batches on the device) | stream (DataLoader workers)"""
    seed: int = 0
    eval_every: int = 1
    log_every: int = 20
    # distillation
    distill_loss: str = "dce"
    temperature: float = 1.0
    gt_weight: float = 0.0

    def lr_for(self, global_batch: int) -> float:
        return self.lr * global_batch / self.base_batch

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def with_overrides(self, overrides: dict[str, Any] | list[str]) -> Recipe:
        """A copy with ``overrides`` (a dict or ``key=value`` strings) applied, type-checked and validated."""
        if isinstance(overrides, list):
            overrides = parse_overrides(overrides)
        return dataclasses.replace(self, **{k: _coerce(k, v) for k, v in overrides.items()}).validate()

    def validate(self) -> Recipe:
        """Every field within its allowed range (:data:`RANGES`), else :class:`RecipeError` naming the field, the
        value and the range; returns the recipe."""
        for key, (ok, allowed) in RANGES.items():
            value = getattr(self, key)
            if not ok(value):
                raise RecipeError(f"recipe field {key!r}: {value!r} is out of range (allowed: {allowed})")
        if self.batch_size % self.accum_steps:
            raise RecipeError(
                f"recipe field 'accum_steps': {self.accum_steps} does not divide batch_size {self.batch_size}"
            )
        return self

    def to_toml(self) -> str:
        lines = []
        for k, v in self.to_dict().items():
            if v is None:
                lines.append(f"# {k} = (unset)")
            elif isinstance(v, bool):
                lines.append(f"{k} = {'true' if v else 'false'}")
            elif isinstance(v, str):
                lines.append(f'{k} = "{v}"')
            else:
                lines.append(f"{k} = {v!r}")
        return "\n".join(lines) + "\n"


_FIELDS = {f.name: f for f in dataclasses.fields(Recipe)}


def _choice(*values: str) -> tuple[Any, str]:
    return (lambda v: v in values), "one of " + ", ".join(values)


def _at_least(low: float, kind: str = "an integer") -> tuple[Any, str]:
    return (lambda v: v >= low), f"{kind} >= {low:g}"


_FRACTION = (lambda v: 0 <= v < 1), "0 <= x < 1"
RANGES: dict[str, tuple[Any, str]] = {
    "epochs": _at_least(1),
    "total_steps": _at_least(0),
    "cosine_knot_step": _at_least(0),
    "cosine_knot_progress": _FRACTION,
    "batch_size": _at_least(1),
    "base_batch": _at_least(1),
    "lr": ((lambda v: v > 0), "a number > 0"),
    "schedule": _choice("cosine", "piecewise", "constant"),
    "warmup_epochs": _at_least(0, "a number"),
    "milestones": ((lambda v: all(m >= 1 for m in v) and v == sorted(v)), "increasing epoch numbers >= 1"),
    "gamma": ((lambda v: v > 0), "a number > 0"),
    "momentum": _FRACTION,
    "weight_decay": _at_least(0, "a number"),
    "label_smoothing": _FRACTION,
    "small_input": ((lambda v: v in (0, 1, 2)), "0, 1 (true) or 2"),
    "augment": _choice("imagenet", "cifar"),
    "train_crop": _at_least(1),
    "eval_resize_short": _at_least(1),
    "eval_crop": _at_least(1),
    "drop_rate": ((lambda v: v is None or 0 <= v < 1), "unset, or 0 <= x < 1"),
    "ema_decay": _FRACTION,
    "grad_clip": _at_least(0, "a number"),
    "accum_steps": _at_least(1),
    "amp": _choice("auto", "bf16", "fp16", "none", "fp32"),
    "workers": _at_least(0),
    "data_mode": _choice("auto", "memory", "stream"),
    "seed": _at_least(0),
    "eval_every": _at_least(1),
    "log_every": _at_least(1),
    "distill_loss": _choice("dce", "dml", "kl"),
    "temperature": ((lambda v: v > 0), "a number > 0"),
    "gt_weight": _at_least(0, "a number"),
}


def _family_file(family: str) -> str:
    return (
        re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", family)
        .lower()
        .replace("mobile_net", "mobilenet")
        .replace("shuffle_net", "shufflenet")
        .replace("ghost_net", "ghostnet")
    )


def _recipe_dir():
    return resources.files("mobilezoo.resources") / "recipes"


def list_recipes() -> list[str]:
    return sorted(p.name.removesuffix(".toml") for p in _recipe_dir().iterdir() if p.name.endswith(".toml"))


def _read(name: str) -> tuple[dict[str, Any], str]:
    p = Path(name)
    if p.suffix == ".toml" and p.is_file():
        return tomllib.loads(p.read_text()), str(p)
    f = _recipe_dir() / f"{name}.toml"
    if not f.is_file():
        raise RecipeError(f"unknown recipe {name!r}; shipped recipes: {', '.join(list_recipes())} (or a .toml path)")
    return tomllib.loads(f.read_text()), name


def _resolve(name: str, model: str | None, depth: int = 0) -> tuple[dict[str, Any], list[str]]:
    if depth > 8:
        raise RecipeError(f"recipe {name!r}: 'base' chain too deep (a cycle?)")
    data, label = _read(name)
    base = data.pop("base", None)
    merged, chain = _resolve(base, model, depth + 1) if base else ({}, [])
    per_model = data.pop("models", {})
    merged.update(data)
    if model:
        for pattern, over in per_model.items():
            if fnmatch.fnmatch(model, pattern):
                merged.update(over)
    return merged, [*chain, label]


def parse_overrides(items: list[str] | None) -> dict[str, Any]:
    """``["epochs=5", "lr=0.2", "amp=none"]`` -> typed values (TOML syntax; bare words are strings)."""
    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise RecipeError(f"override {item!r}: expected key=value")
        try:
            out[key] = tomllib.loads(f"v = {raw}")["v"]
        except tomllib.TOMLDecodeError:
            out[key] = raw
    return out


def _coerce(key: str, value: Any) -> Any:
    if key not in _FIELDS:
        import difflib

        close = difflib.get_close_matches(key, _FIELDS, n=3)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise RecipeError(f"unknown recipe field {key!r}{hint}")
    typ = _FIELDS[key].type
    if value is None:
        return None
    try:
        if typ == "bool" and isinstance(value, str):
            if value.lower() not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError(value)
            return value.lower() in ("true", "1", "yes")
        if typ == "int":
            if key == "small_input" and str(value).lower() in ("true", "false"):
                return int(str(value).lower() == "true")
            if isinstance(value, float) and not value.is_integer():
                raise ValueError(value)
            return int(value)
        if typ in ("float", "float | None"):
            return float(value)
        if typ == "str":
            return str(value)
        if typ.startswith("list"):
            return [int(v) for v in (value if isinstance(value, list) else [value])]
    except (TypeError, ValueError):
        raise RecipeError(f"recipe field {key!r}: {value!r} is not a valid {typ}") from None
    return value


def load_recipe(name: str, model: str | None = None, overrides: dict[str, Any] | list[str] | None = None) -> Recipe:
    """Resolve ``name`` for ``model`` (family file first), apply per-model tables and ``overrides``."""
    candidates = [name]
    if model and not name.endswith(".toml"):
        from ..models import get_entry

        candidates.insert(0, f"{_family_file(get_entry(model).family)}.{name}")
    last: RecipeError | None = None
    for cand in candidates:
        try:
            data, chain = _resolve(cand, get_arch(model))
            break
        except RecipeError as e:
            if "unknown recipe" not in str(e):
                raise
            last = e
    else:
        raise last  # type: ignore[misc]
    if isinstance(overrides, list):
        overrides = parse_overrides(overrides)
    data.update(overrides or {})
    kw = {k: _coerce(k, v) for k, v in data.items()}
    kw.setdefault("name", " < ".join(reversed(chain)))
    return Recipe(**kw).validate()


def get_arch(model: str | None) -> str | None:
    if not model:
        return None
    from ..models import get_entry

    return get_entry(model).arch or get_entry(model).name


def resolve_data_config(model: Any, recipe: str = "imagenet") -> dict[str, Any]:
    """A model's data config (timm's ``resolve_data_config``): its eval preprocessing (``default_cfg``'s
    interpolation and mean/std at the recipe's eval sizes) and its recipe's training augmentation.

    ``model``: a zoo model (or features-only network) or a name; ``recipe``: a shipped recipe or a ``.toml``, resolved
    for the model's family as ``mobilezoo train`` does. :func:`mobilezoo.data.transforms.create_transform` turns it
    into the transform.
    """
    if isinstance(model, str):
        from ..models import default_cfg, get_entry

        name, cfg = get_entry(model).name, default_cfg()
    else:
        name, cfg = getattr(model, "model_name", "") or None, dict(getattr(model, "default_cfg", {}))
    r = load_recipe(recipe, name)
    return {
        "input_size": (3, r.eval_crop, r.eval_crop),
        "interpolation": cfg.get("interpolation", "bilinear"),
        "mean": tuple(cfg["mean"]),
        "std": tuple(cfg["std"]),
        "crop_pct": r.eval_crop / r.eval_resize_short,
        "resize_short": r.eval_resize_short,
        "crop_size": r.eval_crop,
        "train_crop": r.train_crop,
        "augment": r.augment,
        "autoaugment": r.autoaugment,
        "recipe": r.name,
    }
