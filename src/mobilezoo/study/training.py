"""Training one study model with the training engine: the recipe (``--recipe`` with ``--override``s), its epochs
fixed or fitted to a wall-clock budget, and an exact resume from the run's ``last.ckpt``.

Fitting to a budget: ``probe_steps`` training steps of the real recipe run in a throw-away folder (their median
time, the first step with its one-off costs left out); the run is planned as ``total_steps = floor(budget x
steps/s)`` optimizer steps (the last epoch partial: whole epochs would leave up to one epoch of the budget unused),
the warm-up is capped at :data:`WARMUP_SHARE` of them, and the cosine schedule reaches zero at the budget. A short
probe can miss the run's real pace (by up to 25% measured: data-loading stalls, a machine's changing speed), so
the run itself re-fits: at the end of its warm-up (:func:`refit_point`; the cosine has not started, so the schedule
stays continuous) it stops, and its remaining steps are set from the training time already spent and the pace
measured over those steps (:func:`refit_budget`); then it resumes exactly to the new end. At half its steps
(:func:`mid_refit_point`) it re-fits once more the same way, the cosine given a knot there so the lr stays
continuous: a machine that slows down (or speeds up) during the run moves its end by no more than the change over
the second half.
Evaluation runs once, after the last epoch (``eval_every = epochs``): the budget goes to training, and the test
split is never used to pick a checkpoint.
"""

from __future__ import annotations

import itertools
import math
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from ..train import Recipe, TrainConfig, TrainingInterrupted, cosine_progress, fit, load_recipe, parse_overrides
from .plan import Settings

__all__ = ["REFIT_MIN_STEPS", "WARMUP_SHARE", "budget_recipe", "mid_refit_point", "probe_speed", "refit_budget",
           "refit_point", "study_recipe", "train_model"]  # fmt: skip

WARMUP_SHARE = 0.15
"""The largest share of a study run (``--epochs`` or budget-fitted) spent in the linear warm-up, unless
``--override warmup_epochs=...`` says otherwise."""

REFIT_MIN_STEPS = 20
"""A budget run re-fits its steps after at least this many (its pace is measured over them)."""


def study_recipe(settings: Settings, name: str) -> Recipe:
    """The recipe ``name`` trains with before any budget fit: ``--recipe``, ``--override``s, ``--epochs`` (the
    warm-up capped at :data:`WARMUP_SHARE` of them); one evaluation, after the last epoch. An override of
    ``warmup_epochs`` or ``eval_every`` is kept as given."""
    r = load_recipe(settings.recipe, name, settings.overrides)
    if settings.epochs is not None:
        r = _fit_epochs(r, settings.epochs, settings)
    if "eval_every" not in parse_overrides(settings.overrides):
        r = r.with_overrides({"eval_every": r.epochs})
    return r


def _fit_epochs(recipe: Recipe, epochs: int, settings: Settings, total_steps: int = 0, spe: int = 1) -> Recipe:
    """``recipe`` for ``epochs`` epochs (or ``total_steps`` steps of ``spe`` per epoch, ending inside the last),
    its warm-up at most :data:`WARMUP_SHARE` of them (unless overridden), so the cosine schedule runs even in a
    short run; evaluation at the end (unless overridden)."""
    given = parse_overrides(settings.overrides)
    over: dict[str, Any] = {"epochs": epochs, "total_steps": total_steps}
    if "warmup_epochs" not in given:
        length = total_steps / spe if total_steps else epochs
        over["warmup_epochs"] = min(recipe.warmup_epochs, WARMUP_SHARE * length)
    if "eval_every" not in given:
        over["eval_every"] = epochs
    return recipe.with_overrides(over)


class _StepClock:
    """A ``model_transform`` that timestamps every training-mode forward (one per step without accumulation)."""

    def __init__(self) -> None:
        self.ticks: list[float] = []

    def __call__(self, model):
        import torch

        # outside torch.compile's graph (a recipe with compile=true): traced, the hook recompiled at every step
        model.register_forward_pre_hook(torch.compiler.disable(self._tick))
        return model

    def _tick(self, module, args) -> None:
        if module.training:
            if args and getattr(args[0], "is_cuda", False):  # the previous step's kernels done: steps, not launches
                import torch

                torch.cuda.synchronize(args[0].device)
            self.ticks.append(time.perf_counter())


def _steps_per_epoch(settings: Settings, recipe: Recipe) -> int:
    from ..data.datasets import open_split
    from ..train.loader import GlobalBatchSampler

    n = len(open_split(settings.data, "train"))
    return GlobalBatchSampler(n, recipe.batch_size, recipe.seed).steps_per_epoch()


