"""Where the time goes, layer by layer: each layer's measured time beside its MACs, the bytes it moves, its arithmetic
intensity, and the machine's roofline bound for it.

Time: forward pre/post hooks on every module of the eager network time each call (``perf_counter``, with a device
sync on CUDA); a module's *own* time is its time minus its children's, so functional work done inside a container
(residual adds, concatenation, channel shuffle, SE scaling) is charged to that container, exactly as the profiler
(:mod:`mobilezoo.profile.counter`) charges its MACs and bytes. Each layer's time is the median over ``iters`` passes.
Hooks cost a few microseconds per module; the un-hooked whole-network time is measured too and the difference is
reported, so the sum of the rows is not mistaken for the network's latency.

Roofline: ``max(FLOPs / peak FLOP/s, bytes / bandwidth)`` with the machine's *measured* ceilings
(:func:`~.machine.measure_peaks`): a layer far above its bound is limited by something else (launch/dispatch
overhead, layout changes, poor kernel) — the ShuffleNetV2 paper's point that MACs are not latency, made measurable.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ..measure.machine import Peaks, measure_peaks

__all__ = ["PerLayerResult", "layer_kind", "module_of", "per_layer"]


def layer_kind(m: nn.Module) -> str:
    """A readable operator kind: depthwise/pointwise/grouped/dense conv, BN, activation, linear, or the container."""
    if isinstance(m, nn.Conv2d):
        if m.groups > 1 and m.groups == m.in_channels:
            return f"conv dw {m.kernel_size[0]}x{m.kernel_size[1]}"
        if m.kernel_size == (1, 1):
            return "conv 1x1" + (f" g{m.groups}" if m.groups > 1 else "")
        return f"conv {m.kernel_size[0]}x{m.kernel_size[1]}" + (f" g{m.groups}" if m.groups > 1 else "")
    if isinstance(m, nn.BatchNorm2d):
        return "batchnorm"
    if isinstance(m, nn.Linear):
        return "linear"
    if isinstance(m, (nn.ReLU, nn.ReLU6, nn.Hardswish, nn.Hardsigmoid, nn.SiLU, nn.Sigmoid, nn.GELU)):
        return "activation"
    if type(m).__name__ in ("HardSigmoidPaddle", "Clip01", "HardSwishMul"):  # the zoo's own gates/activations
        return "activation"
    if isinstance(m, (nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d)):
        return "pool"
    return type(m).__name__ + " (own ops)"


@dataclass
class PerLayerResult:
    model: str
    device: str
    threads: int
    precision: str
    batch_size: int
    total_ms: float
    """Median whole-network latency without hooks."""
    hooked_ms: float
    """Median whole-network latency with the timing hooks (the rows add up to about this)."""
    peaks: dict[str, Any]
    rows: list[dict[str, Any]] = field(default_factory=list)
    engine: str = "PyTorch eager"
    """What ran: eager PyTorch (module hooks) or an engine's artifact (its own profiler)."""
    nodes: list[Any] = field(default_factory=list, repr=False)
    """The engine's executed nodes (:class:`mobilezoo.backends.base.NodeTime`); empty for eager."""

    def by_engine_op(self) -> list[dict[str, Any]]:
        """The engine's time per operator as it ran (after its fusions): where an artifact's time goes."""
        agg: dict[tuple[str, str], list[float]] = defaultdict(lambda: [0.0, 0])
        for n in self.nodes:
            a = agg[(n.op, n.kernel)]
            a[0] += statistics.median(n.times_ms) if n.times_ms else 0.0
            a[1] += 1
        t = sum(a[0] for a in agg.values()) or 1.0
        out = [
            {"op": op, "kernel": k, "nodes": int(a[1]), "time_ms": round(a[0], 4), "time_%": round(100 * a[0] / t, 1)}
            for (op, k), a in agg.items()
        ]
        return sorted(out, key=lambda r: -r["time_ms"])

    def by_kind(self) -> list[dict[str, Any]]:
        """Time share beside MACs share and bytes share, per operator kind."""
        agg: dict[str, dict[str, float]] = defaultdict(lambda: {"time_ms": 0.0, "macs": 0, "bytes": 0, "layers": 0})
        for r in self.rows:
            a = agg[r["kind"]]
            a["time_ms"] += r["time_ms"]
            a["macs"] += r["MACs"]
            a["bytes"] += r["bytes"]
            a["layers"] += 1
        t = sum(a["time_ms"] for a in agg.values()) or 1.0
        macs = sum(a["macs"] for a in agg.values()) or 1
        nbytes = sum(a["bytes"] for a in agg.values()) or 1
        out = [
            {
                "kind": k,
                "layers": int(a["layers"]),
                "time_ms": round(a["time_ms"], 4),
                "time_%": round(100 * a["time_ms"] / t, 1),
                "MACs_%": round(100 * a["macs"] / macs, 1),
                "bytes_%": round(100 * a["bytes"] / nbytes, 1),
            }
            for k, a in agg.items()
        ]
        return sorted(out, key=lambda r: -r["time_ms"])

    def summary(self) -> dict[str, Any]:
        roof = sum(r["roofline_ms"] for r in self.rows)
        probe, parts, how = ("profiler", "nodes", "profiled") if self.nodes else ("hooks", "layers", "hooked")
        return {
            "model": self.model,
            f"latency_ms (no {probe})": round(self.total_ms, 3),
            f"sum of {parts}_ms ({how})": round(sum(r["time_ms"] for r in self.rows), 3),
            f"{probe[:-1] if probe == 'hooks' else probe} overhead_ms": round(self.hooked_ms - self.total_ms, 3),
            "roofline_ms": round(roof, 3),
            "roofline / latency": round(roof / self.total_ms, 3) if self.total_ms else None,
            "MACs": sum(r["MACs"] for r in self.rows),
            "bytes moved": sum(r["bytes"] for r in self.rows),
        }


