"""Where mobilezoo keeps downloads, converted weights and measured choices (no torch: ``mobilezoo list`` reads it)."""

from __future__ import annotations

import json
import os
from pathlib import Path

__all__ = ["cache_dir", "index_path", "load_index"]


def cache_dir() -> Path:
    """``$MOBILEZOO_HOME``, else ``$XDG_CACHE_HOME/mobilezoo``, ``$TORCH_HOME/mobilezoo``, ``~/.cache/mobilezoo``."""
    for var, sub in (("MOBILEZOO_HOME", ""), ("XDG_CACHE_HOME", "mobilezoo"), ("TORCH_HOME", "mobilezoo")):
        v = os.environ.get(var)
        if v:
            return Path(v).expanduser() / sub if sub else Path(v).expanduser()
    return Path.home() / ".cache" / "mobilezoo"


def index_path() -> Path:
    return cache_dir() / "index.json"


def load_index() -> dict[str, dict]:
    """The user-level cache index: per URL, the pinned sha256/size of the download and of its safetensors."""
    try:
        return json.loads(index_path().read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}
