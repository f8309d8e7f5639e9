#!/usr/bin/env bash
# Issue 16's CPU goal run: one model trained by `mobilezoo study` on all of CIFAR-10 within a wall-clock budget,
# measured as the study measures it; its report (not its checkpoints) copied to benchmarks/results/study_goal_<model>/.
#   bash benchmarks/train/study_goal.sh MobileNetV3_small_x1_0 40 --override label_smoothing=0.1 --override batch_size=256
# --tag NAME (first) keeps a variant beside the others: runs/ and benchmarks/results/study_goal_<model>_<NAME>/.
set -euo pipefail
cd "$(dirname "$0")/../.."
suffix=""
if [[ "${1:-}" == "--tag" ]]; then suffix="_${2:?tag name}"; shift 2; fi
model=${1:?model name}; budget=${2:?budget in minutes}; shift 2
out=runs/study_goal_$model$suffix
mobilezoo study --data ../shared/data/cifar10 -o "$out" --budget-min "$budget" --models "$model" --no-progress "$@"
dest=benchmarks/results/study_goal_$model$suffix
bash benchmarks/train/copy_study.sh "$out" "$dest"
mv "$dest/epochs_$model.csv" "$dest/epochs.csv"  # per-epoch loss, lr, img/s
