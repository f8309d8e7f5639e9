#!/usr/bin/env bash
# One lent-GPU session's run: issue 16's GPU training goal and issue 17's campaign, in one command, each part under
# its own time limit so one that fails or overruns leaves the others' results. Every result goes under $OUT.
#
# On the device machine (the repo root; CIFAR-10 carried as gpu-data/cifar10.tar.gz, which .git/info/exclude
# ignores: `tar -C ../shared/data -czf gpu-data/cifar10.tar.gz cifar10`):
#     bash benchmarks/gpu_campaign.sh
# Smoke test on a CPU (tiny sizes, cifar10-mini, no GPU; nothing written under benchmarks/results is meant to be kept):
#     SMOKE=1 OUT=/tmp/gpu_smoke bash benchmarks/gpu_campaign.sh
#
# Parts, in order (limits in seconds; the sum stays under one 10-minute device command):
#   1. training   MobileNetV2_x1_0 on CIFAR-10 (JPEG copy), the project's CIFAR recipe with batch 512, a stride-1
#                 first downsampling block (small_input=2) and label smoothing 0.1, fitted to TRAIN_MIN minutes by
#                 the study's probe; test split after every epoch -> gpu_training.* and gpu_training_epochs.*
#   2. inference  benchmarks/peers_gpu.py for MobileNetV2 (compiled paths too) -> peers_gpu.*; then MobileNetV3_large
#                 and ShuffleNetV2 without torch.compile (the lease has no time for their compiles) -> peers_gpu_eager.*
#   3. train step benchmarks/train/train_speed.py for MobileNetV2 at 224, bf16, batch 256 -> train_speed.*
# torch.compile runs as mode=reduce-overhead (Inductor + CUDA graphs, no autotuning): max-autotune's kernel search
# does not fit the lease.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/gpu_campaign}
SMOKE=${SMOKE:-0}
mkdir -p "$OUT"
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
log="$OUT/gpu_campaign.log"
exec > >(tee -a "$log") 2>&1
marker=$(mktemp)
t0=$(date +%s)

part() {  # part NAME LIMIT_S COMMAND...: run under a limit (SIGINT first: training saves its checkpoint), report rc
    local name=$1 limit=$2
    shift 2
    echo "== $name: start $(date -u +%T), limit ${limit}s, at +$(($(date +%s) - t0))s"
    timeout --signal=INT -k 15 "$limit" "$@"
    echo "== $name: rc=$? at +$(($(date +%s) - t0))s"
}

if [[ $SMOKE == 1 ]]; then
    data=../shared/data/cifar10-mini
    dev=cpu train_min=0.2 peers_dev=cpu batches=1,2 compile=--no-compile steps=2 step_batch=4 batch=16
    limits=(240 120 60 120)
else
    mkdir -p /tmp/gpu-data && tar -C /tmp/gpu-data -xzf gpu-data/cifar10.tar.gz && data=/tmp/gpu-data/cifar10
    dev=cuda train_min=${TRAIN_MIN:-3.5} peers_dev=cuda batches=1,256 compile="--compile-mode reduce-overhead" steps=20 step_batch=256 batch=512
    limits=(290 120 45 75)
    nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.max.sm,power.limit --format=csv \
        > "$OUT/nvidia_smi.csv" 2>&1
fi
python3 -c "import torch, torchvision, sys; print('python', sys.version.split()[0], 'torch', torch.__version__,
    'torchvision', torchvision.__version__, 'cuda', torch.cuda.is_available())"

part training "${limits[0]}" python3 benchmarks/train/cifar10_study.py --models MobileNetV2_x1_0 --data "$data" \
    --device "$dev" --budget-min "$train_min" -o batch_size=$batch -o small_input=2 -o label_smoothing=0.1 \
    -o eval_every=1 --runs /tmp/gpu_runs --out gpu_training
# shellcheck disable=SC2086  # $compile is two words or one
part inference "${limits[1]}" python3 benchmarks/peers_gpu.py --models MobileNetV2_x1_0 --device "$peers_dev" \
    --batch-sizes "$batches" $compile --name peers_gpu
part inference-eager "${limits[2]}" python3 benchmarks/peers_gpu.py --device "$peers_dev" --batch-sizes "$batches" \
    --models MobileNetV3_large_x1_0,ShuffleNetV2_x1_0 --no-compile --name peers_gpu_eager
part train-step "${limits[3]}" python3 benchmarks/train/train_speed.py --models MobileNetV2_x1_0 --device "$dev" \
    --compile-mode reduce-overhead --tv-compile-mode reduce-overhead --steps "$steps" --warmup 3 --batch "$step_batch" --data "$data"

# what this run wrote under benchmarks/results, as one file (the device returns at most 8)
(cd benchmarks/results && find . -maxdepth 1 -type f -newer "$marker" -print0 | xargs -0 -r tar -czf "$OUT/results.tgz")
echo "== done at +$(($(date +%s) - t0))s; results.tgz: $(tar -tzf "$OUT/results.tgz" 2>/dev/null | tr '\n' ' ')"
