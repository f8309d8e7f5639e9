"""The one eval-preprocessing specification and the ImageNet normalisation constants: a leaf module (no torch, no
PIL, no other mobilezoo package), so the models, the weights catalog and the preprocessing all read the same numbers.
:class:`mobilezoo.data.transforms.EvalPreprocess` is this specification made executable."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "EvalSpec"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class EvalSpec:
    """PaddleClas's eval preprocessing: resize the short side, center crop, /255, normalise."""

    resize_short: int = 256
    crop_size: int = 224
    interpolation: str = "bilinear"
    mean: Sequence[float] = IMAGENET_MEAN
    std: Sequence[float] = IMAGENET_STD

    def as_dict(self) -> dict[str, Any]:
        """The description stored in artifacts' metadata and served by the HTTP API."""
        return {
            "resize_short": self.resize_short,
            "crop_size": self.crop_size,
            "interpolation": self.interpolation,
            "mean": list(self.mean),
            "std": list(self.std),
        }