def probe_speed(name: str, settings: Settings, recipe: Recipe, workdir: Path) -> dict[str, Any]:
    """Training steps per second of ``name`` under ``recipe`` here, from ``settings.probe_steps`` real steps."""
    clock = _StepClock()
    probe = recipe.with_overrides({"epochs": 10_000, "eval_every": 10_000})  # no evaluation inside the probe
    tmp = Path(tempfile.mkdtemp(prefix=".probe-", dir=workdir))
    cfg = TrainConfig(name, settings.data, tmp, probe, device=settings.device, max_steps=settings.probe_steps,
                      progress=False, tensorboard=False, model_transform=clock)  # fmt: skip
    t0 = time.perf_counter()
    try:
        fit(cfg)
    except TrainingInterrupted as e:
        if not str(e).startswith("max_steps="):  # a signal, not the probe's end: the study stops
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    ticks = clock.ticks[:: max(1, recipe.accum_steps)]
    if len(ticks) < 3:
        raise RuntimeError(f"{name}: the speed probe saw {len(ticks)} training steps; raise --probe-steps")
    steps = sorted(b - a for a, b in itertools.pairwise(ticks[1:]))  # the first step (one-off costs) left out
    rate = 1 / max(1e-9, steps[len(steps) // 2])  # the median step: a stall on a shared machine does not move it
    return {"steps": len(ticks), "steps_per_s": rate, "img_per_s": rate * recipe.batch_size,
            "probe_wall_s": time.perf_counter() - t0}  # fmt: skip


def budget_recipe(
    recipe: Recipe, settings: Settings, steps_per_s: float, steps_per_epoch: int
) -> tuple[Recipe, dict[str, Any]]:
    """``recipe`` with the steps (and warm-up) that fill the budget of training at ``steps_per_s``; and the plan:
    the steps, the epochs they reach into, the training time they should take, whether one whole epoch fits."""
    total = max(1, math.floor(settings.budget_min * 60 * steps_per_s))
    epochs = math.ceil(total / steps_per_epoch)
    fitted = _fit_epochs(recipe, epochs, settings, total, steps_per_epoch)
    plan = {
        "epochs": epochs,
        "total_steps": total,
        "warmup_epochs": fitted.warmup_epochs,
        "steps_per_epoch": steps_per_epoch,
        "planned_train_s": total / steps_per_s,
        "epochs_in_budget": total / steps_per_epoch,
        "over_budget": total < steps_per_epoch,
    }
    return fitted, plan


def refit_point(plan: dict[str, Any]) -> int | None:
    """The optimizer step where a budget run re-fits its steps: its warm-up's end, so the cosine has not started (at
    least :data:`REFIT_MIN_STEPS`: after a shorter warm-up the cosine gets a knot there and stays continuous); None
    for a run too short to re-fit (or one not fitted to a budget)."""
    total = plan.get("total_steps")
    if not total:
        return None
    at = max(REFIT_MIN_STEPS, round(plan["warmup_epochs"] * plan["steps_per_epoch"]))
    return at if at < total else None


def mid_refit_point(plan: dict[str, Any]) -> int | None:
    """The step where a budget run re-fits a second time, once it has re-fitted at its warm-up's end: half its
    re-fitted steps, so a machine whose speed changes during the run (a virtual machine slowing down) moves the end
    by at most the change over the second half; None without a first re-fit, after the second, or where either half
    is shorter than :data:`REFIT_MIN_STEPS`."""
    first = plan.get("refit")
    if not first or "refit_mid" in plan:
        return None
    at = first["total_steps"] // 2
    ok = at - first["at_step"] >= REFIT_MIN_STEPS and first["total_steps"] - at >= REFIT_MIN_STEPS
    return at if ok else None


def _spent_s(run_dir: Path) -> tuple[int, float]:
    """A run's optimizer steps and training time so far: its finished epochs' times and the interrupted one's."""
    import csv

    from ..train import load_checkpoint

    last = run_dir / "last.ckpt"
    if not last.is_file():
        return 0, 0.0
    ck = load_checkpoint(last)
    log = run_dir / "log.csv"
    rows = list(csv.DictReader(log.open())) if log.is_file() else []
    done = sum(float(r["epoch_time_s"]) for r in rows[: ck["epoch"]])
    return ck["global_step"], done + ((ck.get("epoch_so_far") or {}).get("time_s") or 0.0)


def refit_budget(
    name: str,
    settings: Settings,
    recipe: Recipe,
    plan: dict[str, Any],
    run_dir: Path,
    progress: bool = True,
    at: int | None = None,
) -> tuple[Recipe, dict[str, Any]]:
    """Train ``name`` to step ``at`` (its :func:`refit_point` by default; resuming its ``last.ckpt``), measuring the
    steps' real pace; the recipe with the steps that fill the rest of the budget at that pace (the cosine given a
    knot at ``at`` where it has begun, so the lr stays continuous), and the re-fit's record."""
    at = refit_point(plan) if at is None else at
    assert at is not None
    done, _ = _spent_s(run_dir)
    clock = _StepClock()
    if done < at:
        last = run_dir / "last.ckpt"
        cfg = TrainConfig(name, settings.data, run_dir, recipe, device=settings.device, max_steps=at - done,
                          resume=last if last.is_file() else None, progress=progress, tensorboard=False,
                          model_transform=clock)  # fmt: skip
        try:
            fit(cfg)
        except TrainingInterrupted as e:
            if not str(e).startswith("max_steps="):  # a signal: the study stops (and resumes here)
                raise
    steps, spent = _spent_s(run_dir)
    ticks = clock.ticks[:: max(1, recipe.accum_steps)][3:]  # the first steps (one-off costs) left out
    before = (plan.get("refit") or plan["probe"])["steps_per_s"]  # the pace the run was last fitted to
    pace = (len(ticks) - 1) / (ticks[-1] - ticks[0]) if len(ticks) >= 5 else before
    left = max(0.0, settings.budget_min * 60 - spent)
    total = max(steps, steps + math.floor(left * pace))
    spe = plan["steps_per_epoch"]
    epochs = math.ceil(total / spe)
    over: dict[str, Any] = {"epochs": epochs, "total_steps": total, **_knot(recipe, spe, steps, total)}
    if "eval_every" not in parse_overrides(settings.overrides):
        over["eval_every"] = epochs
    record = {"at_step": steps, "spent_s": spent, "steps_per_s": pace, "img_per_s": pace * recipe.batch_size,
              "paced_steps": max(0, len(ticks) - 1), "total_steps": total, "epochs": epochs,
              "epochs_in_budget": total / spe, "planned_train_s": spent + (total - steps) / pace,
              "over_budget": total < spe}  # fmt: skip
    return recipe.with_overrides(over), record


def _knot(recipe: Recipe, spe: int, step: int, total: int) -> dict[str, Any]:
    """The cosine knot that keeps the lr continuous when a run at ``step`` is re-fitted to end at ``total``: the
    progress it has reached, kept there (none before the cosine starts, or where the run ends at ``step``)."""
    warm = round(recipe.warmup_epochs * spe)
    old_total = recipe.total_steps or recipe.epochs * spe
    if step <= warm or total <= step:
        return {"cosine_knot_step": 0, "cosine_knot_progress": 0.0}
    return {"cosine_knot_step": step, "cosine_knot_progress": cosine_progress(recipe, step, warm, old_total)}


def plan_model(name: str, settings: Settings, workdir: Path) -> tuple[Recipe, dict[str, Any]]:
    """The recipe ``name`` trains with and the plan recorded in the study state (with the probe's speed)."""
    recipe = study_recipe(settings, name)
    spe = _steps_per_epoch(settings, recipe)
    if settings.budget_min is None:
        return recipe, {"epochs": recipe.epochs, "steps_per_epoch": spe}
    speed = probe_speed(name, settings, recipe, workdir)
    fitted, plan = budget_recipe(recipe, settings, speed["steps_per_s"], spe)
    return fitted, {**plan, "probe": speed}


def train_model(name: str, settings: Settings, recipe: Recipe, run_dir: Path, progress: bool = True) -> dict[str, Any]:
    """Train (or resume exactly from ``run_dir/last.ckpt``) to the end of ``recipe``; the training record: final
    test-split top-1/top-5, training time (epochs' own time, no evaluation), images/s, device."""
    last = run_dir / "last.ckpt"
    cfg = TrainConfig(name, settings.data, run_dir, recipe, device=settings.device,
                      resume=last if last.is_file() else None, progress=progress, tensorboard=False)  # fmt: skip
    t0 = time.perf_counter()
    res = fit(cfg)
    hist = res.history
    final = hist[-1]
    train_s = sum(r.get("epoch_time_s", 0.0) for r in hist)
    epochs = recipe.total_steps / _steps_per_epoch(settings, recipe) if recipe.total_steps else len(hist)
    return {
        "top1": final.get("top1"),
        "top5": final.get("top5"),
        "ema_top1": final.get("ema_top1"),
        "epochs": round(epochs, 2),
        "steps": recipe.total_steps or None,
        "train_time_s": train_s,
        "img_per_s": sum(r.get("img_s", 0.0) * r.get("epoch_time_s", 0.0) for r in hist) / max(1e-9, train_s),
        "final_loss": final.get("train_loss"),
        "wall_s_this_run": time.perf_counter() - t0,
        "device": _device_name(settings.device),
        "checkpoint": str(res.last),
        "recipe": recipe.to_dict(),
    }


def _device_name(device: str) -> str:
    import torch

    from ..measure.machine import cpu_model

    if device != "cpu" and torch.cuda.is_available() and (device == "auto" or device.startswith("cuda")):
        return f"cuda: {torch.cuda.get_device_name()}"
    return f"cpu: {cpu_model()} ({torch.get_num_threads()} threads)"
