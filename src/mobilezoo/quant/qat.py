"""Int8 quantization-aware training (QAT): fake-quantized fine-tuning on the training engine, exported to ONNX QDQ.

The scheme is the deployment's (ONNX Runtime's static QDQ, as :func:`mobilezoo.quant.quantize_ptq` writes it):

- BatchNorm folded into the convs first (:func:`mobilezoo.models.fuse.fuse_bn`), so training sees the deployed convs;
- every ``Conv2d``/``Linear`` weight int8 symmetric per output channel, ``scale = max|w| / qmax`` recomputed at each
  step, gradients straight through (``torch.fake_quantize_per_channel_affine``); ``qmax`` is 64 for the ``portable``
  target (7-bit weights: exact on x86 CPUs without VNNI, see :mod:`mobilezoo.export.int8`) and 127 for ``vnni``;
- every ``Conv2d``/``Linear`` input, and every ``Conv2d`` output, uint8 asymmetric per tensor, its range a moving
  average of the batch min/max (momentum 0.9, bias-corrected like PaddleClas's ``moving_average_abs_max``), updated in
  training mode and frozen in eval mode (``torch.fake_quantize_per_tensor_affine``). Quantizing the conv outputs lets
  ONNX Runtime fuse ``DequantizeLinear -> Conv -> QuantizeLinear`` into its int8 conv kernels. Where the conv's
  activation is a ReLU or ReLU6 (a zoo ``ConvBNAct``), its output quantizer sits *after* the activation, where
  ONNX Runtime folds the ReLU/Clip into the quantization and the whole unit into one int8 conv (quantized before
  the activation, the Q/DQ pair around it stays as separate nodes); hard-swish convs keep it before (no engine
  fuses a hard-swish into its int8 conv);
- the ranges are calibrated on real images before fine-tuning.

Export traces the fake-quant model (``dynamo=False``): the fake-quant ops become ``QuantizeLinear/DequantizeLinear``.
The weights are then stored as int8 initializers (and conv biases as int32 with ``scale = input scale x weight
scale``, as ONNX Runtime's quantizer writes them): the weights take a quarter of their fp32 bytes.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from ..models.fuse import fuse_bn
from ..models.layers import ConvBNAct, SqueezeExcite
from . import QuantResult

if TYPE_CHECKING:
    from ..train.recipes import Recipe

__all__ = [
    "ActFakeQuant",
    "QATConv2d",
    "QATConvBNAct",
    "QATLinear",
    "QATResult",
    "QATSqueezeExcite",
    "calibrate",
    "export_qat_onnx",
    "prepare_qat",
    "qat_model_from_checkpoint",
    "qat_recipe",
    "quantize_qat",
]

MOMENTUM = 0.9


class ActFakeQuant(nn.Module):
    """uint8 asymmetric per-tensor fake quantization with a moving-average min/max range.

    The range is ``acc / count`` where ``acc = m * acc + batch_stat`` and ``count = m * count + 1`` (an exponential
    moving average, bias-corrected). Updated on every forward in training mode (or inside :func:`calibrate`), frozen
    in eval mode. The buffers are part of the state dict, so checkpoints keep the ranges.
    """

    def __init__(self, momentum: float = MOMENTUM) -> None:
        super().__init__()
        self.momentum = momentum
        self.observe = False  # set by ``calibrate``: update the range in eval mode too
        self.enabled = True  # off while calibrating: the ranges are of the float activations
        self.register_buffer("acc_min", torch.zeros(()))
        self.register_buffer("acc_max", torch.zeros(()))
        self.register_buffer("count", torch.zeros(()))

    def qparams(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(scale, zero point) of the current range, which always includes 0."""
        count = self.count.clamp(min=1e-12)
        lo = (self.acc_min / count).clamp(max=0.0)
        hi = (self.acc_max / count).clamp(min=0.0)
        scale = ((hi - lo) / 255.0).clamp(min=1e-8)
        zero_point = (-lo / scale).round().clamp(0, 255).to(torch.int32)
        return scale.float(), zero_point

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training or self.observe:
            with torch.no_grad():
                m = self.momentum
                self.acc_min.mul_(m).add_(x.detach().min().float())
                self.acc_max.mul_(m).add_(x.detach().max().float())
                self.count.mul_(m).add_(1.0)
        if not self.enabled:
            return x
        scale, zero_point = self.qparams()
        return torch.fake_quantize_per_tensor_affine(x, scale, zero_point, 0, 255)


