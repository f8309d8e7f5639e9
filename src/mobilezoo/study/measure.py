"""The dimensions a trained study model is measured on besides its accuracy: MACs/FLOPs, params, peak activation
memory, memory access cost (:mod:`mobilezoo.profile`, at the CIFAR input), file sizes (the fp32 ONNX export and its
int8 PTQ, :func:`mobilezoo.quant.quantize_ptq`, calibrated on training images), and latency on every engine at each
input size (:func:`mobilezoo.bench.grid.run_bench`: gated against eager PyTorch, batch 1, one thread, the harness's
quick policy).
"""

from __future__ import annotations

import random
import shutil
from pathlib import Path
from typing import Any

import torch

from ..backends import bench_defaults
from ..bench.grid import BenchSpec, model_info, run_bench
from ..measure.harness import QUICK
from .plan import Settings

__all__ = ["LATENCY_FIELDS", "default_engines", "measure_model"]

LATENCY_FIELDS = ("model", "backend", "precision", "threads", "batch_size", "status", "reason", "median_ms",
                  "p90_ms", "min_ms", "spread", "noisy", "gate_rel_diff", "artifact_bytes")  # fmt: skip
"""What the study keeps of each benchmark row (with ``input_size``)."""


def default_engines() -> list[str]:
    """Every benchmark configuration that runs fp32 on this CPU (all tiers)."""
    return bench_defaults("cpu", full=True)


def _calibration(settings: Settings, model, n: int) -> torch.Tensor:
    """``n`` training images (a seeded random sample), under the model's eval preprocessing."""
    from ..data.datasets import open_split
    from ..data.transforms import eval_preprocess

    ds = open_split(settings.data, "train")
    pre = eval_preprocess(model)
    idx = random.Random(0).sample(range(len(ds)), min(n, len(ds)))
    return torch.stack([pre(ds.read(i)[0]) for i in idx])


def _file_sizes(model, calib: torch.Tensor, workdir: Path) -> dict[str, Any]:
    from ..backends import quiet
    from ..backends.artifact import artifact_bytes
    from ..quant import quantize_ptq

    try:
        with quiet():  # the converters' notices
            q = quantize_ptq(model, calib, workdir / "int8")
    except Exception as e:  # an exporter failing is a result (in the report's problems), not the study's end
        return {"onnx_fp32_bytes": None, "onnx_int8_bytes": None, "file_size_error": f"{type(e).__name__}: {e}"[:300]}
    return {"onnx_fp32_bytes": artifact_bytes(q.fp32), "onnx_int8_bytes": artifact_bytes(q.int8)}


def _latency(name: str, model, settings: Settings, engines: list[str]) -> list[dict[str, Any]]:
    rows = []
    for size in settings.sizes:
        spec = BenchSpec([name], backends=engines, input_size=size, policy=QUICK, weights="random", profile=False)
        run = run_bench(spec, progress=False, model_factory=lambda _n: model)
        rows += [{**{k: r.get(k) for k in LATENCY_FIELDS}, "input_size": size} for r in run.results]
    return rows


def measure_model(name: str, checkpoint: str | Path, settings: Settings, workdir: Path) -> dict[str, Any]:
    """Every measured dimension of the model in ``checkpoint`` but accuracy and training (recorded by training)."""
    from ..train import load_checkpoint, model_from_checkpoint

    ck = load_checkpoint(checkpoint)
    model = model_from_checkpoint(ck).eval()
    size = int(model.default_cfg.get("crop_size") or settings.sizes[0])
    engines = settings.engines or default_engines()
    old = torch.get_num_threads()
    torch.set_num_threads(1)  # untimed work on one core (the harness pins the timed work itself)
    try:
        info = model_info(name, model, input_size=size)
        work = workdir / f".measure-{name}"
        try:
            sizes = _file_sizes(model, _calibration(settings, model, settings.calib_images), work)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    finally:
        torch.set_num_threads(old)
    latency = _latency(name, model, settings, engines)
    return {**info, **sizes, "latency": latency}
