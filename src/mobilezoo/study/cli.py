"""``mobilezoo study`` (registered by mobilezoo.cli; heavy imports stay in the command)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .plan import STUDY_MODELS, Settings, State, StudyError

_NEW_ONLY = ("data", "models", "epochs", "budget_min", "recipe", "override", "engines", "sizes", "device",
             "probe_steps")  # fmt: skip
"""Options that define a study: a resumed study keeps the ones it started with."""


def _csv(s: str) -> list[str]:
    return [x.strip() for x in s.split(",") if x.strip()]


def _sizes(s: str) -> list[int]:
    try:
        return [int(x) for x in _csv(s)]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {s!r}") from None


def _check_engines(engines: list[str]) -> None:
    from ..backends import bench_names

    for e in engines:
        if e not in bench_names():
            raise StudyError(f"unknown engine {e!r}; choose from {', '.join(bench_names())}")


def _new_state(args: argparse.Namespace) -> State:
    """A new study from the options, every one checked before the output folder is made."""
    from ..data.datasets import open_split
    from ..measure.machine import machine_info, machine_key
    from .training import study_recipe

    if not args.data:
        raise StudyError("give --data DIR (a dataset root with train/ and test/), or --resume DIR")
    settings = Settings(
        data=args.data,
        models=_csv(args.models) if args.models else list(STUDY_MODELS),
        epochs=args.epochs,
        budget_min=args.budget_min,
        recipe=args.recipe or "cifar10",
        overrides=args.override or [],
        engines=_csv(args.engines) if args.engines else [],
        sizes=args.sizes or [32, 224],
        device=args.device or "auto",
        probe_steps=args.probe_steps if args.probe_steps is not None else 20,
    ).check()
    _check_engines(settings.engines)
    for split in ("train", "eval"):
        open_split(settings.data, split)  # a missing split: one line, before anything runs
    for name in settings.models:
        study_recipe(settings, name)  # a bad recipe or override: one line
    return State.create(args.output, settings, {**machine_info(), "key": machine_key()})


def _resumed_state(args: argparse.Namespace) -> State:
    given = [f"--{k.replace('_', '-')}" for k in _NEW_ONLY if getattr(args, k) not in (None, [])]
    if given:
        raise StudyError(f"--resume continues a study with its recorded settings: drop {', '.join(given)}")
    state = State.load(args.resume)
    if not Path(state.settings.data).is_dir():
        raise StudyError(f"the study's data folder is gone: {state.settings.data}")
    return state


def cmd_study(args: argparse.Namespace) -> int:
    from ..train import TrainingInterrupted
    from .runner import run_study, summary

    if args.remeasure and not args.resume:
        raise StudyError("--remeasure times a study's finished models again: give --resume DIR")
    state = _resumed_state(args) if args.resume else _new_state(args)
    try:
        paths = run_study(state, progress=not args.no_progress, remeasure=args.remeasure)
    except (TrainingInterrupted, KeyboardInterrupt):
        print(f"\nmobilezoo: study interrupted; its state is in {state.path}: continue with "
              f"`mobilezoo study --resume {state.out}`", file=sys.stderr)  # fmt: skip
        return 130
    done = summary(state).get("done", [])
    print(f"study: {len(done)} models in {paths['report_md']}, {paths['report_html']}, {paths['results_csv']}")
    return 0


def register(sub) -> None:
    p = sub.add_parser(
        "study",
        epilog="Examples: `mobilezoo study --data ../shared/data/cifar10 --budget-min 8 -o study/`; "
        "`mobilezoo study --resume study/` continues (finished models are never retrained).",
    )
    p.add_argument("--data", help="dataset root: train/ + test/ (CIFAR-10 as an ImageFolder, CIFAR batches, lists)")
    p.add_argument("-o", "--output", type=Path, default=Path("study"), help="the study folder (default: study/)")
    p.add_argument("--resume", type=Path, metavar="DIR", help="continue the study in DIR where it stopped")
    p.add_argument("--remeasure", action="store_true",
                   help="with --resume: then measure every model finished earlier again here, so all latencies come "
                        "from one machine and one run (training kept)")  # fmt: skip
    p.add_argument("--models", help=f"comma list (default: the seed's eleven, {STUDY_MODELS[0]}, ...)")
    how = p.add_mutually_exclusive_group()
    how.add_argument("--epochs", type=int, help="train every model this many epochs (default: the recipe's)")
    how.add_argument("--budget-min", type=float, metavar="M",
                     help="wall-clock training budget per model in minutes, the schedule fitted to it")  # fmt: skip
    p.add_argument("--recipe", help="training recipe for every model (default: cifar10) or a .toml")
    p.add_argument("--override", action="append", metavar="KEY=VALUE", help="override a recipe field (repeatable)")
    p.add_argument("--engines", help="benchmark configurations to time (default: every one that runs fp32 here)")
    p.add_argument("--sizes", type=_sizes, help="latency input sizes (default: 32,224)")
    p.add_argument("--device", help="training device: auto, cpu, cuda (default: auto)")
    p.add_argument("--probe-steps", type=int, help="steps timed to fit a budget (default: 20)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars (stage lines still print)")
    p.set_defaults(func=cmd_study)
