"""ONNX Runtime, and the ONNX format it runs: BatchNorm folded, dynamic batch, opset >= 17, simplified (onnxslim),
metadata inside the file. Sessions are compiled for a static batch size when one is given (the planner pre-allocates)
and fall back to a dynamic-batch session for other sizes."""

from __future__ import annotations

import contextlib
import io
import os
import tempfile
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from .artifact import artifact_metadata, set_onnx_metadata
from .base import WARMUP_RUNS, Backend, NodeTime, Session, example_input, export_size, numpy_input, to_torch

__all__ = ["BACKEND", "OnnxRuntimeBackend", "export_onnx"]


def export_onnx(
    model: nn.Module,
    path: str | Path,
    *,
    opset: int = 17,
    fp16: bool = False,
    class_names: list[str] | None = None,
    input_size: int | None = None,
) -> Path:
    """Write ``model`` (eval, BN folded) to ``path`` with input ``input`` [N,C,H,W] and output ``logits`` [N,K] and
    the ``mobilezoo`` metadata entry (model name, class names, preprocessing, precision); written atomically."""
    import onnx

    from ..models.rewrite import deploy_form

    if opset < 17:
        raise ValueError(f"opset {opset} is below the supported minimum of 17")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    net = deploy_form(model)
    size = export_size(model, input_size)
    x = example_input(net, size)
    if fp16:
        net, x = net.half(), x.half()
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".onnx.tmp")
    os.close(fd)
    try:
        torch.onnx.export(
            net,
            (x,),
            tmp,
            dynamo=False,
            opset_version=opset,
            input_names=["input"],
            output_names=["logits"],
            dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
            do_constant_folding=True,
        )
        proto = _simplify(onnx.load(tmp))
        set_onnx_metadata(proto, artifact_metadata(model, class_names, precision="fp16" if fp16 else "fp32"))
        onnx.checker.check_model(proto)
        onnx.save(proto, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def _simplify(proto):
    """Constant-fold the shape arithmetic the tracer emits (channel shuffle, flatten) with onnxslim: a smaller graph
    that every runtime reads; the batch axis stays dynamic."""
    try:
        import onnxslim
    except ImportError:  # pragma: no cover - a core dependency; keep working without it
        return proto
    with contextlib.redirect_stdout(io.StringIO()):
        return onnxslim.slim(proto)


_OPT_LEVELS = {"all": "ORT_ENABLE_ALL", "extended": "ORT_ENABLE_EXTENDED", "basic": "ORT_ENABLE_BASIC"}
"""ONNX Runtime's graph optimisation levels: ``all`` adds the NCHWc (blocked) layout transformation to ``extended``'s
fusions; ``basic`` folds constants and removes redundant nodes only."""


class OnnxRuntimeBackend(Backend):
    name = "onnxruntime"
    package = "onnxruntime"
    precisions = ("fp32", "fp16", "int8")
    devices = ("cpu", "cuda")
    format = "onnx"
    suffix = ".onnx"
    modes: ClassVar[dict[str, str]] = {"onnxruntime": "-"}
    tiers: ClassVar[dict[str, str]] = {"onnxruntime": "quick"}
    auto_rank = 1
    knobs: ClassVar[dict[str, tuple[Any, ...]]] = {
        "opt_level": ("all", "extended", "basic"),
        "denormals_zero": (False, True),
    }

    def unsupported(self, precision: str, device: str) -> str | None:
        reason = super().unsupported(precision, device)
        if reason is None and device.startswith("cuda"):
            import onnxruntime as ort

            if "CUDAExecutionProvider" not in ort.get_available_providers():
                return "onnxruntime has no CUDAExecutionProvider here (the onnxruntime-gpu package provides it)"
        return reason

    def export(self, model, out_dir, *, precision="fp32", class_names=None, input_size=None) -> Path:
        if precision not in ("fp32", "fp16"):
            raise ValueError(f"ONNX export writes fp32 or fp16; int8 comes from `mobilezoo quantize`, not {precision}")
        name = getattr(model, "model_name", type(model).__name__)
        path = Path(out_dir) / f"{name}{self.suffix}"
        return export_onnx(model, path, fp16=precision == "fp16", class_names=class_names, input_size=input_size)

    def _session(
        self,
        model_bytes: bytes,
        device: str,
        threads: int | None,
        batch: int | None,
        profile: str = "",
        knobs: dict[str, Any] | None = None,
    ):
        import onnxruntime as ort

        knobs = self.resolve_knobs(knobs)
        ort.set_default_logger_severity(3)  # no per-initializer warnings
        opts = ort.SessionOptions()
        if profile:
            opts.enable_profiling, opts.profile_file_prefix = True, profile
        opts.log_severity_level = 3
        opts.graph_optimization_level = getattr(ort.GraphOptimizationLevel, _OPT_LEVELS[knobs["opt_level"]])
        if knobs["denormals_zero"]:
            opts.add_session_config_entry("session.set_denormal_as_zero", "1")
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        if threads:
            opts.intra_op_num_threads = threads
            opts.inter_op_num_threads = 1
        if batch:
            opts.add_free_dimension_override_by_name("batch", batch)
        cuda = device.startswith("cuda")
        providers = ["CUDAExecutionProvider", "CPUExecutionProvider"] if cuda else ["CPUExecutionProvider"]
        return ort.InferenceSession(model_bytes, opts, providers=providers)

    def _bytes(self, source, precision: str = "fp32") -> tuple[bytes, str]:
        if isinstance(source, nn.Module):
            with tempfile.TemporaryDirectory(prefix="mobilezoo-onnx-") as tmp:
                return self.export(source, tmp, precision="fp16" if precision == "fp16" else "fp32").read_bytes(), ""
        return Path(source).read_bytes(), Path(source).name

    def profile(self, source, x, *, threads=1, iters=20):
        """ONNX Runtime's own profiler (``enable_profiling``): each node's kernel time per run, from its JSON."""
        import json

        data, _ = self._bytes(source)
        with tempfile.TemporaryDirectory(prefix="mobilezoo-ortprof-") as tmp:
            sess = self._session(data, "cpu", threads, int(x.shape[0]), profile=str(Path(tmp) / "ort"))
            feed = {sess.get_inputs()[0].name: numpy_input()(x)}
            for _ in range(iters + WARMUP_RUNS):  # the profile holds every run: the first ones are dropped below
                sess.run(None, feed)
            events = json.loads(Path(sess.end_profiling()).read_text())
        nodes: dict[str, NodeTime] = {}
        for e in events:
            if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
                name = e["name"].removesuffix("_kernel_time")
                a = e.get("args", {})
                t = nodes.setdefault(name, NodeTime(name, a.get("op_name", "?"), a.get("provider", "?"), []))
                t.times_ms.append(e["dur"] / 1e3)
        for t in nodes.values():
            t.times_ms = t.times_ms[-iters:]
        return list(nodes.values())

    def open(self, source, *, device="cpu", threads=None, precision="fp32", batch_size=None, knobs=None, **_: Any):
        data, artifact = self._bytes(source, precision)
        knobs = self.resolve_knobs(knobs)
        static = self._session(data, device, threads, batch_size, knobs=knobs)
        inp = static.get_inputs()[0]
        name, dtype = inp.name, (np.float16 if "float16" in inp.type else np.float32)
        dynamic: list = []

        fixed = [d if isinstance(d, int) else None for d in inp.shape[1:]]  # C, H, W as exported (None: dynamic)
        to_numpy = numpy_input(dtype)

        def prepare(x: torch.Tensor) -> np.ndarray:  # checked here, outside the timed native call
            if any(f is not None and f != a for f, a in zip(fixed, x.shape[1:])):
                want = tuple(f if f is not None else "any" for f in fixed)
                raise ValueError(f"this ONNX model takes {want} inputs, not {tuple(x.shape[1:])}")
            return to_numpy(x)

        def run(arr: np.ndarray) -> np.ndarray:
            sess = static
            if batch_size and arr.shape[0] != batch_size:  # another batch size: a dynamic-shape session, made once
                if not dynamic:
                    dynamic.append(self._session(data, device, threads, None, knobs=knobs))
                sess = dynamic[0]
            return sess.run(None, {name: arr})[0]

        return Session(
            self.name, precision, device, run, prepare, to_torch, artifact=artifact, knobs=knobs, keep=[static, dynamic]
        )


BACKEND = OnnxRuntimeBackend()