WEIGHT_QMAX = {"portable": 64, "vnni": 127}
"""Largest |int8 weight| per target (:data:`mobilezoo.quant.TARGETS`)."""


def fake_quant_weight(w: torch.Tensor, qmax: int | torch.Tensor = 127) -> torch.Tensor:
    """int8 symmetric per output channel: ``scale = max|w| / qmax``; the gradient passes straight through."""
    qmax = torch.as_tensor(qmax, dtype=torch.float32, device=w.device)  # a buffer: no Python float in the trace
    scale = (w.detach().abs().amax(dim=tuple(range(1, w.dim()))).float() / qmax).clamp(min=1e-8)
    zero_point = torch.zeros(w.shape[0], dtype=torch.int32, device=w.device)
    # (-128, 127) is the int8 range ONNX accepts; with this scale the values stay in [-qmax, qmax]
    return torch.fake_quantize_per_channel_affine(w, scale, zero_point, 0, -128, 127)


class QATConv2d(nn.Conv2d):
    """A conv with fake-quantized input, weight and output (same parameter names as ``nn.Conv2d``); the weights'
    ``qmax`` is a buffer, so checkpoints keep the target."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.act_in = ActFakeQuant()
        self.act_out = ActFakeQuant()
        self.register_buffer("weight_qmax", torch.tensor(WEIGHT_QMAX["portable"]))
        self.register_buffer("out_after_act", torch.tensor(False))
        """``act_out`` applied by the enclosing :class:`QATConvBNAct` after its activation, not here"""
        self._after_act = False  # the buffer's value as a Python bool (no tensor -> bool in a trace)

    def set_out_after_act(self, value: bool) -> None:
        self.out_after_act.fill_(value)
        self._after_act = bool(value)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        self._after_act = bool(self.out_after_act)

    @classmethod
    def from_float(cls, conv: nn.Conv2d) -> QATConv2d:
        q = cls(
            conv.in_channels,
            conv.out_channels,
            conv.kernel_size,
            conv.stride,
            conv.padding,
            conv.dilation,
            conv.groups,
            bias=conv.bias is not None,
            padding_mode=conv.padding_mode,
        ).to(conv.weight.device)
        q.weight, q.bias = conv.weight, conv.bias
        return q

    in_shared = False
    """the input is already quantized by the quantizer that produced it (:func:`_share_producer_quantizers`): no
    second quantization (``act_in`` unused), as a tensor has one quantizer in a QDQ graph"""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x if self.in_shared else self.act_in(x)
        y = self._conv_forward(x, fake_quant_weight(self.weight, self.weight_qmax), self.bias)
        return y if self._after_act else self.act_out(y)


QUANT_AFTER = (nn.ReLU, nn.ReLU6)
"""Activations whose conv output is quantized after them (ONNX Runtime folds them into the int8 conv)."""


class QATConvBNAct(ConvBNAct):
    """A zoo ``ConvBNAct`` whose conv output quantizer (``conv.act_out``) runs after the activation (when the conv's
    ``out_after_act`` says so); the same modules and state-dict keys as the ``ConvBNAct`` it was."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.act(self.bn(self.conv(x)))
        conv = self.conv
        return conv.act_out(y) if isinstance(conv, QATConv2d) and conv._after_act else y


class QATLinear(nn.Linear):
    """A linear layer with fake-quantized input and weight; its output (the logits) stays float."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.act_in = ActFakeQuant()
        self.register_buffer("weight_qmax", torch.tensor(WEIGHT_QMAX["portable"]))

    @classmethod
    def from_float(cls, fc: nn.Linear) -> QATLinear:
        q = cls(fc.in_features, fc.out_features, bias=fc.bias is not None).to(fc.weight.device)
        q.weight, q.bias = fc.weight, fc.bias
        return q

    in_shared = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x if self.in_shared else self.act_in(x)
        return F.linear(x, fake_quant_weight(self.weight, self.weight_qmax), self.bias)


class QATSqueezeExcite(SqueezeExcite):
    """A zoo SE block with its ReLU before ``conv_reduce``'s output quantizer and its gate quantized (``gate_quant``:
    the gate's [0, 1] as uint8), so the scale is an int8 multiply of two quantized tensors: OpenVINO read the gate
    unquantized (``DequantizeLinear -> Clip -> Mul``) wrongly on a trained GhostNet (22% top-1 where ONNX Runtime,
    running the same file, gave 37%)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        r = self.act(self.conv_reduce(x.mean((2, 3), keepdim=True)))
        reduce = self.conv_reduce
        r = reduce.act_out(r) if isinstance(reduce, QATConv2d) and reduce._after_act else r
        return x * self.gate_quant(self.gate(self.conv_expand(r)))


