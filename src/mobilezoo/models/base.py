"""The model contract every zoo network follows (timm's): features, head, classifier reset, default config."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..data.spec import IMAGENET_MEAN, IMAGENET_STD
from .layers import classifier_dropout


def default_cfg(num_classes: int = 1000, **overrides: Any) -> dict[str, Any]:
    """PaddleClas's eval transform: resize short side 256 (bilinear), center crop 224, /255, ImageNet mean/std."""
    cfg: dict[str, Any] = {
        "num_classes": num_classes,
        "input_size": (3, 224, 224),
        "resize_short": 256,
        "crop_size": 224,
        "crop_pct": 224 / 256,
        "interpolation": "bilinear",
        "mean": IMAGENET_MEAN,
        "std": IMAGENET_STD,
        "first_conv": "stem.conv",
        "classifier": "head.fc",
    }
    cfg.update(overrides)
    return cfg


class ClassifierHead(nn.Module):
    """Global average pool -> optional 1x1 'hidden' layer(s) -> dropout -> flatten -> Linear.

    ``hidden`` runs on the pooled N x C x 1 x 1 map (MobileNetV3's 1x1 conv + hardswish, GhostNet's conv+BN+ReLU).
    """

    def __init__(
        self,
        in_chs: int,
        num_classes: int,
        hidden: nn.Module | None = None,
        hidden_chs: int | None = None,
        drop_rate: float = 0.0,
        drop_mode: str = "upscale_in_train",
    ) -> None:
        super().__init__()
        self.in_chs = in_chs
        self.hidden = hidden if hidden is not None else nn.Identity()
        self.hidden_size = hidden_chs if hidden is not None else in_chs
        self.drop_rate = drop_rate
        self.drop_mode = drop_mode
        self.dropout = classifier_dropout(drop_rate, drop_mode)
        self.fc = nn.Linear(self.hidden_size, num_classes) if num_classes > 0 else nn.Identity()

    def reset(self, num_classes: int) -> None:
        self.fc = nn.Linear(self.hidden_size, num_classes) if num_classes > 0 else nn.Identity()

    def forward(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = x.mean((2, 3), keepdim=True)
        x = self.hidden(x)
        if pre_logits:
            return torch.flatten(x, 1)
        x = self.dropout(x)
        return self.fc(torch.flatten(x, 1))


class ZooModel(nn.Module):
    """Base class: ``stem`` -> ``blocks`` -> ``final_conv`` (``nn.Identity`` if none) -> ``head`` (ClassifierHead).

    Subclasses only build those four attributes; the contract lives here. (No class-level annotations: they would
    stop ``torch.jit.script``.)
    """

    __jit_unused_properties__ = ["pretrained_cfg", "head_hidden_size"]  # noqa: RUF012 (TorchScript reads this)

    def __init__(self) -> None:
        super().__init__()
        self.num_classes = 1000
        self.num_features = 0
        self.default_cfg: dict[str, Any] = default_cfg()
        self.model_name = ""

    def _init_head(
        self,
        num_features: int,
        num_classes: int,
        *,
        hidden: nn.Module | None = None,
        hidden_chs: int | None = None,
        drop_rate: float = 0.0,
        drop_mode: str = "upscale_in_train",
        **cfg_overrides: Any,
    ) -> None:
        """The tail of every family's ``__init__``, after ``stem``/``blocks``/``final_conv``: the feature width, the
        :class:`ClassifierHead`, the class count and the :func:`default_cfg` (with ``cfg_overrides``)."""
        self.num_features = num_features
        self.head = ClassifierHead(
            num_features, num_classes, hidden, hidden_chs, drop_rate=drop_rate, drop_mode=drop_mode
        )
        self.num_classes = num_classes
        self.default_cfg = default_cfg(num_classes, **cfg_overrides)

    @property
    def pretrained_cfg(self) -> dict[str, Any]:
        return self.default_cfg

    @property
    def head_hidden_size(self) -> int:
        return self.head.hidden_size

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Un-pooled feature map of the last stage (``num_features`` channels)."""
        return self.final_conv(self.blocks(self.stem(x)))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        return self.head(x, pre_logits=pre_logits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def get_classifier(self) -> nn.Module:
        return self.head.fc

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the final Linear with a freshly initialised one for ``num_classes`` (0 removes it)."""
        self.num_classes = num_classes
        self.head.reset(num_classes)
        self.default_cfg = {**self.default_cfg, "num_classes": num_classes}
