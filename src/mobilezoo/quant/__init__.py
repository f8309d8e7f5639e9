"""Int8: post-training quantization calibrated on real images, to an ONNX QDQ artifact the runtime API runs.

Toolchain: ONNX Runtime static quantization in QDQ form — int8 weights per output channel (symmetric), uint8
activations calibrated on real images through the shared eval preprocessing, BatchNorm folded before quantization.
The artifact is an ``.onnx`` file like any export (``precision: int8`` in its metadata) and runs on
``onnxruntime`` (VNNI/AMX int8 kernels) and on ``openvino`` (which reads QDQ graphs as int8).

Quantization-aware training (fake-quantized fine-tuning on the training engine, exported to the same kind of QDQ
artifact) is :mod:`mobilezoo.quant.qat`.
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

__all__ = ["CALIBRATION_METHODS", "QuantResult", "calibration_images", "quantize_ptq"]

CALIBRATION_METHODS = ("minmax", "entropy", "percentile")


def calibration_images(
    source: str | Path | Sequence[str | Path], preprocess, n: int = 256, seed: int = 0
) -> torch.Tensor:
    """``n`` real images (a random, class-balanced-by-chance sample of a folder tree), preprocessed -> N x C x H x W."""
    from ..data import find_images, load_image
    from ..data.images import ImageError

    paths, _ = find_images([source] if isinstance(source, (str, Path)) else list(source))
    if not paths:
        raise ValueError(f"no calibration images found in {source}")
    rng = random.Random(seed)
    rng.shuffle(paths)
    out = []
    for p in paths:
        try:
            out.append(preprocess(load_image(p)))
        except ImageError:
            continue
        if len(out) >= n:
            break
    if not out:
        raise ValueError(f"none of the calibration images in {source} could be read")
    return torch.stack(out)


class _Reader:
    def __init__(self, name: str, images: torch.Tensor, batch: int = 16) -> None:
        self.batches = [{name: images[i : i + batch].numpy()} for i in range(0, len(images), batch)]
        self.i = 0

    def get_next(self):
        if self.i >= len(self.batches):
            return None
        self.i += 1
        return self.batches[self.i - 1]

    def rewind(self) -> None:
        self.i = 0


@dataclass
class QuantResult:
    fp32: Path
    int8: Path

    @property
    def size_ratio(self) -> float:
        return self.fp32.stat().st_size / self.int8.stat().st_size


def quantize_ptq(
    model: nn.Module,
    calib: torch.Tensor,
    out_dir: str | Path,
    *,
    method: str = "minmax",
    per_channel: bool = True,
) -> QuantResult:
    """Export ``model`` to ONNX (BN folded) and quantize it statically with ``calib`` images; returns both paths."""
    import onnx
    import onnxruntime as ort
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    from ..export.onnx import META_KEY, export_onnx, read_onnx_metadata

    if method not in CALIBRATION_METHODS:
        raise ValueError(f"unknown calibration method {method!r}; choose from {', '.join(CALIBRATION_METHODS)}")
    out_dir = Path(out_dir)
    name = getattr(model, "model_name", type(model).__name__)
    fp32 = export_onnx(model, out_dir / f"{name}.onnx", input_size=int(calib.shape[-1]))
    int8 = out_dir / f"{name}.int8.onnx"
    tmp = out_dir / f".{name}.int8.onnx.tmp"
    ort.set_default_logger_severity(3)
    cm = {
        "minmax": CalibrationMethod.MinMax,
        "entropy": CalibrationMethod.Entropy,
        "percentile": CalibrationMethod.Percentile,
    }[method]
    try:
        quantize_static(
            str(fp32),
            str(tmp),
            _Reader("input", calib.float()),
            quant_format=QuantFormat.QDQ,
            per_channel=per_channel,
            weight_type=QuantType.QInt8,
            activation_type=QuantType.QUInt8,
            calibrate_method=cm,
        )
        proto = onnx.load(str(tmp))
        meta = {
            **read_onnx_metadata(fp32),
            "precision": "int8",
            "quantization": {
                "toolchain": f"onnxruntime {ort.__version__} quantize_static (QDQ)",
                "weights": "int8 per-channel",
                "activations": "uint8 per-tensor",
                "calibration": method,
                "calibration_images": len(calib),
            },
        }
        del proto.metadata_props[:]
        entry = proto.metadata_props.add()
        entry.key, entry.value = META_KEY, json.dumps(meta)
        onnx.save(proto, str(tmp))
        tmp.replace(int8)
    finally:
        if tmp.exists():
            tmp.unlink()
    return QuantResult(fp32, int8)
