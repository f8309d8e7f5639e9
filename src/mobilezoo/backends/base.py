"""The protocol every engine implements: a :class:`Backend` (what it is, whether it is here, what it can run, how it
writes its own format) and the :class:`Session` it opens (prepare an input, run the native call, read the logits).

A new engine is one module of :mod:`mobilezoo.backends` with a ``BACKEND = MyBackend()`` at module level, and its
name in :data:`mobilezoo.backends.ENGINES`. The benchmark times ``session.run_native(session.prepare(x))`` (the
engine's own call, input prepared outside the timed region); everything else calls ``session(x)``.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import importlib.util
import os
import sys
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

__all__ = [
    "Backend",
    "NodeTime",
    "Session",
    "Unsupported",
    "example_input",
    "numpy_input",
    "quiet",
    "to_torch",
    "verbose",
]


class Unsupported(RuntimeError):
    """This engine cannot run this configuration here (reported as ``skipped`` with the reason; the CLI prints it as
    its one-line error)."""


@dataclass
class Session:
    """One opened model on one engine. ``run_native(prepare(x))`` is the engine's own call (what a benchmark times);
    ``session(x)`` returns float32 logits as a CPU tensor."""

    backend: str
    precision: str
    device: str
    run_native: Callable[[Any], Any]
    prepare: Callable[[torch.Tensor], Any]
    to_torch: Callable[[Any], torch.Tensor]
    mode: str = "-"
    sync: Callable[[], None] | None = None
    artifact: str = ""
    note: str = ""
    setup_s: float = 0.0
    knobs: dict[str, Any] = field(default_factory=dict)
    """The engine settings it was opened with (:attr:`Backend.knobs`: every one, defaults included)."""
    keep: list = field(default_factory=list, repr=False)
    """Native objects (sessions, compiled models, graphs) this session needs alive."""

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        out = self.run_native(self.prepare(x))
        if self.sync is not None:
            self.sync()
        return self.to_torch(out)

    def timed_call(self, x: torch.Tensor) -> Callable[[], Any]:
        """A zero-argument callable for the timing harness: the input prepared once, only the native call timed."""
        native = self.prepare(x)
        self.keep.append(native)
        return lambda: self.run_native(native)


WARMUP_RUNS = 3
"""Runs an engine's profiler makes (and drops) before the ``iters`` it reports."""


@dataclass
class NodeTime:
    """One node of an engine's executed graph (after the engine's own fusions), from the engine's profiler."""

    node: str
    """The engine's node name (it carries the exporter's module scope: ``/blocks/blocks.0/conv_pw/conv/Conv``)."""
    op: str
    """The operator as it ran (ONNX Runtime's kernel op, e.g. ``FusedConv``; OpenVINO's node type)."""
    kernel: str
    """The implementation the engine chose (OpenVINO's exec type, e.g. ``jit_avx512_FP32``; ONNX Runtime's
    execution provider)."""
    times_ms: list[float]
    """Its time in each profiled run."""


