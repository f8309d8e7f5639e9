"""What a result was measured on: CPU/GPU, cores, ISA features, memory, load, library versions; and the machine's
roofline (peak compute and memory bandwidth, measured, not looked up)."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import time
from dataclasses import asdict, dataclass
from functools import lru_cache
from typing import Any

__all__ = [
    "Peaks",
    "check_threads",
    "cpu_model",
    "int8_dot_saturates",
    "machine_info",
    "machine_key",
    "measure_peaks",
    "microarchitecture",
    "usable_cores",
    "versions",
]

_PACKAGES = (
    "mobilezoo",
    "torch",
    "torchvision",
    "numpy",
    "onnx",
    "onnxruntime",
    "openvino",
    "ncnn",
    "pnnx",
    "executorch",
    "ai_edge_litert",
    "litert_torch",
    "MNN",
    "coremltools",
    "timm",
)
_FEATURES = (
    "avx2",
    "avx512f",
    "avx512_vnni",
    "avx512_bf16",
    "avx512_fp16",
    "amx_tile",
    "amx_bf16",
    "amx_int8",
    "avx_vnni",
    "asimd",
    "sve",
)


def usable_cores() -> int:
    """The CPU cores this process may run on: its affinity mask (taskset, cgroups' cpusets), else every core."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def check_threads(threads: int | None) -> None:
    """Refuse a thread count below 1 or above :func:`usable_cores` (more threads than cores only queue up, and a
    result labelled with them would be mislabelled)."""
    if threads is None:
        return
    if threads < 1:
        raise ValueError(f"threads must be at least 1, not {threads}")
    n = usable_cores()
    if threads > n:
        raise ValueError(f"{threads} threads: this process may use only {n} CPU cores; use at most {n}")


def versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {"python": platform.python_version()}
    for p in _PACKAGES:
        try:
            out[p] = importlib.metadata.version(p)
        except importlib.metadata.PackageNotFoundError:
            out[p] = None
    return out


def _cpuinfo() -> dict[str, str]:
    info: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if ":" in line:
                    k, v = (s.strip() for s in line.split(":", 1))
                    info.setdefault(k, v)
    except OSError:
        pass
    return info


@lru_cache(maxsize=1)
def cpu_model() -> str:
    info = _cpuinfo()
    name = info.get("model name") or platform.processor() or platform.machine()
    return " ".join(name.split())


def machine_key() -> str:
    """A short identity of this CPU (model name, family/model, ISA features, cores): caches keyed by it."""
    info = _cpuinfo()
    fm = f"{info.get('cpu family', '?')}/{info.get('model', '?')}/{info.get('stepping', '?')}"
    return f"{cpu_model()} [{fm}] {'+'.join(cpu_features())} x{os.cpu_count()}"


def cpu_features() -> list[str]:
    flags = set((_cpuinfo().get("flags") or _cpuinfo().get("Features") or "").split())
    return [f for f in _FEATURES if f in flags]


def int8_dot_saturates() -> bool:
    """True on an x86 CPU whose int8 kernels multiply uint8 activations by int8 weights with AVX2/AVX-512BW's
    ``vpmaddubsw``, which adds two products into a *saturating* int16: without VNNI (AVX512-VNNI, AVX-VNNI) or AMX,
    two products of 8-bit weights can exceed 32767 and are clamped. ARM's dot-product and widening instructions, and
    x86 with VNNI/AMX, accumulate in int32 exactly."""
    if platform.machine().lower() not in ("x86_64", "amd64", "i386", "i686"):
        return False
    return not {"avx512_vnni", "avx_vnni", "amx_int8"} & set(cpu_features())


def _mem_total_gb() -> float | None:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return round(int(line.split()[1]) / 1024**2, 1)
    except OSError:
        pass
    return None


def gpu_info() -> dict[str, Any] | None:
    import torch

    if not torch.cuda.is_available():
        return None
    p = torch.cuda.get_device_properties(0)
    return {
        "name": p.name,
        "memory_gb": round(p.total_memory / 1024**3, 1),
        "sm_count": p.multi_processor_count,
        "capability": f"{p.major}.{p.minor}",
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version(),
    }


_INTEL_MODELS = {  # family 6 model -> server microarchitecture (the VM's model name is often generic)
    85: "Skylake-SP / Cascade Lake",
    106: "Ice Lake-SP",
    143: "Sapphire Rapids",
    207: "Emerald Rapids",
    173: "Granite Rapids",
}


def microarchitecture() -> str | None:
    info = _cpuinfo()
    if info.get("vendor_id") == "GenuineIntel" and info.get("cpu family") == "6":
        return _INTEL_MODELS.get(int(info.get("model", "0")))
    return None


def machine_info() -> dict[str, Any]:
    """Everything a reader needs to know what produced a number."""
    info = _cpuinfo()
    allowed = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    try:
        load = [round(x, 2) for x in os.getloadavg()]
    except (OSError, AttributeError):
        load = None
    return {
        "hostname": platform.node(),
        "os": f"{platform.system()} {platform.release()}",
        "cpu_model": cpu_model(),
        "cpu_family_model": f"{info.get('cpu family', '?')}/{info.get('model', '?')}",
        "microarchitecture": microarchitecture(),
        "logical_cpus": os.cpu_count(),
        "allowed_cpus": allowed,
        "cpu_features": cpu_features(),
        "int8_exact": not int8_dot_saturates(),  # VNNI/AMX (or not x86): 8-bit int8 weights do not saturate
        "hypervisor": "hypervisor" in (info.get("flags") or "").split(),
        "memory_gb": _mem_total_gb(),
        "load_average": load,
        "gpu": gpu_info(),
        "versions": versions(),
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


@dataclass(frozen=True)
class Peaks:
    """Measured ceilings for a roofline: FLOP/s of a large fp32 matmul and bytes/s of large and cache-sized copies."""

    device: str
    threads: int
    peak_gflops: float
    dram_gbps: float
    cache_gbps: float
    cache_bytes: int
    llc_gbps: float = 0.0
    llc_bytes: int = 0

    def bandwidth(self, nbytes: int) -> float:
        """Bytes/s for a working set of ``nbytes`` (the smallest measured level it fits in, else DRAM)."""
        if nbytes <= self.cache_bytes:
            return self.cache_gbps * 1e9
        if nbytes <= self.llc_bytes and self.llc_gbps:
            return self.llc_gbps * 1e9
        return self.dram_gbps * 1e9

    def roofline_s(self, flops: float, nbytes: int) -> float:
        """Lower bound on time: compute at peak, or moving the bytes at the bandwidth, whichever is longer."""
        return max(flops / (self.peak_gflops * 1e9), nbytes / self.bandwidth(nbytes))

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _best_time(fn, sync, reps: int) -> float:
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        sync()
        best = min(best, time.perf_counter() - t)
    return best


@lru_cache(maxsize=8)
def measure_peaks(threads: int = 1, device: str = "cpu", dtype: str = "fp32") -> Peaks:
    """Measure the roofline ceilings in about a second (best of a few: ceilings, not typical values)."""
    import torch

    from .harness import idlest_cores, pinned

    dt = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[dtype]
    cuda = device.startswith("cuda")
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    ctx = pinned(threads, idlest_cores(threads)) if not cuda else pinned(None)
    with ctx, torch.inference_mode():
        gflops = 0.0
        for n in (4096, 8192) if cuda else (768, 1024, 1536):  # best of sizes and repeats: a ceiling
            a = torch.randn(n, n, device=device, dtype=dt)
            b = torch.randn(n, n, device=device, dtype=dt)
            torch.mm(a, b)
            sync()
            t = _best_time(lambda a=a, b=b: torch.mm(a, b), sync, 6)
            gflops = max(gflops, 2 * n**3 / t / 1e9)

        def copy_gbps(nbytes: int, reps: int) -> float:
            src = torch.empty(nbytes // 8, device=device)  # read nbytes/2 + write nbytes/2
            dst = torch.empty_like(src)
            dst.copy_(src)
            t = _best_time(lambda: [dst.copy_(src) for _ in range(reps)], sync, 5) / reps
            return 2 * src.numel() * 4 / t / 1e9

        cache_bytes = (40 if cuda else 1) * 2**20  # H100 L2 50 MiB; a server core's L2 >= 1 MiB
        llc_bytes = 0 if cuda else 16 * 2**20
        cache = copy_gbps(cache_bytes, 20)
        llc = copy_gbps(llc_bytes, 4) if llc_bytes else 0.0
        dram = copy_gbps(1024 * 2**20, 1)  # 1 GiB moved: beyond any last-level cache
    return Peaks(
        device, threads, round(gflops, 1), round(dram, 1), round(cache, 1), cache_bytes, round(llc, 1), llc_bytes
    )
