"""mobilezoo: PaddleClas's mobile CNNs (MobileNetV1/V2/V3, ShuffleNetV1/V2, GhostNet) in PyTorch, exact to the
tensor."""

import importlib
import sys
import types

__version__ = "0.1.0"

__all__ = [
    "__version__",
    "create_model",
    "create_transform",
    "get_entry",
    "is_model",
    "list_families",
    "list_models",
    "list_pretrained",
    "profile",
    "resolve_data_config",
    "save_pretrained",
]

# Everything loads on first use, so that `import mobilezoo` (and `mobilezoo --help`, `list`, `info`) costs no torch.
_LAZY = {
    "create_model": "mobilezoo.factory",
    "create_transform": "mobilezoo.data.transforms",
    "get_entry": "mobilezoo.models",
    "is_model": "mobilezoo.factory",
    "list_families": "mobilezoo.models",
    "list_models": "mobilezoo.factory",
    "list_pretrained": "mobilezoo.factory",
    "resolve_data_config": "mobilezoo.train.recipes",
    "save_pretrained": "mobilezoo.weights",
}
_SUBPACKAGES = ("runtime", "export", "quant", "train", "bench", "serve", "data")


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    if name in _SUBPACKAGES:
        return importlib.import_module(f"mobilezoo.{name}")
    raise AttributeError(f"module 'mobilezoo' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY, *_SUBPACKAGES, "profile"})


class _Package(types.ModuleType):
    @property
    def profile(self):
        """``mobilezoo.profile(...)`` is the function: it shadows the subpackage of the same name on purpose."""
        return importlib.import_module("mobilezoo.profile").profile

    @profile.setter
    def profile(self, _module) -> None:  # importing mobilezoo.profile sets this attribute: the function stays
        pass


sys.modules[__name__].__class__ = _Package
