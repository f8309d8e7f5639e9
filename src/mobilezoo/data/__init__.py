"""Data: robust image decoding and the one eval preprocessing shared by every consumer."""

from .images import DEFAULT_MAX_PIXELS, IMAGE_SUFFIXES, ImageError, decode_image, find_images, load_image
from .transforms import EvalPreprocess, eval_preprocess

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "IMAGE_SUFFIXES",
    "EvalPreprocess",
    "ImageError",
    "decode_image",
    "eval_preprocess",
    "find_images",
    "load_image",
]