def _quantize_se_gates(model: nn.Module) -> None:
    for m in model.modules():
        if type(m) is SqueezeExcite and isinstance(m.conv_reduce, QATConv2d):
            m.__class__ = QATSqueezeExcite
            m.conv_reduce.set_out_after_act(isinstance(m.act, QUANT_AFTER))
            m.add_module("gate_quant", ActFakeQuant())


def prepare_qat(
    model: nn.Module,
    calib: torch.Tensor | None = None,
    batch: int = 32,
    target: str = "portable",
    *,
    legacy: bool = False,
) -> nn.Module:
    """Fold BatchNorm and swap every Conv2d/Linear for its QAT version, in place; calibrate the activation ranges
    on ``calib`` images when given. ``target`` sets the weights' range (:data:`WEIGHT_QMAX`). Returns ``model`` (its
    class, name, ``default_cfg`` and classes unchanged).

    Each tensor is quantized once, where ONNX Runtime fuses it: a ReLU/ReLU6 conv's output after the activation, a
    residual block's sum (a ghost module's concat) at the block's output, an SE block's gate, and a conv whose
    input one of those produced does not quantize it again. ``legacy``: the scheme of QAT checkpoints from before
    (every conv's input and output quantized, before any activation)."""
    if target not in WEIGHT_QMAX:
        raise ValueError(f"unknown int8 target {target!r}; choose from {', '.join(WEIGHT_QMAX)}")
    fuse_bn(model, inplace=True)
    for parent in list(model.modules()):
        for name, child in parent.named_children():
            q = {nn.Conv2d: QATConv2d, nn.Linear: QATLinear}.get(type(child))
            if q is not None:
                setattr(parent, name, q.from_float(child))
                getattr(parent, name).weight_qmax.fill_(WEIGHT_QMAX[target])
    if not legacy:
        for m in model.modules():
            if type(m) is ConvBNAct and isinstance(m.conv, QATConv2d):
                m.__class__ = QATConvBNAct
                m.conv.set_out_after_act(isinstance(m.act, QUANT_AFTER))
        _quantize_block_outputs(model)
        _quantize_se_gates(model)
        _share_producer_quantizers(model)
    if calib is not None:
        calibrate(model, calib, batch)
    return model


def _joining_blocks() -> tuple[type[nn.Module], ...]:
    """The zoo blocks that end in a sum (a residual) or a concat (GhostNet's ghost module, ShuffleNetV2's units: their
    int8 concat, shuffle and split run on the quantized tensor once the session has static shapes, as the
    ``onnxruntime`` backend compiles it)."""
    from ..models.ghostnet import GhostBottleneck, GhostModule
    from ..models.mobilenet_v2 import InvertedResidual
    from ..models.mobilenet_v3 import InvertedResidualSE
    from ..models.shufflenet_v2 import ShuffleDownUnit, ShuffleUnit

    return InvertedResidual, InvertedResidualSE, GhostBottleneck, GhostModule, ShuffleUnit, ShuffleDownUnit


_BLOCK_OUT: dict[type, type] = {}


def _with_output_quantizer(cls: type[nn.Module]) -> type[nn.Module]:
    """``cls`` whose forward quantizes its output with its ``out_quant`` child (one class per block type)."""
    if cls not in _BLOCK_OUT:

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.out_quant(cls.forward(self, x))

        _BLOCK_OUT[cls] = type(f"QAT{cls.__name__}", (cls,), {"forward": forward, "__module__": __name__})
    return _BLOCK_OUT[cls]


