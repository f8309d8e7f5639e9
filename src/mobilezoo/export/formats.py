"""TorchScript, OpenVINO IR and ncnn (through pnnx) exporters, and the check every export gets.

Each artifact gets a sidecar ``<artifact>.json`` with the same metadata the ONNX file embeds (model name, class names,
preprocessing, precision), so ``mobilezoo.runtime.load(path)`` knows what it is running.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from .._deps import require
from ..models.fuse import fuse_bn
from .onnx import artifact_metadata, export_onnx

__all__ = ["FORMATS", "ExportCheck", "check_export", "export", "read_sidecar"]

FORMATS = ("onnx", "torchscript", "openvino", "ncnn")
_SUFFIX = {"onnx": ".onnx", "torchscript": ".torchscript.pt", "openvino": ".xml", "ncnn": ".ncnn.param"}


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".json")


def read_sidecar(path: str | Path) -> dict:
    p = _sidecar(Path(path))
    return json.loads(p.read_text()) if p.is_file() else {}


def _example(model: nn.Module, size: int) -> torch.Tensor:
    in_chans = next(m for m in model.modules() if isinstance(m, nn.Conv2d)).in_channels
    return torch.randn(1, in_chans, size, size)


def export(
    model: nn.Module,
    fmt: str,
    out_dir: str | Path,
    *,
    fp16: bool = False,
    class_names: list[str] | None = None,
    input_size: int | None = None,
) -> Path:
    """Export ``model`` to ``out_dir/<model_name><suffix>`` in ``fmt``; returns the artifact's path.

    ``input_size`` (the example input's side) defaults to the crop size of the model's eval preprocessing.
    """
    if input_size is None:
        input_size = int(getattr(model, "default_cfg", {}).get("crop_size", 224))
    if fmt not in FORMATS:
        raise ValueError(f"unknown export format {fmt!r}; choose from {', '.join(FORMATS)} or 'all'")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    name = getattr(model, "model_name", type(model).__name__)
    path = out_dir / f"{name}{_SUFFIX[fmt]}"
    if fmt == "onnx":
        return export_onnx(model, path, fp16=fp16, class_names=class_names, input_size=input_size)
    net = fuse_bn(model)
    x = _example(net, input_size)
    precision = "fp16" if fp16 else "fp32"
    if fmt == "torchscript":
        if fp16:
            net, x = net.half(), x.half()
        scripted = torch.jit.script(net)
        torch.jit.save(scripted, str(path))
    elif fmt == "openvino":
        ov = require("openvino")
        ov_model = ov.convert_model(net, example_input=x, input=[(-1, x.shape[1], -1, -1)])
        ov.save_model(ov_model, str(path), compress_to_fp16=fp16)  # weights stored fp16, computed per device
    elif fmt == "ncnn":
        pnnx = require("pnnx")
        with tempfile.TemporaryDirectory(prefix="mobilezoo-pnnx-") as tmp:
            pt = Path(tmp) / f"{name}.pt"
            pnnx.export(net, str(pt), (x,), fp16=fp16)
            for suffix in (".ncnn.param", ".ncnn.bin"):
                shutil.move(str(Path(tmp) / f"{name}{suffix}"), out_dir / f"{name}{suffix}")
    _sidecar(path).write_text(json.dumps(artifact_metadata(model, class_names, precision), indent=1))
    return path


@dataclass
class ExportCheck:
    path: Path
    backend: str
    max_abs_diff: float
    max_abs_logit: float
    top5_agreement: float

    def line(self) -> str:
        return (
            f"{self.path.name}: max |diff| {self.max_abs_diff:.3g} (logits up to {self.max_abs_logit:.3g}), "
            f"top-5 agreement {self.top5_agreement:.0%}"
        )


def check_export(model: nn.Module, path: str | Path, images: list | torch.Tensor) -> ExportCheck:
    """Run the artifact and the (unfused, eval-mode) PyTorch model on the same input and compare.

    ``images`` are PIL images (real photos, through the shared preprocessing) or an already preprocessed NCHW tensor.
    """
    from ..data import eval_preprocess
    from ..runtime import load

    rt = load(path)
    if isinstance(images, torch.Tensor):
        x = images
    else:
        pre = eval_preprocess(model)
        x = torch.stack([pre(im) for im in images])
    was_training = model.training
    model.eval()
    with torch.no_grad():
        ref = model(x).float()
    model.train(was_training)
    got = rt(x).float()
    n = x.shape[0]
    agree = sum(set(a.tolist()) == set(b.tolist()) for a, b in zip(ref.topk(5, 1).indices, got.topk(5, 1).indices)) / n
    return ExportCheck(Path(path), rt.backend, float((ref - got).abs().max()), float(ref.abs().max()), agree)
