"""ExecuTorch (PyTorch's on-device runtime, Android and iOS) with the XNNPACK delegate, on the CPU: a ``.pte``
program written from ``torch.export`` of the BatchNorm-folded model, every op lowered to XNNPACK
(``to_edge_transform_and_lower`` with the ``XnnpackPartitioner``), metadata in the sidecar (a ``.pte`` has no place
for it). fp32 programs, and int8: PT2E with the ``XNNPACKQuantizer`` (symmetric int8 weights per output channel,
int8 activations per tensor, histogram ranges), calibrated on real images. No fp16 (:data:`NO_FP16`): ExecuTorch
1.5.1's fp16 programs crash this process on x86 for ShuffleNetV2 and GhostNet, so they could not be checked before
they ship, and its XNNPACK serializer keeps convolution weights in fp32 anyway (``op_conv2d``: ``force_fp32``).

A program has the static input shape it was exported with (batch 1 for a file; a model opened in memory is exported for
``batch_size``): another batch size runs as consecutive calls of that shape. Threads: XNNPACK's thread pool is one per
process and a loaded program keeps the one it was loaded with, so a session that needs another thread count releases
every live program, resizes the pool and loads them again (:class:`_Program`; sessions alternating between thread counts
pay a reload each time, sessions used from several threads at once are not supported). XNNPACK's int8 kernels widen to
16 bits before they multiply, so an int8 program gives the same answer on every x86 CPU, VNNI or not (no saturating pair
sums; ``target`` is recorded, the weights are 8-bit either way; verified under emulation for LiteRT's XNNPACK build, not
for this one: ExecuTorch's runtime imports torch, which is too slow to run under qemu)."""

from __future__ import annotations

import gc
import struct
import weakref
from pathlib import Path
from typing import ClassVar

import torch
from torch import nn

from .artifact import artifact_metadata, read_metadata, write_atomic, write_sidecar
from .base import Backend, Session, Unsupported, example_input, export_size, quiet, to_torch

__all__ = ["BACKEND", "ExecuTorchBackend"]

NO_FP16 = (
    "ExecuTorch 1.5.1 fp16 is not offered: its fp16 XNNPACK programs crash (SIGSEGV) on x86 for ShuffleNetV2 and "
    "GhostNet, so they cannot be checked here, and they keep convolution weights in fp32 (no smaller file)"
)
EXACT_INT8 = "any x86 or ARM CPU (XNNPACK's int8 kernels widen to 16 bits before multiplying: no saturating pair sums)"


def _lower(net: nn.Module, x: torch.Tensor) -> bytes:
    """``net`` (eval; float, half or a converted PT2E graph) as an ExecuTorch program for inputs shaped like ``x``,
    every supported op delegated to XNNPACK."""
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    with torch.no_grad():
        ep = torch.export.export(net, (x,))
    return to_edge_transform_and_lower(ep, partitioner=[XnnpackPartitioner()]).to_executorch().buffer


def _write(path: Path, program: bytes, meta: dict) -> Path:
    """The program and its sidecar, each written atomically (the sidecar first: the ``.pte`` names the artifact)."""
    write_sidecar(path, meta)
    return write_atomic(path, program)


def _program(model: nn.Module, precision: str, size: int, batch: int = 1) -> bytes:
    from ..models.rewrite import deploy_form

    if precision == "fp16":
        raise ValueError(NO_FP16)
    if precision != "fp32":
        raise ValueError(f"ExecuTorch export writes fp32; int8 comes from `mobilezoo quantize`, not {precision}")
    net = deploy_form(model).eval()
    x = example_input(net, size, batch)
    with quiet():
        return _lower(net, x)


