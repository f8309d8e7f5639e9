"""The study end to end: for each model not yet done — plan (fit the epochs to the budget), train (or resume its
run exactly), measure — recording every step in ``study.json``, then the report (rewritten after every model, so it
always shows what has finished). Progress: one overall bar (models, with the study's ETA) above the training
engine's per-epoch bars, and one line per stage on stdout."""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

from ..train import Recipe
from .measure import measure_model
from .plan import State
from .report import write_report
from .training import plan_model, train_model

__all__ = ["run_study"]


class _Overall:
    """The study's bar on stderr: models done of all, the current stage, and the ETA."""

    def __init__(self, total: int, done: int, enabled: bool) -> None:
        from tqdm import tqdm

        self.bar = tqdm(total=total, initial=done, unit="model", disable=not enabled, dynamic_ncols=True,
                        bar_format="study {n_fmt}/{total_fmt} models |{bar:20}| {elapsed}{postfix}")  # fmt: skip
        self.total, self.done, self.spent = total, done, []
        self.t_model = time.perf_counter()

    def eta_s(self, per_model_guess: float | None) -> float | None:
        left = self.total - self.done
        per = sum(self.spent) / len(self.spent) if self.spent else per_model_guess
        if per is None:
            return None
        return max(0.0, per * left - (time.perf_counter() - self.t_model))

    def stage(self, i: int, name: str, what: str, guess: float | None) -> None:
        eta = self.eta_s(guess)
        eta_txt = time.strftime("%H:%M:%S", time.gmtime(eta)) if eta is not None else "known after one model"
        self.bar.set_postfix_str(f"{name}: {what}; ETA {eta_txt}")
        print(f"[{i}/{self.total}] {name}: {what} (study ETA: {eta_txt})", flush=True)

    def finished(self) -> None:
        self.spent.append(time.perf_counter() - self.t_model)
        self.done += 1
        self.t_model = time.perf_counter()
        self.bar.update(1)

    def close(self) -> None:
        self.bar.close()


def _guess_s(state: State) -> float | None:
    """A model's time before any has finished in this process: the budget plus a measuring allowance."""
    b = state.settings.budget_min
    return b * 60 * 1.25 + 60 if b is not None else None


def _one(state: State, i: int, name: str, bar: _Overall, progress: bool) -> None:
    s, guess = state.settings, _guess_s(state)
    if state.status(name) == "pending":
        bar.stage(i, name, "speed probe and plan" if s.budget_min is not None else "plan", guess)
        recipe, plan = plan_model(name, s, state.out)
        state.update(name, status="planned", plan=plan, recipe=recipe.to_dict())
    if state.status(name) == "planned":
        rec = state.model(name)
        recipe = Recipe(**rec["recipe"])
        resumed = (state.run_dir(name) / "last.ckpt").is_file()
        planned = rec["plan"].get("planned_train_s")
        what = f"training {recipe.epochs} epochs" + (f" (~{planned / 60:.1f} min)" if planned else "")
        bar.stage(i, name, what + (", resumed from its last.ckpt" if resumed else ""), guess)
        state.update(name, train=train_model(name, s, recipe, state.run_dir(name), progress), status="trained")
    if state.status(name) == "trained":
        bar.stage(i, name, "measuring (profile, ONNX fp32/int8, latency per engine)", guess)
        m = measure_model(name, state.run_dir(name) / "last.ckpt", s, state.out)
        state.update(name, measure=m, status="done", finished=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    t = state.model(name)["train"]
    print(f"{name}: done: top-1 {t['top1']:.2f}% in {t['epochs']} epochs, {t['train_time_s'] / 60:.1f} min",
          flush=True)  # fmt: skip


def run_study(state: State, *, progress: bool = True) -> dict[str, Path]:
    """Run (or continue) the study in ``state`` to the end; returns the report's files."""
    names = state.settings.models
    for stale in [*state.out.glob(".probe-*"), *state.out.glob(".measure-*")]:  # left by a killed process
        shutil.rmtree(stale, ignore_errors=True)
    bar = _Overall(len(names), len(state.done()), progress)
    try:
        for i, name in enumerate(names, 1):
            if state.status(name) == "done":
                continue
            _one(state, i, name, bar, progress)
            bar.finished()
            write_report(state)
    finally:
        bar.close()
    return write_report(state)


def summary(state: State) -> dict[str, Any]:
    """Models per status (for the CLI's last line)."""
    out: dict[str, Any] = {}
    for name in state.settings.models:
        out.setdefault(state.status(name), []).append(name)
    return out
