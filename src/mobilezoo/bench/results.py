"""Benchmark results on disk: one CSV row per configuration (``RESULT_COLUMNS``), and a JSON document with the same
rows plus the machine, the settings, each model's static dimensions and the machine's measured roofline."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any

from .grid import RESULT_COLUMNS, SCHEMA, BenchRun

__all__ = ["read_csv", "read_run", "write_csv", "write_json"]

_INT = {"threads", "batch_size", "iters", "rounds", "artifact_bytes"}
_BOOL = {"channels_last", "noisy"}
_STR = {
    "model",
    "family",
    "backend",
    "mode",
    "precision",
    "device",
    "status",
    "reason",
    "noise_reason",
    "cores",
    "artifact",
    "note",
}


def _clean(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None if math.isnan(v) else ("inf" if v > 0 else "-inf")
    return v


def write_csv(rows: list[dict[str, Any]], path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(RESULT_COLUMNS), extrasaction="ignore", lineterminator="\n")
        w.writeheader()
        for r in rows:
            w.writerow({k: "" if r.get(k) is None else _fmt(r.get(k)) for k in RESULT_COLUMNS})
    return path


def _fmt(v: Any) -> Any:
    if isinstance(v, float):
        return f"{v:.6g}"
    return v


def _parse(k: str, v: str) -> Any:
    if v == "":
        return None
    if k in _STR:
        return v
    if k in _BOOL:
        return v.lower() in ("true", "1", "yes")
    if k in _INT:
        return int(float(v))
    try:
        return float(v)
    except ValueError:
        return v


def read_csv(path: str | Path) -> list[dict[str, Any]]:
    with Path(path).open(newline="") as f:
        return [{k: _parse(k, v) for k, v in r.items()} for r in csv.DictReader(f)]


def write_json(run: BenchRun, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = {
        "schema": run.schema,
        "machine": run.machine,
        "spec": run.spec,
        "peaks": run.peaks,
        "wall_s": round(run.wall_s, 2),
        "models": run.models,
        "results": [{k: _clean(r.get(k)) for k in RESULT_COLUMNS} for r in run.results],
    }
    path.write_text(json.dumps(doc, indent=1, default=str) + "\n")
    return path


def read_run(path: str | Path) -> BenchRun:
    """A :class:`BenchRun` from a JSON written by :func:`write_json` (or just its rows, from a CSV)."""
    path = Path(path)
    if path.suffix == ".csv":
        return BenchRun(machine={}, spec={}, results=read_csv(path))
    doc = json.loads(path.read_text())
    if doc.get("schema") != SCHEMA:
        raise ValueError(f"{path}: not a mobilezoo benchmark file (schema {doc.get('schema')!r}, expected {SCHEMA})")
    return BenchRun(
        machine=doc.get("machine", {}),
        spec=doc.get("spec", {}),
        results=doc.get("results", []),
        models=doc.get("models", {}),
        peaks=doc.get("peaks", {}),
        wall_s=doc.get("wall_s", 0.0),
    )
