"""Where a CPU training step's time goes: the CIFAR recipe's step (eager), per kind of op, per model.

The study's CPU goal runs are bounded by images/s (`study_goal_*`: MobileNetV2_x1_0 trains 9.3 epochs in 40 minutes
on 2 cores). This profiles the step those runs take -- the recipe's model at 32x32 (``small_input``), channels_last,
SGD + Nesterov with the recipe's weight decay, label smoothing, one batch of random images (the data pipeline is not
in it) -- with ``torch.profiler`` and sums the self CPU time of each aten op into kinds: convolution forward and
backward, batch norm forward and backward, activations forward and backward, the optimizer, the rest. Beside it, the
multiply-accumulates a step computes (3x the forward's: forward, input gradient, weight gradient) and the rate
reached, so a user sees whether a step is bound by arithmetic or by moving activations through memory.

    python benchmarks/train/cpu_step_profile.py --out cpu_step_profile_amx
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine, write

KINDS = {
    "conv forward": ("aten::mkldnn_convolution", "aten::_convolution", "aten::thnn_conv2d", "aten::_slow_conv2d"),
    "conv backward": ("aten::convolution_backward", "aten::mkldnn_convolution_backward"),
    "batch norm forward": ("aten::native_batch_norm", "aten::_native_batch_norm_legit", "aten::batch_norm"),
    "batch norm backward": ("aten::native_batch_norm_backward",),
    "activation forward": ("aten::hardtanh", "aten::clamp", "aten::relu", "aten::hardswish", "aten::hardsigmoid"),
    "activation backward": (
        "aten::hardtanh_backward",
        "aten::threshold_backward",
        "aten::hardswish_backward",
        "aten::hardsigmoid_backward",
    ),
}


def kind_of(name: str) -> str:
    if name.startswith("Optimizer") or name.startswith("aten::_foreach"):
        return "optimizer"
    return next((k for k, names in KINDS.items() if name in names), "other")


def build_step(name: str, recipe: str, batch: int, overrides: list[str]):
    import mobilezoo
    from mobilezoo.train.recipes import load_recipe

    r = load_recipe(recipe, name, [f"batch_size={batch}", *overrides])
    torch.manual_seed(0)
    model = mobilezoo.create_model(name, weights="random", num_classes=10, small_input=r.small_input)
    model = model.to(memory_format=torch.channels_last).train()
    opt = torch.optim.SGD(model.parameters(), lr=r.lr_for(batch), momentum=r.momentum, nesterov=r.nesterov,
                          weight_decay=r.weight_decay)  # fmt: skip
    x = torch.randn(batch, 3, r.train_crop, r.train_crop).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (batch,))
    loss_fn = nn.CrossEntropyLoss(label_smoothing=r.label_smoothing)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        loss_fn(model(x), y).backward()
        opt.step()

    return model, r, step


def measure(name: str, small_input: int, args: argparse.Namespace) -> dict:
    from torch.profiler import ProfilerActivity, profile

    from mobilezoo.profile.counter import count_macs

    model, r, step = build_step(name, args.recipe, args.batch, [*args.override, f"small_input={small_input}"])
    macs = count_macs(model, r.train_crop)
    for _ in range(args.warmup):
        step()
    times = []
    for _ in range(args.steps):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(args.profiled):
            step()
    by_kind: dict[str, float] = {}
    for e in prof.key_averages():
        by_kind[kind_of(e.key)] = by_kind.get(kind_of(e.key), 0.0) + e.self_cpu_time_total
    total = sum(by_kind.values())
    sec = statistics.median(times)
    row = {
        "model": name,
        "small_input": r.small_input,
        "batch": args.batch,
        "forward MACs/image (M)": round(macs / 1e6, 2),
        "step median (s)": round(sec, 4),
        "step spread (IQR/median)": round(_iqr(times) / sec, 3),
        "images/s": round(args.batch / sec, 1),
        "training GMAC/s (3x forward)": round(3 * macs * args.batch / sec / 1e9, 2),
        "epochs in 40 min (50000 images each)": round(40 * 60 * args.batch / sec / 50000, 2),
    }
    for k in (*KINDS, "optimizer", "other"):
        row[f"{k} %"] = round(100 * by_kind.get(k, 0.0) / total, 1)
    return row


def _iqr(xs: list[float]) -> float:
    q = statistics.quantiles(xs, n=4)
    return q[2] - q[0]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default="MobileNetV2_x1_0,MobileNetV3_small_x1_0")
    p.add_argument("--recipe", default="cifar10")
    p.add_argument("--small-input", default="1,2", help="the recipe's small_input values to profile (1: 2x2 final map)")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--override", action="append", default=["label_smoothing=0.1"], help="recipe key=value")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--steps", type=int, default=10, help="timed steps (median and spread)")
    p.add_argument("--profiled", type=int, default=3, help="steps under the profiler (the time shares)")
    p.add_argument("--out", default="cpu_step_profile")
    args = p.parse_args()
    rows = [measure(m, int(si), args) for m in args.models.split(",") for si in args.small_input.split(",")]
    for row in rows:
        print(row)
    meta = {"command": " ".join(sys.argv), "machine": machine(), "what": __doc__.split("\n\n")[1].replace("\n", " ")}
    csv_path, _ = write(args.out, rows, meta)
    print(f"wrote {csv_path} (+ .json)")


if __name__ == "__main__":
    main()
