"""PyTorch itself: the zoo model with BatchNorm folded, run eagerly (``torch``), compiled with Inductor and freezing
(``torch-compile``), or replayed as a CUDA graph (``torch-cudagraph``, CUDA only). fp32/fp16/bf16, channels_last
on request. It runs models, not files: its portable format is the ``torchscript`` engine's."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

import torch
from torch import nn

from .base import Backend, Session, Unsupported, example_input, quiet, to_torch

__all__ = ["BACKEND", "TorchBackend"]

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


class TorchBackend(Backend):
    name = "torch"
    package = None
    precisions = ("fp32", "fp16", "bf16")
    devices = ("cpu", "cuda")
    modes: ClassVar[dict[str, str]] = {"torch": "eager", "torch-compile": "compile", "torch-cudagraph": "cudagraph"}
    tiers: ClassVar[dict[str, str]] = {"torch": "quick", "torch-compile": "gpu", "torch-cudagraph": "gpu"}
    auto_rank = 9

    def unsupported(self, precision: str, device: str, mode: str = "eager") -> str | None:
        if precision == "int8":
            return "int8 runs through onnxruntime/openvino (a quantized artifact), not torch"
        if mode == "cudagraph" and not device.startswith("cuda"):
            return "CUDA graphs need --device cuda"
        return super().unsupported(precision, device)

    def open(self, source, *, device="cpu", threads=None, precision="fp32", batch_size=None, mode=None, **options):
        """``options``: ``channels_last`` (bool), ``input_size`` (the example input's side, for compile/cudagraph),
        ``compile_mode`` (torch.compile's mode)."""
        from ..models.rewrite import deploy_form

        if not isinstance(source, nn.Module):
            raise Unsupported("the torch engine runs a model; a TorchScript file runs on the torchscript engine")
        mode = mode or "eager"
        if precision not in DTYPES:
            raise ValueError(f"torch backend supports fp32/fp16/bf16, not {precision!r}")
        dtype = DTYPES[precision]
        mf = torch.channels_last if options.get("channels_last") else torch.contiguous_format
        net = deploy_form(source).to(device=device, dtype=dtype).to(memory_format=mf).eval()
        sync = torch.cuda.synchronize if device.startswith("cuda") else None

        def prepare(x: torch.Tensor) -> torch.Tensor:
            return x.to(device=device, dtype=dtype).contiguous(memory_format=mf)

        example = prepare(example_input(net, int(options.get("input_size") or 224), batch_size or 1))
        if mode == "cudagraph":
            return _cudagraph(net, example, prepare, precision, device, sync)
        fn, note = net, ""
        if mode == "compile":
            fn, note = _compiled(net, example, options.get("compile_mode"), device)
        elif mode != "eager":
            raise ValueError(f"unknown torch mode {mode!r}; choose from {', '.join(self.modes.values())}")

        def run(x: torch.Tensor) -> torch.Tensor:
            with torch.inference_mode():
                return fn(x)

        return Session(self.name, precision, device, run, prepare, to_torch, mode, sync, note=note, keep=[fn])


def _compiled(net: nn.Module, example: torch.Tensor, compile_mode: str | None, device: str) -> tuple[Callable, str]:
    import torch._inductor.config as inductor_config

    inductor_config.freezing = True  # constant-fold weights (BN already folded) into the graph
    cmode = compile_mode or ("reduce-overhead" if device.startswith("cuda") else None)  # CUDA graphs
    fn = torch.compile(net, mode=cmode, dynamic=False, fullgraph=True)
    with torch.no_grad(), quiet():
        fn(example)
    return fn, f"torch.compile mode={cmode or 'default'}, freezing"


def _cudagraph(net, example, prepare, precision: str, device: str, sync) -> Session:
    static_in = example.clone()
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.no_grad(), torch.cuda.stream(s):
        for _ in range(3):
            net(static_in)
    torch.cuda.current_stream().wait_stream(s)
    graph = torch.cuda.CUDAGraph()
    with torch.no_grad(), torch.cuda.graph(graph):
        static_out = net(static_in)

    def prepare_static(x: torch.Tensor) -> torch.Tensor:
        static_in.copy_(prepare(x))
        return static_in

    def replay(_x: Any) -> torch.Tensor:
        graph.replay()
        return static_out

    return Session("torch", precision, device, replay, prepare_static, to_torch, "cudagraph", sync, keep=[graph, net])


BACKEND = TorchBackend()
