#!/usr/bin/env bash
# Copy a `mobilezoo study` folder's report (not its checkpoints) into the repository's results:
#   bash benchmarks/train/copy_study.sh runs/study_cifar10 benchmarks/results/study_cifar10
# The report, results, latency, conclusions, training and the state (study.json), its plots, and every model's
# per-epoch log as epochs_<model>.csv.
set -euo pipefail
src=${1:?study folder}; dest=${2:?destination folder}
repo=$(cd "$(dirname "$0")/../.." && pwd)
rm -rf "$dest" && mkdir -p "$dest"
cp "$src"/{report.md,report.html,results.csv,results.json,latency.csv,conclusions.csv,training.csv,study.json} "$dest"/
cp -r "$src"/plots "$dest"/
for log in "$src"/runs/*/log.csv; do
  if [[ -f "$log" ]]; then cp "$log" "$dest/epochs_$(basename "$(dirname "$log")").csv"; fi
done
# paths as a checkout sees them: ../shared/... for the data, runs/<study>/... for the study (not this machine's /work)
shared=$(cd "$repo/../shared" && pwd); above=$(dirname "$(dirname "$(cd "$src" && pwd)")")
sed -i -e "s|$shared/|../shared/|g" -e "s|$above/||g" "$dest"/{report.md,report.html,results.json,study.json}
echo "wrote $dest"
