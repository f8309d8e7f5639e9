"""The CIFAR-10 recipe's choices, each one measured (the study's recipe, ``cifar10.toml``): a variant is the shipped
recipe with ``key=value`` overrides, as ``mobilezoo study --override`` gives them.

Two kinds of variant, both trained the way ``mobilezoo study --budget-min`` trains (the study's own code:
``mobilezoo.study.training``):

- **speed** (``channels_last``, ``compile``, ``amp``, ``batch_size``): training steps/s and images/s from the study's
  speed probe (``--probe-steps`` real steps of the recipe, their median), nothing trained;
- **accuracy** (stem and stride adaptation, label smoothing, learning rate, ...): each trained for the same
  wall-clock budget (``--budget-min``, epochs fitted to it from the probe, cosine to zero at the budget) on a holdout
  of the *training* split - the last ``--holdout`` images of each class held out as its validation set, symlinks in
  ``--work``, nothing copied - and scored there. The test split is never used to choose.

Writes ``benchmarks/results/<--out>.{csv,json,md}`` after every variant (a rerun skips the variants already in the
JSON, so an interrupted run loses at most the one in progress). E.g., on a 2-core CPU (~45 min):

    python benchmarks/train/cifar10_recipe.py --model MobileNetV3_small_x1_0 --budget-min 5
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import DATA, RESULTS, machine, rel, write

SPEED = [
    ("base", []),
    ("channels_last=false", ["channels_last=false"]),
    ("amp=bf16", ["amp=bf16"]),
    ("batch_size=256", ["batch_size=256"]),
    ("compile=true", ["compile=true"]),
]
"""Speed-only variants: the arithmetic is the recipe's (up to rounding), only the time per step changes."""

ACCURACY = [
    ("base", []),
    ("small_input=2", ["small_input=2"]),
    ("label_smoothing=0.1", ["label_smoothing=0.1"]),
    ("lr=0.2", ["lr=0.2"]),
]
"""Accuracy variants, each against ``base`` at one budget."""


