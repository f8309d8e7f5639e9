"""MNN (Alibaba's mobile engine: Android, iOS, ARM boards) on the CPU: an ``.mnn`` flatbuffer converted by MNN's own
converter from the project's ONNX graph (:func:`~mobilezoo.backends.onnxruntime.export_onnx`: BatchNorm folded,
dynamic batch), metadata in the sidecar (the ``.mnn`` has no place for it); run with MNN's Module API at
``precision: high`` (exact fp32 arithmetic; ``low`` for an fp16 artifact, which computes in fp16 only where the CPU
has fp16 arithmetic, ARMv8.2+).

fp16 stores the weights as float16 (the converter's ``--fp16``, on weights first rounded to the nearest half here:
the converter alone truncates them, which doubles the error of the logits). int8 is MNN's offline quantization (its
``quantized.out`` tool): int8 weights per output channel (``MAX_ABS``), int8 activations per tensor with ranges from
an exponential moving average of min/max (``EMA``) over real calibration images, fed as tensors already through the
one preprocessing (:mod:`mobilezoo.data.transforms`), not through the tool's own image resizing. (``KL``, the tool's
default, crashes with SIGSEGV in MNN 3.6.1's quantizer.) MNN's x86 int8 kernels widen 8-bit weights to int16 before
multiplying (``vpmovsxbw`` + ``vpmaddwd``: exact int32 sums) and use the pair-summing ``vpmaddubsw`` only for weights
of 7 bits or fewer, so an 8-bit MNN artifact does not saturate on a CPU without VNNI (checked on an emulated AVX2 CPU,
``tests/test_mnn_coreml.py``: one image per call gives exactly this machine's logits; a batch goes through other
kernels whose rounding differs by CPU, within int8's error either way).

The converter and the quantizer are MNN's compiled ``_tools`` module, run in a child process of their own (output
captured, shown with ``MOBILEZOO_VERBOSE=1``; a failure is one line). Not the ``mnnconvert``/``mnnquant`` console
scripts: in MNN 3.6.1 both import a usage logger that uploads the machine id to MNN's Aliyun log service (and runs
``pip install aliyun-log-python-sdk`` when that package is missing), and ``mnnquant``'s wrapper crashes
(``std::length_error``: it passes three strings where the C++ function reads an argument list).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from .artifact import ArtifactError, artifact_metadata, read_metadata, write_sidecar
from .base import Backend, Session, Unsupported, quiet, to_torch, verbose

__all__ = ["BACKEND", "EXACT_INT8", "MnnBackend"]

EXACT_INT8 = (
    "any x86 or ARM CPU (MNN's x86 int8 kernels widen 8-bit weights to int16 before multiplying: no saturating "
    "pair sums without VNNI)"
)
_INPUT = "input"
"""The input name of the project's ONNX graph, which the converter keeps (the quantizer's calibration files use it)."""


def _tool(tool: str, args: list[str], what: str, made: Path) -> None:
    """Run MNN's compiled ``_tools.<tool>`` (``mnnconvert``/``mnnquant``) on ``args`` in a child process; raise one line
    unless it wrote ``made`` (MNN's tools exit 0 on most failures: the file is what says it worked)."""
    code = f"import sys, _tools; _tools.{tool}(sys.argv)"
    res = subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, start_new_session=True, timeout=3600
    )
    out = res.stdout + res.stderr
    if verbose():
        print(out, file=sys.stderr)
    if res.returncode != 0 or not made.is_file() or made.stat().st_size == 0:
        lines = [ln.strip() for ln in out.splitlines() if ln.strip()]
        errors = [ln for ln in lines if "rror" in ln or "not support" in ln.lower()] or lines[-1:] or [""]
        raise RuntimeError(f"MNN could not {what} (exit {res.returncode}): {errors[0][:200]}")


def _convert(model: nn.Module, work: Path, precision: str, class_names, input_size) -> Path:
    """The model as an ``.mnn`` file in ``work`` (a scratch folder), via the project's ONNX graph."""
    from ..models.rewrite import deploy_form
    from .onnxruntime import export_onnx

    name = getattr(model, "model_name", type(model).__name__)
    if precision == "fp16":  # rounded to the nearest half here: the converter's --fp16 truncates (2x the error)
        model = deploy_form(model)
        with torch.no_grad():
            for t in model.parameters():
                t.copy_(t.half().float())
    onnx_path = export_onnx(model, work / f"{name}.onnx", class_names=class_names, input_size=input_size)
    dst = work / f"{name}.mnn"
    args = ["-f", "ONNX", "--modelFile", str(onnx_path), "--MNNModel", str(dst), "--bizCode", "mobilezoo"]
    _tool("mnnconvert", args + (["--fp16"] if precision == "fp16" else []), f"convert {name} to .mnn", dst)
    return dst


def _place(made: Path, path: Path, meta: dict) -> Path:
    """Move ``made`` to ``path`` with its sidecar: the sidecar first, the ``.mnn`` that names the artifact last."""
    write_sidecar(path, meta)
    os.replace(made, path)
    return path


def _write_calibration(calib: torch.Tensor, root: Path) -> None:
    """The calibration images as MNN's quantizer reads tensors (``input_type: sequence``): one folder per image with
    ``<input name>.txt`` (the values, one image row per line) and ``input.json`` (its shape)."""
    for i, img in enumerate(calib.float().numpy()):
        d = root / f"{i:05d}"
        d.mkdir(parents=True)
        np.savetxt(d / f"{_INPUT}.txt", img.reshape(-1, img.shape[-1]), fmt="%.7g")
        (d / "input.json").write_text(json.dumps({"inputs": [{"name": _INPUT, "shape": [1, *img.shape]}]}))


