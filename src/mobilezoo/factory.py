"""``create_model``: a zoo network by name with the weights asked for. Above both the model registry
(:mod:`mobilezoo.models`) and the weights (:mod:`mobilezoo.weights`), which it joins."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from .models.registry import build_model, get_entry

__all__ = ["create_model"]


def create_model(
    name: str,
    *,
    num_classes: int = 1000,
    pretrained: bool | str | Path = False,
    in_chans: int = 3,
    **kwargs: Any,
) -> nn.Module:
    """Build a zoo network by name.

    ``pretrained``: False; True (the published checkpoint for this name, downloaded once into the cache); or a
    path/URL to a ``.pdparams`` / ``.pth`` / ``.safetensors`` file or a ``save_pretrained`` directory.
    Extra keyword arguments go to the family builder (e.g. ``drop_rate``, ``small_input``).
    """
    if pretrained is not False and pretrained is not None:
        from .weights import apply_pretrained

        return apply_pretrained(get_entry(name), pretrained, num_classes=num_classes, in_chans=in_chans, **kwargs)
    return build_model(name, num_classes=num_classes, in_chans=in_chans, **kwargs)
