"""Each configuration the benchmark can time, as a :class:`Runner`: input preparation (untimed), the native call
(timed), and the conversion of its output back to a torch tensor (untimed, for the numerical gate).

Backends: ``torch`` (eager, BatchNorm folded), ``torch-jit`` (traced, frozen, ``optimize_for_inference``: oneDNN
fusions on CPU), ``torch-compile`` (Inductor with freezing), ``torch-cudagraph`` (CUDA graph replay of the eager net),
``onnxruntime``, ``openvino``, ``ncnn``. Exported files for one model are made once per model in a work folder
(:class:`Artifacts`).
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

__all__ = [
    "BACKENDS",
    "PRECISIONS",
    "Artifacts",
    "Runner",
    "Unsupported",
    "available",
    "build_runner",
    "quiet",
    "unsupported_reason",
]

BACKENDS = ("torch", "torch-jit", "torch-compile", "torch-cudagraph", "onnxruntime", "openvino", "ncnn")
PRECISIONS = ("fp32", "fp16", "bf16", "int8")
TORCH_MODES = {"torch": "eager", "torch-jit": "jit", "torch-compile": "compile", "torch-cudagraph": "cudagraph"}
_PACKAGE = {"onnxruntime": "onnxruntime", "openvino": "openvino", "ncnn": "ncnn"}
_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


class Unsupported(Exception):
    """This backend cannot run this configuration here (reported as ``skipped`` with the reason)."""


def available(backend: str) -> str | None:
    """None when the backend's package is importable, else the reason it is not."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose from {', '.join(BACKENDS)}")
    pkg = _PACKAGE.get(backend)
    if pkg and importlib.util.find_spec(pkg) is None:
        return f"{pkg} is not installed (pip install 'mobilezoo[deploy]')"
    if backend == "ncnn" and importlib.util.find_spec("pnnx") is None:
        return "pnnx (the ncnn exporter) is not installed"
    return None


