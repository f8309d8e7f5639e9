"""torch.hub entry points: one per registered zoo name, each ``mobilezoo.create_model(name, **kwargs)``.

    model = torch.hub.load("path/to/mobilezoo", "MobileNetV3_large_x1_0", source="local", pretrained=False)
    backbone = torch.hub.load("path/to/mobilezoo", "ShuffleNetV2_x1_0", source="local", weights="random",
                              features_only=True)

Works from a clone without installing it: this file puts the clone's ``src/`` first on ``sys.path``.
"""

import sys as _sys
from pathlib import Path as _Path

dependencies = ["torch", "torchvision", "safetensors", "numpy", "PIL"]

_SRC = str(_Path(__file__).resolve().parent / "src")
if _SRC not in _sys.path:
    _sys.path.insert(0, _SRC)

# private names: every public callable of this file is an entry point (torch.hub.list)
from mobilezoo.factory import create_model as _create_model  # noqa: E402 (after the sys.path line above)
from mobilezoo.models import list_models as _list_models  # noqa: E402


def _entrypoint(name: str):
    def entry(**kwargs):
        return _create_model(name, **kwargs)

    entry.__name__ = entry.__qualname__ = name
    entry.__doc__ = (
        f"mobilezoo {name}: ``mobilezoo.create_model({name!r}, **kwargs)`` (weights=..., pretrained=..., "
        "num_classes=..., features_only=..., out_indices=..., family builder options)."
    )
    return entry


for _name in _list_models():
    globals()[_name] = _entrypoint(_name)
del _name
