"""The benchmark's configurations, opened through the engine layer (:mod:`mobilezoo.backends`): a configuration name
(``torch``, ``torch-jit``, ``torch-compile``, ``torch-cudagraph``, ``onnxruntime``, ``openvino``, ``ncnn`` — the
engines' ``modes``) becomes a :class:`~mobilezoo.backends.Session` whose native call the harness times. The exported
files of one model are made once per model in a work folder (:class:`Artifacts`) and shared by every configuration.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from .. import backends
from ..backends import Session, Unsupported, quiet

__all__ = [
    "BACKENDS",
    "PRECISIONS",
    "Artifacts",
    "Session",
    "Unsupported",
    "available",
    "build_runner",
    "quiet",
    "unsupported_reason",
]

BACKENDS = backends.bench_names()
PRECISIONS = ("fp32", "fp16", "bf16", "int8")


def available(name: str) -> str | None:
    """None when the configuration's engine is installed, else the reason it is not."""
    engine, _ = backends.resolve(name)
    return engine.available()


def unsupported_reason(name: str, precision: str, device: str) -> str | None:
    """None when configuration ``name`` can run ``precision`` on ``device``, else why not."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; choose from {', '.join(PRECISIONS)}")
    engine, mode = backends.resolve(name)
    if engine.name == "torch":
        return engine.unsupported(precision, device, mode)
    if precision == "int8" and engine.name == "torchscript":
        return "int8 runs through onnxruntime/openvino (a quantized artifact), not torch"
    return engine.unsupported(precision, device)


@dataclass
class Artifacts:
    """The exports of one model, made on first use into ``workdir`` and reused by every configuration."""

    model: nn.Module
    workdir: Path
    calib: torch.Tensor | None = None
    """Images for int8 calibration (N x C x H x W)."""
    input_size: int = 224
    export_s: dict[str, float] = field(default_factory=dict)
    _paths: dict[str, Path] = field(default_factory=dict)

    def _timed(self, key: str, make: Callable[[], Path]) -> Path:
        if key not in self._paths:
            t = time.perf_counter()
            with quiet():
                self._paths[key] = make()
            self.export_s[key] = time.perf_counter() - t
        return self._paths[key]

    def file(self, engine: str, precision: str = "fp32") -> Path:
        """The model in ``engine``'s format at ``precision`` (int8: the engine's own quantizer where it has one,
        else mobilezoo's PTQ, ONNX QDQ)."""
        eng = backends.get(engine)
        if precision == "int8" and eng.quantizer:
            out = self.workdir / f"{eng.format}-int8"
            return self._timed(f"{eng.format}-int8", lambda: eng.quantize(self.model, self._calib(), out))
        if precision == "int8":
            return self._timed("onnx-int8", self._quantize)
        key = f"{eng.format}-{precision}"  # onnx-fp32, ncnn-fp16, ...
        out = self.workdir / key
        return self._timed(key, lambda: eng.export(self.model, out, precision=precision, input_size=self.input_size))

    def onnx(self, precision: str = "fp32") -> Path:
        return self.file("onnxruntime", precision)

    def _quantize(self) -> Path:
        """mobilezoo's int8 (:func:`mobilezoo.quant.quantize_ptq`: ONNX Runtime static QDQ, int8 weights per
        channel, uint8 activations) calibrated on ``calib``."""
        from ..quant import quantize_ptq

        return quantize_ptq(self.model, self._calib(), self.workdir / "int8").int8

    def _calib(self) -> torch.Tensor:
        return self.calib if self.calib is not None else torch.randn(8, 3, self.input_size, self.input_size)

    def size_bytes(self, key: str) -> int | None:
        from ..backends.artifact import artifact_bytes

        p = self._paths.get(key)
        return None if p is None else artifact_bytes(p)


def _source(engine: str, mode: str, model: nn.Module, artifacts: Artifacts, precision: str) -> nn.Module | Path:
    """What the engine opens: the model itself (torch, torch-jit) or an exported file shared across configs."""
    if engine in ("torch", "torchscript"):
        return model
    if engine == "openvino":  # fp16/bf16 are OpenVINO's inference precision of the fp32 graph; int8 runs the QDQ ONNX
        return artifacts.onnx("int8" if precision == "int8" else "fp32")
    return artifacts.file(engine, precision)


def build_runner(
    model: nn.Module,
    backend: str,
    *,
    precision: str = "fp32",
    device: str = "cpu",
    threads: int | None = None,
    batch_size: int = 1,
    channels_last: bool = False,
    artifacts: Artifacts | None = None,
    input_size: int = 224,
    compile_mode: str | None = None,
) -> Session:
    """Open one configuration; raises :class:`Unsupported` for combinations the engine cannot run."""
    reason = unsupported_reason(backend, precision, device)
    if reason:
        raise Unsupported(reason)
    engine, mode = backends.resolve(backend)
    if channels_last and engine.name != "torch" and mode != "jit":
        raise Unsupported("channels_last is a torch memory format (other backends pick their own layout)")
    t = time.perf_counter()
    if artifacts is None:
        artifacts = Artifacts(model, Path(tempfile.mkdtemp(prefix="mobilezoo-bench-")), input_size=input_size)
    src = _source(engine.name, mode, model, artifacts, precision)
    options = {"channels_last": channels_last, "input_size": input_size, "compile_mode": compile_mode}
    session = engine.open(
        src, device=device, threads=threads, precision=precision, batch_size=batch_size, mode=mode, **options
    )
    session.setup_s = time.perf_counter() - t
    return session
