"""Int8: post-training quantization calibrated on real images, to an artifact the runtime API runs.

Two toolchains, both calibrated on real images through the shared eval preprocessing, BatchNorm folded first:

- ``onnxruntime`` (default): ONNX Runtime static quantization in QDQ form — int8 weights per output channel
  (symmetric), uint8 activations per tensor. The artifact is an ``.onnx`` file like any export (``precision: int8``
  in its metadata); it runs on ``onnxruntime`` (VNNI/AMX int8 kernels) and on OpenVINO (which reads QDQ as int8).
- ``nncf``: OpenVINO's NNCF post-training quantization of the OpenVINO model, saved as OpenVINO IR
  (``.int8.xml`` + ``.bin``, FakeQuantize nodes, metadata in the ``.json`` sidecar) for the ``openvino`` backend.
  NNCF places quantizers where OpenVINO fuses them into its int8 kernels (not on the hard-swish/SE elementwise
  ops that ONNX Runtime's QDQ graph quantizes), which is what makes MobileNetV3 fast in int8 on OpenVINO.

- the engines with a quantizer of their own (:func:`mobilezoo.backends.quantizers`: ``executorch``, PT2E with the
  XNNPACK quantizer, a ``.int8.pte``; ``litert``, litert-torch's PT2E quantizer, a full-integer ``.int8.tflite``;
  ``mnn``, MNN's offline quantization, an ``.int8.mnn``; ``coreml``, coremltools' linear weight quantization, an
  ``.int8.mlpackage`` with int8 weights and float activations):
  :meth:`~mobilezoo.backends.base.Backend.quantize`, beside the same engine's fp32 export.

Quantization-aware training (fake-quantized fine-tuning on the training engine, exported to the same kind of QDQ
artifact) is :mod:`mobilezoo.quant.qat`.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from .. import backends
from ..backends.artifact import artifact_bytes

__all__ = [
    "CALIBRATION_METHODS",
    "TARGETS",
    "TOOLCHAINS",
    "CalibrationSet",
    "QuantResult",
    "artifact_bytes",
    "calibration_images",
    "calibration_set",
    "quantize_ptq",
]

CALIBRATION_METHODS = ("minmax", "entropy", "percentile")
TOOLCHAINS = ("onnxruntime", "nncf", *backends.quantizers())
TARGETS = ("portable", "vnni")
"""``portable`` (default): 7-bit weights (|q| <= 64), correct on every x86 CPU, VNNI or not (AVX2's ``vpmaddubsw``
saturates the int16 sum of two uint8 x int8 products, which 7-bit weights cannot overflow: 255 x 128 = 32640).
``vnni``: full 8-bit weights, a little more precise, correct only where int8 products accumulate exactly (x86 with
AVX512-VNNI/AVX-VNNI/AMX, ARM); ``mobilezoo.runtime.load`` refuses such an artifact on a CPU without them."""


@dataclass
class CalibrationSet:
    images: torch.Tensor
    """the preprocessed images used, N x C x H x W"""
    found: int
    """image files found under the source"""
    unreadable: list[str] = field(default_factory=list)
    """one line per file that could not be read (skipped, and replaced by another file where there was one)"""

    def line(self) -> str:
        skipped = f", {len(self.unreadable)} unreadable skipped ({self.unreadable[0]})" if self.unreadable else ""
        return f"calibrated on {len(self.images)} images of {self.found} found{skipped}"


def calibration_set(
    source: str | Path | Sequence[str | Path], preprocess, n: int = 256, seed: int = 0
) -> CalibrationSet:
    """``n`` real images (a random, class-balanced-by-chance sample of a folder tree), preprocessed, with the count
    of what was found and of what could not be read."""
    from ..data import find_images, load_image
    from ..data.images import ImageError

    if n < 1:
        raise ValueError(f"the number of calibration images must be at least 1, not {n}")
    paths, problems = find_images([source] if isinstance(source, (str, Path)) else list(source))
    if problems:
        raise FileNotFoundError(f"calibration images: {'; '.join(problems)}")
    rng = random.Random(seed)
    rng.shuffle(paths)
    out, bad = [], []
    for p in paths:
        try:
            out.append(preprocess(load_image(p)))
        except ImageError as e:
            bad.append(str(e))
            continue
        if len(out) >= n:
            break
    if not out:
        raise ValueError(f"none of the {len(paths)} calibration images in {source} could be read ({bad[0]})")
    return CalibrationSet(torch.stack(out), len(paths), bad)


def calibration_images(
    source: str | Path | Sequence[str | Path], preprocess, n: int = 256, seed: int = 0
) -> torch.Tensor:
    """The images of :func:`calibration_set` (N x C x H x W)."""
    return calibration_set(source, preprocess, n, seed).images


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
        return artifact_bytes(self.fp32) / artifact_bytes(self.int8)


def _check_ptq_args(method: str, toolchain: str, target: str) -> None:
    if method not in CALIBRATION_METHODS:
        raise ValueError(f"unknown calibration method {method!r}; choose from {', '.join(CALIBRATION_METHODS)}")
    if toolchain not in TOOLCHAINS:
        raise ValueError(f"unknown quantization toolchain {toolchain!r}; choose from {', '.join(TOOLCHAINS)}")
    if target not in TARGETS:
        raise ValueError(f"unknown int8 target {target!r}; choose from {', '.join(TARGETS)}")
    if toolchain != "onnxruntime" and method != "minmax":
        raise ValueError(
            f"the {toolchain} toolchain estimates ranges itself: calibration method {method!r} is for onnxruntime"
        )


def quantize_ptq(
    model: nn.Module,
    calib: torch.Tensor,
    out_dir: str | Path,
    *,
    method: str = "minmax",
    per_channel: bool = True,
    toolchain: str = "onnxruntime",
    target: str = "portable",
) -> QuantResult:
    """Export ``model`` to ONNX (BN folded) and quantize it statically with ``calib`` images; returns both paths.

    ``toolchain``: ``onnxruntime`` (an ``.int8.onnx`` QDQ file; ``method`` picks its calibration) or ``nncf`` (an
    OpenVINO ``.int8.xml`` IR; NNCF's own min/max range estimation, ``method`` must be ``minmax``) or an engine
    with its own quantizer (``executorch``, ``litert``: that engine's fp32 and int8 artifacts; its own ranges).
    ``target``: which CPUs the artifact must be correct on (:data:`TARGETS`): ``portable`` quantizes weights to 7 bits
    (ONNX Runtime's ``reduce_range``, NNCF's overflow fix on every layer), ``vnni`` to 8."""
    import onnx
    import onnxruntime as ort
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    from ..backends.artifact import read_metadata, set_onnx_metadata
    from ..backends.onnxruntime import export_onnx
    from ..export.int8 import int8_build_record

    _check_ptq_args(method, toolchain, target)
    if toolchain in backends.quantizers():
        return _quantize_engine(model, calib, out_dir, toolchain, target)
    out_dir = Path(out_dir)
    name = getattr(model, "model_name", type(model).__name__)
    fp32 = export_onnx(model, out_dir / f"{name}.onnx", input_size=int(calib.shape[-1]))
    if toolchain == "nncf":
        return QuantResult(fp32, _quantize_nncf(fp32, calib, out_dir / f"{name}.int8.xml", target))
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
            reduce_range=target == "portable",
        )
        proto = onnx.load(str(tmp))
        meta = {
            **read_metadata(fp32),
            "precision": "int8",
            "quantization": {
                "toolchain": f"onnxruntime {ort.__version__} quantize_static (QDQ)",
                "weights": "int8 per-channel" + (", 7-bit range" if target == "portable" else ""),
                "activations": "uint8 per-tensor",
                "calibration": method,
                "calibration_images": len(calib),
                **int8_build_record(proto, target),
            },
        }
        onnx.save(set_onnx_metadata(proto, meta), str(tmp))
        tmp.replace(int8)
    finally:
        if tmp.exists():
            tmp.unlink()
    return QuantResult(fp32, int8)


def _quantize_engine(model: nn.Module, calib: torch.Tensor, out_dir: str | Path, name: str, target: str) -> QuantResult:
    """The engine's own quantizer (:meth:`mobilezoo.backends.base.Backend.quantize`), beside its fp32 export."""
    from .._deps import MissingDependencyError

    engine = backends.get(name)
    missing = engine.available()
    if missing:
        raise MissingDependencyError(f"cannot quantize with {name}: {missing}")
    fp32 = engine.export(model, out_dir, input_size=int(calib.shape[-1]))
    return QuantResult(fp32, engine.quantize(model, calib, out_dir, target=target))


def _quantize_nncf(fp32: Path, calib: torch.Tensor, out: Path, target: str = "portable") -> Path:
    """NNCF post-training quantization of the OpenVINO model of ``fp32`` (an ONNX file), saved as IR at ``out``."""
    import contextlib
    import logging
    import shutil
    import sys
    import tempfile

    from .._deps import require
    from ..backends.artifact import read_metadata, sidecar, write_sidecar
    from ..backends.openvino import signal_stack_guard
    from ..export.int8 import int8_build_record

    ov = require("openvino")
    nncf = require("nncf")
    logging.getLogger("nncf").setLevel(logging.ERROR)
    samples = [calib[i : i + 1].float().numpy() for i in range(len(calib))]
    # nncf's progress bars: keep stdout for the caller's output; NNCF makes OpenVINO Cores of its own (the guard)
    with contextlib.redirect_stdout(sys.stderr), signal_stack_guard():
        quantized = nncf.quantize(
            ov.convert_model(str(fp32)),
            nncf.Dataset(samples),
            subset_size=len(samples),
            preset=nncf.QuantizationPreset.PERFORMANCE,
            advanced_parameters=nncf.AdvancedQuantizationParameters(
                overflow_fix=nncf.OverflowFix.ENABLE if target == "portable" else nncf.OverflowFix.DISABLE
            ),
        )
    meta = {
        **read_metadata(fp32),
        "precision": "int8",
        "quantization": {
            "toolchain": f"nncf {nncf.__version__} post-training quantization, OpenVINO {ov.__version__} IR",
            "weights": "int8 per-channel symmetric" + (", 7-bit range (overflow fix)" if target == "portable" else ""),
            "activations": "int8 per-tensor (FakeQuantize), placed for OpenVINO's fused int8 kernels",
            "calibration": "minmax",
            "calibration_images": len(calib),
            **int8_build_record(quantized, target),
        },
    }
    with tempfile.TemporaryDirectory(prefix=".nncf-", dir=out.parent) as tmp:
        staged = Path(tmp) / out.name
        ov.save_model(quantized, str(staged), compress_to_fp16=False)
        write_sidecar(staged, meta)
        # the weights and the sidecar first, the .xml that names the artifact last
        for src in (staged.with_suffix(".bin"), sidecar(staged), staged):
            shutil.move(str(src), out.parent / src.name)
    return out
