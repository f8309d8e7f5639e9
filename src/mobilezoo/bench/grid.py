"""The grid runner: models x backends x threads x batch sizes x precisions (x channels_last), each configuration
gated numerically against fp32 eager PyTorch, then timed with the harness; machine and settings recorded.

Weights follow the one vocabulary (:mod:`mobilezoo.weights.choice`): the published checkpoints by default,
``weights="random"`` (no network needed; speed does not depend on their values) with BatchNorm statistics
calibrated on a fixed noise batch, so logits depend on the input and the gate compares something meaningful, or a
checkpoint path (one model).
"""

from __future__ import annotations

import contextlib
import itertools
import shutil
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..backends import bench_defaults, resolve
from ..measure.gate import check
from ..measure.harness import STANDARD, TimingPolicy, idlest_cores, load_average, measure, pinned
from ..measure.machine import machine_info
from .backends import BACKENDS, PRECISIONS, Artifacts, Unsupported, build_runner, unsupported_reason

__all__ = ["RESULT_COLUMNS", "SCHEMA", "BenchRun", "BenchSpec", "model_info", "prepare_model", "run_bench"]

SCHEMA = "mobilezoo.bench/1"

RESULT_COLUMNS = (
    "model",
    "family",
    "backend",
    "mode",
    "precision",
    "device",
    "threads",
    "batch_size",
    "channels_last",
    "status",
    "reason",
    "median_ms",
    "p90_ms",
    "min_ms",
    "mean_ms",
    "std_ms",
    "spread",
    "throughput_ips",
    "iters",
    "rounds",
    "noisy",
    "noise_reason",
    "cpu_util",
    "cores",
    "load_avg",
    "gate_rel_diff",
    "gate_max_abs_diff",
    "gate_tol",
    "gate_top1_agree",
    "gate_top5_agree",
    "setup_s",
    "artifact",
    "artifact_bytes",
    "note",
)
"""One row per configuration. ``status``: ok (gated and timed), wrong (failed the numerical gate: not timed),
skipped (the backend cannot run it here: ``reason``), error (it raised: ``reason``). Times in milliseconds per
batch; ``throughput_ips`` images per second at the median."""

STATUSES = ("ok", "wrong", "skipped", "error")


@dataclass
class BenchSpec:
    models: list[str]
    backends: list[str] = field(default_factory=bench_defaults)
    threads: list[int] = field(default_factory=lambda: [1])
    batch_sizes: list[int] = field(default_factory=lambda: [1])
    precisions: list[str] = field(default_factory=lambda: ["fp32"])
    device: str = "cpu"
    channels_last: list[bool] = field(default_factory=lambda: [False])
    input_size: int = 224
    policy: TimingPolicy = STANDARD
    weights: str | None = None
    """None: the published weights; "random"; or a checkpoint path (one model)"""
    gate: bool = True
    profile: bool = True
    compile_mode: str | None = None
    pin: bool = True
    keep_artifacts: Path | None = None

    def __post_init__(self) -> None:
        for b in self.backends:
            if b not in BACKENDS:
                raise ValueError(f"unknown backend {b!r}; choose from {', '.join(BACKENDS)}")
        for p in self.precisions:
            if p not in PRECISIONS:
                raise ValueError(f"unknown precision {p!r}; choose from {', '.join(PRECISIONS)}")
        from ..models import UnknownModelError
        from ..weights.choice import resolve_weights

        for m in self.models:  # a name without published weights, a missing file: refused before anything runs
            try:
                self.weights = str(resolve_weights(m, self.weights))
            except UnknownModelError:
                continue  # a model outside the zoo (run_bench's model_factory builds it)
        if self.weights not in (None, "random", "published", "pretrained") and len(self.models) > 1:
            raise ValueError(f"a checkpoint ({self.weights}) is for one model, not {len(self.models)}")
        if any(t < 1 for t in self.threads) or any(b < 1 for b in self.batch_sizes):
            raise ValueError("threads and batch sizes must be >= 1")
        if not self.device.startswith("cuda"):
            from ..measure.machine import check_threads

            check_threads(max(self.threads))  # a label must be what ran: no more threads than usable cores

    def configs(self) -> list[tuple[str, str, int, int, bool]]:
        """(backend, precision, threads, batch size, channels_last) in run order; CUDA runs ignore threads."""
        threads = self.threads if not self.device.startswith("cuda") else [self.threads[0]]
        out = []
        for b, p, t, n, cl in itertools.product(
            self.backends, self.precisions, threads, self.batch_sizes, self.channels_last
        ):
            if cl and not b.startswith("torch"):
                continue  # channels_last is a torch layout: other backends appear once
            out.append((b, p, t, n, cl))
        return out

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["keep_artifacts"] = str(self.keep_artifacts) if self.keep_artifacts else None
        return d


