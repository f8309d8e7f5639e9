"""``mobilezoo train | distill | eval | recipe``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

CHECKPOINT_KINDS = ".pdparams, .pt/.pth, .safetensors, a save_pretrained folder"


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--data", required=True, help="dataset root: train/ + val|test/ folders, *_list.txt, or CIFAR batches"
    )
    p.add_argument("--recipe", default="cifar10", help="recipe name (see `mobilezoo recipe list`) or a .toml file")
    p.add_argument("-o", "--override", action="append", default=[], metavar="KEY=VALUE", help="override a recipe field")
    p.add_argument("--output", type=Path, default=None, help="run folder (default: runs/<model>)")
    p.add_argument("--resume", type=Path, help="continue a run exactly from its last.ckpt")
    p.add_argument(
        "--pretrained", default=None, help="initial weights (default: random): 'published', or a checkpoint path"
    )
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1")
    p.add_argument("--max-steps", type=int, default=None, help="stop after this many steps (state saved)")
    p.add_argument("--no-progress", action="store_true")


def _pretrained(v: str | None):
    if v is None or v.lower() in ("false", "none", "0", "random"):
        return False
    return True if v.lower() in ("true", "1", "published") else v


def _run(args: argparse.Namespace, student: str, **distill) -> int:
    from . import TrainConfig, TrainingDiverged, TrainingInterrupted, fit, load_recipe

    recipe = load_recipe(args.recipe, student, args.override)
    out = args.output or Path("runs") / student
    cfg = TrainConfig(
        student,
        args.data,
        out,
        recipe,
        pretrained=_pretrained(args.pretrained),
        resume=args.resume,
        device=args.device,
        max_steps=args.max_steps,
        progress=not args.no_progress,
        **distill,
    )
    try:
        res = fit(cfg)
    except TrainingInterrupted as e:
        print(f"mobilezoo: {e}", file=sys.stderr)
        return 130
    except TrainingDiverged as e:
        print(f"mobilezoo: error: {e}", file=sys.stderr)
        return 3
    print(f"done: best top-1 {res.best_top1:.2f}%  best={res.best}  last={res.last}")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    return _run(args, args.model)


def cmd_distill(args: argparse.Namespace) -> int:
    if args.recipe == "cifar10":
        args.recipe = "distill"
    return _run(
        args,
        args.student,
        teacher=args.teacher,
        teacher_ckpt=args.teacher_ckpt,
        unlabeled=args.unlabeled or [],
        cache_teacher=args.cache_teacher,
    )


def cmd_eval(args: argparse.Namespace) -> int:
    from ..weights.choice import model_name_in
    from . import evaluate_checkpoint, plot_confusion

    name = args.model or model_name_in(args.ckpt)
    if name is None:
        raise ValueError(f"{args.ckpt} does not say which model it holds: give --model NAME")
    res = evaluate_checkpoint(args.ckpt, args.data, device=args.device, model=args.model)
    if args.json:
        print(json.dumps({"model": name, "checkpoint": str(args.ckpt), **res.as_dict()}, indent=2))
    else:
        skipped = f"; {res.skipped} unreadable skipped" if res.skipped else ""
        print(
            f"{name}  {args.ckpt}  on {args.data}: top-1 {res.top1:.2f}%  top-5 {res.top5:.2f}%  "
            f"({res.count} images{skipped})"
        )
        width = max(len(n) for n in res.per_class)
        for name, acc in res.per_class.items():
            print(f"  {name:<{width}}  {acc:6.2f}%")
    if args.confusion:
        print(f"confusion matrix: {plot_confusion(res, args.confusion, title=name)}", file=sys.stderr)
    return 0


def cmd_recipe(args: argparse.Namespace) -> int:
    from . import list_recipes, load_recipe

    if args.action == "list" or not args.name:
        for n in list_recipes():
            print(n)
        return 0
    r = load_recipe(args.name, args.model, args.override)
    print(f"# recipe: {r.name}" + (f" for {args.model}" if args.model else ""))
    print(r.to_toml(), end="")
    return 0


def register(sub) -> None:
    p = sub.add_parser("train")
    p.add_argument("--model", required=True)
    _common(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("distill")
    p.add_argument("--teacher", required=True)
    p.add_argument("--teacher-ckpt", help="the teacher's weights: a training .ckpt, a file or a folder")
    p.add_argument("--student", required=True)
    p.add_argument("--unlabeled", action="append", help="extra image folder without labels (repeatable)")
    p.add_argument("--cache-teacher", action="store_true", help="compute teacher logits once (eval preprocessing)")
    _common(p)
    p.set_defaults(func=cmd_distill)

    p = sub.add_parser("eval")
    p.add_argument("--model", default=None, help="checked against a checkpoint that records it; needed otherwise")
    p.add_argument("--ckpt", type=Path, required=True, help=f"a training .ckpt, or other weights ({CHECKPOINT_KINDS})")
    p.add_argument("--data", required=True)
    p.add_argument("--device", default="auto")
    p.add_argument("--json", action="store_true")
    p.add_argument("--confusion", type=Path, help="write the confusion-matrix plot (PNG) here")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("recipe")
    p.add_argument("action", choices=("list", "show"))
    p.add_argument("name", nargs="?")
    p.add_argument("--model", default=None, help="resolve the family file and per-model overrides for this model")
    p.add_argument("-o", "--override", action="append", default=[], metavar="KEY=VALUE")
    p.set_defaults(func=cmd_recipe)
