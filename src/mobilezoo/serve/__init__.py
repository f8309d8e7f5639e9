"""Serving: ``mobilezoo serve``, an HTTP inference service with dynamic batching, metrics and an upload page.

``create_app(runtime, ServeConfig(...))`` builds the FastAPI app around any :func:`mobilezoo.runtime.load` runtime;
the command line (:mod:`mobilezoo.serve.cli`) runs it on uvicorn. Needs the ``serve`` extra
(``pip install 'mobilezoo[serve]'``); importing this package alone imports nothing heavy.
"""

from __future__ import annotations

from typing import Any

__all__ = ["Batcher", "ServeConfig", "create_app"]


def __getattr__(name: str) -> Any:
    if name in ("ServeConfig", "create_app"):
        from . import app

        return getattr(app, name)
    if name == "Batcher":
        from .batcher import Batcher

        return Batcher
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
