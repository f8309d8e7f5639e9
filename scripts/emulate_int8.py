"""Run an ONNX Runtime, OpenVINO, MNN or LiteRT artifact on an emulated CPU without VNNI (``qemu-x86_64 -cpu
Haswell``: AVX2, FMA, no AVX-512, no VNNI): what an AVX2-only machine computes, on whatever machine this runs. The
engines pick their int8 kernels from CPUID, which qemu reports for the emulated CPU, and qemu executes ``vpmaddubsw``
with its int16 saturation, so an int8 artifact that overflows there gives the same wrong answer here (checked against
the known failure: tests/test_quant.py).

As a script (run under qemu by :func:`run_emulated`; numpy and the engine only, neither torch nor mobilezoo, which
would take minutes to import under emulation): ``emulate_int8.py ENGINE ARTIFACT X.npy OUT.npy``.
:func:`run_native` runs the same code directly. Needs Debian's ``qemu-user`` on an x86_64 host. A development tool
(tests/test_quant.py, benchmarks/quant/int8_targets.py), not part of the package: mobilezoo's own engine sessions are
:mod:`mobilezoo.backends`'.
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

CPU = "Haswell"
"""The emulated CPU: AVX2 and FMA, no AVX-512, no VNNI (the int8 instructions of Intel before Cascade Lake and
AMD before Zen 4)."""


def _litert(artifact: str, x: np.ndarray) -> np.ndarray:
    """A ``.tflite`` (float or full-integer: the input quantized, the output dequantized), one image per call."""
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_path=artifact, num_threads=1)
    it.allocate_tensors()
    inp, out = it.get_input_details()[0], it.get_output_details()[0]
    outs = []
    for a in x[:, None]:
        if np.dtype(inp["dtype"]).kind in "iu":
            (s, z), info = inp["quantization"], np.iinfo(inp["dtype"])
            a = np.clip(np.round(a / s) + z, info.min, info.max).astype(inp["dtype"])
        it.set_tensor(inp["index"], a)
        it.invoke()
        y = it.get_tensor(out["index"]).astype(np.float32)
        if np.dtype(out["dtype"]).kind in "iu":
            y = (y - out["quantization"][1]) * out["quantization"][0]
        outs.append(y)
    return np.concatenate(outs)


def _run(engine: str, artifact: str, x: np.ndarray) -> np.ndarray:
    if engine == "litert":  # as mobilezoo.backends.litert runs it
        return _litert(artifact, x)
    if engine == "onnxruntime":
        import onnxruntime as ort

        s = ort.InferenceSession(artifact, providers=["CPUExecutionProvider"])
        return s.run(None, {s.get_inputs()[0].name: x})[0]
    if engine == "mnn":  # MNN's Module API as mobilezoo.backends.mnn runs it (fp32 arithmetic outside int8 kernels)
        import MNN.expr as expr
        import MNN.nn as mnn_nn

        rt = mnn_nn.create_runtime_manager(({"backend": "CPU", "numThread": 1, "precision": "high"},))
        module = mnn_nn.load_module_from_file(artifact, [], [], runtime_manager=rt)
        out = module.forward(expr.const(x, list(x.shape), expr.NCHW))  # x stays alive: the const reads its memory
        return np.array(out.read(), dtype=np.float32, copy=True)
    import openvino as ov

    c = ov.Core().compile_model(artifact, "CPU", {"INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": 1})
    return np.asarray(c(x)[c.output(0)])


def run_native(engine: str, artifact: Path, x: np.ndarray) -> np.ndarray:
    return _run(engine, str(artifact), np.ascontiguousarray(x, dtype=np.float32))


def qemu() -> str:
    """The qemu user-mode emulator (Debian's ``qemu-user``, which ``scripts/test.sh`` installs)."""
    if platform.machine() not in ("x86_64", "AMD64"):
        raise RuntimeError("the int8 saturation hazard is x86's: emulation runs on x86_64 hosts")
    exe = shutil.which("qemu-x86_64")
    if exe is None:
        raise RuntimeError("qemu-x86_64 not found: install Debian's qemu-user (scripts/test.sh does)")
    return exe


def run_emulated(engine: str, artifact: Path, x: np.ndarray, workdir: Path, cpu: str = CPU) -> np.ndarray:
    """The logits an AVX2-only CPU computes: this script under ``qemu-x86_64 -cpu Haswell`` with the real python."""
    artifact, workdir = Path(artifact), Path(workdir)
    xin, out = workdir / f"{artifact.name}.x.npy", workdir / f"{artifact.name}.{cpu}.npy"
    np.save(xin, np.ascontiguousarray(x, dtype=np.float32))
    py = os.path.realpath(sys.executable)  # the interpreter itself, not a shim script
    cmd = [qemu(), "-cpu", cpu, py, __file__, engine, str(artifact), str(xin), str(out)]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=3600)
    if res.returncode != 0:
        raise RuntimeError(f"emulated run failed ({res.returncode}): {res.stderr[-2000:]}")
    try:
        return np.load(out)
    finally:
        xin.unlink(missing_ok=True)
        out.unlink(missing_ok=True)


if __name__ == "__main__":
    engine, artifact, x_path, out_path = sys.argv[1:5]
    np.save(out_path, _run(engine, artifact, np.load(x_path)))
