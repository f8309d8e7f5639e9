"""Training step speed on a GPU: mobilezoo's step vs torchvision's network in a plain loop, eager and compiled.

Same batch (256), 224x224 synthetic data already on the GPU, bf16 autocast, channels_last, SGD momentum. mobilezoo's
step is the engine's (fused SGD on CUDA, set_to_none, channels_last model and input); its compiled variant adds
``torch.compile(mode="max-autotune")`` (CUDA graphs). Also measures the input pipeline beside the step rate:
JPEG-folder decode throughput of mobilezoo's stream loader (workers) and the GPU-resident CIFAR loader.

    python benchmarks/train/train_speed.py                 # on the H100; writes results/train_speed.{csv,json}

Goal (issue): >= 1.2x the faster torchvision variant in images/s for MobileNetV2 and MobileNetV3_large.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import DATA, machine, write

PAIRS = {"MobileNetV2_x1_0": "mobilenet_v2", "MobileNetV3_large_x1_0": "mobilenet_v3_large"}


def step_rate(model, batch: int, steps: int, warmup: int, fused: bool, compile_mode: str | None, device) -> list[float]:
    model = model.to(device).to(memory_format=torch.channels_last).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=4e-5, fused=fused or None)
    x = torch.randn(batch, 3, 224, 224, device=device).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 1000, (batch,), device=device)

    def step():
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=torch.bfloat16):
            loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()

    fn = torch.compile(step, mode=compile_mode) if compile_mode else step
    for _ in range(warmup):
        fn()
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    rates = []
    for _ in range(5):
        sync()
        t0 = time.perf_counter()
        for _ in range(steps):
            fn()
        sync()
        rates.append(batch * steps / (time.perf_counter() - t0))
    return rates


def decode_rate(folder: Path, n: int = 4096, workers: int = 8) -> float:
    from mobilezoo.data.datasets import open_split
    from mobilezoo.data.transforms import TrainAugment
    from mobilezoo.train.loader import GlobalBatchSampler, StreamLoader

    ds = open_split(folder, "train")
    sampler = GlobalBatchSampler(min(n, len(ds)), 256)
    loader = StreamLoader(ds, sampler, TrainAugment(224), device=torch.device("cpu"), workers=workers)
    t0 = time.perf_counter()
    seen = sum(x.shape[0] for x, _ in loader)
    return seen / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--models", default=",".join(PAIRS))
    ap.add_argument("--compile-mode", default="max-autotune", help="mobilezoo's compiled variant's torch.compile mode")
    ap.add_argument("--tv-compile-mode", default="default", help="torchvision's compiled variant's mode")
    ap.add_argument("--data", type=Path, default=DATA / "cifar10", help="JPEG folder the decode rate is read on")
    ap.add_argument("--out", default="train_speed")
    args = ap.parse_args()
    device = torch.device(args.device)
    if device.type != "cuda":
        print("warning: no GPU: numbers are for this CPU and not comparable with the goal", file=sys.stderr)
    import torchvision

    import mobilezoo as mz

    rows = []
    for ours in args.models.split(","):
        tv = PAIRS[ours]
        variants = [
            ("torchvision eager", lambda tv=tv: torchvision.models.get_model(tv), False, None),
            ("torchvision compile", lambda tv=tv: torchvision.models.get_model(tv), False, args.tv_compile_mode),
            ("mobilezoo eager", lambda ours=ours: mz.create_model(ours, weights="random"), device.type == "cuda", None),
            (
                "mobilezoo compile",
                lambda ours=ours: mz.create_model(ours, weights="random"),
                device.type == "cuda",
                args.compile_mode,
            ),
        ]
        for label, build, fused, mode in variants:
            torch.manual_seed(0)
            r = step_rate(build(), args.batch, args.steps, args.warmup, fused, mode, device)
            rows.append(
                {
                    "model": ours,
                    "variant": label,
                    "img_s_median": round(statistics.median(r)),
                    "img_s_min": round(min(r)),
                    "img_s_max": round(max(r)),
                    "batch": args.batch,
                    "compile_mode": mode,
                    "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
                }
            )
            print(rows[-1], flush=True)
            write(args.out, rows, {"machine": machine(), "command": " ".join(sys.argv), "partial": True})
        best_tv = max(r["img_s_median"] for r in rows if r["model"] == ours and r["variant"].startswith("torchvision"))
        best_mz = max(r["img_s_median"] for r in rows if r["model"] == ours and r["variant"].startswith("mobilezoo"))
        rows.append(
            {
                "model": ours,
                "variant": "ratio mobilezoo / best torchvision",
                "img_s_median": round(best_mz / best_tv, 3),
            }
        )
    pipeline = {}
    cifar = args.data
    if cifar.is_dir():
        pipeline["jpeg_stream_decode_img_s (cifar10 JPEG, 224 crop, 8 workers)"] = round(decode_rate(cifar))
    write(
        args.out,
        rows,
        {
            "machine": machine(),
            "command": " ".join(sys.argv),
            "input_pipeline": pipeline,
            "goal": ">= 1.2x the faster torchvision variant (img/s)",
        },
    )


if __name__ == "__main__":
    main()