def _check_flatbuffer(path: Path) -> str | None:
    """Why ``path`` is not a flatbuffer (the root table's offset and its vtable inside the file), or ``None``."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        root = int.from_bytes(head[:4], "little")
        if size < 16 or root % 4 or not 4 <= root <= size - 4:
            return "not an MNN model (.mnn: not a flatbuffer)"
        f.seek(root)
        vtable = root - int.from_bytes(f.read(4), "little", signed=True)
    return None if 0 <= vtable <= size - 4 else "not an MNN model (.mnn: its flatbuffer root is broken)"


def _mnn():
    """MNN's ``nn`` and ``expr`` modules (imported quietly: MNN prints this CPU's features on import)."""
    with quiet():
        import MNN.expr as expr
        import MNN.nn as mnn_nn
    return mnn_nn, expr


class MnnBackend(Backend):
    name = "mnn"
    package = "MNN"
    precisions = ("fp32", "fp16", "int8")
    format = "mnn"
    suffix = ".mnn"
    modes: ClassVar[dict[str, str]] = {"mnn": "-"}
    tiers: ClassVar[dict[str, str]] = {"mnn": "full"}
    install_hint = "pip install 'mobilezoo[mobile]'"
    auto_rank = 3
    quantizer = "MNN's offline quantization (int8 weights per channel, int8 activations per tensor, EMA ranges)"

    def export(self, model, out_dir, *, precision="fp32", class_names=None, input_size=None) -> Path:
        if precision not in ("fp32", "fp16"):
            raise ValueError(f"MNN export writes fp32 or fp16; int8 comes from `mobilezoo quantize`, not {precision}")
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix=".mnn-", dir=out_dir) as tmp:
            made = _convert(model, Path(tmp), precision, class_names, input_size)
            return _place(made, out_dir / made.name, artifact_metadata(model, class_names, precision))

    def quantize(self, model, calib, out_dir, *, target="portable", class_names=None) -> Path:
        """``target`` is recorded: MNN's int8 kernels are exact on every CPU, so both targets give 8-bit weights."""
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        name = getattr(model, "model_name", type(model).__name__)
        with tempfile.TemporaryDirectory(prefix=".mnn-int8-", dir=out_dir) as tmp:
            work = Path(tmp)
            fp32 = _convert(model, work, "fp32", class_names, int(calib.shape[-1]))
            _write_calibration(calib, work / "calib")
            config = {
                "input_type": "sequence",
                "path": str(work / "calib"),
                "used_sample_num": len(calib),
                "feature_quantize_method": "EMA",
                "weight_quantize_method": "MAX_ABS",
                "width": int(calib.shape[-1]),
                "height": int(calib.shape[-2]),
            }
            (work / "quant.json").write_text(json.dumps(config))
            made = work / f"{name}.int8.mnn"
            _tool("mnnquant", [str(fp32), str(made), str(work / "quant.json")], f"quantize {name}", made)
            meta = {
                **artifact_metadata(model, class_names, "int8"),
                "quantization": {
                    "toolchain": f"MNN {self.version()} offline quantization (quantized.out)",
                    "weights": "int8 per-channel symmetric (MAX_ABS, 8-bit)",
                    "activations": "int8 per-tensor (EMA of min/max)",
                    "calibration": "EMA",
                    "calibration_images": len(calib),
                    "target": target,
                    "saturation_safe": True,
                    "needs": EXACT_INT8,
                },
            }
            return _place(made, out_dir / made.name, meta)

    def check_file(self, path: Path) -> str | None:
        return _check_flatbuffer(Path(path))

    def open(self, source, *, device="cpu", threads=None, precision="fp32", batch_size=None, mode=None, **options):
        if device != "cpu":
            raise ValueError("the mnn backend runs on the CPU here")
        if isinstance(source, nn.Module):
            if precision not in ("fp32", "fp16"):
                raise Unsupported(f"MNN {precision} runs a quantized .mnn: `mobilezoo quantize --toolchain mnn`")
            with tempfile.TemporaryDirectory(prefix="mobilezoo-mnn-") as tmp:
                made = _convert(source, Path(tmp), precision, None, options.get("input_size"))
                return _session(made, "", precision, threads)
        precision = read_metadata(source).get("precision", precision)
        return _session(Path(source), Path(source).name, precision, threads)


def _session(path: Path, artifact: str, precision: str, threads: int | None) -> Session:
    """A Module-API session on ``path`` (read into memory: the file may go away after this returns)."""
    mnn_nn, expr = _mnn()
    config = {"backend": "CPU", "numThread": threads or torch.get_num_threads()}
    config["precision"] = "low" if precision == "fp16" else "high"  # high: fp32 arithmetic, never fp16/bf16
    with quiet():
        runtime = mnn_nn.create_runtime_manager((config,))
        try:
            module = mnn_nn.load_module_from_file(str(path), [], [], runtime_manager=runtime)
        except Exception:  # MNN's verifier rejects a broken file; its error says little
            module = None
    if module is None:
        raise ArtifactError(f"{path}: MNN could not load it (not an .mnn model, or a truncated one)")

    def prepare(x: torch.Tensor) -> tuple[np.ndarray, Any]:
        arr = np.ascontiguousarray(x.detach().cpu().float().numpy())
        return arr, expr.const(arr, list(arr.shape), expr.NCHW)  # the var reads arr's memory: keep both

    def run(native: tuple[np.ndarray, Any]) -> np.ndarray:
        out = module.forward(native[1])
        return np.array(out.read(), dtype=np.float32, copy=True)  # read() computes; copy before out is freed

    return Session("mnn", precision, "cpu", run, prepare, to_torch, artifact=artifact, keep=[runtime, module])


BACKEND = MnnBackend()
