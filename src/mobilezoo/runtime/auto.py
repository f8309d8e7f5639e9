"""``backend="auto"``: the fastest backend for this machine and model, by a short measurement, cached.

Candidates are the installed backends of the registry with an ``auto_rank`` that can run the precision (CPU fp32:
OpenVINO, ONNX Runtime, ncnn, MNN, ExecuTorch, LiteRT, PyTorch eager; bf16: OpenVINO, PyTorch; fp16: the same as fp32;
CUDA: PyTorch, ONNX Runtime's CUDA provider). Each is built, checked against fp32 eager PyTorch on the same input (a
wrong answer is never chosen), then all are timed side by side in rotating rounds
(:func:`mobilezoo.measure.harness.measure_interleaved`); the lowest median wins. The OpenVINO and ONNX Runtime
candidates are compiled for the measured batch size (static shapes) and fall back to a dynamic-shape graph for other
batch sizes; ExecuTorch is exported for it, LiteRT resized to it.

The choice is cached in ``<cache_dir>/auto_backend.json`` keyed by the architecture (module types and tensor shapes:
speed does not depend on weight values), batch size, threads, precision, device, this CPU (model, family/model,
ISA features, cores) and the versions of mobilezoo, torch and every candidate engine's packages — a new library
version or another machine measures again. ``remeasure=True`` (or ``MOBILEZOO_AUTO_REMEASURE=1``) forces a new
measurement; :func:`clear_cache` forgets every choice.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from . import Runtime

__all__ = ["AutoChoice", "cache_key", "cache_path", "candidates_for", "choose", "clear_cache", "load_auto"]

CACHE_NAME = "auto_backend.json"


@dataclass
class AutoChoice:
    backend: str
    key: dict[str, Any]
    timings_ms: dict[str, float] = field(default_factory=dict)
    """Best-round median latency (ms) of every candidate that passed the numerical gate (the lowest wins)."""
    rejected: dict[str, str] = field(default_factory=dict)
    """Candidates that could not be built or gave a wrong answer, with the reason."""
    measured: bool = True
    """False when the choice came from the cache."""
    measure_s: float = 0.0
    measured_at: str = ""

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("measured")
        return d


def cache_path() -> Path:
    from ..weights.hub import cache_dir

    return cache_dir() / CACHE_NAME


def architecture_fingerprint(model: nn.Module) -> str:
    """Module types and parameter/buffer shapes: equal for any two weight sets of one architecture."""
    h = hashlib.sha256()
    for name, m in model.named_modules():
        h.update(f"{name}:{type(m).__name__};".encode())
    for k, v in model.state_dict().items():
        h.update(f"{k}:{tuple(v.shape)}:{v.dtype};".encode())
    return h.hexdigest()[:16]


def cache_key(model: nn.Module, *, batch_size: int, threads: int | None, precision: str, device: str) -> dict[str, Any]:
    from .. import backends
    from ..measure.machine import machine_key, versions

    v = versions()
    engines = [backends.get(n) for n in backends.names() if backends.get(n).auto_rank is not None]
    packages = dict.fromkeys(["mobilezoo", "torch", *(p for e in engines for p in (e.package, *e.extra_packages) if p)])
    return {
        "model": getattr(model, "model_name", type(model).__name__),
        "architecture": architecture_fingerprint(model),
        "batch_size": batch_size,
        "threads": threads or f"default({torch.get_num_threads()})",
        "precision": precision,
        "device": device,
        "machine": machine_key(),
        "versions": {k: v.get(k) for k in packages},
    }


def _digest(key: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]


def _read_cache(path: Path) -> dict[str, Any]:
    try:
        doc = json.loads(path.read_text())
        return doc if isinstance(doc, dict) else {}
    except (OSError, ValueError):
        return {}


def _write_cache(path: Path, digest: str, entry: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = _read_cache(path)
    doc[digest] = entry
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".auto_backend.", suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        json.dump(doc, f, indent=1, sort_keys=True)
    os.replace(tmp, path)


def clear_cache() -> None:
    """Forget every measured choice (the next ``auto`` load measures again)."""
    cache_path().unlink(missing_ok=True)


def candidates_for(precision: str, device: str) -> list[str]:
    """The engines that can run ``precision`` on ``device`` here and take part in ``auto``, in tie-break order."""
    from .. import backends

    if precision == "int8":
        raise ValueError(
            "backend='auto' with int8 needs a quantized artifact: make one with `mobilezoo quantize` and load that "
            "file (its format decides the backend)"
        )
    if precision not in ("fp32", "fp16", "bf16"):
        raise ValueError(f"unknown precision {precision!r}; choose from fp32, fp16, bf16")
    engines = [backends.get(n) for n in backends.names()]
    ok = [e for e in engines if e.auto_rank is not None and e.unsupported(precision, device) is None]
    return [e.name for e in sorted(ok, key=lambda e: e.auto_rank)]


def _builders(
    model: nn.Module,
    names: list[str],
    *,
    device: str,
    threads: int | None,
    precision: str,
    batch_size: int,
    common: dict[str, Any],
) -> dict[str, Callable[[], Runtime]]:
    """Each candidate engine opened on ``model`` (compiled for ``batch_size``), as a zero-argument factory."""
    from .. import backends

    def make(name: str) -> Callable[[], Runtime]:
        def build() -> Runtime:
            engine = backends.get(name)
            with backends.quiet():
                sess = engine.open(model, device=device, threads=threads, precision=precision, batch_size=batch_size)
            return Runtime(sess, **common)

        return build

    return {n: make(n) for n in names}


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def _from_cache(digest: str, key: dict[str, Any], names: list[str]) -> AutoChoice | None:
    entry = _read_cache(cache_path()).get(digest)
    if not entry or entry.get("backend") not in names:
        return None
    return AutoChoice(
        entry["backend"],
        key,
        entry.get("timings_ms", {}),
        entry.get("rejected", {}),
        False,
        entry.get("measure_s", 0.0),
        entry.get("measured_at", ""),
    )


def _reference_input(model: nn.Module, batch_size: int) -> tuple[torch.Tensor, nn.Module]:
    from ..data.transforms import eval_preprocess

    in_chans = next(m for m in model.modules() if isinstance(m, nn.Conv2d)).in_channels
    # the size the candidates' artifacts are exported at (the eval crop: 32 for a CIFAR-10 checkpoint, whose
    # default_cfg may still say 224 for input_size)
    size = eval_preprocess(getattr(model, "default_cfg", None)).crop_size
    x = torch.randn(batch_size, in_chans, size, size, generator=torch.Generator().manual_seed(0))
    p0 = next(model.parameters())
    cpu_fp32 = p0.device.type == "cpu" and p0.dtype == torch.float32
    return x, (model if cpu_fp32 else copy.deepcopy(model).float().cpu())


def _build_checked(builders, ref, x, precision: str, device: str) -> tuple[dict[str, Any], dict[str, str]]:
    """Build each candidate and run the numerical gate: (correct ones, rejected ones with the reason)."""
    from ..measure.gate import check

    built: dict[str, Any] = {}
    rejected: dict[str, str] = {}
    for name, make in builders.items():
        try:
            rt = make()
            g = check(ref, rt(x), precision, device=device)
        except Exception as e:  # a backend that cannot be built is not a candidate
            rejected[name] = f"{type(e).__name__}: {e}".splitlines()[0][:200]
            continue
        if g.ok:
            built[name] = rt
        else:
            rejected[name] = f"wrong answer: {g.message}"
    if not built:
        raise RuntimeError(f"no backend could run this model: {rejected}")
    return built, rejected


def _race(built: dict[str, Any], x: torch.Tensor, budget_s: float) -> tuple[str, dict[str, float]]:
    """Time the candidates side by side (rotating rounds sharing ~``budget_s``): (winner, best-round ms each)."""
    from ..measure.harness import measure_interleaved

    if len(built) == 1:
        return next(iter(built)), {}
    per_round = max(budget_s / (5 * len(built)), 0.01)
    fns = {n: (lambda rt=rt: rt(x)) for n, rt in built.items()}
    rounds: dict[str, list[float]] = {}
    stats = measure_interleaved(fns, rounds=5, min_iters=2, min_round_s=per_round, round_medians=rounds)
    # rank by the best round's median: a round's median drops single slow calls, the best round drops the stretches
    # when another process shared the core (the same rule for every candidate; they ran interleaved); ties by median
    best = {n: (min(rounds[n]), s.median_ms) for n, s in stats.items()}
    return min(best, key=best.get), {n: round(min(rounds[n]), 4) for n in stats}


def choose(
    model: nn.Module,
    *,
    device: str = "cpu",
    threads: int | None = None,
    precision: str = "fp32",
    batch_size: int = 1,
    remeasure: bool = False,
    builders: dict[str, Callable[[], Any]] | None = None,
    budget_s: float = 2.0,
    common: dict[str, Any] | None = None,
) -> tuple[AutoChoice, Any]:
    """Pick the fastest correct backend; returns ``(choice, runtime)``. ``runtime`` is the already-built winner when
    measured now, None when the choice came from the cache (the caller builds it).

    ``builders`` (name -> zero-argument factory of a callable runtime) replaces the real candidates: tests use it.
    """
    from ..measure.harness import idlest_cores, pinned

    model = model.eval()
    key = cache_key(model, batch_size=batch_size, threads=threads, precision=precision, device=device)
    if builders is not None:
        key["candidates"] = sorted(builders)
    digest = _digest(key)
    remeasure = remeasure or os.environ.get("MOBILEZOO_AUTO_REMEASURE", "") not in ("", "0")
    names = list(builders) if builders is not None else candidates_for(precision, device)
    cached = None if remeasure else _from_cache(digest, key, names)
    if cached is not None:
        return cached, None
    t0 = time.perf_counter()
    print(
        f"mobilezoo: measuring backends for auto ({', '.join(names)}; {key['model']}, batch {batch_size}, "
        f"{precision}, {device}) - once per model and machine, then cached in {cache_path()} ...",
        file=sys.stderr,
        flush=True,
    )
    if builders is None:
        opts = {"device": device, "threads": threads, "precision": precision, "batch_size": batch_size}
        builders = _builders(model, names, common=common or {}, **opts)
    x, ref_model = _reference_input(model, batch_size)
    cpu_threads = threads if not device.startswith("cuda") else None
    with pinned(cpu_threads, idlest_cores(cpu_threads) if cpu_threads else None):
        with torch.inference_mode():
            ref = ref_model(x)
        built, rejected = _build_checked(builders, ref, x, precision, device)
        winner, timings = _race(built, x, budget_s)
    choice = AutoChoice(winner, key, timings, rejected, True, round(time.perf_counter() - t0, 2), _now())
    print(f"mobilezoo: auto chose {winner} ({choice.measure_s:.1f} s)", file=sys.stderr, flush=True)
    entry = {k: v for k, v in choice.as_dict().items() if k != "backend"}
    _write_cache(cache_path(), digest, {"backend": winner, **entry})
    return choice, built[winner]


def load_auto(
    model: nn.Module,
    *,
    device: str = "cpu",
    threads: int | None = None,
    precision: str = "fp32",
    batch_size: int = 1,
    remeasure: bool = False,
    common: dict[str, Any] | None = None,
) -> Runtime:
    """The runtime ``load(..., backend="auto")`` returns; ``rt.auto`` holds the :class:`AutoChoice`."""
    common = common or {}
    choice, rt = choose(
        model,
        device=device,
        threads=threads,
        precision=precision,
        batch_size=batch_size,
        remeasure=remeasure,
        common=common,
    )
    if rt is None:  # cached: build only the chosen backend
        rt = _builders(
            model,
            [choice.backend],
            device=device,
            threads=threads,
            precision=precision,
            batch_size=batch_size,
            common=common,
        )[choice.backend]()
    rt.auto = choice
    return rt
