"""TorchScript: the scripted model as a file (``.torchscript.pt``, metadata in the sidecar), loaded with
``torch.jit.load``; or, for a model in memory, traced, frozen and optimized for inference (oneDNN fusions on the CPU:
the benchmark's ``torch-jit``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from .artifact import artifact_metadata, read_metadata, write_sidecar
from .base import Backend, Session, example_input, quiet, to_torch

__all__ = ["BACKEND", "TorchScriptBackend"]

_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


class TorchScriptBackend(Backend):
    name = "torchscript"
    package = None
    precisions = ("fp32", "fp16", "bf16")
    devices = ("cpu", "cuda")
    format = "torchscript"
    suffix = ".torchscript.pt"
    modes: ClassVar[dict[str, str]] = {"torch-jit": "jit"}
    tiers: ClassVar[dict[str, str]] = {"torch-jit": "full"}
    auto_rank = None  # the same kernels as eager torch: not an `auto` candidate

    def export(self, model, out_dir, *, precision="fp32", class_names=None, input_size=None) -> Path:
        from ..models.rewrite import deploy_form

        if precision not in ("fp32", "fp16"):
            raise ValueError(f"TorchScript export writes fp32 or fp16, not {precision}")
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        path = out_dir / f"{getattr(model, 'model_name', type(model).__name__)}{self.suffix}"
        net = deploy_form(model)
        torch.jit.save(torch.jit.script(net.half() if precision == "fp16" else net), str(path))
        write_sidecar(path, artifact_metadata(model, class_names, precision))
        return path

    def open(self, source, *, device="cpu", threads=None, precision="fp32", batch_size=None, mode=None, **options):
        from ..models.rewrite import deploy_form

        artifact = ""
        mf = torch.channels_last if options.get("channels_last") else torch.contiguous_format
        if isinstance(source, nn.Module):
            net = deploy_form(source).to(device=device, dtype=_DTYPES[precision]).to(memory_format=mf).eval()
            example = example_input(net, int(options.get("input_size") or 224), batch_size or 1)
            example = example.to(device=device, dtype=_DTYPES[precision]).contiguous(memory_format=mf)
            with torch.no_grad(), quiet():
                fn = torch.jit.optimize_for_inference(torch.jit.freeze(torch.jit.trace(net, example)))
                fn(example)
                fn(example)  # the profiling executor specialises on the first calls
        else:
            fn, artifact = torch.jit.load(str(source), map_location=device).eval(), Path(source).name
            precision = read_metadata(source).get("precision", precision)
        dtype = _DTYPES.get(precision, torch.float32)

        def prepare(x: torch.Tensor) -> torch.Tensor:
            return x.to(device=device, dtype=dtype).contiguous(memory_format=mf)

        def run(x: Any) -> torch.Tensor:
            with torch.inference_mode():
                return fn(x)

        sync = torch.cuda.synchronize if device.startswith("cuda") else None
        return Session(self.name, precision, device, run, prepare, to_torch, "jit", sync, artifact=artifact, keep=[fn])


BACKEND = TorchScriptBackend()
