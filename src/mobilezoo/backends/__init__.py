"""The engine layer: one module per inference engine, each implementing :class:`~.base.Backend`, and the registry
that is the only list of engines. Export, quantization, the runtime, ``auto``, the benchmarks, serving and the CLI
ask it which engines exist and open sessions through it.

    from mobilezoo import backends
    backends.names()                       # ("torch", "onnxruntime", "torchscript", "openvino", "ncnn", ...)
    backends.available()                   # those that can run here
    ort = backends.get("onnxruntime")
    path = ort.export(model, "out/")       # its own format, metadata inside (artifact.py)
    sess = ort.open(path, threads=1, batch_size=1)
    logits = sess(x)                       # x: N x C x H x W tensor -> N x classes float32 tensor

Adding an engine: write ``backends/<name>.py`` with a :class:`~.base.Backend` subclass and ``BACKEND = ...``, and add
its module name to :data:`ENGINES`.
"""

from __future__ import annotations

import importlib
from functools import cache

from .base import Backend, Session, Unsupported, quiet

__all__ = [
    "ENGINES",
    "Backend",
    "Session",
    "Unsupported",
    "available",
    "bench_defaults",
    "bench_names",
    "for_format",
    "formats",
    "get",
    "names",
    "quantizers",
    "quiet",
    "resolve",
]

ENGINES = ("torch", "onnxruntime", "torchscript", "openvino", "ncnn", "executorch", "litert", "mnn", "coreml")
"""Every engine, by module name (the module's ``BACKEND.name`` is the same)."""


@cache
def _load(module: str) -> Backend:
    return importlib.import_module(f"{__name__}.{module}").BACKEND


def names() -> tuple[str, ...]:
    return ENGINES


def get(name: str) -> Backend:
    """The engine called ``name``; a one-line error naming the choices otherwise."""
    if name not in ENGINES:
        raise ValueError(f"unknown backend {name!r}; choose from {', '.join(ENGINES)}")
    return _load(name)


def available() -> list[str]:
    """The engines that can be used here (their packages installed)."""
    return [n for n in ENGINES if get(n).available() is None]


def bench_names() -> tuple[str, ...]:
    """Every benchmark configuration name (``torch``, ``torch-jit``, ``torch-compile``, ``onnxruntime``, ...)."""
    return tuple(b for n in ENGINES for b in get(n).modes)


def resolve(bench_name: str) -> tuple[Backend, str]:
    """A benchmark configuration name -> (engine, mode)."""
    for n in ENGINES:
        mode = get(n).modes.get(bench_name)
        if mode is not None:
            return get(n), mode
    raise ValueError(f"unknown backend {bench_name!r}; choose from {', '.join(bench_names())}")


def bench_defaults(device: str = "cpu", full: bool = False) -> list[str]:
    """The configurations a default benchmark runs here: the ``quick`` tier (plus ``full`` on a CPU, ``gpu`` on
    CUDA, with ``full=True``), of the engines that can run fp32 on ``device``."""
    cuda = device.startswith("cuda")
    want = {"quick"} | ({"gpu" if cuda else "full"} if full else set())
    out = []
    for n in ENGINES:
        engine = get(n)
        if engine.unsupported("fp32", device) is None:
            out += [b for b, tier in engine.tiers.items() if tier in want]
    return out


def quantizers() -> tuple[str, ...]:
    """The engines with an int8 quantizer of their own (:meth:`~.base.Backend.quantize`): ``mobilezoo quantize
    --toolchain`` choices beside ONNX Runtime's and NNCF's."""
    return tuple(n for n in ENGINES if get(n).quantizer)


def formats() -> tuple[str, ...]:
    """Export formats: the engines that have a file format of their own."""
    return tuple(get(n).format for n in ENGINES if get(n).format)


def for_format(fmt: str) -> Backend:
    for n in ENGINES:
        if get(n).format == fmt:
            return get(n)
    raise ValueError(f"unknown export format {fmt!r}; choose from {', '.join(formats())} or 'all'")
