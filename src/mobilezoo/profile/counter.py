"""Count what a network costs, from one real eager inference pass.

Conventions (written down once, used everywhere):

- **params**: trainable parameters, ``sum(p.numel() for p in model.parameters())`` (BatchNorm running statistics are
  buffers and not counted; PaddleClas's ``params`` counts them, its ``trainable`` does not).
- **MACs**: multiply-accumulates of convolutions and linear layers only (weights x inputs; no bias, BN, activation,
  pooling or elementwise work). This is fvcore's / ptflops's "MACs" and the spec's ``conv_linear_macs``.
  **FLOPs = 2 x MACs**; PaddleClas's published "FLOPs" column is roughly, not exactly, that.
- **memory access cost (MAC, ShuffleNetV2 paper's G2)**: for every tensor operation, bytes of its tensor inputs read
  (activations and weights) plus bytes of its outputs written. View/reshape ops move nothing and count zero.
- **peak activation memory**: the largest total size of live activation tensors (input included, weights excluded)
  at any point of the eager pass, tracked by storage lifetime.

The pass runs under a ``TorchDispatchMode`` that sees every aten op, so functional work (residual adds, concat,
channel shuffle, SE scaling) is attributed to the module that ran it.
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

aten = torch.ops.aten

# ops that only re-describe memory: no bytes moved
_VIEW_OPS = {
    aten.view.default,
    aten._unsafe_view.default,
    aten.reshape.default,
    aten.t.default,
    aten.transpose.int,
    aten.permute.default,
    aten.expand.default,
    aten.squeeze.dim,
    aten.squeeze.dims,
    aten.unsqueeze.default,
    aten.slice.Tensor,
    aten.split.Tensor,
    aten.split_with_sizes.default,
    aten.chunk.default,
    aten.alias.default,
    aten.detach.default,
    aten.flatten.using_ints,
    aten.select.int,
}


def _conv_macs(inputs: tuple, out: torch.Tensor) -> int:
    x, w = inputs[0], inputs[1]
    transposed = bool(inputs[6]) if len(inputs) > 6 else False
    kernel = math.prod(w.shape[2:])
    if transposed:  # every input element meets out_channels/groups * kernel weights
        return x.numel() * w.shape[1] * kernel
    return out.numel() * w.shape[1] * kernel  # w.shape[1] == in_channels / groups


def _mm_macs(op, inputs: tuple, out: torch.Tensor) -> int:
    if op is aten.addmm.default:
        a, b = inputs[1], inputs[2]
    else:
        a, b = inputs[0], inputs[1]
    return a.shape[0] * a.shape[1] * b.shape[-1] if a.ndim == 2 else out.numel() * a.shape[-1]


@dataclass
class OpRecord:
    module: str
    op: str
    macs: int
    bytes_read: int
    bytes_written: int
    out_shape: tuple[int, ...]


class _Tracker(TorchDispatchMode):
    def __init__(self, module_stack: list[str], weights: set[int] | None = None) -> None:
        super().__init__()
        self.stack = module_stack
        self.weights = weights or set()  # storages of parameters and buffers: never activations
        self.records: list[OpRecord] = []
        self.live: dict[int, int] = {}  # storage ptr -> bytes
        self.refs: dict[int, int] = {}  # storage ptr -> live python tensors referencing it
        self.current = 0
        self.peak = 0

    def add_live(self, t: torch.Tensor) -> None:
        st = t.untyped_storage()
        ptr = st.data_ptr()
        if ptr in self.weights:  # a view of a weight (Linear's aten.t(weight)) is not an activation
            return
        if ptr in self.live:
            self.refs[ptr] += 1
        else:
            self.live[ptr] = st.nbytes()
            self.refs[ptr] = 1
            self.current += st.nbytes()
            self.peak = max(self.peak, self.current)
        weakref.finalize(t, self._release, ptr)

    def _release(self, ptr: int) -> None:
        if ptr not in self.refs:
            return
        self.refs[ptr] -= 1
        if self.refs[ptr] == 0:
            self.current -= self.live.pop(ptr)
            del self.refs[ptr]

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        flat_in = [a for a in tree_flatten((args, kwargs))[0] if isinstance(a, torch.Tensor)]
        flat_out = [o for o in tree_flatten(out)[0] if isinstance(o, torch.Tensor)]
        for o in flat_out:
            self.add_live(o)
        if func in _VIEW_OPS:
            read = written = 0
        else:
            read = sum(t.numel() * t.element_size() for t in flat_in)
            written = sum(t.numel() * t.element_size() for t in flat_out)
        macs = 0
        if func is aten.convolution.default:
            macs = _conv_macs(args, flat_out[0])
        elif func in (aten.addmm.default, aten.mm.default, aten.bmm.default, aten.linear.default):
            macs = _mm_macs(func, args, flat_out[0])
        shape = tuple(flat_out[0].shape) if flat_out else ()
        module = self.stack[-1] if self.stack else ""
        self.records.append(OpRecord(module, func.overloadpacket.__name__, macs, read, written, shape))
        return out


@dataclass
class LayerStats:
    name: str
    type: str
    out_shape: tuple[int, ...]
    params: int
    macs: int
    bytes_read: int
    bytes_written: int

    @property
    def mem_access(self) -> int:
        return self.bytes_read + self.bytes_written

    @property
    def intensity(self) -> float:
        """Arithmetic intensity: FLOPs (2 x MACs) per byte moved."""
        return 2 * self.macs / self.mem_access if self.mem_access else 0.0


@dataclass
class ProfileResult:
    model: str
    input_size: tuple[int, int, int, int]
    params: int
    params_all: int
    macs: int
    mem_access_bytes: int
    peak_activation_bytes: int
    size_fp32_bytes: int
    size_fp16_bytes: int
    size_int8_bytes: int
    layers: list[LayerStats] = field(default_factory=list)
    out_shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)  # each module's own output, by path

    @property
    def flops(self) -> int:
        return 2 * self.macs

    def summary(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("layers")
        d.pop("out_shapes")
        d["flops"] = self.flops
        d["input_size"] = list(self.input_size)
        return d


def _leaf_names(model: nn.Module) -> Iterable[tuple[str, nn.Module]]:
    for name, m in model.named_modules():
        if name and not any(True for _ in m.children()):
            yield name, m


def file_sizes(model: nn.Module) -> tuple[int, int, int]:
    """Bytes of the weights file at fp32 and fp16 (real safetensors serialisations of the state dict), and at int8:
    conv/linear weights as int8 with one fp32 scale per output channel, every other tensor fp32 (estimate of an
    int8 artifact's weights, not counting graph/metadata)."""
    from safetensors.torch import save

    sd = {k: v.detach().contiguous() for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
    fp32 = len(save(sd))
    fp16 = len(save({k: v.half() if v.is_floating_point() else v for k, v in sd.items()}))
    int8 = 0
    quantizable = {f"{n}.weight" for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))}
    for k, v in sd.items():
        int8 += v.numel() + 4 * v.shape[0] if k in quantizable else v.numel() * v.element_size()
    return fp32, fp16, int8


