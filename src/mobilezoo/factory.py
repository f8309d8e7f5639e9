"""``create_model``: a zoo network by name with the weights asked for. Above both the model registry
(:mod:`mobilezoo.models`) and the weights (:mod:`mobilezoo.weights`), which it joins."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from torch import nn

from .models.registry import build_model, get_entry, is_model
from .models.registry import list_models as _registry_names

__all__ = ["create_model", "is_model", "list_models", "list_pretrained"]


def create_model(
    name: str,
    *,
    weights: str | Path | None = None,
    pretrained: bool | str | Path | None = None,
    num_classes: int | None = None,
    in_chans: int = 3,
    features_only: bool = False,
    out_indices: int | Sequence[int] | None = None,
    **kwargs: Any,
) -> nn.Module:
    """Build a zoo network by name, with the weights asked for (:mod:`mobilezoo.weights.choice`).

    ``weights``: None (default) = the published checkpoint for this name (downloaded once into the cache; a name
    with none is an error that says so); ``"random"``: freshly initialised; a path or URL to a ``.pdparams`` /
    ``.pt`` / ``.pth`` / ``.safetensors`` file, a ``save_pretrained`` folder or a training ``.ckpt``;
    ``"torchvision"`` / ``"timm"``: their checkpoint of the same network. ``pretrained=True/False`` (timm's
    spelling) = ``"published"`` / ``"random"``.

    ``num_classes``: None = the checkpoint's (1000 for random weights); another count re-initialises the classifier.
    Extra keyword arguments go to the family builder (e.g. ``drop_rate``, ``small_input``).

    ``features_only=True`` (timm's): the backbone only, returning the feature maps at ``out_indices`` (indices into
    ``model.feature_info``; default the last four, strides 4/8/16/32), the weights loaded as for the full network
    (:class:`mobilezoo.models.features.FeatureNet`).
    """
    if features_only:
        from .models.features import FeatureNet

        full = create_model(
            name, weights=weights, pretrained=pretrained, num_classes=num_classes, in_chans=in_chans, **kwargs
        )
        return FeatureNet(full, out_indices)
    if out_indices is not None:
        raise ValueError("out_indices selects feature maps: pass it with features_only=True")
    from .weights.choice import RANDOM, resolve_weights

    choice = resolve_weights(name, weights, pretrained=pretrained)
    if choice.kind == RANDOM:
        return build_model(name, num_classes=1000 if num_classes is None else num_classes, in_chans=in_chans, **kwargs)
    from .weights import apply_pretrained

    return apply_pretrained(get_entry(name), choice, num_classes=num_classes, in_chans=in_chans, **kwargs)


def list_models(
    pattern: str | None = None, *, pretrained: bool = False, family: str | None = None, archs_only: bool = False
) -> list[str]:
    """Registered names in family/table order (timm's ``list_models``): ``pattern`` is a case-insensitive glob on
    names and aliases (``'*ssld*'``); ``pretrained=True`` keeps the names with a published checkpoint."""
    names = _registry_names(pattern, family=family, archs_only=archs_only)
    if not pretrained:
        return names
    from .weights.catalog import weights_info

    return [n for n in names if weights_info(n) is not None]


def list_pretrained(pattern: str | None = None) -> list[str]:
    """Names with a published checkpoint (``create_model(name, pretrained=True)`` loads it), as timm's."""
    return list_models(pattern, pretrained=True)