class ExecuTorchBackend(Backend):
    name = "executorch"
    package = "executorch"
    precisions = ("fp32", "int8")
    format = "executorch"
    suffix = ".pte"
    modes: ClassVar[dict[str, str]] = {"executorch": "-"}
    tiers: ClassVar[dict[str, str]] = {"executorch": "full"}
    install_hint = "pip install 'mobilezoo[mobile]'"
    auto_rank = 3
    quantizer = "PT2E with ExecuTorch's XNNPACKQuantizer (int8 weights per channel, int8 activations per tensor)"

    def unsupported(self, precision: str, device: str) -> str | None:
        if precision == "fp16" and self.available() is None:
            return NO_FP16
        return super().unsupported(precision, device)

    def export(self, model, out_dir, *, precision="fp32", class_names=None, input_size=None) -> Path:
        program = _program(model, precision, export_size(model, input_size))
        path = Path(out_dir) / f"{getattr(model, 'model_name', type(model).__name__)}{self.suffix}"
        return _write(path, program, artifact_metadata(model, class_names, precision))

    def quantize(self, model, calib, out_dir, *, target="portable", class_names=None) -> Path:
        from ..models.rewrite import deploy_form
        from ._pt2e import pt2e_quantize

        with quiet():
            from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
                XNNPACKQuantizer,
                get_symmetric_quantization_config,
            )

            quantizer = XNNPACKQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True))
            gm = pt2e_quantize(deploy_form(model).eval(), calib, quantizer)
            program = _lower(gm, calib[:1].float())
        meta = {
            **artifact_metadata(model, class_names, "int8"),
            "quantization": {
                "toolchain": f"executorch {self.version()} PT2E, XNNPACKQuantizer",
                "weights": "int8 per-channel symmetric",
                "activations": "int8 per-tensor",
                "calibration": "histogram",
                "calibration_images": len(calib),
                "target": target,
                "saturation_safe": True,
                "needs": EXACT_INT8,
            },
        }
        name = getattr(model, "model_name", type(model).__name__)
        return _write(Path(out_dir) / f"{name}.int8{self.suffix}", program, meta)

    def check_file(self, path: Path) -> str | None:
        with open(path, "rb") as f:
            head = f.read(40)
        if head[4:6] != b"ET":
            return "not an ExecuTorch program (.pte: no ET flatbuffer identifier)"
        if head[8:12] == b"eh00" and len(head) >= 36:  # the extended header: program and weight segment sizes
            program, base, segments = struct.unpack_from("<QQQ", head, 16)
            want, size = max(program, base + segments if segments else 0), path.stat().st_size
            if size < want:
                return f"truncated ExecuTorch program ({size} of {want} bytes)"
        return None

    def open(self, source, *, device="cpu", threads=None, precision="fp32", batch_size=None, mode=None, **options):
        if device != "cpu":
            raise ValueError("the executorch backend runs on the CPU here (XNNPACK)")
        if isinstance(source, nn.Module):
            if precision != "fp32":
                raise Unsupported(
                    NO_FP16
                    if precision == "fp16"
                    else f"ExecuTorch {precision} runs a quantized .pte: `mobilezoo quantize --toolchain executorch`"
                )
            data: bytes | str = _program(
                source, precision, export_size(source, options.get("input_size")), batch_size or 1
            )
            artifact = ""
        else:
            data, artifact = str(source), Path(source).name
            precision = read_metadata(source).get("precision", precision)
        return _session(data, artifact, precision, threads)


class _Program:
    """A loaded program that can be loaded again. XNNPACK's thread pool is one per process, and a loaded program keeps
    a pointer to the pool it was loaded with: resizing the pool (``_unsafe_reset_threadpool``) under a loaded program
    crashes it (SIGSEGV, abort, or a hang on its next call). :func:`_use_threads` therefore releases every live
    program, resizes the pool, and loads them again."""

    def __init__(self, data: bytes | str) -> None:
        self.data = data
        self.program = self.method = None
        self.load()
        _LIVE.add(self)

    def load(self) -> None:
        with quiet():  # the runtime's cpuinfo chatter on first use
            from executorch.runtime import Runtime

            self.program = Runtime.get().load_program(self.data)
            self.method = self.program.load_method("forward")

    def release(self) -> None:
        self.program = self.method = None


_LIVE: weakref.WeakSet[_Program] = weakref.WeakSet()


def _use_threads(n: int) -> None:
    """Size the process's XNNPACK thread pool to ``n`` threads, every live program released first and loaded after."""
    from executorch.extension.pybindings import portable_lib

    if portable_lib._threadpool_get_thread_count() == n:
        return
    live = list(_LIVE)
    for prog in live:
        prog.release()
    gc.collect()
    with quiet():  # "Resetting threadpool to N threads"
        portable_lib._unsafe_reset_threadpool(n)
    for prog in live:
        prog.load()


def _session(data: bytes | str, artifact: str, precision: str, threads: int | None) -> Session:
    want = threads or torch.get_num_threads()
    with quiet():
        _use_threads(want)  # before this program is loaded: it keeps the pool it is loaded with
    prog = _Program(data)
    meta = prog.program.metadata("forward").input_tensor_meta(0)
    shape = tuple(meta.sizes())
    dtype = torch.float16 if meta.dtype() == 5 else torch.float32  # ScalarType 5: Half
    batch = shape[0]

    def prepare(x: torch.Tensor) -> tuple[list[torch.Tensor], int]:
        x = x.detach().cpu().to(dtype).contiguous()
        n = x.shape[0]
        if x.shape[1:] != shape[1:]:
            raise ValueError(f"this ExecuTorch program takes {tuple(shape[1:])} inputs, not {tuple(x.shape[1:])}")
        if n % batch:  # pad the last call to the program's batch
            x = torch.cat([x, x.new_zeros(batch - n % batch, *shape[1:])])
        return [c.contiguous() for c in x.split(batch)], n

    def run(native: tuple[list[torch.Tensor], int]) -> torch.Tensor:
        _use_threads(want)  # another session with another thread count may have resized the pool
        chunks, n = native
        outs = [prog.method.execute([c])[0] for c in chunks]
        return (outs[0] if len(outs) == 1 else torch.cat(outs))[:n]

    note = f"threads {want}, program input {list(shape)}"
    return Session("executorch", precision, "cpu", run, prepare, to_torch, artifact=artifact, note=note, keep=[prog])


BACKEND = ExecuTorchBackend()
