"""Exporters: ONNX, TorchScript, OpenVINO IR and ncnn, each checked against PyTorch on real images."""

from .formats import FORMATS, ExportCheck, check_export, export, read_sidecar
from .onnx import artifact_metadata, export_onnx, read_onnx_metadata

__all__ = [
    "FORMATS",
    "ExportCheck",
    "artifact_metadata",
    "check_export",
    "export",
    "export_onnx",
    "read_onnx_metadata",
    "read_sidecar",
]
