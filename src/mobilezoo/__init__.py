"""mobilezoo: PaddleClas's mobile CNNs (MobileNetV1/V2/V3, ShuffleNetV1/V2, GhostNet) in PyTorch, exact to the
tensor."""

from .factory import create_model
from .models import get_entry, list_families, list_models
from .profile import profile  # the function shadows the subpackage name on purpose: mobilezoo.profile(...)
from .weights import save_pretrained

__version__ = "0.1.0"

__all__ = ["__version__", "create_model", "get_entry", "list_families", "list_models", "profile", "save_pretrained"]


def __getattr__(name: str):
    # heavier subpackages load on first use
    if name in ("runtime", "export", "quant", "train", "bench", "serve", "data"):
        import importlib

        return importlib.import_module(f"mobilezoo.{name}")
    raise AttributeError(f"module 'mobilezoo' has no attribute {name!r}")
