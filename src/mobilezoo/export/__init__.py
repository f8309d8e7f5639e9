"""Exporters: each engine's own format (ONNX, TorchScript, OpenVINO IR, ncnn), each checked against PyTorch on real
images. The writers live with their engines (:mod:`mobilezoo.backends`); the artifact format (metadata, sidecars,
companion files) is :mod:`mobilezoo.backends.artifact`."""

from ..backends.artifact import artifact_metadata, read_metadata
from ..backends.onnxruntime import export_onnx
from .formats import FORMATS, ExportCheck, check_export, export

read_onnx_metadata = read_sidecar = read_metadata
"""The artifact's metadata, from inside an ONNX file or from the sidecar of any other format."""

__all__ = [
    "FORMATS",
    "ExportCheck",
    "artifact_metadata",
    "check_export",
    "export",
    "export_onnx",
    "read_metadata",
    "read_onnx_metadata",
    "read_sidecar",
]
