"""LiteRT (formerly TensorFlow Lite; Android's runtime) on the CPU with its default XNNPACK delegate: a ``.tflite``
flatbuffer converted by ``litert-torch`` from ``torch.export`` of the BatchNorm-folded model, run by
``ai_edge_litert``'s ``Interpreter``. The converted model takes the PyTorch layout (N x C x H x W; one transpose to
LiteRT's NHWC inside) with the static shape it was converted for (batch 1 for a file; a model opened in memory is
converted for ``batch_size``): another batch size runs as consecutive calls of that shape (the converted graph's
reshapes, ShuffleNet's channel shuffle among them, are fixed to its batch, so resizing the input is not safe).

Metadata lives inside the file, in the flatbuffer's ``metadata`` table (entry ``mobilezoo``, JSON), so the one
``.tflite`` is what ships to a phone. fp16 stores the weights as float16 (``ai-edge-quantizer``'s float casting: half
the file; the interpreter dequantizes them when it prepares the model and computes in fp32). int8 is full-integer:
litert-torch's PT2E quantizer (int8 weights per output channel, int8 activations per tensor, histogram ranges),
calibrated on real images; its input and output are int8 tensors with their scale and zero point, which the session
applies. XNNPACK's int8 kernels widen to 16 bits before they multiply: the same answer with or without VNNI
(``target`` is recorded; tested on an emulated AVX2 CPU)."""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
from torch import nn

from .artifact import META_KEY, artifact_metadata, write_atomic
from .base import Backend, Session, Unsupported, example_input, export_size, quiet

__all__ = ["BACKEND", "LiteRtBackend", "read_tflite_metadata", "with_tflite_metadata"]

EXACT_INT8 = "any x86 or ARM CPU (XNNPACK's int8 kernels widen to 16 bits before multiplying: no saturating pair sums)"


def _convert(net: nn.Module, x: torch.Tensor, quant_config=None) -> bytes:
    with torch.no_grad(), quiet():
        import litert_torch

        return litert_torch.convert(net, (x,), quant_config=quant_config).model_content()


def _fp16_weights(data: bytes) -> bytes:
    """The model with its float weights stored as float16 (dequantized when the interpreter prepares it)."""
    from ai_edge_quantizer import qtyping
    from ai_edge_quantizer import quantizer as aeq
    from ai_edge_quantizer.algorithm_manager import AlgorithmName

    q = aeq.Quantizer(bytearray(data))
    q.add_weight_only_config(
        regex=".*",
        operation_name=qtyping.TFLOperationName.ALL_SUPPORTED,
        num_bits=16,
        algorithm_key=AlgorithmName.FLOAT_CASTING,
    )
    with quiet():
        return bytes(q.quantize().quantized_model)


