"""One runtime API over every backend: ``load(...)`` gives an object with ``predict`` and ``__call__``.

Backends: ``torch`` (eager with BatchNorm folded, or a TorchScript artifact), ``onnxruntime``, ``openvino`` and ``ncnn``
(an exported artifact, or a zoo model exported on the fly). Every backend shares the preprocessing of
:mod:`mobilezoo.data.transforms`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .._deps import require
from ..data import EvalPreprocess, eval_preprocess, load_image
from ..reference import class_names_for

__all__ = ["BACKENDS", "Prediction", "Runtime", "load"]

BACKENDS = ("torch", "onnxruntime", "openvino", "ncnn")


@dataclass
class Prediction:
    source: str
    indices: list[int]
    scores: list[float]
    names: list[str]

    def as_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "topk": [{"index": i, "name": n, "score": s} for i, n, s in zip(self.indices, self.names, self.scores)],
        }


@dataclass
class Runtime:
    """Common part of all backends: preprocessing, batching, top-k, class names."""

    model_name: str
    backend: str
    device: str = "cpu"
    precision: str = "fp32"
    class_names: list[str] = field(default_factory=list)
    preprocess: EvalPreprocess = field(default_factory=EvalPreprocess)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def _name(self, i: int) -> str:
        return self.class_names[i] if i < len(self.class_names) else str(i)

    def predict(self, images: Any, topk: int = 5, batch_size: int = 16) -> list[Prediction]:
        """Classify image paths, PIL images, or an already preprocessed NCHW tensor."""
        if isinstance(images, torch.Tensor):
            batches, sources = [images], [f"tensor[{i}]" for i in range(images.shape[0])]
        else:
            items = [images] if isinstance(images, (str, Path)) or not isinstance(images, Sequence) else list(images)
            sources = [str(i) if isinstance(i, (str, Path)) else f"image[{n}]" for n, i in enumerate(items)]
            tensors = [self.preprocess(load_image(i) if isinstance(i, (str, Path)) else i) for i in items]
            batches = [torch.stack(tensors[i : i + batch_size]) for i in range(0, len(tensors), batch_size)]
        out: list[Prediction] = []
        for b in batches:
            probs = torch.softmax(self(b).float(), dim=1)
            k = min(topk, probs.shape[1])
            scores, idx = probs.topk(k, dim=1)
            for s_row, i_row in zip(scores.tolist(), idx.tolist()):
                out.append(Prediction(sources[len(out)], i_row, s_row, [self._name(i) for i in i_row]))
        return out


class TorchRuntime(Runtime):
    def __init__(self, model: nn.Module, *, device: str = "cpu", precision: str = "fp32", **kw: Any) -> None:
        from ..models.fuse import fuse_bn

        super().__init__(backend="torch", device=device, precision=precision, **kw)
        dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}.get(precision)
        if dtype is None:
            raise ValueError(f"torch backend supports fp32/fp16/bf16, not {precision!r}")
        self.dtype = dtype
        self.net = fuse_bn(model).to(device=device, dtype=dtype)

    @torch.no_grad()
    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.to(self.device, self.dtype)).float().cpu()


class OnnxRuntime(Runtime):
    def __init__(self, path: Path, *, device: str = "cpu", threads: int | None = None, **kw: Any) -> None:
        import onnxruntime as ort

        super().__init__(backend="onnxruntime", device=device, **kw)
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = threads
            opts.inter_op_num_threads = 1
        providers = ["CUDAExecutionProvider", "CPUExecutionProvider"] if device == "cuda" else ["CPUExecutionProvider"]
        self.session = ort.InferenceSession(str(path), opts, providers=providers)
        self.input_name = self.session.get_inputs()[0].name
        self.np_dtype = np.float16 if "float16" in self.session.get_inputs()[0].type else np.float32

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        arr = x.detach().cpu().numpy().astype(self.np_dtype, copy=False)
        return torch.from_numpy(self.session.run(None, {self.input_name: arr})[0].astype(np.float32))


def _build(model: str | nn.Module, checkpoint: str | Path | None, num_classes: int | None) -> nn.Module:
    if isinstance(model, nn.Module):
        return model.eval()
    from ..models import create_model

    if checkpoint is None:
        return create_model(model, num_classes=num_classes or 1000).eval()
    return load_checkpoint_model(model, checkpoint, num_classes)


class TorchScriptRuntime(Runtime):
    def __init__(self, path: Path, *, device: str = "cpu", **kw: Any) -> None:
        super().__init__(backend="torch", device=device, **kw)
        self.net = torch.jit.load(str(path), map_location=device).eval()
        self.dtype = torch.float16 if self.precision == "fp16" else torch.float32

    @torch.no_grad()
    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.to(self.device, self.dtype)).float().cpu()


class OpenVinoRuntime(Runtime):
    def __init__(self, path: Path, *, device: str = "cpu", threads: int | None = None, **kw: Any) -> None:
        ov = require("openvino")
        super().__init__(backend="openvino", device=device, **kw)
        if device != "cpu":
            raise ValueError("the openvino backend runs on the CPU here")
        # fp32 unless asked: on AMX/AVX512-BF16 CPUs OpenVINO would otherwise compute in bf16
        hint = {"fp32": "f32", "fp16": "f16", "bf16": "bf16"}.get(self.precision, "f32")
        config = {"INFERENCE_PRECISION_HINT": hint, "PERFORMANCE_HINT": "LATENCY"}
        if threads:
            config["INFERENCE_NUM_THREADS"] = threads
        self.compiled = ov.Core().compile_model(str(path), "CPU", config)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        out = self.compiled(x.detach().cpu().numpy().astype(np.float32, copy=False))
        return torch.from_numpy(np.asarray(out[self.compiled.output(0)], dtype=np.float32))


class NcnnRuntime(Runtime):
    """ncnn runs one image at a time (CHW); batches are looped."""

    def __init__(self, param: Path, *, device: str = "cpu", threads: int | None = None, **kw: Any) -> None:
        ncnn = require("ncnn")
        super().__init__(backend="ncnn", device=device, **kw)
        self.ncnn = ncnn
        self.net = ncnn.Net()
        fp16 = self.precision == "fp16"
        self.net.opt.use_fp16_packed = self.net.opt.use_fp16_storage = self.net.opt.use_fp16_arithmetic = fp16
        self.net.opt.use_vulkan_compute = device == "vulkan"
        self.net.opt.num_threads = threads or torch.get_num_threads()
        bin_path = param.with_name(param.name.removesuffix(".param") + ".bin")
        if self.net.load_param(str(param)) != 0 or self.net.load_model(str(bin_path)) != 0:
            raise ValueError(f"ncnn could not load {param} / {bin_path}")

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        outs = []
        for img in x.detach().cpu().float().numpy():
            ex = self.net.create_extractor()
            ex.input("in0", self.ncnn.Mat(np.ascontiguousarray(img)))
            ret, out = ex.extract("out0")
            if ret != 0:
                raise RuntimeError(f"ncnn extract failed ({ret})")
            outs.append(np.array(out).reshape(-1))
        return torch.from_numpy(np.stack(outs))


_ARTIFACTS = {  # suffix -> (backend, runtime class)
    ".onnx": ("onnxruntime", OnnxRuntime),
    ".torchscript.pt": ("torch", TorchScriptRuntime),
    ".xml": ("openvino", OpenVinoRuntime),
    ".ncnn.param": ("ncnn", NcnnRuntime),
}


def _load_artifact(path: Path, backend: str, device: str, threads: int | None) -> Runtime:
    from ..export.formats import read_sidecar
    from ..export.onnx import read_onnx_metadata

    suffix = next(s for s in _ARTIFACTS if path.name.endswith(s))
    expected, cls = _ARTIFACTS[suffix]
    if not path.is_file():
        raise FileNotFoundError(f"no such exported model: {path}")
    if backend not in ("auto", expected):
        raise ValueError(f"{path} is a {expected} artifact: backend must be {expected!r} (or 'auto'), not {backend!r}")
    meta = read_onnx_metadata(path) if suffix == ".onnx" else read_sidecar(path)
    kw: dict[str, Any] = {"threads": threads} if cls is not TorchScriptRuntime else {}
    return cls(
        path,
        device=device,
        model_name=meta.get("model_name", path.name.split(".")[0]),
        class_names=class_names_for(None, meta),
        preprocess=eval_preprocess(meta.get("preprocess")),
        precision=meta.get("precision", "fp32"),
        **kw,
    )


def load_checkpoint_model(name: str, checkpoint: str | Path, num_classes: int | None = None) -> nn.Module:
    """A zoo model with a checkpoint's weights; the class count and names come from the checkpoint when it has them."""
    from ..models import create_model
    from ..weights import read_config, read_state_dict

    p = Path(checkpoint)
    if p.is_file() and p.suffix == ".ckpt":
        from ..train.checkpoint import load_checkpoint, model_from_checkpoint

        ck = load_checkpoint(p)
        from ..models import get_entry

        if get_entry(ck["model_name"]).arch != get_entry(name).arch:
            raise ValueError(f"{p} holds a {ck['model_name']}, not a {name}")
        return model_from_checkpoint(ck)
    if p.is_dir():
        cfg = read_config(p)
        return create_model(name, num_classes=num_classes or cfg["num_classes"], pretrained=p).eval()
    if num_classes is None:
        src, _ = read_state_dict(p)
        fc = next((v for k, v in src.items() if k.endswith("head.fc.weight")), None)
        num_classes = int(fc.shape[0]) if fc is not None else 1000
    return create_model(name, num_classes=num_classes, pretrained=p).eval()


