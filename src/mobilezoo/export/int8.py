"""What an int8 artifact needs of the CPU that runs it, read from the artifact's own weights.

x86 CPUs without VNNI (AVX2, AVX-512 before Cascade Lake, AMD before Zen 4) multiply uint8 activations by int8
weights with ``vpmaddubsw``, which adds two adjacent products into a *saturating* int16. With 8-bit weights a pair
reaches 255 x (127 + 127) = 64770 and is clamped to 32767: the answer is silently wrong. With weights in
[-64, 64] ("7-bit", :data:`SAFE_MAX`) a pair is at most 255 x 128 = 32640, which fits: such an artifact is exact on
every CPU. VNNI/AMX (and ARM) accumulate in int32 and run either kind exactly.

:func:`int8_build_record` is what quantization writes into the artifact's metadata; :func:`check_int8_runs_here`
is what the runtime calls before it opens an int8 artifact. Both read the weights themselves, so an artifact made by
another tool or an older mobilezoo is judged by what it holds, not by what its metadata says.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["SAFE_MAX", "Int8SaturationError", "check_int8_runs_here", "int8_build_record", "int8_weight_max"]

SAFE_MAX = 64
"""Largest |int8 weight| for which no pair of uint8 x int8 products overflows int16 (255 x 2 x 64 = 32640)."""

ALLOW_ENV = "MOBILEZOO_INT8_ALLOW_SATURATION"


class Int8SaturationError(ValueError):
    """An int8 artifact whose 8-bit weights would saturate on this CPU's int8 instructions."""


def _onnx_int8_max(proto) -> int | None:
    from onnx import TensorProto, numpy_helper

    values = [numpy_helper.to_array(t) for t in proto.graph.initializer if t.data_type == TensorProto.INT8]
    values = [v for v in values if v.size > 1 or v.ndim > 0]  # zero points are 0: harmless either way
    return max((int(np.abs(v.astype(np.int16)).max()) for v in values if v.size), default=None)


def _openvino_int8_max(model) -> int | None:
    """Depthwise weights (``[G, 1, 1, kh, kw]``) are left out: OpenVINO's depthwise int8 kernels widen to int32
    (which is why NNCF's overflow fix leaves them at 8 bits)."""
    best = None
    for op in model.get_ops():
        if op.get_type_name() != "Constant" or op.get_element_type().get_type_name() != "i8":
            continue
        data = np.asarray(op.get_data())
        depthwise = data.ndim == 5 and data.shape[1] == data.shape[2] == 1
        if data.size > 1 and not depthwise:
            m = int(np.abs(data.astype(np.int16)).max())
            best = m if best is None else max(best, m)
    return best


def int8_weight_max(artifact: Any) -> int | None:
    """The largest |int8 weight| in an ONNX file/ModelProto or an OpenVINO ``.xml``/``ov.Model``; ``None`` if it
    holds no int8 weights (OpenVINO IR whose weights are still float FakeQuantize inputs: judged by metadata)."""
    if isinstance(artifact, (str, Path)):
        path = Path(artifact)
        if path.suffix == ".onnx":
            import onnx

            return _onnx_int8_max(onnx.load(str(path)))
        if path.suffix == ".xml":
            from ..backends.openvino import core

            return _openvino_int8_max(core().read_model(str(path)))
        return None
    if hasattr(artifact, "graph") and hasattr(artifact.graph, "initializer"):
        return _onnx_int8_max(artifact)
    if hasattr(artifact, "get_ops"):
        return _openvino_int8_max(artifact)
    raise TypeError(f"not an ONNX or OpenVINO model: {type(artifact).__name__}")


def int8_build_record(artifact: Any, target: str) -> dict[str, Any]:
    """The metadata quantization stores: the target asked for and what the weights actually span."""
    wmax = int8_weight_max(artifact)
    return {
        "target": target,
        "weight_max_abs": wmax,
        "saturation_safe": wmax is not None and wmax <= SAFE_MAX,
        "needs": "any x86 or ARM CPU" if wmax is not None and wmax <= SAFE_MAX else "VNNI/AMX on x86, or ARM",
    }


def check_int8_runs_here(path: str | Path, meta: dict[str, Any] | None = None) -> None:
    """Raise :class:`Int8SaturationError` (one line) if ``path``, an int8 artifact, would saturate on this CPU.

    Judged by its weights (metadata only where the weights are not stored as int8);
    ``MOBILEZOO_INT8_ALLOW_SATURATION=1`` turns the refusal into nothing (for measuring the damage)."""
    from ..measure.machine import cpu_model, int8_dot_saturates

    if not int8_dot_saturates() or os.environ.get(ALLOW_ENV) == "1":
        return
    wmax = int8_weight_max(path)
    if wmax is None:
        wmax = ((meta or {}).get("quantization") or {}).get("weight_max_abs")
    if wmax is None or wmax <= SAFE_MAX:
        return
    raise Int8SaturationError(
        f"{path}: int8 weights up to |{wmax}| saturate on this CPU ({cpu_model()}: no VNNI/AMX), giving wrong "
        f"answers; re-quantize with --target portable (7-bit weights), or set {ALLOW_ENV}=1 to run it anyway"
    )