def _median_ms(xs: list[float]) -> float:
    return statistics.median(xs) * 1e3 if xs else 0.0


@torch.no_grad()
def per_layer(
    model: nn.Module | str,
    *,
    threads: int | None = 1,
    device: str = "cpu",
    precision: str = "fp32",
    batch_size: int = 1,
    input_size: int = 224,
    iters: int = 20,
    warmup: int = 3,
    fuse: bool = False,
    peaks: Peaks | None = None,
    weights: str | None = None,
    backend: str = "torch",
    calib: torch.Tensor | None = None,
) -> PerLayerResult:
    """Time every layer of ``model`` (a zoo name with ``weights``, :func:`mobilezoo.create_model`'s; or a module)
    and set it beside its costs: in eager PyTorch (``backend="torch"``, module hooks), or as the artifact that an
    engine runs (``onnxruntime``, ``openvino``: the engine's own export, timed by the engine's own profiler, each
    executed node charged to the module its name scopes; the graph is the deployed one, BatchNorm folded).
    ``precision="int8"`` on an engine profiles the int8 artifact that engine runs (:func:`mobilezoo.quant.quantize_ptq`:
    ONNX Runtime's QDQ, or NNCF's IR on OpenVINO) calibrated on ``calib`` (N x C x H x W; default: a fixed noise
    batch, as the bench grid's int8 rows: the kernels, hence the times, are the same, the ranges are not)."""
    from ..models.fuse import fuse_bn
    from ..profile import profile_model

    if backend != "torch":
        return _engine_per_layer(
            model, backend, threads, batch_size, input_size, iters, peaks, weights, precision, calib
        )
    if precision not in ("fp32", "fp16", "bf16"):
        raise ValueError(
            f"--per-layer in eager PyTorch times fp32, fp16 or bf16, not {precision}; for int8 name an "
            f"engine: --backends onnxruntime or openvino"
        )

    if isinstance(model, str):
        from .grid import prepare_model

        name = model
        model = prepare_model(model, weights, input_size=input_size)
    else:
        name = getattr(model, "model_name", type(model).__name__)
    net = fuse_bn(model) if fuse else model.eval()
    prof = profile_model(net, input_size=input_size, batch_size=batch_size, name=name)
    cuda = device.startswith("cuda")
    dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[precision]
    net = net.to(device=device, dtype=dtype)
    if peaks is None:
        peaks = measure_peaks(threads or 1, "cuda" if cuda else "cpu", precision if cuda else "fp32")
    x = torch.randn(batch_size, 3, input_size, input_size, device=device, dtype=dtype)
    plain, hooked, samples = _time_layers(net, x, threads, cuda, iters, warmup)
    rows = _layer_rows(net, {s.name: s for s in prof.layers}, samples, peaks)
    return PerLayerResult(
        name,
        device,
        threads or torch.get_num_threads(),
        precision,
        batch_size,
        _median_ms(plain),
        _median_ms(hooked),
        peaks.as_dict(),
        rows,
    )


