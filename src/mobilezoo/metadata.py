"""The zoo's metadata table, read without torch: every registry name with its family, architecture, aliases, config,
published-weights URL and file, and every architecture's counts at 224 x 224 (params, MACs, FLOPs, memory access,
peak activations, file sizes, per-block table). ``mobilezoo list`` and ``mobilezoo info`` print from it.

The table (``resources/model_table.json``) is generated from the built networks by ``scripts/make_model_table.py``
(:func:`mobilezoo.profile.table.build_table`); a test regenerates it and compares it with the shipped one exactly
(torchvision's verified-metadata idea). Name resolution and globbing follow :mod:`mobilezoo.models.registry`'s rules.
"""

from __future__ import annotations

import difflib
import fnmatch
import json
import os
import re
from functools import lru_cache
from importlib import resources
from typing import Any

__all__ = [
    "TABLE_FILE",
    "UnknownModelError",
    "arch_info",
    "families",
    "load_table",
    "norm",
    "resolve",
    "select",
    "unknown_model_message",
    "weights_url",
]

TABLE_FILE = "model_table.json"


class UnknownModelError(KeyError):
    """Raised for a name that is not in the zoo; the message names the closest valid names."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0])


def norm(name: str) -> str:
    """The lookup key of a name or alias: lower case, letters and digits only (``mobilenetv3_large_100`` ==
    ``MobileNetV3-Large-100``)."""
    return re.sub(r"[^a-z0-9]", "", name.lower())


def unknown_model_message(name: str, candidates: list[str], total: int) -> str:
    close = difflib.get_close_matches(name, candidates, n=5, cutoff=0.4)
    if not close:
        close = difflib.get_close_matches(name.lower(), [c.lower() for c in candidates], n=5, cutoff=0.4)
    hint = f" Did you mean: {', '.join(close)}?" if close else ""
    return f"unknown model {name!r}.{hint} See `mobilezoo list` for all {total} names."


@lru_cache(maxsize=1)
def load_table() -> dict[str, Any]:
    """The shipped table: ``{"input_size", "weights_host", "models": [row per name], "archs": {arch: counts}}``."""
    return json.loads(resources.files("mobilezoo.resources").joinpath(TABLE_FILE).read_text())


@lru_cache(maxsize=1)
def _rows() -> dict[str, dict[str, Any]]:
    return {r["name"]: r for r in load_table()["models"]}


@lru_cache(maxsize=1)
def _lookup() -> dict[str, str]:
    return {norm(key): r["name"] for r in _rows().values() for key in (r["name"], *r["aliases"])}


def resolve(name: str) -> dict[str, Any]:
    """The row of a canonical name, a PaddleClas name or an alias, in any case and punctuation; torchvision / timm
    names as :func:`mobilezoo.peers.foreign_name` rules (the same steps as ``models.registry.get_entry``)."""
    rows = _rows()
    if name in rows:
        return rows[name]
    from .peers import foreign_name

    canon = _lookup().get(norm(name))
    if canon is not None and name.lower() in {n.lower() for n in (canon, *rows[canon]["aliases"])}:
        return rows[canon]
    same = foreign_name(name, rows, zoo_spelling=canon is not None)
    if same is not None:
        return rows[same]
    if canon is not None:
        return rows[canon]
    candidates = list(rows) + [a for r in rows.values() for a in r["aliases"]]
    raise UnknownModelError(unknown_model_message(name, candidates, len(rows)))


def families() -> list[str]:
    return list(dict.fromkeys(r["family"] for r in _rows().values()))


def _families_matching(family: str) -> set[str]:
    """A family by name, or every family that starts with ``family`` (``Ghost``, ``ShuffleNet``), case-insensitive."""
    known = families()
    exact = {f for f in known if f.lower() == family.lower()}
    found = exact or {f for f in known if f.lower().startswith(family.lower())}
    if not found:
        raise ValueError(f"unknown family {family!r}; choose from {', '.join(known)} (or the start of one)")
    return found


def select(pattern: str | None = None, *, family: str | None = None, archs_only: bool = False) -> list[str]:
    """Names in table order; ``pattern`` is a case-insensitive glob on names and aliases (``'*ssld*'``)."""
    fams = _families_matching(family) if family else None
    out = []
    for name, r in _rows().items():
        if fams is not None and r["family"] not in fams:
            continue
        if archs_only and r["arch"] != name:
            continue
        if pattern and not any(fnmatch.fnmatch(n.lower(), pattern.lower()) for n in (name, *r["aliases"])):
            continue
        out.append(name)
    return out


def _tuples(v: Any) -> Any:
    return tuple(_tuples(x) for x in v) if isinstance(v, list) else v


def arch_info(arch: str) -> dict[str, Any]:
    """One architecture's counts at the table's input size; ``default_cfg`` as the model holds it (tuples)."""
    a = dict(load_table()["archs"][arch])
    a["default_cfg"] = {k: _tuples(v) for k, v in a["default_cfg"].items()}
    return a


def weights_url(url: str | None) -> str | None:
    """A table URL on the host ``$MOBILEZOO_WEIGHTS_HOST`` names (a mirror of PaddleClas's bucket), as
    :func:`mobilezoo.weights.hub.paddle_url` does."""
    host = os.environ.get("MOBILEZOO_WEIGHTS_HOST")
    default = load_table()["weights_host"]
    if url is None or not host or not url.startswith(default):
        return url
    return host.rstrip("/") + url[len(default) :]
