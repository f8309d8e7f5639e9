"""Core ML (iOS, iPadOS, macOS): an ``.mlpackage`` ML program converted by coremltools from ``torch.export`` of the
BatchNorm-folded model (input ``input`` 1 x 3 x H x W float32, output ``logits`` 1 x K; deployment target iOS 16 /
macOS 13), metadata inside the package: ``user_defined_metadata["mobilezoo"]`` (JSON: model name, class names,
preprocessing, precision) and the model's short description and input/output descriptions in words.

fp16 is ``compute_precision=FLOAT16`` (weights stored and computed in half precision); int8 is coremltools' linear
weight quantization (``linear_quantize_weights``, int8 per output channel, symmetric): weight-only, activations stay
float, no calibration images needed (Core ML's activation quantization needs a Mac to calibrate on).

Core ML runs only on Apple's operating systems: on any other machine :meth:`CoreMlBackend.open` raises
:class:`~mobilezoo.backends.base.Unsupported` with that reason (``auto``, the benchmarks and ``runtime.load`` report
it), and an export is checked by :meth:`CoreMlBackend.validate` instead of being run: the saved package is read
back, its ML program rebuilt by coremltools' own loader (every op must be one Core ML has at the package's
deployment target, every shape re-inferred), and its input name and shape and its output shape are compared with
the model's. What that cannot show, the numbers on a device, is measured only there.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from .artifact import META_KEY, ArtifactError, artifact_metadata
from .base import Backend, Session, Unsupported, example_input, export_size, quiet, to_torch

__all__ = ["BACKEND", "CoreMlBackend", "weight_dtypes"]

WEIGHTS_DIR = Path("Data") / "com.apple.CoreML" / "weights"


def _ct():
    """coremltools, imported quietly (it warns on import about the native parts it has only on macOS)."""
    with quiet():
        import coremltools
        import coremltools.optimize.coreml  # its submodules warn on import too
    return coremltools


def _describe(mlmodel: Any, meta: dict, shape: tuple[int, ...]) -> None:
    """Put the metadata where Core ML keeps it: the JSON entry, the short description and the feature descriptions."""
    from .. import __version__

    pre = meta.get("preprocess") or {}
    k = meta.get("num_classes")
    mlmodel.user_defined_metadata[META_KEY] = json.dumps(meta)
    mlmodel.short_description = f"{meta.get('model_name')}: image classifier, {k} classes ({meta.get('precision')})"
    mlmodel.author = f"mobilezoo {__version__}"
    mlmodel.input_description["input"] = (
        f"{' x '.join(map(str, shape))} float32 RGB: short side resized to {pre.get('resize_short')}, center crop "
        f"{pre.get('crop_size')}, scaled to [0, 1], normalized with mean {pre.get('mean')} and std {pre.get('std')}"
    )
    mlmodel.output_description["logits"] = f"1 x {k} class scores before softmax (class names: user metadata)"


def _save(mlmodel: Any, path: Path) -> Path:
    """Save the package at ``path`` whole: written beside it, then moved into place (an older one replaced)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        with quiet():
            mlmodel.save(str(stage / path.name))
        if path.exists():
            os.replace(path, stage / "old")
        os.replace(stage / path.name, path)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return path


def _convert(model: nn.Module, precision: str, size: int) -> tuple[Any, tuple[int, ...]]:
    from ..models.rewrite import deploy_form

    ct = _ct()
    net = deploy_form(model).eval()
    x = example_input(net, size)
    name = getattr(model, "model_name", type(model).__name__)
    try:
        with torch.no_grad(), quiet():
            program = torch.export.export(net, (x,)).run_decompositions({})
            mlmodel = ct.convert(
                program,
                inputs=[ct.TensorType(name="input", shape=tuple(x.shape), dtype=np.float32)],
                outputs=[ct.TensorType(name="logits", dtype=np.float32)],  # fp16: float32 in and out, cast inside
                convert_to="mlprogram",
                compute_precision=ct.precision.FLOAT16 if precision == "fp16" else ct.precision.FLOAT32,
                minimum_deployment_target=ct.target.iOS16,
            )
    except Exception as e:  # the converter's error, in one line
        first = (str(e).strip().splitlines() or [""])[0][:200]
        raise RuntimeError(f"coremltools could not convert {name}: {type(e).__name__}: {first}") from None
    return mlmodel, tuple(x.shape)


def _operations(spec: Any) -> list[Any]:
    """Every operation of the ML program, nested blocks included."""
    out: list[Any] = []

    def walk(block: Any) -> None:
        for op in block.operations:
            out.append(op)
            for b in op.blocks:
                walk(b)

    for function in spec.mlProgram.functions.values():
        for block in function.block_specializations.values():
            walk(block)
    return out