def holdout(src: Path, dst: Path, per_class: int) -> Path:
    """An ImageFolder of ``src``'s training split: ``train/`` all but the last ``per_class`` images of each class,
    ``test/`` those held out (symlinks); made under a temporary name and renamed, never half there."""
    if dst.exists():
        return dst
    tmp = dst.with_name(dst.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    for cls in sorted(p.name for p in (src / "train").iterdir()):
        files = sorted((src / "train" / cls).iterdir())
        for split, part in (("train", files[:-per_class]), ("test", files[-per_class:])):
            (tmp / split / cls).mkdir(parents=True)
            for f in part:
                (tmp / split / cls / f.name).symlink_to(f.resolve())
    tmp.rename(dst)
    return dst


def _settings(args, data: Path, overrides: list[str]):
    from mobilezoo.study.plan import Settings

    return Settings(data=str(data), models=[args.model], budget_min=args.budget_min, recipe=args.recipe,
                    overrides=overrides, device="cpu", probe_steps=args.probe_steps).check()  # fmt: skip


def speed_row(args, data: Path, label: str, overrides: list[str]) -> dict:
    from mobilezoo.study.training import probe_speed, study_recipe

    s = _settings(args, data, overrides)
    sp = probe_speed(args.model, s, study_recipe(s, args.model), Path(args.work))
    return {"kind": "speed", "variant": label, "steps_per_s": round(sp["steps_per_s"], 3),
            "img_per_s": round(sp["img_per_s"], 1), "probe_steps": sp["steps"]}  # fmt: skip


def accuracy_row(args, data: Path, label: str, overrides: list[str]) -> dict:
    from mobilezoo.study.training import plan_model, train_model

    s = _settings(args, data, overrides)
    run = Path(args.work) / "runs" / label.replace("=", "_")
    shutil.rmtree(run, ignore_errors=True)  # a variant interrupted midway starts again: one budget, one schedule
    recipe, plan = plan_model(args.model, s, Path(args.work))
    rec = train_model(args.model, s, recipe, run, progress=False)
    return {"kind": "accuracy", "variant": label, "val_top1": round(rec["top1"], 2), "val_top5": round(rec["top5"], 2),
            "epochs": rec["epochs"], "train_time_s": round(rec["train_time_s"], 1),
            "img_per_s": round(rec["img_per_s"], 1), "planned_train_s": round(plan["planned_train_s"], 1)}  # fmt: skip


def markdown(rows: list[dict], meta: dict) -> str:
    base = {(r["kind"], r["base"]): r for r in rows if r["variant"] == "base"}
    out = [f"# CIFAR-10 recipe choices: {meta['model']}", "",
           f"Machine: {meta['machine'].get('cpu_model')} ({meta['machine'].get('torch_threads')} torch threads). "
           f"Budget {meta['budget_min']} min per accuracy variant on a holdout of the training split "
           f"({meta['holdout']} images per class held out); speed from {meta['probe_steps']} probed steps.", "",
           "| kind | from | variant | val top-1 | vs base (pt) | epochs in budget | img/s | vs base |",
           "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in rows:
        b = base.get((r["kind"], r["base"]), {})
        dt = f"{r['val_top1'] - b['val_top1']:+.2f}" if "val_top1" in r and "val_top1" in b else ""
        sp = f"{r['img_per_s'] / b['img_per_s']:.2f}x" if b.get("img_per_s") else ""
        out.append(f"| {r['kind']} | {r['base'] or 'recipe'} | {r['variant']} | {r.get('val_top1', '')} | {dt} | "
                   f"{r.get('epochs', '')} | {r['img_per_s']} | {sp} |")  # fmt: skip
    return "\n".join(out) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="MobileNetV3_small_x1_0")
    ap.add_argument("--data", default=str(DATA / "cifar10"))
    ap.add_argument("--recipe", default="cifar10")
    ap.add_argument("--budget-min", type=float, default=5.0)
    ap.add_argument("--holdout", type=int, default=500, help="training images per class held out (default 500)")
    ap.add_argument("--probe-steps", type=int, default=20)
    ap.add_argument("--kinds", default="speed,accuracy")
    ap.add_argument("--base", action="append", default=[], metavar="KEY=VALUE",
                    help="overrides every variant starts from (e.g. the speed variants' winner)")  # fmt: skip
    ap.add_argument("--work", default="runs/cifar10_recipe")
    ap.add_argument("--out", default="cifar10_recipe")
    args = ap.parse_args()

    Path(args.work).mkdir(parents=True, exist_ok=True)
    data = holdout(Path(args.data), Path(args.work) / f"holdout{args.holdout}", args.holdout)
    prev = RESULTS / f"{args.out}.json"
    old = json.loads(prev.read_text()) if prev.is_file() else {"rows": [], "meta": {}}
    rows = old["rows"]
    meta = {"model": args.model, "budget_min": args.budget_min, "holdout": args.holdout, "recipe": args.recipe,
            "probe_steps": args.probe_steps, "data": rel(args.data), "machine": machine(),
            "commands": [*old["meta"].get("commands", []), "python " + " ".join(sys.argv)]}  # fmt: skip
    if old["meta"] and any(old["meta"][k] != meta[k] for k in ("model", "budget_min", "holdout", "probe_steps")):
        sys.exit(f"{prev} holds another setting (model, budget, holdout, probe steps): give another --out")
    todo = [("speed", v) for v in SPEED] + [("accuracy", v) for v in ACCURACY]
    for kind, (label, overrides) in todo:
        done = any(r["kind"] == kind and r["variant"] == label and r["base"] == " ".join(args.base) for r in rows)
        if kind not in args.kinds.split(",") or done:
            continue
        t0 = time.perf_counter()
        fn = speed_row if kind == "speed" else accuracy_row
        row = {**fn(args, data, label, [*args.base, *overrides]), "overrides": " ".join(overrides),
               "base": " ".join(args.base), "wall_s": 0.0}  # fmt: skip
        row["wall_s"] = round(time.perf_counter() - t0, 1)
        rows.append(row)
        print(json.dumps(row), flush=True)
        write(args.out, rows, meta)
        (RESULTS / f"{args.out}.md").write_text(markdown(rows, meta))


if __name__ == "__main__":
    main()