@torch.no_grad()
def profile_model(
    model: nn.Module,
    input_size: int | tuple[int, int] = 224,
    batch_size: int = 1,
    in_chans: int | None = None,
    name: str | None = None,
) -> ProfileResult:
    """Profile ``model`` on one random input of ``batch_size x C x H x W`` in eval mode (CPU, fp32)."""
    h, w = (input_size, input_size) if isinstance(input_size, int) else input_size
    if in_chans is None:
        in_chans = next(m for m in model.modules() if isinstance(m, nn.Conv2d)).in_channels
    was_training = model.training
    model.eval()
    stack: list[str] = []
    leaves = dict(_leaf_names(model))
    hooks = []
    out_shapes: dict[str, tuple[int, ...]] = {}

    def pop(_m: nn.Module, _i: Any, out: Any) -> None:
        if isinstance(out, torch.Tensor):
            out_shapes[stack[-1]] = tuple(out.shape)
        stack.pop()

    for mname, m in model.named_modules():
        if not mname:
            continue
        hooks.append(m.register_forward_pre_hook(lambda _m, _i, n=mname: stack.append(n)))
        hooks.append(m.register_forward_hook(pop))
    x = torch.randn(batch_size, in_chans, h, w)
    weights = {t.untyped_storage().data_ptr() for t in (*model.parameters(), *model.buffers())}
    tracker = _Tracker(stack, weights)
    try:
        with tracker:
            tracker.add_live(x)
            y = model(x)
            del y
    finally:
        for hk in hooks:
            hk.remove()
        model.train(was_training)

    # aggregate op records by the module that ran them (leaf, or the container that did functional work)
    agg: dict[str, LayerStats] = {}
    mods = dict(model.named_modules())
    for r in tracker.records:
        key = r.module or "(model)"
        st = agg.get(key)
        if st is None:
            m = mods.get(r.module, model)
            own_params = sum(p.numel() for p in m.parameters(recurse=False)) if r.module in leaves else 0
            st = agg[key] = LayerStats(key, type(m).__name__, r.out_shape, own_params, 0, 0, 0)
        st.macs += r.macs
        st.bytes_read += r.bytes_read
        st.bytes_written += r.bytes_written
        if r.out_shape:
            st.out_shape = r.out_shape
    layers = list(agg.values())
    fp32, fp16, int8 = file_sizes(model)
    return ProfileResult(
        model=name or getattr(model, "model_name", type(model).__name__),
        input_size=(batch_size, in_chans, h, w),
        params=sum(p.numel() for p in model.parameters() if p.requires_grad),
        params_all=sum(p.numel() for p in model.parameters())
        + sum(b.numel() for k, b in model.named_buffers() if not k.endswith("num_batches_tracked")),
        macs=sum(r.macs for r in tracker.records),
        mem_access_bytes=sum(r.bytes_read + r.bytes_written for r in tracker.records),
        peak_activation_bytes=tracker.peak,
        size_fp32_bytes=fp32,
        size_fp16_bytes=fp16,
        size_int8_bytes=int8,
        layers=layers,
        out_shapes=out_shapes,
    )


