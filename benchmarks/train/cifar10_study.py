"""The comparison study's training dimension: the eleven models trained on CIFAR-10 (JPEG copy) with one recipe.

Writes ``benchmarks/results/cifar10_training.csv`` (model, top1, top5, epochs, train_time_s, device, recipe) — the
file ``mobilezoo report`` reads — and a JSON with the machine and the exact command. Meant for a GPU:

    python benchmarks/train/cifar10_study.py --device cuda --epochs 30
    python benchmarks/train/cifar10_study.py --models MobileNetV2_x1_0 --epochs 60 --out cifar10_mobilenetv2

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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default=",".join(STUDY))
    ap.add_argument("--data", default=str(DATA / "cifar10"))
    ap.add_argument("--device", default="auto")
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--recipe", default="cifar10")
    ap.add_argument("-o", "--override", action="append", default=[])
    ap.add_argument("--runs", default="runs/cifar10_study")
    ap.add_argument("--out", default="cifar10_training")
    args = ap.parse_args()

    import torch

    from mobilezoo.train import TrainConfig, fit, load_recipe

    rows = []
    for name in args.models.split(","):
        recipe = load_recipe(args.recipe, name, [f"epochs={args.epochs}", *args.override])
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
                "train_time_s": round(elapsed, 1),
                "img_s": round(sum(r["img_s"] for r in res.history) / len(res.history)),
                "device": dev,
                "recipe": recipe.name,
                "overrides": " ".join(args.override),
            }
        )
        print(rows[-1], flush=True)
        write(args.out, rows, {"machine": machine(), "command": " ".join(sys.argv), "data": rel(args.data)})


if __name__ == "__main__":
    main()
