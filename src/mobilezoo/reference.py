"""PaddleClas's published figures for its 37 mobile names (a copy of the seed tables shipped in the package).

Columns: top1/top5 (ImageNet-1k val), ref_top1/ref_top5 (original papers), flops_g (published "FLOPs", roughly
2 x MACs, not exactly reproducible), params_m, sd855_t{1,2,4}_ms (Snapdragon 855 latency, batch 1, threads),
storage_mb, v100_trt_fp32_bs{1,4,8}_ms, t4_trt_fp{16,32}_bs{1,4,8}_ms.
"""

from __future__ import annotations

import csv
from functools import lru_cache
from importlib import resources

__all__ = ["imagenet_classes", "reference_row", "reference_table"]


def _num(v: str) -> float | None:
    return float(v) if v.strip() else None


@lru_cache(maxsize=1)
def reference_table() -> dict[str, dict[str, float | None]]:
    """``{published name: {column: value or None}}`` in the table's order."""
    text = resources.files("mobilezoo.resources").joinpath("paddleclas_mobile_reference.csv").read_text()
    rows = csv.DictReader(text.splitlines())
    return {r["model"]: {k: _num(v) for k, v in r.items() if k != "model"} for r in rows}


def reference_row(name: str) -> dict[str, float | None] | None:
    """The published row for a registry name (canonical names and their PaddleClas aliases both work)."""
    from .models import get_entry

    table = reference_table()
    if name in table:
        return table[name]
    entry = get_entry(name)
    for candidate in (entry.name, *entry.aliases):
        if candidate in table:
            return table[candidate]
    return None


@lru_cache(maxsize=1)
def imagenet_classes() -> list[str]:
    """The 1000 ImageNet-1k class names in index order (first WordNet lemma of each synset)."""
    text = resources.files("mobilezoo.resources").joinpath("imagenet_classes.txt").read_text()
    return [line.split("\t", 1)[1].split(",")[0].strip() for line in text.splitlines() if line.strip()]


def class_names_for(model: object = None, meta: dict | None = None) -> list[str]:
    """Class names of a model: stored ones (checkpoint/artifact), else ImageNet's for 1000 classes, else indices."""
    names = (meta or {}).get("class_names") or getattr(model, "class_names", None)
    if names:
        return list(names)
    n = (meta or {}).get("num_classes") or getattr(model, "num_classes", 1000)
    return imagenet_classes() if n == 1000 else [str(i) for i in range(n)]