def count_params(model: nn.Module) -> int:
    """Trainable parameters (the convention above)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def count_macs(model: nn.Module, input_size: int | tuple[int, int] = 224, in_chans: int = 3) -> int:
    """Conv + Linear MACs of one image, from layer shapes (no compute when the model is on the meta device).

    Same convention as :func:`profile_model`; the light path for tables of many models.
    """
    h, w = (input_size, input_size) if isinstance(input_size, int) else input_size
    total = 0

    def hook(m: nn.Module, inp: tuple, out: torch.Tensor) -> None:
        nonlocal total
        if isinstance(m, nn.Conv2d):
            total += out.numel() * (m.in_channels // m.groups) * math.prod(m.kernel_size)
        else:
            total += out.numel() * m.in_features

    was_training = model.training
    device = next(model.parameters()).device
    hooks = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros(1, in_chans, h, w, device=device))
    finally:
        for hk in hooks:
            hk.remove()
        model.train(was_training)
    return total


def block_paths(model: nn.Module) -> list[str]:
    """Module paths of the network's blocks in order: stem, each block (stages flattened), final conv, head."""
    paths = ["stem"]
    for i, child in enumerate(model.blocks):
        if isinstance(child, nn.Sequential):
            paths += [f"blocks.{i}.{j}" for j in range(len(child))]
        else:
            paths.append(f"blocks.{i}")
    if not isinstance(model.final_conv, nn.Identity):
        paths.append("final_conv")
    return [*paths, "head"]


def block_table(model: nn.Module, result: ProfileResult) -> list[dict[str, Any]]:
    """Per-block rows (type, output shape, params, MACs, bytes moved) from a per-layer profile."""
    mods = dict(model.named_modules())
    rows = []
    for path in block_paths(model):
        layers = [s for s in result.layers if s.name == path or s.name.startswith(path + ".")]
        mod = mods[path]
        rows.append(
            {
                "block": path,
                "type": type(mod).__name__,
                "out_shape": result.out_shapes.get(path) or (layers[-1].out_shape if layers else ()),
                "params": sum(p.numel() for p in mod.parameters()),
                "macs": sum(s.macs for s in layers),
                "mem_access_mb": sum(s.mem_access for s in layers) / 1e6,
            }
        )
    return rows
