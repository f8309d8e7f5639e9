"""The model zoo: one file per family, each a data table of its variants plus one builder."""

from .base import IMAGENET_MEAN, IMAGENET_STD, ClassifierHead, ZooModel, default_cfg
from .registry import (
    ModelEntry,
    UnknownModelError,
    build_model,
    get_entry,
    list_families,
    list_models,
    register,
)

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "ClassifierHead",
    "ModelEntry",
    "UnknownModelError",
    "ZooModel",
    "build_model",
    "default_cfg",
    "get_entry",
    "list_families",
    "list_models",
    "register",
]