def _quantize_block_outputs(model: nn.Module) -> None:
    """A residual block's sum, or a ghost module's concat, quantized at the block's output (``out_quant``): ONNX
    Runtime's int8 Add/Concat reads quantized inputs and writes one, and every consumer reads that one tensor."""
    blocks = _joining_blocks()
    for m in list(model.modules()):
        if type(m) in blocks and getattr(m, "residual", True):
            m.add_module("out_quant", ActFakeQuant())
            m.__class__ = _with_output_quantizer(type(m))


@torch.no_grad()
def _share_producer_quantizers(model: nn.Module) -> None:
    """Mark every QAT conv/linear whose input is exactly the output of a quantizer (one probe forward, by tensor
    identity): it reads that quantized tensor as it is (``in_shared``)."""
    size = 64  # any size runs every module (the identities do not depend on it)
    in_chans = next(m for m in model.modules() if isinstance(m, nn.Conv2d)).in_channels
    outputs: list[torch.Tensor] = []  # kept alive: no id is reused during the probe
    seen: set[int] = set()
    fed: list[nn.Module] = []

    def produced(_m, _args, out):
        outputs.append(out)
        seen.add(id(out))

    def consumes(m, args):
        if args and id(args[0]) in seen:
            fed.append(m)

    hooks = [m.register_forward_hook(produced) for m in model.modules() if isinstance(m, ActFakeQuant)]
    hooks += [m.register_forward_pre_hook(consumes) for m in model.modules() if isinstance(m, (QATConv2d, QATLinear))]
    was_training = model.training
    try:
        model.eval()(torch.zeros(1, in_chans, size, size, device=next(model.parameters()).device))
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    for m in fed:
        m.in_shared = True


def _observers(model: nn.Module) -> Iterator[ActFakeQuant]:
    return (m for m in model.modules() if isinstance(m, ActFakeQuant))


@contextmanager
def _calibrating(model: nn.Module):
    obs = list(_observers(model))
    for o in obs:
        o.observe, o.enabled = True, False
    try:
        yield
    finally:
        for o in obs:
            o.observe, o.enabled = False, True


@torch.no_grad()
def calibrate(model: nn.Module, images: torch.Tensor, batch: int = 32) -> nn.Module:
    """Reset the activation ranges and estimate them on ``images`` (float activations, eval mode)."""
    for o in _observers(model):
        for buf in (o.acc_min, o.acc_max, o.count):
            buf.zero_()
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    with _calibrating(model):
        for i in range(0, len(images), batch):
            model(images[i : i + batch].to(device))
    model.train(was_training)
    return model


def qat_recipe(base: Recipe | dict[str, Any], overrides: dict[str, Any] | list[str] | None = None) -> Recipe:
    """The QAT fine-tuning recipe: the model's training recipe with lr x 0.01, 3 epochs, no warmup, no EMA, fp32
    (no autocast), then ``overrides``."""
    from ..train.recipes import Recipe

    if not isinstance(base, Recipe):
        base = Recipe(**{k: v for k, v in base.items() if k in Recipe.__dataclass_fields__})
    recipe = dataclasses.replace(
        base,
        name=f"qat < {base.name}",
        lr=base.lr * 0.01,
        epochs=3,
        warmup_epochs=0.0,
        ema_decay=0.0,
        amp="none",
        compile=False,
    )
    return recipe.with_overrides(overrides) if overrides else recipe


def qat_model_from_checkpoint(ck: dict[str, Any] | str | Path) -> nn.Module:
    """Rebuild a QAT model (fused, fake-quantized, with its ranges) from a checkpoint of a QAT fine-tuning run."""
    from ..factory import create_model
    from ..train.checkpoint import load_checkpoint

    if not isinstance(ck, dict):
        ck = load_checkpoint(ck)
    kw = ck.get("model_kwargs", {})
    state = dict(ck["model"])
    legacy = not any(k.endswith("out_after_act") for k in state)  # written before each tensor had one quantizer
    model = create_model(ck["model_name"], weights="random", num_classes=ck["num_classes"], **kw)
    model = prepare_qat(model, legacy=legacy)
    for k in model.state_dict():  # QAT runs from before targets existed used 8-bit weights,
        if k.endswith("weight_qmax") and k not in state:
            state[k] = torch.tensor(WEIGHT_QMAX["vnni"])
        if k.endswith("out_after_act") and k not in state:  # and quantized every conv output before its activation
            state[k] = torch.tensor(False)
    model.load_state_dict(state)
    model.default_cfg = {**model.default_cfg, **ck.get("default_cfg", {})}
    model.class_names = list(ck.get("class_names") or [])
    return model.eval()


