"""Optional dependencies with an install hint instead of a bare ImportError."""

from __future__ import annotations

import importlib
from types import ModuleType


class MissingDependencyError(RuntimeError):
    pass


def require(module: str, extra: str = "deploy") -> ModuleType:
    try:
        return importlib.import_module(module)
    except ImportError:
        raise MissingDependencyError(
            f"{module} is not installed; install it with: pip install 'mobilezoo[{extra}]'"
        ) from None