def with_tflite_metadata(data: bytes, meta: dict) -> bytes:
    """``data`` (a ``.tflite`` flatbuffer) with ``meta`` as its ``mobilezoo`` metadata entry (replacing one)."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    root = schema.Model.GetRootAs(data, 0)
    if any(root.Buffers(i).Offset() > 1 for i in range(root.BuffersLength())):
        raise ValueError("this .tflite keeps its weights past the flatbuffer's end; add metadata before that step")
    model = schema.ModelT.InitFromObj(root)
    model.metadata = [m for m in (model.metadata or []) if m.name not in (META_KEY, META_KEY.encode())]
    buf = schema.BufferT()
    buf.data = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    model.buffers.append(buf)
    entry = schema.MetadataT()
    entry.name, entry.buffer = META_KEY, len(model.buffers) - 1
    model.metadata.append(entry)
    builder = flatbuffers.Builder(len(data) + 4096)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def read_tflite_metadata(data: bytes) -> dict | None:
    """The ``mobilezoo`` metadata entry of a ``.tflite`` flatbuffer (``None`` if it has none)."""
    from ai_edge_litert import schema_py_generated as schema

    root = schema.Model.GetRootAs(data, 0)
    for i in range(root.MetadataLength()):
        entry = root.Metadata(i)
        if entry.Name() == META_KEY.encode():
            buf = root.Buffers(entry.Buffer())
            raw = data[buf.Offset() : buf.Offset() + buf.Size()] if buf.Offset() > 1 else buf.DataAsNumpy().tobytes()
            return json.loads(raw)
    return None


def _truncated(data: bytes) -> str | None:
    """Why ``data`` is a cut-off ``.tflite`` (a weights buffer reaching past its end), or ``None``."""
    from ai_edge_litert import schema_py_generated as schema

    try:
        root = schema.Model.GetRootAs(data, 0)
        for i in range(root.BuffersLength()):
            buf = root.Buffers(i)
            if buf.Offset() > 1 and buf.Offset() + buf.Size() > len(data):
                raise ValueError
            buf.DataAsNumpy()  # an inline buffer past the end raises
    except (ValueError, IndexError, struct.error):
        return f"truncated LiteRT model ({len(data)} bytes: its weights reach past the end)"
    return None


def _model_bytes(
    model: nn.Module, precision: str, size: int, class_names: list[str] | None = None, batch: int = 1
) -> bytes:
    from ..models.rewrite import deploy_form

    if precision not in ("fp32", "fp16"):
        raise ValueError(f"LiteRT export writes fp32 or fp16; int8 comes from `mobilezoo quantize`, not {precision}")
    net = deploy_form(model).eval()
    data = with_tflite_metadata(
        _convert(net, example_input(net, size, batch)), artifact_metadata(model, class_names, precision)
    )
    return _fp16_weights(data) if precision == "fp16" else data  # metadata first: the casting keeps it


class LiteRtBackend(Backend):
    name = "litert"
    package = "ai_edge_litert"
    extra_packages = ("litert_torch",)
    precisions = ("fp32", "fp16", "int8")
    format = "litert"
    suffix = ".tflite"
    modes: ClassVar[dict[str, str]] = {"litert": "-"}
    tiers: ClassVar[dict[str, str]] = {"litert": "full"}
    install_hint = "pip install 'mobilezoo[mobile]'"
    auto_rank = 4
    quantizer = "litert-torch's PT2E quantizer, full integer (int8 weights per channel, int8 activations per tensor)"

    def export(self, model, out_dir, *, precision="fp32", class_names=None, input_size=None) -> Path:
        data = _model_bytes(model, precision, export_size(model, input_size), class_names)
        return write_atomic(Path(out_dir) / f"{getattr(model, 'model_name', type(model).__name__)}{self.suffix}", data)

    def quantize(self, model, calib, out_dir, *, target="portable", class_names=None) -> Path:
        import importlib.metadata

        from ..models.rewrite import deploy_form
        from ._pt2e import pt2e_quantize

        with quiet():
            from litert_torch.quantize.pt2e_quantizer import PT2EQuantizer, get_symmetric_quantization_config
            from litert_torch.quantize.quant_config import QuantConfig

            quantizer = PT2EQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True))
            gm = pt2e_quantize(deploy_form(model).eval(), calib, quantizer, fold_quantize=False)
        data = _convert(gm, calib[:1].float(), QuantConfig(pt2e_quantizer=quantizer))
        meta = {
            **artifact_metadata(model, class_names, "int8"),
            "quantization": {
                "toolchain": f"litert-torch {importlib.metadata.version('litert-torch')} PT2E quantizer, full integer",
                "weights": "int8 per-channel symmetric",
                "activations": "int8 per-tensor (int8 model input and output)",
                "calibration": "histogram",
                "calibration_images": len(calib),
                "target": target,
                "saturation_safe": True,
                "needs": EXACT_INT8,
            },
        }
        name = getattr(model, "model_name", type(model).__name__)
        return write_atomic(Path(out_dir) / f"{name}.int8{self.suffix}", with_tflite_metadata(data, meta))

    def embedded_metadata(self, path: Path) -> dict | None:
        return read_tflite_metadata(Path(path).read_bytes())

    def check_file(self, path: Path) -> str | None:
        data = Path(path).read_bytes()
        if data[4:8] != b"TFL3":
            return "not a LiteRT model (.tflite: no TFL3 flatbuffer identifier)"
        return None if self.available() else _truncated(data)

    def open(self, source, *, device="cpu", threads=None, precision="fp32", batch_size=None, mode=None, **options):
        if device != "cpu":
            raise ValueError("the litert backend runs on the CPU here (XNNPACK)")
        if isinstance(source, nn.Module):
            if precision not in ("fp32", "fp16"):
                raise Unsupported(
                    f"LiteRT {precision} runs a quantized .tflite: `mobilezoo quantize --toolchain litert`"
                )
            size = export_size(source, options.get("input_size"))
            data, artifact = _model_bytes(source, precision, size, batch=batch_size or 1), ""
        else:
            data, artifact = Path(source).read_bytes(), Path(source).name
            precision = (read_tflite_metadata(data) or {}).get("precision", precision)
        return _session(data, artifact, precision, threads)


def _quantization(detail: dict) -> tuple[float, int, np.dtype] | None:
    """(scale, zero point, integer dtype) of a quantized input/output tensor; ``None`` for a float one."""
    dtype = np.dtype(detail["dtype"])
    if dtype.kind not in "iu":
        return None
    scale, zero = detail["quantization"]
    return float(scale), int(zero), dtype


def _session(data: bytes, artifact: str, precision: str, threads: int | None) -> Session:
    from ai_edge_litert.interpreter import Interpreter

    want = threads or torch.get_num_threads()
    with quiet():  # "Created TensorFlow Lite XNNPACK delegate for CPU."
        interp = Interpreter(model_content=data, num_threads=want)
        inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
        interp.allocate_tensors()
    shape = tuple(int(d) for d in inp["shape"])
    batch = shape[0]
    qin, qout = _quantization(inp), _quantization(out)

    def prepare(x: torch.Tensor) -> tuple[list[np.ndarray], int]:
        a = x.detach().cpu().float().numpy()
        n = a.shape[0]
        if a.shape[1:] != shape[1:]:
            raise ValueError(f"this LiteRT model takes {shape[1:]} inputs, not {tuple(a.shape[1:])}")
        if qin is not None:
            scale, zero, dtype = qin
            info = np.iinfo(dtype)
            a = np.clip(np.round(a / scale) + zero, info.min, info.max).astype(dtype)
        if n % batch:  # pad the last call to the model's batch
            a = np.concatenate([a, np.zeros((batch - n % batch, *shape[1:]), a.dtype)])
        return [np.ascontiguousarray(a[i : i + batch]) for i in range(0, len(a), batch)], n

    def run(native: tuple[list[np.ndarray], int]) -> np.ndarray:
        chunks, n = native
        outs = []
        for c in chunks:
            interp.set_tensor(inp["index"], c)
            interp.invoke()
            outs.append(interp.get_tensor(out["index"]))  # a copy
        return (outs[0] if len(outs) == 1 else np.concatenate(outs))[:n]

    def to_torch(y: np.ndarray) -> torch.Tensor:
        y = y.astype(np.float32)
        if qout is not None:
            y = (y - qout[1]) * qout[0]
        return torch.from_numpy(np.ascontiguousarray(y, dtype=np.float32))

    note = f"threads {want}, model input {list(shape)}" + (", int8 input/output" if qin is not None else "")
    return Session("litert", precision, "cpu", run, prepare, to_torch, artifact=artifact, note=note, keep=[interp])


BACKEND = LiteRtBackend()
