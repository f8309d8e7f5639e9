"""OpenVINO on the CPU: its IR (``.xml`` + ``.bin``, converted from the PyTorch model, metadata in the sidecar) or an
ONNX file (fp32, or int8 QDQ, which OpenVINO runs on its int8 kernels). Compiled for a static input shape when a
batch size is given (one reusable infer request, input shared, not copied); other shapes use a dynamic-shape
compilation made on first use. Inference precision is what is asked (f32 for fp32 and int8 graphs: on AMX/AVX512-BF16
CPUs OpenVINO would otherwise silently compute in bf16).

One process-wide :func:`core`: OpenVINO's CPU plugin gives the thread that loads it an alternate signal stack of its
own (``SigAltStackSetup``, mmap'ed) and, when the plugin is released, restores the previous one only if its own is
still current, unmapping its own either way. Two ``ov.Core`` objects released out of order therefore leave the thread's
alternate stack pointing at unmapped memory, and the next signal with a Python handler (SIGINT, or the SIGCHLD handler
PyTorch's multi-worker DataLoader installs) kills the process with SIGSEGV (si_code SI_KERNEL) as soon as a child
exits. mobilezoo keeps one Core for the life of the process and checks the stack after code that makes Cores of its
own (NNCF): :func:`signal_stack_guard`."""

from __future__ import annotations

import contextlib
import ctypes
import mmap
import os
import sys
import tempfile
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from torch import nn

from .artifact import artifact_metadata, write_sidecar
from .base import Backend, Session, example_input, export_size, to_torch

__all__ = ["BACKEND", "OpenVinoBackend", "core", "repair_signal_stack", "signal_stack_guard"]

_HINT = {"fp32": "f32", "fp16": "f16", "bf16": "bf16", "int8": "f32"}


class OpenVinoBackend(Backend):
    name = "openvino"
    package = "openvino"
    precisions = ("fp32", "fp16", "bf16", "int8")
    format = "openvino"
    suffix = ".xml"
    also_opens = (".onnx",)
    modes: ClassVar[dict[str, str]] = {"openvino": "-"}
    tiers: ClassVar[dict[str, str]] = {"openvino": "quick"}
    auto_rank = 0
    knobs: ClassVar[dict[str, tuple[Any, ...]]] = {"denormals": (None, True, False)}
    """``denormals``: ``CPU_DENORMALS_OPTIMIZATION`` (flush denormals to zero: True), ``None`` OpenVINO's default"""

    def export(self, model, out_dir, *, precision="fp32", class_names=None, input_size=None) -> Path:
        import openvino as ov

        from ..models.rewrite import deploy_form

        if precision not in ("fp32", "fp16"):
            raise ValueError("OpenVINO export writes fp32 or fp16 IR; int8 comes from `quantize --toolchain nncf`")
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        path = out_dir / f"{getattr(model, 'model_name', type(model).__name__)}{self.suffix}"
        net = deploy_form(model)
        x = example_input(net, export_size(model, input_size))
        ov_model = ov.convert_model(net, example_input=x, input=[(-1, x.shape[1], -1, -1)])
        ov.save_model(ov_model, str(path), compress_to_fp16=precision == "fp16")  # weights stored fp16
        write_sidecar(path, artifact_metadata(model, class_names, precision))
        return path

    def _config(self, precision: str, threads: int | None, static: bool) -> dict[str, Any]:
        cfg: dict[str, Any] = {"INFERENCE_PRECISION_HINT": _HINT[precision], "PERFORMANCE_HINT": "LATENCY"}
        if static:
            cfg["NUM_STREAMS"] = 1
        if threads:
            cfg["INFERENCE_NUM_THREADS"] = threads
        return cfg

    def _graph(self, source) -> tuple[Any, str]:
        from .onnxruntime import export_onnx

        ovc = core()
        if isinstance(source, nn.Module):  # from the ONNX graph (the fp32 graph; fp16/bf16 are inference precisions)
            with tempfile.TemporaryDirectory(prefix="mobilezoo-ov-") as tmp:
                return ovc.read_model(str(export_onnx(source, Path(tmp) / "model.onnx"))), ""
        return ovc.read_model(str(source)), Path(source).name

    def _static(self, graph, batch_size: int, precision: str, threads: int | None, shape=None, **extra: Any) -> Any:
        """Compiled for one input shape: ``shape``, or ``batch_size`` with the graph's own sizes (224 where the
        graph leaves one open)."""
        import openvino as ov

        m = graph.clone()
        rest = list(m.input(0).get_partial_shape())[1:]
        dims = list(shape) if shape else [batch_size, *(int(str(d)) if str(d).isdigit() else 224 for d in rest)]
        m.reshape({m.input(0): ov.PartialShape(dims)})
        return core().compile_model(m, "CPU", {**self._config(precision, threads, True), **extra})

    def profile(self, source, x, *, threads=1, iters=20):
        """OpenVINO's per-node performance counters (``PERF_COUNT``): each executed node's real time per run."""
        from .base import WARMUP_RUNS, NodeTime

        graph, _ = self._graph(source)
        compiled = self._static(graph, int(x.shape[0]), "fp32", threads, shape=tuple(x.shape), PERF_COUNT=True)
        req = compiled.create_infer_request()
        arr = np.ascontiguousarray(x.detach().float().numpy())
        nodes: dict[str, NodeTime] = {}
        for i in range(iters + WARMUP_RUNS):
            req.infer({0: arr})
            if i < WARMUP_RUNS:
                continue
            for p in req.get_profiling_info():
                if str(p.status).endswith("EXECUTED"):  # a node not run in some pass: 0 ms there
                    t = nodes.setdefault(p.node_name, NodeTime(p.node_name, p.node_type, p.exec_type, [0.0] * iters))
                    t.times_ms[i - WARMUP_RUNS] = p.real_time.total_seconds() * 1e3
        return list(nodes.values())

    def open(self, source, *, device="cpu", threads=None, precision="fp32", batch_size=None, knobs=None, **_: Any):
        if device != "cpu":
            raise ValueError("the openvino backend runs on the CPU here")
        knobs = self.resolve_knobs(knobs)
        extra = {"CPU_DENORMALS_OPTIMIZATION": knobs["denormals"]} if knobs["denormals"] is not None else {}
        ovc = core()
        graph, artifact = self._graph(source)
        static = self._static(graph, batch_size, precision, threads, **extra) if batch_size else None
        request = static.create_infer_request() if static is not None else None
        shape = tuple(int(d) for d in static.input(0).get_shape()) if static is not None else None
        buf = _bound_input(static, request) if static is not None else None
        dynamic: list = []

        @_keeps_affinity
        def run(arr: np.ndarray) -> Any:
            if arr.shape == shape:  # into the request's own bound input: infer() skips the per-call input dict
                np.copyto(buf, arr)
                request.infer()
                return request.get_output_tensor(0).data
            if not dynamic:
                dynamic.append(ovc.compile_model(graph, "CPU", {**self._config(precision, threads, False), **extra}))
            return dynamic[0](arr)[0]

        def prepare(x) -> np.ndarray:
            return np.ascontiguousarray(x.detach().cpu().float().numpy())

        keep = [ovc, graph, static, request, dynamic, buf]
        return Session(self.name, precision, "cpu", run, prepare, to_torch, artifact=artifact, knobs=knobs, keep=keep)


