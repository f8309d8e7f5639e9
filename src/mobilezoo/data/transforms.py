"""The one eval preprocessing, shared by training eval, prediction, export checks and serving.

It is PaddleClas's ``ResizeImage(resize_short) -> CropImage(size) -> NormalizeImage -> ToCHWImage`` with its exact
geometry: the short side goes to ``resize_short`` with both sides *rounded* (``int(round(side * scale))``), bilinear
without antialiasing (PaddleClas resizes with ``cv2.INTER_LINEAR``), then a center crop whose offsets are *floored*
(``(side - crop) // 2``), then ``/255``, mean/std. (torchvision's ``Resize``/``CenterCrop`` truncate and round the
other way, which shifts the crop by a pixel on odd sizes.) Pixel values differ from cv2's fixed-point resize by at
most one level of 255.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from PIL import Image
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as F

from .spec import EvalSpec

__all__ = ["EvalPreprocess", "TrainAugment", "create_transform", "eval_preprocess"]

_INTERP = {
    "bilinear": InterpolationMode.BILINEAR,
    "bicubic": InterpolationMode.BICUBIC,
    "nearest": InterpolationMode.NEAREST,
}


@dataclass(frozen=True)
class EvalPreprocess(EvalSpec):
    """The eval preprocessing specification (:class:`mobilezoo.data.spec.EvalSpec`), executable."""

    def resized_size(self, width: int, height: int) -> tuple[int, int]:
        """``(w, h)`` after the short-side resize, rounded as PaddleClas does."""
        scale = self.resize_short / min(width, height)
        return round(width * scale), round(height * scale)  # PaddleClas: int(round(...))

    def geometry(self, image: torch.Tensor) -> torch.Tensor:
        """uint8 CHW -> uint8 CHW, resized and center-cropped."""
        h, w = image.shape[-2:]
        nw, nh = self.resized_size(w, h)
        img = F.resize(image, [nh, nw], interpolation=_INTERP[self.interpolation], antialias=False)
        c = self.crop_size
        if nh < c or nw < c:
            raise ValueError(f"resize_short={self.resize_short} is smaller than crop_size={c}")
        top, left = (nh - c) // 2, (nw - c) // 2
        return img[..., top : top + c, left : left + c]

    def normalize(self, image: torch.Tensor) -> torch.Tensor:
        """uint8 CHW (or NCHW) -> float32, /255, mean/std."""
        x = image.to(torch.float32).div_(255.0)
        mean = torch.tensor(self.mean, dtype=torch.float32).view(-1, 1, 1)
        std = torch.tensor(self.std, dtype=torch.float32).view(-1, 1, 1)
        return (x - mean) / std

    def __call__(self, image: Image.Image | torch.Tensor) -> torch.Tensor:
        """An RGB PIL image or uint8 CHW tensor -> normalised float32 ``3 x crop x crop`` tensor."""
        t = F.pil_to_tensor(image) if isinstance(image, Image.Image) else image
        if t.dtype != torch.uint8:
            raise TypeError(f"expected a uint8 image tensor, got {t.dtype}")
        return self.normalize(self.geometry(t))


def eval_preprocess(cfg: Mapping[str, Any] | Any | None = None, **overrides: Any) -> EvalPreprocess:
    """The eval preprocessing of a model's ``default_cfg`` (or a model, or a dict, or defaults)."""
    if cfg is not None and not isinstance(cfg, Mapping):
        cfg = getattr(cfg, "default_cfg", None) or {}
    cfg = dict(cfg or {})
    keys = ("resize_short", "crop_size", "interpolation", "mean", "std")
    kw = {k: cfg[k] for k in keys if k in cfg}
    kw.update(overrides)
    return EvalPreprocess(**kw)


@dataclass(frozen=True)
class TrainAugment:
    """Per-image training augmentation on uint8 CHW tensors, then the eval normalisation (same mean/std).

    ``policy="imagenet"``: PaddleClas's ``RandCropImage`` (random-resized crop, bilinear) + ``RandFlipImage`` (+
    ``AutoAugment`` with the ImageNet policy where PaddleClas uses it). ``policy="cifar"``: pad 4 + random crop + flip.
    """

    crop_size: int = 224
    policy: str = "imagenet"
    autoaugment: bool = False
    normalize: EvalPreprocess = EvalPreprocess()

    def __call__(self, image: Image.Image | torch.Tensor) -> torch.Tensor:
        from torchvision.transforms import v2

        if isinstance(image, Image.Image):
            image = F.pil_to_tensor(image)
        c = self.crop_size
        if self.policy == "cifar":
            img = F.pad(image, [4, 4, 4, 4])
            h, w = img.shape[-2:]
            top, left = (int(torch.randint(0, n - c + 1, ())) for n in (h, w))
            img = img[..., top : top + c, left : left + c]
        else:
            img = v2.RandomResizedCrop(c, interpolation=InterpolationMode.BILINEAR, antialias=True)(image)
        if torch.rand(()) < 0.5:
            img = img.flip(-1)
        if self.autoaugment:
            img = v2.AutoAugment(v2.AutoAugmentPolicy.IMAGENET)(img)
        return self.normalize.normalize(img)


def create_transform(config: Mapping[str, Any], *, is_training: bool = False) -> EvalPreprocess | TrainAugment:
    """The transform of a data config (:func:`mobilezoo.train.recipes.resolve_data_config`, timm's habit): the one
    eval preprocessing, or with ``is_training`` the recipe's training augmentation (``train_crop``, ``augment``,
    ``autoaugment``) followed by the same normalisation. Both take an RGB PIL image or a uint8 CHW tensor."""
    pre = eval_preprocess(config)
    if not is_training:
        return pre
    crop = int(config.get("train_crop", pre.crop_size))
    return TrainAugment(crop, str(config.get("augment", "imagenet")), bool(config.get("autoaugment", False)), pre)


def batch_pad_crop_flip(x: torch.Tensor, crop: int, generator: torch.Generator, pad: int = 4) -> torch.Tensor:
    """CIFAR augmentation for a whole uint8 NCHW batch at once, on its device: pad, random crop, random flip."""
    n = x.shape[0]
    xp = torch.nn.functional.pad(x, [pad] * 4)
    h, w = xp.shape[-2:]
    dev = generator.device
    oy = torch.randint(0, h - crop + 1, (n,), generator=generator, device=dev).to(x.device)
    ox = torch.randint(0, w - crop + 1, (n,), generator=generator, device=dev).to(x.device)
    flip = (torch.rand(n, generator=generator, device=dev) < 0.5).to(x.device)
    ar = torch.arange(crop, device=x.device)
    rows = (oy[:, None] + ar)[:, :, None]  # N x crop x 1
    cols = ox[:, None] + torch.where(flip[:, None], ar.flip(0), ar)  # flipped columns read right to left
    out = xp[torch.arange(n, device=x.device)[:, None, None], :, rows, cols[:, None, :]]  # N x crop x crop x C
    return out.permute(0, 3, 1, 2).contiguous()
