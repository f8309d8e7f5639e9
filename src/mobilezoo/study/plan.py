"""The study's plan and state: its settings, the models' progress, in ``DIR/study.json`` (written atomically after
every step, so an interrupted study resumes from what it records: a finished model is never retrained).

A model goes ``pending`` -> ``planned`` (its recipe fixed: epochs fitted to the budget) -> ``trained`` (its
``last.ckpt`` final, its test-split top-1/top-5 recorded) -> ``done`` (the seven dimensions measured).
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["SCHEMA", "STATUSES", "STUDY_MODELS", "Settings", "State", "StudyError"]

SCHEMA = "mobilezoo.study/1"
STATUSES = ("pending", "planned", "trained", "done")

STUDY_MODELS = [
    "ShuffleNetV2_x0_5",
    "ShuffleNetV2_x1_0",
    "ShuffleNetV2_x1_5",
    "MobileNetV2_x0_5",
    "MobileNetV2_x1_0",
    "MobileNetV2_x1_4",
    "GhostNet_x0_5",
    "GhostNet_x1_0",
    "GhostNet_x1_3",
    "MobileNetV3_small_x1_0",
    "MobileNetV3_large_x1_0",
]
"""The seed's eleven networks (``004_*.txt``: ShuffleNetV2 x0.5/x1.0/x1.5, MobileNetV2 x0.5/x1.0/x1.4, GhostNet
x0.5/x1.0/x1.3, MobileNetV3 small/large), in its order."""


class StudyError(ValueError):
    """Bad input to the study (told in one line by the CLI)."""


@dataclass
class Settings:
    """Everything that decides what the study measures; fixed when it starts, kept by a resume."""

    data: str
    models: list[str] = field(default_factory=lambda: list(STUDY_MODELS))
    epochs: int | None = None
    """train every model this many epochs (None: the recipe's, unless ``budget_min``)"""
    budget_min: float | None = None
    """wall-clock training budget per model in minutes, the schedule fitted to it (None: ``epochs``)"""
    recipe: str = "cifar10"
    overrides: list[str] = field(default_factory=list)
    """``key=value`` recipe overrides (``mobilezoo train -o``), applied to every model before the budget fit"""
    engines: list[str] = field(default_factory=list)
    """benchmark configurations timed (empty: every one that runs fp32 here)"""
    sizes: list[int] = field(default_factory=lambda: [32, 224])
    device: str = "auto"
    probe_steps: int = 20
    """training steps timed (in a throw-away run) to fit the epochs to the budget"""
    calib_images: int = 64
    """training images the int8 PTQ calibrates on"""

    @property
    def mode(self) -> str:
        return "budget" if self.budget_min is not None else "epochs"

    def check(self) -> Settings:
        """One-line :class:`StudyError` for settings that cannot run; returns ``self`` (model names canonical)."""
        from ..models import get_entry

        if not Path(self.data).is_dir():
            raise StudyError(f"data folder not found: {self.data}")
        if self.epochs is not None and self.budget_min is not None:
            raise StudyError("give --epochs N or --budget-min M, not both")
        if self.budget_min is not None and not self.budget_min > 0:
            raise StudyError(f"--budget-min must be > 0 minutes, not {self.budget_min:g}")
        if self.epochs is not None and self.epochs < 1:
            raise StudyError(f"--epochs must be >= 1, not {self.epochs}")
        if not self.models:
            raise StudyError("--models: no model given")
        if self.probe_steps < 3:
            raise StudyError(f"--probe-steps must be >= 3, not {self.probe_steps}")
        if any(s < 16 for s in self.sizes):
            raise StudyError(f"--sizes: latency input sizes must be >= 16 pixels, not {self.sizes}")
        self.models = list(dict.fromkeys(get_entry(m).name for m in self.models))  # unknown: one line
        self.data = str(Path(self.data).resolve())
        return self


def _atomic_write(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


class State:
    """``DIR/study.json``: the settings, the machine, and each model's status and results."""

    FILE = "study.json"

    def __init__(self, out: Path, doc: dict[str, Any]) -> None:
        self.out, self.doc = out, doc

    @property
    def settings(self) -> Settings:
        return Settings(**self.doc["settings"])

    @property
    def path(self) -> Path:
        return self.out / self.FILE

    def run_dir(self, name: str) -> Path:
        """Where ``name`` trains (``last.ckpt``, ``log.csv``, ``recipe.toml``)."""
        return self.out / "runs" / name

    @classmethod
    def create(cls, out: str | Path, settings: Settings, machine: dict[str, Any]) -> State:
        out = Path(out)
        if (out / cls.FILE).is_file():
            raise StudyError(f"{out} already holds a study: continue it with --resume {out}")
        if out.exists() and (not out.is_dir() or any(out.iterdir())):
            raise StudyError(f"{out} exists and is not an empty folder: give a new output folder")
        from .. import __version__

        out.mkdir(parents=True, exist_ok=True)
        doc = {
            "schema": SCHEMA,
            "mobilezoo": __version__,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "settings": asdict(settings),
            "machine": machine,
            "models": {m: {"status": "pending"} for m in settings.models},
        }
        state = cls(out, doc)
        state.save()
        return state

    @classmethod
    def load(cls, out: str | Path) -> State:
        """A study folder written by :meth:`create`; anything else is a one-line :class:`StudyError`."""
        out = Path(out)
        if not out.is_dir():
            raise StudyError(f"--resume {out}: folder not found")
        path = out / cls.FILE
        if not path.is_file():
            raise StudyError(f"{out} is not a mobilezoo study (no {cls.FILE}): start one with --data DIR -o {out}")
        try:
            doc = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise StudyError(f"{path}: unreadable ({e})") from None
        if not isinstance(doc, dict) or doc.get("schema") != SCHEMA:
            raise StudyError(f"{path}: not a mobilezoo study file (schema {SCHEMA} expected)")
        return cls(out, doc)

    def save(self) -> None:
        self.doc["updated"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        _atomic_write(self.path, json.dumps(self.doc, indent=1, default=str) + "\n")

    def model(self, name: str) -> dict[str, Any]:
        return self.doc["models"][name]

    def update(self, name: str, **fields: Any) -> None:
        """Record ``fields`` for model ``name`` and write the file."""
        self.doc["models"][name].update(fields)
        self.save()

    def status(self, name: str) -> str:
        return self.model(name)["status"]

    def done(self) -> list[str]:
        return [m for m, r in self.doc["models"].items() if r["status"] == "done"]