def export_qat_onnx(model: nn.Module, path: str | Path, *, input_size: int | None = None, info: dict | None = None):
    """Export a QAT model (eval mode) to an int8 QDQ ONNX file: int8 weights, int32 conv biases, the metadata every
    export carries with ``precision: int8`` and ``quantization`` = ``info``."""
    import onnx

    from ..backends.artifact import artifact_metadata, set_onnx_metadata
    from ..backends.onnxruntime import export_onnx
    from ..export.int8 import int8_build_record
    from ..models.rewrite import using

    path = Path(path)
    # No deployment rewrite: they are exact in real arithmetic, not around fake-quant ranges calibrated and trained
    # on the unrewritten graph (MobileNetV3's SE gate folded into conv_expand would leave its output range 5x off).
    with using(()):
        export_onnx(model, path, input_size=input_size)  # (works on a copy: ``model`` stays as it is)
    proto = onnx.load(str(path))
    _store_int8_weights(proto)
    _quantize_biases(proto)
    qmax = max((int(m.weight_qmax) for m in model.modules() if hasattr(m, "weight_qmax")), default=127)
    target = "portable" if qmax <= WEIGHT_QMAX["portable"] else "vnni"
    info = {"method": "qat", **(info or {}), **int8_build_record(proto, target)}
    with using(()):
        meta = {**artifact_metadata(model, precision="int8"), "quantization": info}
    set_onnx_metadata(proto, meta)
    onnx.checker.check_model(proto)
    onnx.save(proto, str(path))
    return path


def _consumers(proto) -> dict[str, list]:
    out: dict[str, list] = {}
    for n in proto.graph.node:
        for i in n.input:
            out.setdefault(i, []).append(n)
    return out


def _bcast(v: np.ndarray, axis: int, ndim: int) -> np.ndarray:
    if v.ndim == 0:
        return v
    shape = [1] * ndim
    shape[axis] = -1
    return v.reshape(shape)


def _store_int8_weights(proto) -> None:
    """``fp32 initializer -> QuantizeLinear -> DequantizeLinear`` becomes ``int8 initializer -> DequantizeLinear``."""
    from onnx import numpy_helper

    g = proto.graph
    inits = {t.name: t for t in g.initializer}
    users = _consumers(proto)
    drop = []
    for n in g.node:
        if n.op_type != "QuantizeLinear" or not all(i in inits for i in n.input):
            continue
        w, scale, zp = (numpy_helper.to_array(inits[i]) for i in n.input[:3])
        if w.dtype != np.float32:
            continue
        axis = next((a.i for a in n.attribute if a.name == "axis"), 1)
        q = np.rint(w / _bcast(scale, axis, w.ndim)) + _bcast(zp.astype(np.float32), axis, w.ndim)
        info = np.iinfo(zp.dtype)
        name = f"{n.input[0]}_quantized"
        g.initializer.append(numpy_helper.from_array(np.clip(q, info.min, info.max).astype(zp.dtype), name))
        for dq in users.get(n.output[0], []):
            dq.input[0] = name
        drop.append(n)
    for n in drop:
        g.node.remove(n)
    _prune_initializers(proto)