class _LayerTimer:
    """Forward pre/post hooks on every module: each call's inclusive time, and each module's own time per pass."""

    def __init__(self, net: nn.Module, sync: Callable[[], Any]) -> None:
        self.sync = sync
        self.modules = {n: m for n, m in net.named_modules() if n}
        self.children = {n: [f"{n}.{c}" for c, _ in m.named_children()] for n, m in self.modules.items()}
        self.children[""] = [c for c, _ in net.named_children()]
        self.inclusive: dict[str, float] = {}
        self.starts: dict[str, list[float]] = defaultdict(list)
        self.samples: dict[str, list[float]] = defaultdict(list)

    def _pre(self, name: str):
        def hook(_m, _i):
            self.sync()
            self.starts[name].append(time.perf_counter())

        return hook

    def _post(self, name: str):
        def hook(_m, _i, _o):
            self.sync()
            self.inclusive[name] = self.inclusive.get(name, 0.0) + time.perf_counter() - self.starts[name].pop()

        return hook

    def attach(self) -> list[Any]:
        hooks = []
        for n, m in self.modules.items():
            hooks.append(m.register_forward_pre_hook(self._pre(n)))
            hooks.append(m.register_forward_hook(self._post(n)))
        return hooks

    def record(self, total: float) -> None:
        """One pass done (``total`` seconds): each module's own time = its time minus its children's."""
        self.inclusive[""] = total
        for n in ["", *self.modules]:
            own = self.inclusive.get(n, 0.0) - sum(self.inclusive.get(c, 0.0) for c in self.children.get(n, []))
            self.samples[n or "(model)"].append(max(own, 0.0))


def _time_layers(
    net: nn.Module, x: torch.Tensor, threads: int | None, cuda: bool, iters: int, warmup: int
) -> tuple[list[float], list[float], dict[str, list[float]]]:
    """Whole-network times without hooks, then with them; and each layer's own time per hooked pass (seconds)."""
    from ..measure.harness import pinned

    sync = torch.cuda.synchronize if cuda else (lambda: None)
    timer = _LayerTimer(net, sync)
    with pinned(threads if not cuda else None):
        for _ in range(warmup):
            net(x)
        sync()
        plain = []
        for _ in range(iters):
            t = time.perf_counter()
            net(x)
            sync()
            plain.append(time.perf_counter() - t)
        hooks = timer.attach()
        hooked = []
        try:
            for i in range(warmup + iters):
                timer.inclusive.clear()
                t = time.perf_counter()
                net(x)
                sync()
                total = time.perf_counter() - t
                if i < warmup:
                    continue
                hooked.append(total)
                timer.record(total)
        finally:
            for h in hooks:
                h.remove()
    return plain, hooked, timer.samples


def module_of(node: str, known: set[str]) -> str:
    """The zoo module an engine node belongs to, from the exporter's scope in its name: ONNX's
    ``/blocks/blocks.0/conv_pw/conv/Conv`` -> ``blocks.0.conv_pw.conv``; the longest known prefix wins, and a node the
    engine added (a layout reorder) or one outside every module is charged to ``(model)``."""
    parts: list[str] = []
    for c in node.removeprefix("__module.").split("/"):
        if parts and c.startswith(parts[-1] + "."):  # "blocks" then "blocks.0": the scope of a Sequential's child
            parts[-1] = c
        elif c:
            parts.append(c)
    path = ".".join(parts)
    while path and path not in known:
        path = path.rpartition(".")[0]
    return path or "(model)"


def _node_owner(net: nn.Module, known: set[str]):
    """node -> module key. A conv node named after an activation (ONNX Runtime names a conv with its fused activation
    by the activation's output) is charged to the conv that activation follows, the last conv before it."""
    order = [n for n, _ in net.named_modules() if n in known]
    convs = {n for n, m in net.named_modules() if isinstance(m, nn.Conv2d)}

    def owner(node) -> str:
        key = module_of(node.node, known)
        if "Conv" in node.op and key not in convs and key in order:
            before = [n for n in order[: order.index(key)] if n in convs]
            key = before[-1] if before else key
        return key

    return owner


INT8_TOOLCHAIN = {"onnxruntime": "onnxruntime", "openvino": "nncf"}
"""Which of :func:`mobilezoo.quant.quantize_ptq`'s toolchains makes the int8 artifact each profiling engine runs."""


def _artifact(eng, model: nn.Module, out: str, input_size: int, precision: str, calib: torch.Tensor | None):
    """The file the engine runs at ``precision``: its fp32 export, or the int8 artifact of its own toolchain."""
    if precision == "fp32":
        return eng.export(model, out, input_size=input_size)
    if precision != "int8" or eng.name not in INT8_TOOLCHAIN:
        raise ValueError(
            f"--per-layer on {eng.name} profiles fp32" + (" or int8" if eng.name in INT8_TOOLCHAIN else "")
        )
    from ..quant import quantize_ptq

    if calib is None:
        calib = torch.randn(8, 3, input_size, input_size, generator=torch.Generator().manual_seed(0))
    if calib.shape[-1] != input_size:
        raise ValueError(
            f"the calibration images are {calib.shape[-1]}x{calib.shape[-2]} after this model's "
            f"preprocessing but --input-size is {input_size}: give --input-size {calib.shape[-1]}"
        )
    return quantize_ptq(model, calib, out, toolchain=INT8_TOOLCHAIN[eng.name]).int8


