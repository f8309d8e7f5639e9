"""One registry, one ``create_model``.

Family files register their variants here by name (``register``). Each published PaddleClas name is an entry; the
``_ssld`` / ``_int8`` names are entries whose ``arch`` is the base architecture (they differ only in weights).
"""

from __future__ import annotations

import dataclasses
import fnmatch
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from ..metadata import UnknownModelError, unknown_model_message
from ..metadata import norm as _norm
from ..peers import DifferentNetworkError, foreign_name

__all__ = [
    "ModelEntry",
    "UnknownModelError",
    "build_model",
    "get_entry",
    "is_model",
    "list_families",
    "list_models",
    "register",
    "register_weights_variant",
]


@dataclass(frozen=True)
class ModelEntry:
    name: str
    family: str
    builder: Callable[..., nn.Module]
    config: Any
    arch: str = ""
    aliases: tuple[str, ...] = ()
    paddle_arch: str | None = None
    """PaddleClas constructor that builds the same network (None: not in PaddleClas)."""
    paddle_keymap: Callable[[nn.Module], dict[str, str]] | None = None
    """Module path in our model -> module path in PaddleClas's state dict."""
    weights_tag: str | None = None
    source: str = "paddleclas"
    notes: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def is_arch(self) -> bool:
        return self.arch == self.name


_REGISTRY: dict[str, ModelEntry] = {}
_LOOKUP: dict[str, str] = {}  # normalised name / alias -> canonical name
_FAMILY_MODULES = (
    "mobilenet_v1",
    "mobilenet_v2",
    "mobilenet_v3",
    "shufflenet_v1",
    "shufflenet_v2",
    "ghostnet",
)


def register(entry: ModelEntry) -> ModelEntry:
    if not entry.arch:
        object.__setattr__(entry, "arch", entry.name)
    if entry.name in _REGISTRY:
        raise ValueError(f"model {entry.name!r} registered twice")
    _REGISTRY[entry.name] = entry
    for key in (entry.name, *entry.aliases):
        k = _norm(key)
        other = _LOOKUP.get(k)
        if other is not None and other != entry.name:
            raise ValueError(f"alias {key!r} of {entry.name!r} already names {other!r}")
        _LOOKUP[k] = entry.name
    return entry


def register_weights_variant(base: ModelEntry, name: str, tag: str, aliases: tuple[str, ...] = ()) -> ModelEntry:
    """Register a published name that is ``base``'s architecture with other weights (``_ssld``, ``_ssld_int8``)."""
    return register(dataclasses.replace(base, name=name, arch=base.name, aliases=aliases, weights_tag=tag))


_LOADED: list[bool] = []  # every family module imported (one family imported on its own, e.g. by a rewrite, is not)


def _ensure_loaded() -> None:
    if _LOADED:
        return
    import importlib

    for mod in _FAMILY_MODULES:
        importlib.import_module(f"mobilezoo.models.{mod}")
    _LOADED.append(True)


def _resolve(name: str) -> ModelEntry | None:
    _ensure_loaded()
    if name in _REGISTRY:
        return _REGISTRY[name]
    canon = _LOOKUP.get(_norm(name))
    if canon is not None and name.lower() in {n.lower() for n in (canon, *_REGISTRY[canon].aliases)}:
        return _REGISTRY[canon]
    same = foreign_name(name, _REGISTRY, zoo_spelling=canon is not None)
    if same is not None:
        return _REGISTRY[same]
    return _REGISTRY[canon] if canon is not None else None


def get_entry(name: str) -> ModelEntry:
    """Resolve a canonical name, a PaddleClas name or an alias, in any case and punctuation.

    torchvision / timm model names follow :func:`mobilezoo.peers.foreign_name`: they resolve only where that
    library's network is the same one (torchvision's ``shufflenet_v2_x0_5 ... x2_0``); any other of theirs for a zoo
    family (``mobilenet_v2``, ``mobilenet_v3_small``, ``mobilenetv3_large_100``) raises
    :class:`~mobilezoo.peers.DifferentNetworkError` saying how the networks differ.
    """
    entry = _resolve(name)
    if entry is not None:
        return entry
    candidates = list(_REGISTRY) + [a for e in _REGISTRY.values() for a in e.aliases]
    raise UnknownModelError(unknown_model_message(name, candidates, len(_REGISTRY)))


def is_model(name: str) -> bool:
    """Whether :func:`get_entry` (so ``create_model``) accepts ``name`` (timm's ``is_model``)."""
    try:
        return _resolve(name) is not None
    except DifferentNetworkError:
        return False


def list_models(pattern: str | None = None, *, family: str | None = None, archs_only: bool = False) -> list[str]:
    """Registered names, in family/table order; ``pattern`` is a case-insensitive glob (``'*ssld*'``)."""
    _ensure_loaded()
    out = []
    for name, e in _REGISTRY.items():
        if family and e.family.lower() != family.lower():
            continue
        if archs_only and not e.is_arch:
            continue
        if pattern and not fnmatch.fnmatch(name.lower(), pattern.lower()):
            if not any(fnmatch.fnmatch(a.lower(), pattern.lower()) for a in e.aliases):
                continue
        out.append(name)
    return out


def list_families() -> list[str]:
    _ensure_loaded()
    return list(dict.fromkeys(e.family for e in _REGISTRY.values()))


def build_model(name: str, *, num_classes: int = 1000, in_chans: int = 3, **kwargs: Any) -> nn.Module:
    """The zoo network called ``name`` (or an alias), freshly initialised; weights are
    :func:`mobilezoo.create_model`'s business. Extra keyword arguments go to the family builder."""
    entry = get_entry(name)
    model = entry.builder(entry.config, num_classes=num_classes, in_chans=in_chans, **kwargs)
    model.model_name = entry.name
    return model