class Backend:
    """An inference engine. Subclasses set the class attributes and implement :meth:`open` (and :meth:`export`
    where the engine has its own file format)."""

    name: str = ""
    package: str | None = None
    """The Python distribution it needs (``None``: only torch)."""
    extra_packages: tuple[str, ...] = ()
    """Further modules it needs to export (pnnx for ncnn)."""
    precisions: tuple[str, ...] = ("fp32",)
    devices: tuple[str, ...] = ("cpu",)
    format: str | None = None
    """Its own artifact format's name for ``mobilezoo export --format`` (``None``: runs models, writes no file)."""
    suffix: str | None = None
    """The artifact file name ending (``.onnx``, ``.xml``, ...)."""
    also_opens: tuple[str, ...] = ()
    """Other engines' artifact suffixes it can run too (OpenVINO reads ONNX)."""
    modes: ClassVar[dict[str, str]] = {}
    """Benchmark configurations it offers: bench name -> mode (``{"torch": "eager", "torch-compile": ...}``)."""
    tiers: ClassVar[dict[str, str]] = {}
    """Which default benchmark runs include each configuration: ``quick`` (``mobilezoo report``, ``bench``),
    ``full`` (``report --full`` on a CPU), ``gpu`` (``report --full --device cuda``)."""
    install_hint: str = "pip install 'mobilezoo[deploy]'"
    auto_rank: int | None = None
    """Tie-break order among ``backend="auto"`` candidates (lower first); ``None``: not a candidate."""
    quantizer: str | None = None
    """Its own int8 post-training quantizer, in words (``None``: it has none); engines that have one are
    ``mobilezoo quantize --toolchain`` choices (:meth:`quantize`)."""
    folder: bool = False
    """Its artifact is a folder (Core ML's ``.mlpackage``), not a file."""
    knobs: ClassVar[dict[str, tuple[Any, ...]]] = {}
    """The engine's own settings :meth:`open` takes (``knobs={...}``): name -> allowed values, the default first."""

    def resolve_knobs(self, knobs: dict[str, Any] | None) -> dict[str, Any]:
        """Every knob of this engine with its value (defaults for those not given); a one-line ``ValueError`` for an
        unknown knob or value."""
        out = {k: v[0] for k, v in self.knobs.items()}
        for k, v in (knobs or {}).items():
            if k not in self.knobs:
                known = ", ".join(self.knobs) or "none"
                raise ValueError(f"{self.name} has no knob {k!r} (its knobs: {known})")
            if v not in self.knobs[k]:
                raise ValueError(f"{self.name} knob {k}={v!r}: choose from {', '.join(map(repr, self.knobs[k]))}")
            out[k] = v
        return out

    def available(self) -> str | None:
        """``None`` when the engine can be used here, else why not (one line)."""
        for mod in (self.package, *self.extra_packages):
            if mod and importlib.util.find_spec(mod) is None:
                return f"{mod} is not installed ({self.install_hint})"
        return None

    def version(self) -> str | None:
        try:
            return importlib.metadata.version(self.package or "torch")
        except importlib.metadata.PackageNotFoundError:
            return None

    def unsupported(self, precision: str, device: str) -> str | None:
        """``None`` when it can run ``precision`` on ``device``, else why not."""
        missing = self.available()
        if missing:
            return missing
        kind = "cuda" if device.startswith("cuda") else device
        if kind not in self.devices:
            return f"{self.name} runs on {'/'.join(self.devices)} here, not {device}"
        if precision not in self.precisions:
            return f"{self.name} does not run {precision} here (it runs {', '.join(self.precisions)})"
        if kind == "cuda" and not torch.cuda.is_available():
            return "CUDA is not available"
        return None

    def export(
        self,
        model: nn.Module,
        out_dir: str | Path,
        *,
        precision: str = "fp32",
        class_names: list[str] | None = None,
        input_size: int | None = None,
    ) -> Path:
        raise Unsupported(f"{self.name} has no file format of its own")

    def open(
        self,
        source: str | Path | nn.Module,
        *,
        device: str = "cpu",
        threads: int | None = None,
        precision: str = "fp32",
        batch_size: int | None = None,
        mode: str | None = None,
    ) -> Session:
        raise NotImplementedError

    def profile(self, source: str | Path | nn.Module, x: torch.Tensor, *, threads: int = 1, iters: int = 20):
        """Run ``source`` on ``x`` ``iters`` times under the engine's own profiler: a list of :class:`NodeTime`
        (the artifact's executed nodes, in order)."""
        raise Unsupported(f"{self.name} has no per-node profiler here (onnxruntime and openvino have)")

    def quantize(
        self,
        model: nn.Module,
        calib: torch.Tensor,
        out_dir: str | Path,
        *,
        target: str = "portable",
        class_names: list[str] | None = None,
    ) -> Path:
        """Int8 with the engine's own quantizer (:attr:`quantizer`), calibrated on ``calib`` (real images, N x C x H
        x W, preprocessed); returns the int8 artifact, ``precision: int8`` and how it was made in its metadata."""
        raise Unsupported(f"{self.name} has no int8 quantizer of its own")

    def embedded_metadata(self, path: Path) -> dict | None:
        """The metadata stored inside an artifact file of this format (``None``: it is in the sidecar)."""
        return None

    def check_file(self, path: Path) -> str | None:
        """Why ``path`` is not an artifact of this format (one line), or ``None`` if it looks like one: what
        :func:`mobilezoo.backends.artifact.check_content` asks before the engine's parser sees the file."""
        return None

    def validate(self, path: str | Path, model: nn.Module | None = None) -> str:
        """For an engine that is installed but cannot run here (Core ML off Apple's OSes): the structural checks its
        artifact gets instead of a run (one line saying what was checked; an ``ArtifactError`` naming the first
        problem). :func:`mobilezoo.export.check_export` calls it."""
        raise Unsupported(f"{self.name} artifacts are checked by running them; {self.name} has no structural check")


def verbose() -> bool:
    """``MOBILEZOO_VERBOSE=1`` (``--verbose``): show the converters' own output and the deprecation notices."""
    return bool(os.environ.get("MOBILEZOO_VERBOSE"))


if not verbose():  # TorchScript and ncnn (via pnnx) use torch.jit on purpose: its deprecation notice is chatter
    warnings.filterwarnings("ignore", message=r"`torch\.jit\.\w+` is deprecated", category=FutureWarning)


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Silence exporters that print from C++ (pnnx) or warn from Python (torch.onnx), at the file-descriptor level
    (not with ``MOBILEZOO_VERBOSE=1``)."""
    if verbose():
        yield
        return
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 1)
        os.dup2(devnull, 2)
        # and at the Python level: where sys.stdout is not file descriptor 1 (Jupyter, pytest's capture, a server's
        # log redirect) a converter's print() (litert-torch's progress lines) would otherwise land in the output
        with warnings.catch_warnings(), open(os.devnull, "w") as null:
            warnings.simplefilter("ignore")
            with contextlib.redirect_stdout(null), contextlib.redirect_stderr(null):
                yield
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in (*saved, devnull):
            os.close(fd)


def to_torch(y: Any) -> torch.Tensor:
    """Engine output (array, tensor, OpenVINO tensor) -> a float32 CPU tensor that owns its memory."""
    if isinstance(y, torch.Tensor):
        return y.detach().float().cpu()
    return torch.from_numpy(np.array(y, dtype=np.float32, copy=True))


def numpy_input(dtype: Any = np.float32) -> Callable[[torch.Tensor], np.ndarray]:
    def prepare(x: torch.Tensor) -> np.ndarray:
        return np.ascontiguousarray(x.detach().cpu().numpy().astype(dtype, copy=False))

    return prepare


def export_size(model: nn.Module, input_size: int | None = None) -> int:
    """The example input's side for an export: ``input_size``, else the crop size of the model's eval preprocessing."""
    from ..data.transforms import eval_preprocess

    return int(input_size or eval_preprocess(getattr(model, "default_cfg", None)).crop_size)


def example_input(model: nn.Module, size: int, batch: int = 1) -> torch.Tensor:
    in_chans = next(m for m in model.modules() if isinstance(m, nn.Conv2d)).in_channels
    return torch.randn(batch, in_chans, size, size)
