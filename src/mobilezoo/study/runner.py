"""The study end to end: for each model not yet done — plan (fit the epochs to the budget), train (or resume its
run exactly), measure — recording every step in ``study.json``, then the report (rewritten after every model, so it
always shows what has finished). Progress: one overall bar (models, with the study's ETA) above the training
engine's per-epoch bars, and one line per stage on stdout.

A study may outlive one machine (resumed elsewhere): each model records the machine it trained on (every one, if
its training was resumed on another) and the one it was measured on. ``remeasure=True`` re-times every finished
model in this process once the training is done, so the latency columns compare within one machine and one run."""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

from ..train import Recipe
from .measure import measure_model
from .plan import State
from .report import write_report
from .training import mid_refit_point, plan_model, refit_budget, refit_point, train_model

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


def _measure(state: State, name: str, again: bool = False) -> None:
    from ..measure.machine import machine_key

    m = measure_model(name, state.run_dir(name) / "last.ckpt", state.settings, state.out)
    when = {"remeasured" if again else "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    state.update(name, measure={**m, "machine": machine_key()}, status="done", **when)


def _note_machine(state: State, name: str) -> None:
    """Record that ``name`` trains here (every machine its steps ran on, in order)."""
    from ..measure.machine import machine_key

    machines = list(state.model(name).get("training_machines", []))
    if machine_key() not in machines[-1:]:
        state.update(name, training_machines=[*machines, machine_key()])


def _refit(state: State, i: int, name: str, bar: _Overall, progress: bool, key: str = "refit") -> None:
    """A budget run trains to its warm-up's end (``key="refit"``), or to half its steps (``"refit_mid"``), then its
    steps are re-fitted to the pace it really runs at."""
    rec = state.model(name)
    plan = rec["plan"]
    at = refit_point(plan) if key == "refit" else mid_refit_point(plan)
    if state.settings.budget_min is None or key in plan or at is None:
        return
    total = (plan.get("refit") or plan)["total_steps"]
    what = f"training to step {at} of {total}, then re-fitting the steps to the budget at its pace"
    bar.stage(i, name, what, _guess_s(state))
    _note_machine(state, name)
    recipe, refit = refit_budget(name, state.settings, Recipe(**rec["recipe"]), plan, state.run_dir(name), progress,
                                 at=at)  # fmt: skip
    state.update(name, plan={**plan, key: refit}, recipe=recipe.to_dict())


def _train(state: State, name: str, progress: bool) -> dict[str, Any]:
    """Train ``name`` (or resume it) here; the training record names every machine its epochs ran on."""
    _note_machine(state, name)
    rec = state.model(name)
    t = train_model(name, state.settings, Recipe(**rec["recipe"]), state.run_dir(name), progress)
    return {**t, "machines": state.model(name)["training_machines"]}


def _one(state: State, i: int, name: str, bar: _Overall, progress: bool) -> None:
    s, guess = state.settings, _guess_s(state)
    if state.status(name) == "pending":
        bar.stage(i, name, "speed probe and plan" if s.budget_min is not None else "plan", guess)
        recipe, plan = plan_model(name, s, state.out)
        state.update(name, status="planned", plan=plan, recipe=recipe.to_dict())
    if state.status(name) == "planned":
        _refit(state, i, name, bar, progress)
        _refit(state, i, name, bar, progress, key="refit_mid")
        rec = state.model(name)
        recipe = Recipe(**rec["recipe"])
        resumed = (state.run_dir(name) / "last.ckpt").is_file()
        plan = rec["plan"].get("refit_mid") or rec["plan"].get("refit") or rec["plan"]
        planned = plan.get("planned_train_s")
        eps = plan.get("epochs_in_budget") or recipe.epochs
        what = f"training {eps:.3g} epochs" + (f" (~{planned / 60:.1f} min)" if planned else "")
        bar.stage(i, name, what + (", resumed from its last.ckpt" if resumed else ""), guess)
        state.update(name, train=_train(state, name, progress), status="trained")
    if state.status(name) == "trained":
        bar.stage(i, name, "measuring (profile, ONNX fp32/int8, latency per engine)", guess)
        _measure(state, name)
    t = state.model(name)["train"]
    print(f"{name}: done: top-1 {t['top1']:.2f}% in {t['epochs']} epochs, {t['train_time_s'] / 60:.1f} min",
          flush=True)  # fmt: skip


def run_study(state: State, *, progress: bool = True, remeasure: bool = False) -> dict[str, Path]:
    """Run (or continue) the study in ``state`` to the end; returns the report's files. ``remeasure``: then measure
    again every model finished before this process (the training is kept), so all latencies come from this run."""
    names = state.settings.models
    for stale in [*state.out.glob(".probe-*"), *state.out.glob(".measure-*")]:  # left by a killed process
        shutil.rmtree(stale, ignore_errors=True)
    earlier = state.done()
    bar = _Overall(len(names), len(earlier), progress)
    try:
        for i, name in enumerate(names, 1):
            if state.status(name) == "done":
                continue
            _one(state, i, name, bar, progress)
            bar.finished()
            write_report(state)
    finally:
        bar.close()
    for i, name in enumerate(earlier if remeasure else [], 1):
        print(f"[{i}/{len(earlier)}] {name}: measuring again here (its training kept)", flush=True)
        _measure(state, name, again=True)
        write_report(state)
    return write_report(state)


def summary(state: State) -> dict[str, Any]:
    """Models per status (for the CLI's last line)."""
    out: dict[str, Any] = {}
    for name in state.settings.models:
        out.setdefault(state.status(name), []).append(name)
    return out
