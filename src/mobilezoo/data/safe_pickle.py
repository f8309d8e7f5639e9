"""A pickle reader that builds numpy arrays and plain containers only: PaddlePaddle's ``.pdparams`` and
torchvision's CIFAR batches are pickles, and a pickle can ask for any callable (``os.system``). Every global it
references must be one of the numpy array-reconstruction functions below; anything else is refused."""

from __future__ import annotations

import pickle
from collections import OrderedDict
from typing import Any

import numpy as np

__all__ = ["RestrictedUnpickler", "UnsafePickleError"]


class UnsafePickleError(ValueError):
    """A pickle that asks for something other than numpy arrays and plain containers."""


# (module, name) pairs a PaddlePaddle state-dict pickle may reference. numpy 2 moved numpy.core -> numpy._core.
_ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("collections", "OrderedDict"): OrderedDict,
}
for _mod in ("numpy.core.multiarray", "numpy._core.multiarray"):
    _ALLOWED_GLOBALS[(_mod, "_reconstruct")] = np._core.multiarray._reconstruct  # type: ignore[attr-defined]
    _ALLOWED_GLOBALS[(_mod, "scalar")] = np._core.multiarray.scalar  # type: ignore[attr-defined]
for _mod in ("numpy.core.numeric", "numpy._core.numeric"):
    _ALLOWED_GLOBALS[(_mod, "_frombuffer")] = np._core.numeric._frombuffer  # type: ignore[attr-defined]


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that only builds numpy arrays, dicts, lists, tuples and plain scalars."""

    error: type[Exception] = UnsafePickleError

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise self.error(
                f"refusing to load: the pickle asks for {module}.{name}, which is not a numpy array or plain "
                "container. Only trusted PaddlePaddle state dicts (name -> ndarray) are accepted."
            ) from None

    def persistent_load(self, pid: Any) -> Any:
        raise self.error("refusing to load: pickle uses persistent ids (not a PaddlePaddle state dict)")