def _quantize_biases(proto) -> None:
    """A Conv's float bias becomes int32 through ``DequantizeLinear`` (scale = input scale x weight scale, zero 0),
    so ONNX Runtime can run the whole node as an int8 conv."""
    from onnx import helper, numpy_helper

    g = proto.graph
    inits = {t.name: t for t in g.initializer}
    producer = {o: n for n in g.node for o in n.output}
    new_nodes = []
    for k, n in enumerate(g.node):
        if n.op_type != "Conv" or len(n.input) < 3 or n.input[2] not in inits:
            continue
        dq_x, dq_w = producer.get(n.input[0]), producer.get(n.input[1])
        if not (dq_x and dq_w and dq_x.op_type == dq_w.op_type == "DequantizeLinear"):
            continue
        if not (dq_x.input[1] in inits and dq_w.input[1] in inits):
            continue
        x_scale = numpy_helper.to_array(inits[dq_x.input[1]]).astype(np.float64)
        w_scale = numpy_helper.to_array(inits[dq_w.input[1]]).astype(np.float64)
        bias = numpy_helper.to_array(inits[n.input[2]]).astype(np.float64)
        scale = (x_scale * w_scale * np.ones_like(bias)).astype(np.float32)
        q = np.clip(np.rint(bias / scale), -(2**31), 2**31 - 1).astype(np.int32)
        base = f"{n.input[2]}_{k}"  # unique: one bias initializer may feed several convs
        g.initializer.extend(
            [
                numpy_helper.from_array(q, f"{base}_quantized"),
                numpy_helper.from_array(scale, f"{base}_scale"),
                numpy_helper.from_array(np.zeros_like(q), f"{base}_zero_point"),
            ]
        )
        new_nodes.append(
            helper.make_node(
                "DequantizeLinear",
                [f"{base}_quantized", f"{base}_scale", f"{base}_zero_point"],
                [f"{base}_dequantized"],
                name=f"{base}_DequantizeLinear",
                axis=0,
            )
        )
        n.input[2] = f"{base}_dequantized"
    for i, node in enumerate(new_nodes):  # DequantizeLinear of constants: any position before its consumer works
        g.node.insert(i, node)
    _prune_initializers(proto)


def _prune_initializers(proto) -> None:
    used = {i for n in proto.graph.node for i in n.input} | {o.name for o in proto.graph.output}
    keep = [t for t in proto.graph.initializer if t.name in used]
    del proto.graph.initializer[:]
    proto.graph.initializer.extend(keep)


@dataclass
class QATResult(QuantResult):
    run: Path
    """the fine-tuning run folder (``best.ckpt``, ``last.ckpt``, ``log.csv``): ``qat_model_from_checkpoint`` reads it"""
    best_top1: float
    """eval top-1 of the fake-quantized model at its best epoch"""


def quantize_qat(
    ckpt: str | Path,
    data: str | Path,
    calib: torch.Tensor,
    out_dir: str | Path,
    *,
    overrides: dict[str, Any] | list[str] | None = None,
    device: str = "auto",
    progress: bool = False,
    target: str = "portable",
) -> QATResult:
    """QAT from a training checkpoint: calibrate on ``calib``, fine-tune on the dataset root ``data`` with
    :func:`qat_recipe` and ``overrides`` (run folder ``out_dir/qat``), export the best epoch to
    ``out_dir/<name>.qat.int8.onnx`` (and the checkpoint's fp32 model to ``out_dir/<name>.onnx`` to compare).
    ``target``: ``portable`` (7-bit weights, exact on every x86 CPU) or ``vnni`` (:data:`WEIGHT_QMAX`)."""
    from ..backends.onnxruntime import export_onnx
    from ..data.datasets import open_split
    from ..train import TrainConfig, fit, load_checkpoint, model_from_checkpoint

    ck = load_checkpoint(ckpt)
    classes = open_split(data, "train").class_names
    if classes != ck["class_names"]:
        raise ValueError(f"{data}: classes {classes[:5]}... differ from the checkpoint's {ck['class_names'][:5]}...")
    recipe = qat_recipe(ck["recipe"], overrides)
    name = ck["model_name"]

    def transform(model: nn.Module) -> nn.Module:
        model.load_state_dict(ck["model"])
        return prepare_qat(model, calib, target=target)

    out_dir = Path(out_dir)
    size = int(calib.shape[-1])
    fp32 = export_onnx(model_from_checkpoint(ck), out_dir / f"{name}.onnx", input_size=size)
    cfg = TrainConfig(
        name,
        data,
        out_dir / "qat",
        recipe,
        device=device,
        progress=progress,
        tensorboard=False,
        model_transform=transform,
    )
    res = fit(cfg)
    model = qat_model_from_checkpoint(res.best or res.last)
    info = {
        "method": "qat",
        "toolchain": f"torch {torch.__version__} fake quantization, ONNX QDQ",
        "weights": "int8 per-channel" + (", 7-bit range" if target == "portable" else ""),
        "activations": "uint8 per-tensor",
        "checkpoint": str(ckpt),
        "calibration_images": len(calib),
        "epochs": recipe.epochs,
        "lr": recipe.lr,
    }
    int8 = export_qat_onnx(model, out_dir / f"{name}.qat.int8.onnx", input_size=size, info=info)
    return QATResult(fp32, int8, res.output, res.best_top1)
