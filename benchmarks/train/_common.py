"""Shared by the training benchmarks: machine description and result writing (CSV + JSON side by side)."""

from __future__ import annotations

import csv
import json
import subprocess
from pathlib import Path

import torch

RESULTS = Path(__file__).resolve().parents[1] / "results"
DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"


def machine() -> dict:
    """The project's one machine record (mobilezoo.measure.machine), plus torch's thread count and the git commit."""
    from mobilezoo.measure.machine import machine_info

    info = {**machine_info(), "torch_threads": torch.get_num_threads()}
    try:
        info["git"] = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True
        ).stdout.strip()
    except OSError:
        pass
    return info


def rel(path: str | Path) -> str:
    """A path as the results files record it: relative to the repository (``../shared/...`` for the shared data)."""
    import os

    return os.path.relpath(Path(path).resolve(), Path(__file__).resolve().parents[2])


def subset(src: Path, dst: Path, per_class: int) -> Path:
    """An ImageFolder with the first ``per_class`` training images of each class (symlinks) and the test split;
    made under a temporary name and renamed, so an interrupted run never leaves half a subset behind."""
    import shutil

    if dst.exists():
        return dst
    tmp = dst.with_name(dst.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    for cls in sorted(p.name for p in (src / "train").iterdir()):
        (tmp / "train" / cls).mkdir(parents=True)
        for f in sorted((src / "train" / cls).iterdir())[:per_class]:
            (tmp / "train" / cls / f.name).symlink_to(f.resolve())
    (tmp / "test").symlink_to((src / "test").resolve())
    tmp.rename(dst)
    return dst


def write(name: str, rows: list[dict], meta: dict) -> tuple[Path, Path]:
    RESULTS.mkdir(parents=True, exist_ok=True)
    csv_path, json_path = RESULTS / f"{name}.csv", RESULTS / f"{name}.json"
    fields = list(dict.fromkeys(k for r in rows for k in r))
    with csv_path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        w.writerows(rows)
    json_path.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2, default=str))
    return csv_path, json_path
