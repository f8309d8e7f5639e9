"""Distillation on CIFAR-10: a student trained alone vs the same student distilled from a trained teacher, with the
same budget (epochs, recipe, data). Writes ``benchmarks/results/distill_cifar10.{csv,json}``.

    python benchmarks/train/distill_cifar10.py --teacher MobileNetV2_x1_0 --teacher-epochs 30 --epochs 30   # GPU
    python benchmarks/train/distill_cifar10.py --epochs 3 --teacher-epochs 4 --train-subset 10000            # CPU
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import DATA, machine, rel, subset, write


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(DATA / "cifar10"))
    ap.add_argument("--teacher", default="MobileNetV2_x1_0")
    ap.add_argument("--teacher-ckpt", default=None, help="skip training the teacher")
    ap.add_argument("--teacher-epochs", type=int, default=30)
    ap.add_argument("--student", default="MobileNetV3_small_x1_0")
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--loss", default="dce", choices=("dce", "dml", "kl"))
    ap.add_argument("--gt-weight", type=float, default=0.0)
    ap.add_argument("--train-subset", type=int, default=0, help="images per class (0: all 5,000)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--runs", default="runs/distill")
    args = ap.parse_args()

    from mobilezoo.train import TrainConfig, fit, load_recipe

    runs = Path(args.runs)
    data = Path(args.data)
    if args.train_subset:
        data = subset(data, runs / f"data_{args.train_subset}", args.train_subset)
    rows = []

    def record(role: str, model: str, res, elapsed: float, epochs: int) -> None:
        best = max(res.history, key=lambda r: r.get("top1", -1))
        rows.append(
            {
                "role": role,
                "model": model,
                "epochs": epochs,
                "top1": round(best["top1"], 2),
                "final_top1": round(res.history[-1]["top1"], 2),
                "top5": round(best["top5"], 2),
                "train_time_s": round(elapsed, 1),
            }
        )
        print(rows[-1], flush=True)

    teacher_ckpt = args.teacher_ckpt
    if teacher_ckpt is None:
        rec = load_recipe("cifar10", args.teacher, [f"epochs={args.teacher_epochs}"])
        t0 = time.perf_counter()
        res = fit(TrainConfig(args.teacher, data, runs / "teacher", rec, device=args.device, tensorboard=False))
        record("teacher", args.teacher, res, time.perf_counter() - t0, rec.epochs)
        teacher_ckpt = str(res.best)
    base = load_recipe("cifar10", args.student, [f"epochs={args.epochs}"])
    t0 = time.perf_counter()
    alone = fit(TrainConfig(args.student, data, runs / "alone", base, device=args.device, tensorboard=False))
    record("student alone", args.student, alone, time.perf_counter() - t0, base.epochs)
    drec = load_recipe(
        "distill",
        args.student,
        [f"epochs={args.epochs}", f"distill_loss={args.loss!r}".replace("'", '"'), f"gt_weight={args.gt_weight}"],
    )
    t0 = time.perf_counter()
    dist = fit(
        TrainConfig(
            args.student,
            data,
            runs / "distilled",
            drec,
            device=args.device,
            tensorboard=False,
            teacher=args.teacher,
            teacher_ckpt=teacher_ckpt,
        )
    )
    record(
        f"student distilled ({args.loss}, gt_weight {args.gt_weight})",
        args.student,
        dist,
        time.perf_counter() - t0,
        drec.epochs,
    )
    gain = rows[-1]["top1"] - rows[-2]["top1"]
    meta = {
        "machine": machine(),
        "command": " ".join(sys.argv),
        "data": rel(data),
        "distilled_minus_alone_top1": round(gain, 2),
        "distilled_beats_alone": gain > 0,
    }
    write("distill_cifar10", rows, meta)
    print(f"distilled - alone: {gain:+.2f} top-1 points")


if __name__ == "__main__":
    main()
