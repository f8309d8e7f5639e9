"""Exporters: ONNX today (OpenVINO, ncnn and TorchScript are the deployment capability's next steps)."""

from .onnx import export_onnx, read_onnx_metadata

__all__ = ["export_onnx", "read_onnx_metadata"]