def _bound_input(compiled, request) -> np.ndarray:
    """A buffer of the static input's shape and type, set once as the request's input tensor (shared memory): a
    call copies its input there and runs ``infer()`` without arguments instead of passing a dict each time."""
    import openvino as ov

    port = compiled.input(0)
    buf = np.zeros(tuple(int(d) for d in port.get_shape()), dtype=port.get_element_type().to_dtype())
    request.set_input_tensor(ov.Tensor(buf, shared_memory=True))
    return buf


def _keeps_affinity(fn):
    """OpenVINO pins the thread that calls an inference to the cores its compiled model was made for, and leaves it
    so: a model compiled inside `measure.harness.pinned` (auto's race, a benchmark) would keep its caller on one core
    after. The caller's affinity is put back after each call (two syscalls)."""
    if not hasattr(os, "sched_getaffinity"):
        return fn

    def run(arr):
        mask = os.sched_getaffinity(0)
        try:
            return fn(arr)
        finally:
            if os.sched_getaffinity(0) != mask:
                os.sched_setaffinity(0, mask)

    return run


BACKEND = OpenVinoBackend()


@cache
def core() -> Any:
    """The process's one ``ov.Core``, its CPU plugin loaded now and never released (see the module's note)."""
    import openvino as ov

    from ..measure.harness import unpinned_cpus

    c = ov.Core()
    # The CPU plugin caches the cores the loading thread may use, and pins every later caller of an inference to
    # them: loaded inside `pinned` (a benchmark, auto's race), it would keep the process on one core afterwards.
    outer, own = unpinned_cpus(), os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
    if outer and own is not None:
        os.sched_setaffinity(0, outer)
    try:
        c.get_property("CPU", "FULL_DEVICE_NAME")  # loads the CPU plugin: its signal stack is the bottom one
    finally:
        if outer and own is not None:
            os.sched_setaffinity(0, own)
    return c


class _Stack(ctypes.Structure):
    _fields_ = [("ss_sp", ctypes.c_void_p), ("ss_flags", ctypes.c_int), ("ss_size", ctypes.c_size_t)]


_SS_DISABLE = 2
_OWN_STACKS: list = []  # signal stacks this module installed: alive for the life of the process


def _mapped(addr: int, size: int, libc: Any) -> bool:
    page = mmap.PAGESIZE
    start = addr - addr % page
    length = (addr + size - start + page - 1) // page * page
    vec = (ctypes.c_ubyte * (length // page))()
    return libc.mincore(ctypes.c_void_p(start), ctypes.c_size_t(length), vec) == 0  # ENOMEM: not mapped


def repair_signal_stack() -> bool:
    """If this thread's alternate signal stack points at unmapped memory (left by OpenVINO's CPU plugin), give it a
    valid one; True when it did. Linux only (a no-op elsewhere)."""
    if not sys.platform.startswith("linux"):
        return False
    libc = ctypes.CDLL(None, use_errno=True)
    cur = _Stack()
    if libc.sigaltstack(None, ctypes.byref(cur)) != 0 or cur.ss_flags & _SS_DISABLE or not cur.ss_sp:
        return False
    if _mapped(cur.ss_sp, cur.ss_size, libc):
        return False
    buf = mmap.mmap(-1, 64 * 1024)
    _OWN_STACKS.append(buf)
    new = _Stack(ctypes.addressof(ctypes.c_char.from_buffer(buf)), 0, len(buf))
    return libc.sigaltstack(ctypes.byref(new), None) == 0


@contextlib.contextmanager
def signal_stack_guard() -> Iterator[None]:
    """Run code that creates and drops OpenVINO Cores of its own (NNCF does); afterwards the signal stack is valid."""
    import gc

    core()  # the bottom plugin first, so the others stack above a stack that stays mapped
    try:
        yield
    finally:
        gc.collect()  # release the Cores the code dropped now, not at some later signal
        repair_signal_stack()
