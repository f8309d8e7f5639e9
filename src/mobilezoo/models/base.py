"""The model contract every zoo network follows (timm's): features, head, classifier reset, default config, the
feature pyramid (``feature_info``, ``forward_intermediates``) and the training hooks (``set_grad_checkpointing``,
``group_matcher``, ``no_weight_decay``)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

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


def min_input_size(model: nn.Module) -> int:
    """The smallest input side the network is built for: its total stride (the last ``feature_info`` reduction; 32
    for the ImageNet layouts, less with ``small_input``). A smaller input still gives logits, computed from a final
    feature map that is mostly padding."""
    info = getattr(model, "feature_info", None)
    return int(info[-1]["reduction"]) if info else 1


def check_input_size(model: nn.Module, x: torch.Tensor) -> None:
    """Refuse an input below :func:`min_input_size` with a one-line error naming the minimum (eager calls only: a
    trace or an export sees the example input)."""
    if torch.jit.is_tracing() or torch.compiler.is_compiling() or x.dim() != 4:
        return
    h, w = x.shape[-2], x.shape[-1]
    if not (isinstance(h, int) and isinstance(w, int)):  # symbolic shapes (FX, export)
        return
    m = min_input_size(model)
    if h < m or w < m:
        name = getattr(model, "model_name", "") or type(model).__name__
        raise ValueError(f"input {h}x{w} is below {name}'s minimum of {m}x{m} pixels (its total stride)")


@contextlib.contextmanager
def _running_stats_kept(block: nn.Module) -> Iterator[None]:
    """Undo what a recomputed forward does to BatchNorm's running statistics (it would count the batch twice)."""
    bns = [m for m in block.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    saved = [[b.clone() for b in (m.running_mean, m.running_var, m.num_batches_tracked)] for m in bns]
    try:
        yield
    finally:
        with torch.no_grad():
            for m, (mean, var, n) in zip(bns, saved):
                m.running_mean.copy_(mean)
                m.running_var.copy_(var)
                m.num_batches_tracked.copy_(n)


def checkpointed(block: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``block(x)`` keeping only its input for backward, where it is run again (BatchNorm statistics counted once)."""
    return checkpoint(
        block, x, use_reentrant=False, context_fn=lambda: (contextlib.nullcontext(), _running_stats_kept(block))
    )


def _pair(v: int | tuple[int, ...]) -> tuple[int, ...]:
    return tuple(v) if isinstance(v, tuple) else (v, v)


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

    Subclasses build those four attributes and declare the feature levels (:meth:`_init_feature_info`); the contract
    lives here. (No class-level annotations: they would stop ``torch.jit.script``.)
    """

    __jit_unused_properties__ = ["pretrained_cfg", "head_hidden_size"]  # noqa: RUF012 (TorchScript reads this)
    bn_weight_decay = True
    """False where PaddleClas's network gives BatchNorm's gamma/beta ``L2Decay(0.0)`` (see :meth:`no_weight_decay`)."""

    def __init__(self) -> None:
        super().__init__()
        self.num_classes = 1000
        self.num_features = 0
        self.default_cfg: dict[str, Any] = default_cfg()
        self.model_name = ""
        self.feature_info: list[dict[str, Any]] = []
        self.grad_checkpointing = False
        self.small_input = 0
        """the ``small_input`` level it was built with (the layout's strides; :func:`save_pretrained` records it)"""

    def _init_feature_info(self, steps: list[tuple[str, int, int]], small_input: int = 0) -> None:
        """Declare the feature levels from the family table: ``steps`` is ``(module path, output channels, stride)``
        for the stem (``stem``, or ``stem.conv`` then ``stem`` for a conv + pool stem) and each entry of ``blocks``,
        in forward order. Each level is the last step at one reduction (timm's ``feature_info``: ``num_chs``,
        ``reduction``, ``module``); ``final_conv`` belongs to the head side and is no level.

        ``small_input`` 2 (the family builders handle 1: a stride-1 stem) also runs the first downsampling entry of
        ``blocks`` at stride 1 (:meth:`_unstride`): the same parameters, a 2x larger map from there on."""
        self.small_input = int(small_input)
        if small_input >= 2:
            steps = self._unstride(steps)
        info: list[dict[str, Any]] = []
        reduction = 1
        for module, chs, stride in steps:
            reduction *= stride
            level = {"num_chs": chs, "reduction": reduction, "module": module}
            if info and info[-1]["reduction"] == reduction:
                info[-1] = level
            else:
                info.append(level)
        for i, level in enumerate(info):
            level["index"] = i
        self.feature_info = info

    def _unstride(self, steps: list[tuple[str, int, int]]) -> list[tuple[str, int, int]]:
        """``steps`` with the first stride-2 entry of ``blocks`` at stride 1: every convolution and pool of stride 2
        in that module (a block's main branch and its shortcut alike) set to stride 1, padding unchanged (each keeps
        the map size at stride 1). Blocks decide their residual at construction, so none gains a shortcut."""
        for i, (module, chs, stride) in enumerate(steps):
            if module.startswith("blocks.") and stride == 2:
                for m in self.get_submodule(module).modules():
                    if isinstance(m, (nn.Conv2d, nn.AvgPool2d, nn.MaxPool2d)) and _pair(m.stride) == (2, 2):
                        m.stride = (1, 1) if isinstance(m, nn.Conv2d) else 1
                return [*steps[:i], (module, chs, 1), *steps[i + 1 :]]
        return steps

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
        if not torch.jit.is_scripting():
            check_input_size(self, x)
        x = self.stem(x)
        if self.grad_checkpointing and not torch.jit.is_scripting():
            for block in self.blocks:
                x = checkpointed(block, x)
        else:
            x = self.blocks(x)
        return self.final_conv(x)

    def forward_intermediates(
        self,
        x: torch.Tensor,
        indices: int | list[int] | tuple[int, ...] | None = None,
        *,
        stop_early: bool = False,
        intermediates_only: bool = False,
    ) -> list[torch.Tensor] | tuple[torch.Tensor, list[torch.Tensor]]:
        """timm's ``forward_intermediates``: the feature maps at ``feature_info`` levels ``indices`` (an int n: the
        last n; None: all), with ``forward_features``' output unless ``intermediates_only``. ``stop_early`` (only with
        ``intermediates_only``) skips the blocks after the last level asked for."""
        from .features import FeatureNet, take_indices

        take = take_indices(self, indices)
        if stop_early and not intermediates_only:
            raise ValueError("stop_early needs intermediates_only=True (the final features need every block)")
        net = FeatureNet(self, take, prune=stop_early)
        last, feats = net.levels(x)
        if intermediates_only:
            return feats
        return self.final_conv(last), feats

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute each block's activations in the backward pass instead of keeping them (timm's switch): less
        memory in training; the same gradients and BatchNorm statistics. Off under TorchScript."""
        self.grad_checkpointing = enable

    def group_matcher(self, coarse: bool = False) -> dict[str, Any]:
        """Parameter groups for layer-wise learning-rate decay (timm's ``group_matcher``): the stem, then each block
        (``coarse``: each entry of ``blocks``, a whole stage where blocks are staged), ``final_conv`` joining the last
        block (timm's rule for its ordinal 99999); the head is the last group."""
        staged = any(isinstance(b, nn.Sequential) for b in self.blocks)
        fine = r"^blocks\.(\d+)\.(\d+)" if staged else r"^blocks\.(\d+)"
        return {"stem": r"^stem", "blocks": [(r"^blocks\.(\d+)" if coarse else fine, None), (r"^final_conv", (99999,))]}

    def no_weight_decay(self) -> set[str]:
        """Parameter names to train without weight decay (timm's hook): BatchNorm's gamma/beta where PaddleClas's
        network declares ``L2Decay(0.0)`` for them (MobileNetV3, GhostNet), else none."""
        if self.bn_weight_decay:
            return set()
        bns = [n for n, m in self.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        return {f"{n}.{p}" for n in bns for p in ("weight", "bias")}

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