def _engine_per_layer(
    model, backend, threads, batch_size, input_size, iters, peaks, weights, precision="fp32", calib=None
) -> PerLayerResult:
    from .. import backends
    from ..backends.base import quiet
    from ..measure.harness import QUICK, measure, pinned
    from ..models.rewrite import deploy_form
    from ..profile import profile_model

    if isinstance(model, str):
        from .grid import prepare_model

        model = prepare_model(model, weights, input_size=input_size)
    name = getattr(model, "model_name", type(model).__name__)
    eng = backends.get(backend)
    net = deploy_form(model)
    prof = profile_model(net, input_size=input_size, batch_size=batch_size, name=name)
    stats = {s.name: s for s in prof.layers}
    peaks = peaks or measure_peaks(threads or 1, "cpu", "fp32")
    x = torch.randn(batch_size, 3, input_size, input_size)
    with tempfile.TemporaryDirectory(prefix="mobilezoo-perlayer-") as tmp, pinned(threads or 1):
        with quiet():
            path = _artifact(eng, model, tmp, input_size, precision, calib)
        nodes = eng.profile(path, x, threads=threads or 1, iters=iters)
        sess = eng.open(path, threads=threads or 1, batch_size=batch_size, precision=precision)
        plain = measure(sess.timed_call(x), QUICK).stats.median_ms
    owner = _node_owner(net, set(stats))
    samples: dict[str, list[float]] = defaultdict(lambda: [0.0] * iters)
    for n in nodes:
        for i, t in enumerate(n.times_ms[:iters]):
            samples[owner(n)][i] += t / 1e3
    rows = _layer_rows(net, stats, samples, peaks)
    by_node = {r["layer"]: r for r in rows}
    for n in nodes:
        r = by_node.get(owner(n))
        if r is not None:
            r.setdefault("engine_ops", [])
            if n.op not in r["engine_ops"]:
                r["engine_ops"].append(n.op)
    for r in rows:
        r["engine_ops"] = "+".join(r.get("engine_ops", [])) or "-"
    total = [sum(n.times_ms[i] for n in nodes if len(n.times_ms) > i) for i in range(iters)]
    med = statistics.median(total)
    engine = f"{backend} {eng.version()} ({path.name}, its own profiler)"
    return PerLayerResult(
        name, "cpu", threads or 1, precision, batch_size, plain, med, peaks.as_dict(), rows, engine, nodes
    )


def _layer_rows(
    net: nn.Module, stats: dict[str, Any], samples: dict[str, list[float]], peaks: Peaks
) -> list[dict[str, Any]]:
    """One row per profiled layer: its costs, its median own time and its roofline bound; then the shares."""
    modules = {n: m for n, m in net.named_modules() if n}
    rows = []
    for key, s in stats.items():
        m = modules.get(key, net)
        t_ms = _median_ms(samples.get(key, []))
        nbytes = s.bytes_read + s.bytes_written
        flops = 2 * s.macs
        roof_s = peaks.roofline_s(flops, nbytes)
        compute_s = flops / (peaks.peak_gflops * 1e9)
        rows.append(
            {
                "layer": key,
                "kind": layer_kind(m) if key != "(model)" else "model (own ops)",
                "out_shape": "x".join(map(str, s.out_shape)),
                "MACs": s.macs,
                "bytes": nbytes,
                "FLOPs_per_byte": round(s.intensity, 2),
                "time_ms": round(t_ms, 4),
                "roofline_ms": round(roof_s * 1e3, 4),
                "bound": "compute" if compute_s >= nbytes / peaks.bandwidth(nbytes) else "memory",
                "GFLOP/s": round(flops / (t_ms * 1e-3) / 1e9, 2) if t_ms > 0 else None,
                "of_roofline_%": round(100 * roof_s * 1e3 / t_ms, 1) if t_ms > 0 else None,
            }
        )
    total_t = sum(r["time_ms"] for r in rows) or 1.0
    total_macs = sum(r["MACs"] for r in rows) or 1
    for r in rows:
        r["time_%"] = round(100 * r["time_ms"] / total_t, 2)
        r["MACs_%"] = round(100 * r["MACs"] / total_macs, 2)
    return rows
