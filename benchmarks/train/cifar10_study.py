"""The comparison study's training dimension: the eleven models trained on CIFAR-10 (JPEG copy) with one recipe.

Writes ``benchmarks/results/cifar10_training.csv`` (model, top1, top5, epochs, train_time_s, device, recipe) — the
file ``mobilezoo report`` reads — and a JSON with the machine and the exact command. Meant for a GPU:

    python benchmarks/train/cifar10_study.py --device cuda --epochs 30
    python benchmarks/train/cifar10_study.py --models MobileNetV2_x1_0 --epochs 60 --out cifar10_mobilenetv2
    python benchmarks/train/cifar10_study.py --models MobileNetV2_x1_0 --budget-min 4 -o eval_every=1 --out gpu_training

``--budget-min M`` fits each model's schedule to M minutes of training, as ``mobilezoo study --budget-min`` does
(the same probe and fit: :func:`mobilezoo.study.training.probe_speed` / ``budget_recipe``). With ``-o eval_every=1``
the test split is evaluated after every epoch and ``<out>_epochs.csv`` records it, with the training time (epochs'
own time, evaluation left out) at which top-1 first reached each of :data:`MARKS`.

On the H100 the CIFAR split lives on the GPU (memory data mode: decoded once, augmented there), bf16 autocast and
channels_last are on. On a CPU use few epochs and few models (a CPU epoch of MobileNetV3_large is minutes).
`mobilezoo study` runs the same eleven end to end (training, the seven dimensions, the report, resume).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import DATA, machine, rel, write

from mobilezoo.study import STUDY_MODELS

STUDY = STUDY_MODELS  # the seed's eleven: mobilezoo.study.plan.STUDY_MODELS
EPOCH_FIELDS = ("epoch", "train_loss", "lr", "img_s", "epoch_time_s", "top1", "top5")
MARKS = (90.0, 92.0, 93.0)
"""top-1 levels whose time-to-accuracy is recorded (the GPU goal: 93% in <= 10 GPU-minutes for MobileNetV2)"""


def time_to(history: list[dict], marks=MARKS) -> dict[str, float | None]:
    """Training seconds (cumulative ``epoch_time_s``) at the end of the first epoch whose top-1 reached each mark."""
    out: dict[str, float | None] = {f"time_to_{m:g}_s": None for m in marks}
    t = 0.0
    for r in history:
        t += r.get("epoch_time_s", 0.0)
        for m in marks:
            key = f"time_to_{m:g}_s"
            if out[key] is None and r.get("top1") is not None and r["top1"] >= m:
                out[key] = round(t, 1)
    return out


def fitted_recipe(name: str, args, runs: Path):
    """The recipe ``name`` trains with: ``--epochs``, or fitted to ``--budget-min`` by the study's own probe and fit
    (:func:`mobilezoo.study.training.plan_model`); and that plan (probe speed, steps), or None."""
    from mobilezoo.study.plan import Settings
    from mobilezoo.study.training import plan_model
    from mobilezoo.train import load_recipe

    if args.budget_min is None:
        return load_recipe(args.recipe, name, [f"epochs={args.epochs}", *args.override]), None
    settings = Settings(args.data, [name], budget_min=args.budget_min, recipe=args.recipe,
                        overrides=list(args.override), device=args.device)  # fmt: skip
    runs.mkdir(parents=True, exist_ok=True)
    fitted, plan = plan_model(name, settings, runs)
    print(f"{name}: {plan['probe']['img_per_s']:.0f} img/s in the probe; {plan['total_steps']} steps "
          f"({plan['epochs_in_budget']:.1f} epochs) fill {args.budget_min:g} min", flush=True)  # fmt: skip
    return fitted, plan


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default=",".join(STUDY))
    ap.add_argument("--data", default=str(DATA / "cifar10"))
    ap.add_argument("--device", default="auto")
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--budget-min", type=float, default=None, help="fit each schedule to this many training minutes")
    ap.add_argument("--recipe", default="cifar10")
    ap.add_argument("-o", "--override", action="append", default=[])
    ap.add_argument("--runs", default="runs/cifar10_study")
    ap.add_argument("--out", default="cifar10_training")
    args = ap.parse_args()

    import torch

    from mobilezoo.train import TrainConfig, fit

    rows, epochs, plans, recipes = [], [], {}, {}
    for name in args.models.split(","):
        recipe, plans[name] = fitted_recipe(name, args, Path(args.runs))
        t0 = time.perf_counter()
        res = fit(TrainConfig(name, args.data, Path(args.runs) / name, recipe, device=args.device, tensorboard=False))
        elapsed = time.perf_counter() - t0
        best = max(res.history, key=lambda r: r.get("top1", -1))
        dev = torch.cuda.get_device_name() if torch.cuda.is_available() and args.device != "cpu" else "cpu"
        rows.append(
            {
                "model": name,
                "top1": round(best["top1"], 2),
                "top5": round(best["top5"], 2),
                "final_top1": round(res.history[-1]["top1"], 2),
                "epochs": recipe.epochs,
                "steps": recipe.total_steps or None,
                "train_time_s": round(sum(r.get("epoch_time_s", 0.0) for r in res.history), 1),
                "wall_s": round(elapsed, 1),
                **time_to(res.history),
                "img_s": round(sum(r["img_s"] for r in res.history) / len(res.history)),
                "device": dev,
                "recipe": recipe.name,
                "overrides": " ".join(args.override),
            }
        )
        epochs += [{"model": name, **{k: r.get(k) for k in EPOCH_FIELDS}} for r in res.history]
        print(rows[-1], flush=True)
        recipes[name] = recipe.to_dict()
        meta = {"machine": machine(), "command": " ".join(sys.argv), "data": rel(args.data),
                "budget_min": args.budget_min, "plans": plans, "recipes": recipes}  # fmt: skip
        write(args.out, rows, meta)
        write(f"{args.out}_epochs", epochs, {"command": " ".join(sys.argv)})


if __name__ == "__main__":
    main()