def unsupported_reason(backend: str, precision: str, device: str) -> str | None:
    """None when ``backend`` can run ``precision`` on ``device``, else why not."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; choose from {', '.join(PRECISIONS)}")
    missing = available(backend)
    if missing:
        return missing
    cuda = device.startswith("cuda")
    if cuda and not torch.cuda.is_available():
        return "CUDA is not available"
    if backend == "torch-cudagraph" and not cuda:
        return "CUDA graphs need --device cuda"
    if backend.startswith("torch") and precision == "int8":
        return "int8 runs through onnxruntime/openvino (a quantized ONNX), not torch eager"
    if backend in ("openvino", "ncnn") and cuda:
        return f"{backend} runs on the CPU here"
    if backend == "onnxruntime" and cuda:
        import onnxruntime as ort

        if "CUDAExecutionProvider" not in ort.get_available_providers():
            return "onnxruntime has no CUDAExecutionProvider here"
    if backend == "onnxruntime" and precision == "bf16":
        return "onnxruntime has no bf16 CPU kernels for these ops"
    if backend == "ncnn" and precision in ("bf16", "int8"):
        return f"ncnn {precision} needs its own calibration tools (not wired here)"
    return None


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Silence exporters that print from C++ (pnnx) or warn from Python (torch.onnx), at the file-descriptor level."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 1)
        os.dup2(devnull, 2)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in (*saved, devnull):
            os.close(fd)


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

    @property
    def name(self) -> str:
        return getattr(self.model, "model_name", type(self.model).__name__)

    def _timed(self, key: str, make: Callable[[], Path]) -> Path:
        if key not in self._paths:
            t = time.perf_counter()
            with quiet():
                self._paths[key] = make()
            self.export_s[key] = time.perf_counter() - t
        return self._paths[key]

    def onnx(self, precision: str = "fp32") -> Path:
        from ..export.onnx import export_onnx

        if precision == "int8":
            return self._timed("onnx-int8", self._quantize)
        fp16 = precision == "fp16"
        return self._timed(
            f"onnx-{precision}",
            lambda: export_onnx(
                self.model, self.workdir / f"{self.name}.{precision}.onnx", fp16=fp16, input_size=self.input_size
            ),
        )

    def _quantize(self) -> Path:
        """mobilezoo's int8 (:func:`mobilezoo.quant.quantize_ptq`: ONNX Runtime static QDQ, int8 weights per
        channel, uint8 activations) calibrated on ``calib``."""
        from ..quant import quantize_ptq

        calib = self.calib if self.calib is not None else torch.randn(8, 3, self.input_size, self.input_size)
        return quantize_ptq(self.model, calib, self.workdir / "int8").int8

    def ncnn(self, precision: str = "fp32") -> Path:
        from ..export.formats import export

        sub = self.workdir / f"ncnn-{precision}"
        return self._timed(f"ncnn-{precision}", lambda: export(self.model, "ncnn", sub, fp16=precision == "fp16"))

    def size_bytes(self, key: str) -> int | None:
        p = self._paths.get(key)
        if p is None:
            return None
        if p.name.endswith(".ncnn.param"):
            return p.stat().st_size + p.with_name(p.name.removesuffix(".param") + ".bin").stat().st_size
        return p.stat().st_size


@dataclass
class Runner:
    backend: str
    mode: str
    precision: str
    device: str
    run: Callable[[Any], Any]
    prepare: Callable[[torch.Tensor], Any]
    to_torch: Callable[[Any], torch.Tensor]
    sync: Callable[[], None] | None = None
    setup_s: float = 0.0
    artifact: str = ""
    note: str = ""
    keep: list = field(default_factory=list, repr=False)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        out = self.run(self.prepare(x))
        if self.sync is not None:
            self.sync()
        return self.to_torch(out)

    def timed_call(self, x: torch.Tensor) -> Callable[[], Any]:
        """A zero-argument callable for the harness: input prepared once, only the native call timed."""
        native = self.prepare(x)
        self.keep.append(native)
        return lambda: self.run(native)


def _to_torch(y: Any) -> torch.Tensor:
    if isinstance(y, torch.Tensor):
        return y.detach().float().cpu()
    return torch.from_numpy(np.array(y, dtype=np.float32, copy=True))


def _torch_runner(
    model: nn.Module,
    mode: str,
    precision: str,
    device: str,
    batch_size: int,
    channels_last: bool,
    input_size: int,
    compile_mode: str | None,
) -> Runner:
    from ..models.fuse import fuse_bn

    dtype = _DTYPES[precision]
    mf = torch.channels_last if channels_last else torch.contiguous_format
    net = fuse_bn(model).to(device=device, dtype=dtype).to(memory_format=mf).eval()
    cuda = device.startswith("cuda")
    sync = torch.cuda.synchronize if cuda else None
    in_chans = next(m for m in net.modules() if isinstance(m, nn.Conv2d)).in_channels

    def prepare(x: torch.Tensor) -> torch.Tensor:
        return x.to(device=device, dtype=dtype).contiguous(memory_format=mf)

    example = prepare(torch.randn(batch_size, in_chans, input_size, input_size))
    note = ""
    if mode == "eager":
        fn: Callable[[torch.Tensor], torch.Tensor] = net
    elif mode == "jit":
        with torch.no_grad(), quiet():
            fn = torch.jit.optimize_for_inference(torch.jit.freeze(torch.jit.trace(net, example)))
            fn(example)
            fn(example)  # the profiling executor specialises on the first calls
    elif mode == "compile":
        import torch._inductor.config as inductor_config

        inductor_config.freezing = True  # constant-fold weights (BN already folded) into the graph
        cmode = compile_mode or ("reduce-overhead" if cuda else None)  # CUDA graphs; max-autotune: minutes per model
        fn = torch.compile(net, mode=cmode, dynamic=False, fullgraph=True)
        with torch.no_grad(), quiet():
            fn(example)
        note = f"torch.compile mode={cmode or 'default'}, freezing"
    elif mode == "cudagraph":
        static_in = example.clone()
        s = torch.cuda.Stream()
        s.wait_stream(torch.cuda.current_stream())
        with torch.no_grad(), torch.cuda.stream(s):
            for _ in range(3):
                net(static_in)
        torch.cuda.current_stream().wait_stream(s)
        graph = torch.cuda.CUDAGraph()
        with torch.no_grad(), torch.cuda.graph(graph):
            static_out = net(static_in)

        def prepare_static(x: torch.Tensor) -> torch.Tensor:
            static_in.copy_(prepare(x))
            return static_in

        def replay(_x: torch.Tensor) -> torch.Tensor:
            graph.replay()
            return static_out

        return Runner("torch", mode, precision, device, replay, prepare_static, _to_torch, sync, keep=[graph])
    else:
        raise ValueError(f"unknown torch mode {mode!r}")

    def run(x: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return fn(x)

    return Runner("torch", mode, precision, device, run, prepare, _to_torch, sync, note=note, keep=[fn])


def _ort_runner(path: Path, precision: str, device: str, threads: int | None, batch_size: int) -> Runner:
    import onnxruntime as ort

    ort.set_default_logger_severity(3)  # no per-initializer warnings
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    if threads:
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
    opts.add_free_dimension_override_by_name("batch", batch_size)  # static shapes: the planner pre-allocates
    providers = ["CUDAExecutionProvider", "CPUExecutionProvider"] if device.startswith("cuda") else None
    sess = ort.InferenceSession(str(path), opts, providers=providers or ["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    np_dtype = np.float16 if precision == "fp16" else np.float32

    def prepare(x: torch.Tensor) -> np.ndarray:
        return np.ascontiguousarray(x.detach().cpu().numpy().astype(np_dtype, copy=False))

    def run(arr: np.ndarray) -> np.ndarray:
        return sess.run(None, {name: arr})[0]

    return Runner("onnxruntime", "-", precision, device, run, prepare, _to_torch, artifact=path.name, keep=[sess])


def openvino_compile(path: Path, precision: str, threads: int | None, batch_size: int | None) -> Any:
    """An OpenVINO CPU compiled model of an ONNX/IR file: static input shape when ``batch_size`` is given,
    inference precision as asked (f32 for fp32 and int8 graphs, so AMX/bf16 CPUs do not silently drop to bf16)."""
    import openvino as ov

    core = ov.Core()
    m = core.read_model(str(path))
    if batch_size:
        shape = list(m.input(0).get_partial_shape())
        dims = [batch_size, *(int(str(d)) if str(d).isdigit() else 224 for d in shape[1:])]
        m.reshape({m.input(0): ov.PartialShape(dims)})
    hint = {"fp32": "f32", "fp16": "f16", "bf16": "bf16", "int8": "f32"}[precision]
    cfg: dict[str, Any] = {"INFERENCE_PRECISION_HINT": hint, "PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": 1}
    if threads:
        cfg["INFERENCE_NUM_THREADS"] = threads
    return core.compile_model(m, "CPU", cfg)


def _ov_runner(path: Path, precision: str, threads: int | None, batch_size: int) -> Runner:
    compiled = openvino_compile(path, precision, threads, batch_size)
    req = compiled.create_infer_request()

    def prepare(x: torch.Tensor) -> np.ndarray:
        return np.ascontiguousarray(x.detach().cpu().float().numpy())

    def run(arr: np.ndarray) -> Any:
        return req.infer({0: arr}, share_inputs=True, share_outputs=True)[0]

    return Runner("openvino", "-", precision, "cpu", run, prepare, _to_torch, artifact=path.name, keep=[compiled, req])


def _ncnn_runner(param: Path, precision: str, threads: int | None) -> Runner:
    import ncnn

    net = ncnn.Net()
    fp16 = precision == "fp16"
    net.opt.use_fp16_packed = net.opt.use_fp16_storage = net.opt.use_fp16_arithmetic = fp16
    net.opt.num_threads = threads or torch.get_num_threads()
    bin_path = param.with_name(param.name.removesuffix(".param") + ".bin")
    if net.load_param(str(param)) != 0 or net.load_model(str(bin_path)) != 0:
        raise RuntimeError(f"ncnn could not load {param}")

    def prepare(x: torch.Tensor) -> list:
        arrs = [np.ascontiguousarray(a) for a in x.detach().cpu().float().numpy()]
        return [(a, ncnn.Mat(a)) for a in arrs]  # keep each array alive beside the Mat that views it

    def run(mats: list) -> list:
        outs = []
        for _a, m in mats:
            ex = net.create_extractor()
            ex.input("in0", m)
            ret, out = ex.extract("out0")
            if ret != 0:
                raise RuntimeError(f"ncnn extract failed ({ret})")
            outs.append(out)
        return outs

    def to_torch(outs: list) -> torch.Tensor:
        return torch.from_numpy(np.stack([np.array(o).reshape(-1) for o in outs]).astype(np.float32))

    return Runner("ncnn", "-", precision, "cpu", run, prepare, to_torch, artifact=param.name, keep=[net])


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
) -> Runner:
    """Build one configuration; raises :class:`Unsupported` for combinations the backend cannot run."""
    reason = unsupported_reason(backend, precision, device)
    if reason:
        raise Unsupported(reason)
    if channels_last and not backend.startswith("torch"):
        raise Unsupported("channels_last is a torch memory format (other backends pick their own layout)")
    t = time.perf_counter()
    if backend in TORCH_MODES:
        r = _torch_runner(
            model, TORCH_MODES[backend], precision, device, batch_size, channels_last, input_size, compile_mode
        )
    else:
        if artifacts is None:
            artifacts = Artifacts(model, Path(tempfile.mkdtemp(prefix="mobilezoo-bench-")), input_size=input_size)
        if backend == "onnxruntime":
            r = _ort_runner(artifacts.onnx(precision), precision, device, threads, batch_size)
        elif backend == "openvino":
            # fp16/bf16 are OpenVINO's inference precision of the fp32 graph; int8 runs the quantized QDQ graph
            src = artifacts.onnx("int8" if precision == "int8" else "fp32")
            r = _ov_runner(src, precision, threads, batch_size)
        else:
            r = _ncnn_runner(artifacts.ncnn(precision), precision, threads)
    r.setup_s = time.perf_counter() - t
    return r
