"""OpenVINO on the CPU: its IR (``.xml`` + ``.bin``, converted from the PyTorch model, metadata in the sidecar) or an
ONNX file (fp32, or int8 QDQ, which OpenVINO runs on its int8 kernels). Compiled for a static input shape when a
batch size is given (one reusable infer request, input shared, not copied); other shapes use a dynamic-shape
compilation made on first use. Inference precision is what is asked (f32 for fp32 and int8 graphs: on AMX/AVX512-BF16
CPUs OpenVINO would otherwise silently compute in bf16)."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from torch import nn

from .artifact import artifact_metadata, write_sidecar
from .base import Backend, Session, example_input, to_torch

__all__ = ["BACKEND", "OpenVinoBackend"]

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

    def export(self, model, out_dir, *, precision="fp32", class_names=None, input_size=None) -> Path:
        import openvino as ov

        from ..data.transforms import eval_preprocess
        from ..models.fuse import fuse_bn

        if precision not in ("fp32", "fp16"):
            raise ValueError("OpenVINO export writes fp32 or fp16 IR; int8 comes from `quantize --toolchain nncf`")
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        path = out_dir / f"{getattr(model, 'model_name', type(model).__name__)}{self.suffix}"
        net = fuse_bn(model)
        x = example_input(net, input_size or eval_preprocess(getattr(model, "default_cfg", None)).crop_size)
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

    def open(self, source, *, device="cpu", threads=None, precision="fp32", batch_size=None, mode=None, **_: Any):
        import openvino as ov

        from .onnxruntime import export_onnx

        if device != "cpu":
            raise ValueError("the openvino backend runs on the CPU here")
        core = ov.Core()
        if isinstance(source, nn.Module):  # from the ONNX graph (the fp32 graph; fp16/bf16 are inference precisions)
            with tempfile.TemporaryDirectory(prefix="mobilezoo-ov-") as tmp:
                graph = core.read_model(str(export_onnx(source, Path(tmp) / "model.onnx")))
            artifact = ""
        else:
            graph, artifact = core.read_model(str(source)), Path(source).name
        static = None
        if batch_size:
            m = graph.clone()
            rest = list(m.input(0).get_partial_shape())[1:]
            dims = [batch_size, *(int(str(d)) if str(d).isdigit() else 224 for d in rest)]
            m.reshape({m.input(0): ov.PartialShape(dims)})
            static = core.compile_model(m, "CPU", self._config(precision, threads, True))
        request = static.create_infer_request() if static is not None else None
        shape = tuple(int(d) for d in static.input(0).get_shape()) if static is not None else None
        dynamic: list = []

        def run(arr: np.ndarray) -> Any:
            if arr.shape == shape:
                return request.infer({0: arr}, share_inputs=True, share_outputs=True)[0]
            if not dynamic:
                dynamic.append(core.compile_model(graph, "CPU", self._config(precision, threads, False)))
            return dynamic[0](arr)[0]

        def prepare(x) -> np.ndarray:
            return np.ascontiguousarray(x.detach().cpu().float().numpy())

        keep = [core, graph, static, request, dynamic]
        return Session(self.name, precision, "cpu", run, prepare, to_torch, artifact=artifact, keep=keep)


BACKEND = OpenVinoBackend()
