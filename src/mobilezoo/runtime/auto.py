"""``backend="auto"``: the fastest backend for this machine and model, by a short measurement, cached.

Candidates are the installed backends that can run the precision (CPU fp32: OpenVINO, ONNX Runtime, ncnn, PyTorch
eager; bf16: OpenVINO, PyTorch; fp16: OpenVINO, ONNX Runtime, ncnn, PyTorch; CUDA: PyTorch, ONNX Runtime's CUDA
provider). Each is built, checked against fp32 eager PyTorch on the same input (a wrong answer is never chosen), then
all are timed side by side in rotating rounds (:func:`mobilezoo.bench.harness.measure_interleaved`); the lowest
median wins. The OpenVINO and ONNX Runtime candidates are compiled for the measured batch size (static shapes) and
fall back to a dynamic-shape graph for other batch sizes.

The choice is cached in ``<cache_dir>/auto_backend.json`` keyed by the architecture (module types and tensor shapes:
speed does not depend on weight values), batch size, threads, precision, device, this CPU (model, family/model,
ISA features, cores) and the versions of mobilezoo, torch, onnxruntime, openvino and ncnn — a new library version or
another machine measures again. ``remeasure=True`` (or ``MOBILEZOO_AUTO_REMEASURE=1``) forces a new measurement;
:func:`clear_cache` forgets every choice.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from . import NcnnRuntime, Runtime, TorchRuntime

__all__ = ["AutoChoice", "cache_key", "cache_path", "candidates_for", "choose", "clear_cache", "load_auto"]

CACHE_NAME = "auto_backend.json"
_CPU_CANDIDATES = {
    "fp32": ("openvino", "onnxruntime", "ncnn", "torch"),
    "bf16": ("openvino", "torch"),
    "fp16": ("openvino", "onnxruntime", "ncnn", "torch"),
}
_CUDA_CANDIDATES = ("torch", "onnxruntime")


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
    from ..bench.machine import machine_key, versions

    v = versions()
    return {
        "model": getattr(model, "model_name", type(model).__name__),
        "architecture": architecture_fingerprint(model),
        "batch_size": batch_size,
        "threads": threads or f"default({torch.get_num_threads()})",
        "precision": precision,
        "device": device,
        "machine": machine_key(),
        "versions": {k: v.get(k) for k in ("mobilezoo", "torch", "onnxruntime", "openvino", "ncnn")},
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
    """Installed backends that can run ``precision`` on ``device``, in tie-break order."""
    from ..bench.backends import available

    if precision == "int8":
        raise ValueError(
            "backend='auto' with int8 needs a quantized artifact: make one with `mobilezoo quantize` and load that "
            "file (its format decides the backend)"
        )
    names = _CUDA_CANDIDATES if device.startswith("cuda") else _CPU_CANDIDATES.get(precision)
    if names is None:
        raise ValueError(f"unknown precision {precision!r}; choose from fp32, fp16, bf16")
    return [b for b in names if b == "torch" or available(b) is None]


# ------------------------------------------------------------------------------------------ fast-path runtimes


class FastOnnxRuntime(Runtime):
    """ONNX Runtime with the batch dimension fixed to ``batch_size`` (static memory plan); a dynamic-batch session
    is made on first use of any other batch size."""

    def __init__(
        self, path: Path, *, device: str = "cpu", threads: int | None = None, batch_size: int = 1, **kw: Any
    ) -> None:
        super().__init__(backend="onnxruntime", device=device, **kw)
        self.model_bytes = Path(path).read_bytes()
        self.threads, self.batch_size = threads, batch_size
        self.session = self._session(batch_size)
        self._dynamic = None
        inp = self.session.get_inputs()[0]
        self.input_name = inp.name
        self.np_dtype = np.float16 if "float16" in inp.type else np.float32

    def _session(self, batch: int | None):
        import onnxruntime as ort

        ort.set_default_logger_severity(3)
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        if self.threads:
            opts.intra_op_num_threads = self.threads
            opts.inter_op_num_threads = 1
        if batch:
            opts.add_free_dimension_override_by_name("batch", batch)
        cuda = self.device.startswith("cuda")
        providers = ["CUDAExecutionProvider", "CPUExecutionProvider"] if cuda else ["CPUExecutionProvider"]
        return ort.InferenceSession(self.model_bytes, opts, providers=providers)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        arr = np.ascontiguousarray(x.detach().cpu().numpy().astype(self.np_dtype, copy=False))
        if arr.shape[0] == self.batch_size:
            sess = self.session
        else:
            if self._dynamic is None:
                self._dynamic = self._session(None)
            sess = self._dynamic
        return torch.from_numpy(sess.run(None, {self.input_name: arr})[0].astype(np.float32))


class FastOpenVinoRuntime(Runtime):
    """OpenVINO compiled for a static ``batch_size x C x H x W`` input (one reusable infer request, input shared not
    copied); other shapes go through a dynamic-shape compilation made on first use."""

    def __init__(
        self, path: Path, *, threads: int | None = None, batch_size: int = 1, precision: str = "fp32", **kw: Any
    ) -> None:
        from ..bench.backends import openvino_compile

        super().__init__(backend="openvino", device="cpu", precision=precision, **kw)
        self.threads, self.batch_size = threads, batch_size
        self.compiled = openvino_compile(path, precision, threads, batch_size)
        self.request = self.compiled.create_infer_request()
        self.shape = tuple(int(d) for d in self.compiled.input(0).get_shape())
        import openvino as ov

        self._core = ov.Core()
        self._graph = self._core.read_model(str(path))  # in memory: other shapes compile from it later
        self._dynamic = None

    def _dynamic_model(self):
        hint = {"fp32": "f32", "fp16": "f16", "bf16": "bf16"}.get(self.precision, "f32")
        cfg: dict[str, Any] = {"INFERENCE_PRECISION_HINT": hint, "PERFORMANCE_HINT": "LATENCY"}
        if self.threads:
            cfg["INFERENCE_NUM_THREADS"] = self.threads
        return self._core.compile_model(self._graph, "CPU", cfg)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        arr = np.ascontiguousarray(x.detach().cpu().float().numpy())
        if arr.shape == self.shape:
            out = self.request.infer({0: arr}, share_inputs=True)[0]
            return torch.from_numpy(np.array(out, dtype=np.float32, copy=True))
        if self._dynamic is None:
            self._dynamic = self._dynamic_model()
        return torch.from_numpy(np.asarray(self._dynamic(arr)[0], dtype=np.float32))


# ------------------------------------------------------------------------------------------------- selection


def _builders(
    model: nn.Module,
    names: list[str],
    *,
    device: str,
    threads: int | None,
    precision: str,
    batch_size: int,
    common: dict[str, Any],
    workdir: Path,
) -> dict[str, Callable[[], Runtime]]:
    from ..bench.backends import quiet

    def onnx_path() -> Path:
        from ..export.onnx import export_onnx

        p = workdir / f"model.{precision}.onnx"
        if not p.is_file():
            with quiet():
                export_onnx(model, p, fp16=precision == "fp16")
        return p

    def torch_rt() -> Runtime:
        return TorchRuntime(model, device=device, precision=precision, **common)

    def ort_rt() -> Runtime:
        return FastOnnxRuntime(
            onnx_path(), device=device, threads=threads, batch_size=batch_size, precision=precision, **common
        )

    def ov_rt() -> Runtime:
        src = workdir / "model.fp32.onnx"
        if not src.is_file():
            from ..export.onnx import export_onnx

            with quiet():
                export_onnx(model, src)
        return FastOpenVinoRuntime(src, threads=threads, batch_size=batch_size, precision=precision, **common)

    def ncnn_rt() -> Runtime:
        from ..export.formats import export

        with quiet():
            param = export(model, "ncnn", workdir / f"ncnn-{precision}", fp16=precision == "fp16")
        return NcnnRuntime(param, device="cpu", threads=threads, precision=precision, **common)

    table = {"torch": torch_rt, "onnxruntime": ort_rt, "openvino": ov_rt, "ncnn": ncnn_rt}
    return {n: table[n] for n in names}


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


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
    from ..bench.gate import check
    from ..bench.harness import idlest_cores, measure_interleaved, pinned

    model = model.eval()
    key = cache_key(model, batch_size=batch_size, threads=threads, precision=precision, device=device)
    if builders is not None:
        key["candidates"] = sorted(builders)
    digest = _digest(key)
    path = cache_path()
    remeasure = remeasure or os.environ.get("MOBILEZOO_AUTO_REMEASURE", "") not in ("", "0")
    if not remeasure:
        entry = _read_cache(path).get(digest)
        names = list(builders) if builders is not None else candidates_for(precision, device)
        if entry and entry.get("backend") in names:
            return AutoChoice(
                entry["backend"],
                key,
                entry.get("timings_ms", {}),
                entry.get("rejected", {}),
                False,
                entry.get("measure_s", 0.0),
                entry.get("measured_at", ""),
            ), None

    t0 = time.perf_counter()
    workdir = Path(tempfile.mkdtemp(prefix="mobilezoo-auto-"))
    try:
        if builders is None:
            names = candidates_for(precision, device)
            builders = _builders(
                model,
                names,
                device=device,
                threads=threads,
                precision=precision,
                batch_size=batch_size,
                common=common or {},
                workdir=workdir,
            )
        in_chans = next(m for m in model.modules() if isinstance(m, nn.Conv2d)).in_channels
        size = getattr(model, "default_cfg", {}).get("input_size", (in_chans, 224, 224))[-1]
        x = torch.randn(batch_size, in_chans, size, size, generator=torch.Generator().manual_seed(0))
        p0 = next(model.parameters())
        ref_model = (
            model if (p0.device.type == "cpu" and p0.dtype == torch.float32) else copy.deepcopy(model).float().cpu()
        )
        built: dict[str, Any] = {}
        rejected: dict[str, str] = {}
        cpu_threads = threads if not device.startswith("cuda") else None
        with pinned(cpu_threads, idlest_cores(cpu_threads) if cpu_threads else None):
            with torch.inference_mode():
                ref = ref_model(x)
            for name, make in builders.items():
                try:
                    rt = make()
                    g = check(ref, rt(x), precision, device=device)
                except Exception as e:  # a backend that cannot be built is not a candidate
                    rejected[name] = f"{type(e).__name__}: {e}".splitlines()[0][:200]
                    continue
                if not g.ok:
                    rejected[name] = f"wrong answer: {g.message}"
                    continue
                built[name] = rt
            if not built:
                raise RuntimeError(f"no backend could run this model: {rejected}")
            # a short side-by-side measurement: rounds sized so all candidates share ~budget_s
            per_round = max(budget_s / (5 * len(built)), 0.01)
            fns = {n: (lambda rt=rt: rt(x)) for n, rt in built.items()}
            rounds: dict[str, list[float]] = {}
            stats = (
                measure_interleaved(fns, rounds=5, min_iters=2, min_round_s=per_round, round_medians=rounds)
                if len(built) > 1
                else {}
            )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    # rank by the best round's median: a round's median drops single slow calls, the best round drops the stretches
    # when another process shared the core (the same rule for every candidate; they ran interleaved); ties by median
    timings = {n: round(min(rounds[n]), 4) for n in stats}
    best = {n: (min(rounds[n]), s.median_ms) for n, s in stats.items()}
    winner = min(best, key=best.get) if best else next(iter(built))
    choice = AutoChoice(winner, key, timings, rejected, True, round(time.perf_counter() - t0, 2), _now())
    _write_cache(
        path,
        digest,
        {
            "backend": winner,
            "key": key,
            "timings_ms": timings,
            "rejected": rejected,
            "measure_s": choice.measure_s,
            "measured_at": choice.measured_at,
        },
    )
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
        workdir = Path(tempfile.mkdtemp(prefix="mobilezoo-auto-"))
        try:
            rt = _builders(
                model,
                [choice.backend],
                device=device,
                threads=threads,
                precision=precision,
                batch_size=batch_size,
                common=common,
                workdir=workdir,
            )[choice.backend]()
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
    rt.auto = choice
    return rt