def load(
    model_or_path: str | Path | nn.Module,
    backend: str = "auto",
    device: str = "cpu",
    threads: int | None = None,
    precision: str = "fp32",
    *,
    checkpoint: str | Path | None = None,
    num_classes: int | None = None,
    batch_size: int = 1,
    remeasure: bool = False,
) -> Runtime:
    """A runtime for a zoo name, an ``nn.Module``, or an exported artifact (``.onnx``).

    ``backend="auto"``: an artifact runs on its format's backend; a zoo model or module runs on the fastest backend
    for this machine, found by a short measurement at ``batch_size`` (numerically checked against PyTorch) and
    cached (:mod:`mobilezoo.runtime.auto`; ``remeasure=True`` measures again). ``rt.auto`` says what was measured.
    """
    if threads:
        torch.set_num_threads(threads)
    path = Path(model_or_path) if isinstance(model_or_path, (str, Path)) else None
    if path is not None and any(path.name.endswith(s) for s in _ARTIFACTS):
        return _load_artifact(path, backend, device, threads)
    model = _build(model_or_path, checkpoint, num_classes)
    name = getattr(model, "model_name", type(model).__name__)
    common = {"model_name": name, "class_names": class_names_for(model), "preprocess": eval_preprocess(model)}
    if backend == "auto":
        from .auto import load_auto

        return load_auto(model, device=device, threads=threads, precision=precision, batch_size=batch_size,
                         remeasure=remeasure, common=common)  # fmt: skip
    if backend == "torch":
        return TorchRuntime(model, device=device, precision=precision, **common)
    if backend in ("onnxruntime", "openvino", "ncnn"):
        import shutil
        import tempfile

        from ..export.formats import export

        fmt = {"onnxruntime": "onnx"}.get(backend, backend)
        tmpdir = Path(tempfile.mkdtemp(prefix=f"mobilezoo-{backend}-"))
        try:
            artifact = export(model, fmt, tmpdir)
            return _load_artifact(artifact, backend, device, threads)  # the backend holds the graph in memory
        finally:
            shutil.rmtree(tmpdir, ignore_errors=True)
    raise ValueError(f"unknown backend {backend!r}; choose from auto, {', '.join(BACKENDS)}")