@dataclass
class BenchRun:
    machine: dict[str, Any]
    spec: dict[str, Any]
    results: list[dict[str, Any]]
    models: dict[str, dict[str, Any]] = field(default_factory=dict)
    peaks: dict[str, Any] = field(default_factory=dict)
    wall_s: float = 0.0
    schema: str = SCHEMA

    def ok(self) -> list[dict[str, Any]]:
        return [r for r in self.results if r["status"] == "ok"]


def prepare_model(name: str, weights: str | None = None, input_size: int = 224, seed: int = 0) -> nn.Module:
    """A zoo model in eval mode with ``weights`` (:func:`mobilezoo.create_model`'s: published by default, or a
    path); ``"random"``: random weights with BatchNorm statistics set from one train-mode pass over a fixed noise
    batch (deterministic, no network)."""
    from ..factory import create_model
    from ..weights.choice import RANDOM, resolve_weights

    if resolve_weights(name, weights).kind != RANDOM:
        return create_model(name, weights=weights).eval()
    torch.manual_seed(seed)
    m = create_model(name, weights=RANDOM)
    bns = [b for b in m.modules() if isinstance(b, nn.BatchNorm2d)]
    for bn in bns:
        bn.momentum = None  # cumulative average: after one batch, running stats are that batch's
    g = torch.Generator().manual_seed(seed)
    m.train()
    with torch.no_grad():  # half resolution: per-channel statistics of noise barely depend on it, 4x cheaper
        m(torch.randn(2, 3, max(input_size // 2, 32), max(input_size // 2, 32), generator=g))
    for bn in bns:
        bn.momentum = 0.1
    return m.eval()


def model_info(name: str, model: nn.Module, input_size: int = 224) -> dict[str, Any]:
    """The static dimensions of one model: params, MACs (FLOPs = 2 x MACs), memory access, peak activations,
    weights file sizes."""
    from ..models import get_entry
    from ..profile import profile_model

    p = profile_model(model, input_size=input_size, name=name)
    try:
        e = get_entry(name)
        family, arch = e.family, e.arch
    except KeyError:  # a model outside the zoo
        family, arch = type(model).__name__, name
    return {
        "model": name,
        "family": family,
        "arch": arch,
        "params": p.params,
        "macs": p.macs,
        "flops": p.flops,
        "mem_access_bytes": p.mem_access_bytes,
        "peak_activation_bytes": p.peak_activation_bytes,
        "size_fp32_bytes": p.size_fp32_bytes,
        "size_fp16_bytes": p.size_fp16_bytes,
        "size_int8_bytes": p.size_int8_bytes,
        "input_size": input_size,
    }


def _row(
    model: str, family: str, backend: str, precision: str, device: str, threads: int, batch: int, cl: bool
) -> dict[str, Any]:
    r: dict[str, Any] = dict.fromkeys(RESULT_COLUMNS)
    r.update(
        model=model,
        family=family,
        backend=backend,
        mode=resolve(backend)[1],
        precision=precision,
        device=device,
        threads=threads,
        batch_size=batch,
        channels_last=cl,
        status="error",
        reason="",
        note="",
        noisy=False,
        noise_reason="",
    )
    return r


def _timed_into(row: dict[str, Any], m: Any, batch: int, used: list[int] | None) -> None:
    """A timing's statistics into a results row (status ok)."""
    s = m.stats
    row.update(
        status="ok",
        median_ms=s.median_ms,
        p90_ms=s.p90_ms,
        min_ms=s.min_ms,
        mean_ms=s.mean_ms,
        std_ms=s.std_ms,
        spread=s.spread,
        throughput_ips=s.throughput(batch),
        iters=s.n,
        rounds=m.rounds,
        noisy=m.noisy,
        noise_reason=m.noise_reason,
        cpu_util=round(m.cpu_util, 2),
        cores=" ".join(map(str, used)) if used else "",
    )


def run_config(
    model: nn.Module,
    backend: str,
    precision: str,
    threads: int,
    batch: int,
    channels_last: bool,
    *,
    x: torch.Tensor,
    ref: torch.Tensor | None,
    artifacts: Artifacts | None,
    spec: BenchSpec,
    cores: list[int] | None = None,
    row: dict[str, Any],
) -> dict[str, Any]:
    """Build, gate and time one configuration into ``row`` (never raises for a backend's failure)."""
    cuda = spec.device.startswith("cuda")
    reason = unsupported_reason(backend, precision, spec.device)
    if reason:
        row.update(status="skipped", reason=reason)
        return row
    try:
        with pinned(threads if spec.pin and not cuda else None, cores) as used:
            runner = build_runner(
                model,
                backend,
                precision=precision,
                device=spec.device,
                threads=threads,
                batch_size=batch,
                channels_last=channels_last,
                artifacts=artifacts,
                input_size=spec.input_size,
                compile_mode=spec.compile_mode,
            )
            row.update(setup_s=round(runner.setup_s, 3), artifact=runner.artifact, note=runner.note)
            if artifacts is not None and runner.artifact:
                key = next((k for k, p in artifacts._paths.items() if p.name == runner.artifact), None)
                row["artifact_bytes"] = artifacts.size_bytes(key) if key else None
            xb = x[:batch]
            if ref is not None:
                g = check(ref[:batch], runner(xb), precision, device=spec.device)
                row.update(
                    gate_rel_diff=g.rel_diff,
                    gate_max_abs_diff=g.max_abs_diff,
                    gate_tol=g.tol,
                    gate_top1_agree=g.top1_agree,
                    gate_top5_agree=g.top5_agree,
                )
                if not g.ok:
                    row.update(status="wrong", reason=g.message)
                    return row
            row["load_avg"] = load_average()
            _timed_into(row, measure(runner.timed_call(xb), spec.policy, sync=runner.sync), batch, used)
            if not cuda and threads and row["cpu_util"] > threads * 1.2 + 0.1:
                row["noisy"] = True
                row["noise_reason"] = (row["noise_reason"] + "; " if row["noise_reason"] else "") + (
                    f"used {row['cpu_util']:.1f} cores with threads={threads}"
                )
    except Unsupported as e:
        row.update(status="skipped", reason=str(e))
    except Exception as e:  # a backend failing is a result, not a crash of the whole grid
        msg = f"{type(e).__name__}: {e}".strip().splitlines()
        row.update(status="error", reason=msg[0][:300] if msg else type(e).__name__)
        row["note"] = (row.get("note") or "") + traceback.format_exc(limit=2)[-300:]
    return row


def _family(name: str) -> str:
    from ..models import get_entry

    try:
        return get_entry(name).family
    except KeyError:
        return ""


def run_bench(
    spec: BenchSpec,
    *,
    progress: bool = True,
    on_result: Callable[[dict[str, Any]], None] | None = None,
    model_factory: Callable[[str], nn.Module] | None = None,
) -> BenchRun:
    """Run the whole grid; ``on_result`` sees each row as it is measured (for live output)."""
    t_start = time.perf_counter()
    machine = machine_info()
    configs = spec.configs()
    results: list[dict[str, Any]] = []
    models: dict[str, dict[str, Any]] = {}
    total = len(configs) * len(spec.models)
    bar = _Progress(total, enabled=progress)
    cuda = spec.device.startswith("cuda")
    try:
        for name in spec.models:
            family = _family(name)
            bar.describe(f"{name}: preparing")
            # untimed work on one thread: on a shared machine, OpenMP threads waiting on a busy core cost seconds
            with _torch_threads(1 if not cuda else None):
                model = model_factory(name) if model_factory else prepare_model(name, spec.weights, spec.input_size)
                if spec.profile:
                    models[name] = model_info(name, model, spec.input_size)
                    family = models[name]["family"]
                g = torch.Generator().manual_seed(1)
                x = torch.randn(max(spec.batch_sizes), 3, spec.input_size, spec.input_size, generator=g)
                ref = None
                if spec.gate:
                    with torch.inference_mode():
                        ref = torch.cat([model(x[i : i + 16]) for i in range(0, x.shape[0], 16)])
            workdir = Path(tempfile.mkdtemp(prefix="mobilezoo-bench-"))
            calib = torch.randn(8, 3, spec.input_size, spec.input_size, generator=g)
            artifacts = Artifacts(model, workdir, calib=calib, input_size=spec.input_size)
            cores_for: dict[int, list[int]] = {}
            try:
                for backend, precision, threads, batch, cl in configs:
                    bar.describe(f"{name} {backend} {precision} t{threads} b{batch}{' CL' if cl else ''}")
                    if spec.pin and not cuda and threads not in cores_for:
                        cores_for[threads] = idlest_cores(threads)
                    row = _row(name, family, backend, precision, spec.device, threads, batch, cl)
                    run_config(
                        model,
                        backend,
                        precision,
                        threads,
                        batch,
                        cl,
                        x=x,
                        ref=ref,
                        artifacts=artifacts,
                        spec=spec,
                        cores=cores_for.get(threads),
                        row=row,
                    )
                    results.append(row)
                    if on_result:
                        on_result(row)
                    bar.advance()
                if name in models:
                    for key in dict.fromkeys(("onnx-fp32", "onnx-int8", "ncnn-fp32", *artifacts.export_s)):
                        models[name][f"{key}_bytes"] = artifacts.size_bytes(key)
                    models[name]["export_s"] = {k: round(v, 2) for k, v in artifacts.export_s.items()}
            finally:
                if spec.keep_artifacts:
                    dest = Path(spec.keep_artifacts) / name
                    shutil.copytree(workdir, dest, dirs_exist_ok=True)
                shutil.rmtree(workdir, ignore_errors=True)
    finally:
        bar.close()
    peaks = {}
    if not cuda and spec.profile:
        from ..measure.machine import measure_peaks

        for t in sorted(set(spec.threads)):
            peaks[str(t)] = measure_peaks(t).as_dict()
    machine["load_average_end"] = [round(v, 2) for v in _loadavg3()]
    return BenchRun(machine, spec.as_dict(), results, models, peaks, time.perf_counter() - t_start)


@contextlib.contextmanager
def _torch_threads(n: int | None) -> Iterator[None]:
    old = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def _loadavg3() -> Sequence[float]:
    import os

    try:
        return os.getloadavg()
    except (OSError, AttributeError):
        return ()


class _Progress:
    """A rich progress bar on stderr (tqdm where rich is missing; nothing when disabled)."""

    def __init__(self, total: int, enabled: bool = True) -> None:
        self.p = self.task = self.tq = None
        if not enabled:
            return
        try:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            self.p = Progress(
                TextColumn("{task.description}", style="cyan"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                console=Console(stderr=True),
                transient=False,
            )
            self.p.start()
            self.task = self.p.add_task("bench", total=total)
        except ImportError:  # pragma: no cover - rich is a dependency
            from tqdm import tqdm

            self.tq = tqdm(total=total, unit="cfg")

    def describe(self, text: str) -> None:
        if self.p is not None:
            self.p.update(self.task, description=text.ljust(48)[:60])
        elif self.tq is not None:
            self.tq.set_description(text)

    def advance(self) -> None:
        if self.p is not None:
            self.p.advance(self.task)
        elif self.tq is not None:
            self.tq.update(1)

    def close(self) -> None:
        if self.p is not None:
            self.p.stop()
        elif self.tq is not None:
            self.tq.close()
