"""ONNX export: BatchNorm folded, dynamic batch, opset >= 17, class names and preprocessing stored as metadata."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import torch
from torch import nn

from ..data.transforms import eval_preprocess
from ..models.fuse import fuse_bn
from ..reference import class_names_for

__all__ = ["artifact_metadata", "export_onnx", "read_onnx_metadata"]

META_KEY = "mobilezoo"


def export_onnx(
    model: nn.Module,
    path: str | Path,
    *,
    opset: int = 17,
    fp16: bool = False,
    class_names: list[str] | None = None,
    input_size: int | None = None,
) -> Path:
    """Write ``model`` (eval, BN folded) to ``path`` with input ``input`` [N,3,H,W] and output ``logits`` [N,K].

    The ``mobilezoo`` metadata entry holds JSON: model name, class names, preprocessing, precision.
    """
    if opset < 17:
        raise ValueError(f"opset {opset} is below the supported minimum of 17")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    net = fuse_bn(model)
    pre = eval_preprocess(getattr(model, "default_cfg", None))
    size = input_size or pre.crop_size
    in_chans = next(m for m in net.modules() if isinstance(m, nn.Conv2d)).in_channels
    x = torch.randn(1, in_chans, size, size)
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
        import onnx

        proto = _simplify(onnx.load(tmp))
        meta = artifact_metadata(model, class_names, precision="fp16" if fp16 else "fp32")
        entry = proto.metadata_props.add()
        entry.key, entry.value = META_KEY, json.dumps(meta)
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
    import contextlib
    import io

    with contextlib.redirect_stdout(io.StringIO()):
        return onnxslim.slim(proto)


def artifact_metadata(model: nn.Module, class_names: list[str] | None = None, precision: str = "fp32") -> dict:
    """What every exported artifact carries: model name, classes, preprocessing, precision."""
    pre = eval_preprocess(getattr(model, "default_cfg", None))
    return {
        "model_name": getattr(model, "model_name", type(model).__name__),
        "class_names": class_names or class_names_for(model),
        "num_classes": getattr(model, "num_classes", None),
        "preprocess": pre.as_dict(),
        "precision": precision,
    }


def read_onnx_metadata(path: str | Path) -> dict:
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    for p in proto.metadata_props:
        if p.key == META_KEY:
            return json.loads(p.value)
    return {}
