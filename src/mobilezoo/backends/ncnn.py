"""ncnn (Tencent's mobile engine) on the CPU: ``.ncnn.param`` + ``.ncnn.bin`` written by pnnx from the traced
PyTorch model, metadata in the sidecar. ncnn runs one image at a time (CHW): a batch is looped."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from .artifact import artifact_metadata, write_sidecar
from .base import Backend, Session, example_input, export_size, quiet, verbose

__all__ = ["BACKEND", "NcnnBackend"]


class NcnnBackend(Backend):
    name = "ncnn"
    package = "ncnn"
    extra_packages = ("pnnx",)
    precisions = ("fp32", "fp16")
    format = "ncnn"
    suffix = ".ncnn.param"
    modes: ClassVar[dict[str, str]] = {"ncnn": "-"}
    tiers: ClassVar[dict[str, str]] = {"ncnn": "full"}
    auto_rank = 2

    def unsupported(self, precision: str, device: str) -> str | None:
        if precision in ("bf16", "int8") and self.available() is None:
            return f"ncnn {precision} needs its own calibration tools (not wired here)"
        return super().unsupported(precision, device)

    def export(self, model, out_dir, *, precision="fp32", class_names=None, input_size=None) -> Path:
        """Trace the BN-folded model and convert it with pnnx's own converter binary, run as a child process in a
        session of its own (its output captured; shown only with ``MOBILEZOO_VERBOSE=1``; a failure is one line)."""
        import pnnx

        from ..models.rewrite import deploy_form

        if precision not in ("fp32", "fp16"):
            raise ValueError(f"ncnn export writes fp32 or fp16, not {precision}")
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        name = getattr(model, "model_name", type(model).__name__)
        net = deploy_form(model).eval()
        x = example_input(net, export_size(model, input_size))
        with tempfile.TemporaryDirectory(prefix="mobilezoo-pnnx-") as tmp:
            pt = Path(tmp) / f"{name}.pt"
            with torch.no_grad(), quiet():
                torch.jit.trace(net, x).save(str(pt))
            shape = "[" + ",".join(str(d) for d in x.shape) + "]f32"
            cmd = [pnnx.EXEC_PATH, str(pt), f"inputshape={shape}", "device=cpu", "optlevel=2"]
            cmd += [] if precision == "fp16" else ["fp16=0"]
            res = subprocess.run(cmd, cwd=tmp, capture_output=True, text=True, start_new_session=True)
            if verbose():
                print(res.stdout + res.stderr, file=sys.stderr)
            made = [Path(tmp) / f"{name}{suffix}" for suffix in (".ncnn.param", ".ncnn.bin")]
            if res.returncode != 0 or not all(p.is_file() for p in made):
                last = (res.stderr or res.stdout).strip().splitlines()[-1:] or [""]
                raise RuntimeError(f"pnnx could not convert {name} to ncnn (exit {res.returncode}): {last[0][:200]}")
            for p in made:
                shutil.move(str(p), out_dir / p.name)
        path = out_dir / f"{name}{self.suffix}"
        write_sidecar(path, artifact_metadata(model, class_names, precision))
        return path

    def open(self, source, *, device="cpu", threads=None, precision="fp32", batch_size=None, mode=None, **_: Any):
        import ncnn

        if isinstance(source, nn.Module):
            with tempfile.TemporaryDirectory(prefix="mobilezoo-ncnn-") as tmp:
                return self._open(self.export(source, tmp, precision=precision), ncnn, device, threads, precision, "")
        return self._open(Path(source), ncnn, device, threads, precision, Path(source).name)

    def _open(self, param: Path, ncnn, device: str, threads: int | None, precision: str, artifact: str) -> Session:
        net = ncnn.Net()
        fp16 = precision == "fp16"
        net.opt.use_fp16_packed = net.opt.use_fp16_storage = net.opt.use_fp16_arithmetic = fp16
        net.opt.use_vulkan_compute = device == "vulkan"
        net.opt.num_threads = threads or torch.get_num_threads()
        weights = param.with_name(param.name.removesuffix(".param") + ".bin")
        if net.load_param(str(param)) != 0 or net.load_model(str(weights)) != 0:
            raise ValueError(f"ncnn could not load {param} / {weights}")

        def prepare(x: torch.Tensor) -> list:
            arrs = [np.ascontiguousarray(a) for a in x.detach().cpu().float().numpy()]
            return [(a, ncnn.Mat(a)) for a in arrs]  # keep each array alive beside the Mat that views it

        def run(mats: list) -> list:
            outs = []
            for _a, m in mats:
                ex = net.create_extractor()
                ex.input("in0", m)
                ret, out = ex.extract("out0")
                if ret != 0:
                    raise RuntimeError(f"ncnn extract failed ({ret})")
                outs.append(out)
            return outs

        def to_torch(outs: list) -> torch.Tensor:
            return torch.from_numpy(np.stack([np.array(o).reshape(-1) for o in outs]).astype(np.float32))

        return Session(self.name, precision, "cpu", run, prepare, to_torch, artifact=artifact, keep=[net])


BACKEND = NcnnBackend()
