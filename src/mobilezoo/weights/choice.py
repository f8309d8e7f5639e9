"""Which weights a zoo model gets: the one vocabulary of ``create_model``, ``runtime.load`` and every command.

- default (``weights=None``, or ``"published"``): the name's published checkpoint, downloaded once and cached; a name
  with no published checkpoint is an error that says so (it never silently gets random weights);
- ``"random"`` (CLI ``--random-weights``): freshly initialised weights, asked for explicitly;
- a path (CLI ``--ckpt PATH``): a ``.pdparams``, ``.pt``/``.pth`` or ``.safetensors`` file, a ``save_pretrained``
  folder or a training ``.ckpt`` (those two also bring the class names and preprocessing); an ``https://`` URL of a
  file;
- ``"torchvision"`` / ``"timm"``: that library's checkpoint of the same network, where one exists.

``pretrained=True`` / ``False`` (timm's spelling) are aliases of ``"published"`` / ``"random"``. Every reader fails
with the same one-line errors (:mod:`mobilezoo.weights.formats`): not found, unknown format, corrupt or truncated,
unsafe pickle refused, and a checkpoint of another model with its mismatches.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..models.registry import ModelEntry, get_entry
from .formats import CheckpointError

__all__ = [
    "PUBLISHED",
    "RANDOM",
    "NoPublishedWeightsError",
    "WeightsChoice",
    "has_published",
    "model_name_in",
    "resolve_weights",
    "resolve_weights_path",
    "weights_keyword",
]

PUBLISHED = "published"
RANDOM = "random"
FOREIGN = ("torchvision", "timm")
_ALIASES = {"pretrained": PUBLISHED, "default": PUBLISHED, "none": RANDOM}
CHECKPOINT_KINDS = ".pdparams, .pt/.pth, .safetensors, a save_pretrained folder or a training .ckpt"


class NoPublishedWeightsError(CheckpointError):
    """A name with no published checkpoint, asked for its published weights (the default)."""


@dataclass(frozen=True)
class WeightsChoice:
    """``kind``: ``published`` | ``random`` | ``path`` | ``url`` | ``torchvision`` | ``timm``."""

    kind: str
    source: str = ""
    """the path or URL (``path`` / ``url``)"""

    @property
    def path(self) -> Path:
        return Path(self.source)

    def __str__(self) -> str:
        return self.source if self.kind in ("path", "url") else self.kind


def has_published(name: str) -> bool:
    from .catalog import weights_info

    return weights_info(name) is not None


def no_published_message(entry: ModelEntry) -> str:
    why = " (PaddleClas has no ShuffleNetV1)" if entry.paddle_arch is None else ""
    return (
        f"{entry.name} has no published weights{why}: pass weights='random' (CLI: --random-weights) for an untrained "
        f"network, or a checkpoint path (--ckpt PATH: {CHECKPOINT_KINDS})"
    )


def weights_keyword(weights: Any) -> str | None:
    """'published' | 'random' | 'torchvision' | 'timm' for a keyword (or True/False), None for a path."""
    if isinstance(weights, bool):
        return PUBLISHED if weights else RANDOM
    if isinstance(weights, str):
        w = weights.strip().lower()
        w = _ALIASES.get(w, w)
        if w in (PUBLISHED, RANDOM, *FOREIGN):
            return w
    return None


def resolve_weights(name: str, weights: Any = None, *, pretrained: Any = None) -> WeightsChoice:
    """The one reading of "which weights" for zoo model ``name`` (see the module docstring).

    ``weights`` and its timm alias ``pretrained`` may not disagree. A path must exist (a URL is fetched later).
    """
    if pretrained is not None:
        kw = weights_keyword(pretrained)
        same = weights_keyword(weights) == kw if kw else str(weights) == str(pretrained)
        if weights is not None and not same:
            raise ValueError(f"weights={weights!r} and pretrained={pretrained!r} disagree: give one of them")
        weights = pretrained
    entry = get_entry(name)
    kw = PUBLISHED if weights is None else weights_keyword(weights)
    if kw == PUBLISHED:
        if not has_published(entry.name):
            raise NoPublishedWeightsError(no_published_message(entry))
        return WeightsChoice(PUBLISHED)
    if kw is not None:
        return WeightsChoice(kw)
    s = str(weights)
    if s.startswith(("http://", "https://")):
        return WeightsChoice("url", s)
    return WeightsChoice("path", str(resolve_weights_path(s)))


def resolve_weights_path(weights: str | Path) -> Path:
    """A checkpoint path that exists, or the one-line error: not found, or a word that is no weights keyword."""
    s = str(weights)
    p = Path(s).expanduser()
    if not p.exists():
        if p.suffix or "/" in s or "\\" in s:
            raise FileNotFoundError(f"checkpoint not found: {s}")
        raise ValueError(
            f"unknown weights {s!r}: use 'published' (the default), 'random', 'torchvision', 'timm' or a checkpoint "
            f"path ({CHECKPOINT_KINDS})"
        )
    return p


def model_name_in(path: str | Path) -> str | None:
    """The zoo model name a checkpoint records (training ``.ckpt``, ``save_pretrained`` folder, mobilezoo
    ``.safetensors``), or None when it does not say."""
    p = Path(path)
    if p.is_dir():
        from . import read_config

        return read_config(p).get("model_name")
    if not p.is_file():
        raise FileNotFoundError(f"checkpoint not found: {p}")
    from .formats import detect_format

    fmt = detect_format(p)
    if fmt == "safetensors":
        from safetensors import safe_open

        try:
            with safe_open(str(p), "pt") as f:
                return (f.metadata() or {}).get("model_name")
        except Exception as e:  # safetensors raises its own error types for a broken header
            raise CheckpointError(f"{p}: corrupt or truncated .safetensors file ({e})") from None
    if fmt == "torch":
        from .checkpoint import read_train_checkpoint

        ck = read_train_checkpoint(p)
        return ck["model_name"] if ck is not None else None
    return None