def weight_dtypes(spec: Any) -> dict[str, int]:
    """Elements of the weights stored in the package's weight file, by stored type (``FLOAT32``, ``FLOAT16``,
    ``INT8``): the constants the program reads from blobs (an int8 weight is ``constexpr_affine_dequantize``'s
    ``quantized_data``)."""
    from coremltools.proto import MIL_pb2

    counts: Counter = Counter()
    for op in _operations(spec):
        for key in ("val", "quantized_data"):
            if key not in op.attributes or op.attributes[key].WhichOneof("value") != "blobFileValue":
                continue
            tt = op.attributes[key].type.tensorType
            counts[MIL_pb2.DataType.Name(tt.dataType)] += int(np.prod([d.constant.size for d in tt.dimensions]))
    return dict(counts)


class CoreMlBackend(Backend):
    name = "coreml"
    package = "coremltools"
    precisions = ("fp32", "fp16", "int8")
    format = "coreml"
    suffix = ".mlpackage"
    folder = True
    modes: ClassVar[dict[str, str]] = {"coreml": "-"}
    tiers: ClassVar[dict[str, str]] = {"coreml": "full"}
    install_hint = "pip install 'mobilezoo[mobile]'"
    auto_rank = None  # converting takes seconds and Core ML runs only on Apple's OSes: not an `auto` candidate
    quantizer = "coremltools' linear weight quantization (int8 weights per channel, symmetric; weight-only)"

    def unsupported(self, precision: str, device: str) -> str | None:
        reason = super().unsupported(precision, device)
        if reason is None and platform.system() != "Darwin":
            return (
                f"Core ML runs only on Apple's operating systems (macOS, iOS), not {platform.system()}: its "
                "exports are validated here (spec, input, output, op coverage), not run"
            )
        return reason

    def export(self, model, out_dir, *, precision="fp32", class_names=None, input_size=None) -> Path:
        if precision not in ("fp32", "fp16"):
            raise ValueError(f"Core ML export writes fp32 or fp16; int8 comes from `mobilezoo quantize`: {precision}")
        mlmodel, shape = _convert(model, precision, export_size(model, input_size))
        _describe(mlmodel, artifact_metadata(model, class_names, precision), shape)
        name = getattr(model, "model_name", type(model).__name__)
        return _save(mlmodel, Path(out_dir) / f"{name}{self.suffix}")

    def quantize(self, model, calib, out_dir, *, target="portable", class_names=None) -> Path:
        """Weight-only: ``calib`` gives the input size only (no ranges to calibrate); ``target`` is recorded (no int8
        dot products run: the weights are dequantized on the device)."""
        from coremltools.optimize.coreml import OpLinearQuantizerConfig, OptimizationConfig, linear_quantize_weights

        ct = _ct()
        mlmodel, shape = _convert(model, "fp32", int(calib.shape[-1]))
        config = OpLinearQuantizerConfig(mode="linear_symmetric", dtype="int8", granularity="per_channel")
        with quiet():
            quantized = linear_quantize_weights(mlmodel, config=OptimizationConfig(global_config=config))
        meta = {
            **artifact_metadata(model, class_names, "int8"),
            "quantization": {
                "toolchain": f"coremltools {ct.__version__} linear_quantize_weights (linear_symmetric)",
                "weights": "int8 per-channel symmetric (tensors of 2048 elements or more: coremltools' default)",
                "activations": "float (weight-only quantization: dequantized on the device)",
                "calibration": "none (weight-only)",
                "calibration_images": 0,
                "target": target,
                "saturation_safe": True,
                "needs": "an Apple device (iOS 16, macOS 13 or later); no int8 dot products",
            },
        }
        _describe(quantized, meta, shape)
        name = getattr(model, "model_name", type(model).__name__)
        return _save(quantized, Path(out_dir) / f"{name}.int8{self.suffix}")

    def embedded_metadata(self, path: Path) -> dict | None:
        raw = _ct().utils.load_spec(str(path)).description.metadata.userDefined.get(META_KEY)
        return json.loads(raw) if raw else None

    def check_file(self, path: Path) -> str | None:
        """A package folder with its manifest, the model spec the manifest names, and the weights."""
        path = Path(path)
        if not path.is_dir():
            return "not a Core ML package (.mlpackage is a folder)"
        try:
            manifest = json.loads((path / "Manifest.json").read_text())
            root = manifest["itemInfoEntries"][manifest["rootModelIdentifier"]]["path"]
        except (OSError, ValueError, KeyError, TypeError):
            return "not a Core ML package (no readable Manifest.json naming its model)"
        if not (path / "Data" / root).is_file():
            return f"its model spec Data/{root} is missing"
        return None

    def validate(self, path: str | Path, model: nn.Module | None = None) -> str:
        """The checks an export gets where Core ML cannot run (one line of what was checked; :class:`ArtifactError`
        naming the first problem): the package's ML program rebuilt by coremltools' loader; every op one that Core ML
        has at the package's target; input ``input`` 1 x C x H x W float32 and output ``logits`` 1 x K, with C, H,
        K those of ``model`` (else of the metadata)."""
        from coremltools.converters.mil.frontend.milproto.load import load as load_program
        from coremltools.converters.mil.mil import types
        from coremltools.converters.mil.mil.ops.registry import SSAOpRegistry

        ct = _ct()
        path = Path(path)
        problem = self.check_file(path)
        if problem:
            raise ArtifactError(f"{path}: {problem}")
        spec = ct.utils.load_spec(str(path))
        if spec.WhichOneof("Type") != "mlProgram":
            raise ArtifactError(f"{path}: a Core ML {spec.WhichOneof('Type')} model, not an ML program")
        target = ct.target(spec.specificationVersion)
        kinds = sorted({op.type for op in _operations(spec)})
        unknown = [k for k in kinds if not any(v <= target for v in SSAOpRegistry.core_ops.get(k, {}))]
        if unknown:
            raise ArtifactError(f"{path}: ops that Core ML ({target.name}) does not have: {', '.join(unknown)}")
        try:
            with quiet():
                program = load_program(spec, spec.specificationVersion, str(path / WEIGHTS_DIR))
        except Exception as e:
            first = (str(e).strip().splitlines() or [""])[0][:200]
            why = f"{type(e).__name__}: {first}"
            raise ArtifactError(f"{path}: coremltools cannot rebuild its ML program ({why})") from None
        main = program.functions["main"]
        meta = self.embedded_metadata(path) or {}
        size = (meta.get("preprocess") or {}).get("crop_size")
        chans = next((m.in_channels for m in model.modules() if isinstance(m, nn.Conv2d)), 3) if model else 3
        classes = getattr(model, "num_classes", None) or meta.get("num_classes")
        inputs = [(n, tuple(v.shape), types.builtin_to_string(v.dtype)) for n, v in main.inputs.items()]
        outputs = [(v.name, tuple(v.shape)) for v in main.outputs]
        want_in = [("input", (1, chans, size or inputs[0][1][-2], size or inputs[0][1][-1]), "fp32")]
        if inputs != want_in:
            raise ArtifactError(f"{path}: inputs {inputs}, expected {want_in}")
        if len(outputs) != 1 or outputs[0][0] != "logits" or (classes and outputs[0][1] != (1, classes)):
            raise ArtifactError(f"{path}: outputs {outputs}, expected [('logits', (1, {classes}))]")
        stored = ", ".join(f"{n} {t}" for t, n in sorted(weight_dtypes(spec).items(), key=lambda kv: -kv[1]))
        return (
            f"Core ML {target.name} ML program validated (not run): input {inputs[0][1]}, logits {outputs[0][1]}, "
            f"{len(main.operations)} ops of {len(kinds)} kinds, all Core ML ops; weights {stored}"
        )

    def open(self, source, *, device="cpu", threads=None, precision="fp32", batch_size=None, mode=None, **options):
        """On macOS: coremltools' ``MLModel.predict``, one image per call (the package's batch is 1). Written to
        coremltools' documented API but not run by this project's tests, which run on Linux."""
        reason = self.unsupported(precision, device)
        if reason:
            raise Unsupported(reason)
        ct = _ct()
        if isinstance(source, nn.Module):
            with tempfile.TemporaryDirectory(prefix="mobilezoo-coreml-") as tmp:
                path = self.export(source, tmp, precision=precision, input_size=options.get("input_size"))
                mlmodel, artifact = ct.models.MLModel(str(path)), ""
        else:
            mlmodel, artifact = ct.models.MLModel(str(source)), Path(source).name

        def prepare(x: torch.Tensor) -> np.ndarray:
            return np.ascontiguousarray(x.detach().cpu().float().numpy())

        def run(arr: np.ndarray) -> np.ndarray:
            return np.concatenate([mlmodel.predict({"input": a[None]})["logits"] for a in arr])

        return Session(self.name, precision, "cpu", run, prepare, to_torch, artifact=artifact, keep=[mlmodel])


BACKEND = CoreMlBackend()
