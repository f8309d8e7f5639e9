"""torchvision / timm checkpoints for zoo architectures: which peer is the same network, and the key mapping.

Each row of :data:`PEERS` was checked by building both networks with random weights and comparing tensors and
logits (``tests/test_ecosystems.py`` repeats the check). Only torchvision's ``shufflenet_v2_x0_5/x1_0/x1_5/x2_0``
compute the same function as a zoo architecture; every other peer differs in structure or activation, and its
weights are refused with the reason instead of being loaded approximately.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..models.registry import ModelEntry
from .convert import MatchReport
from .formats import CheckpointError

__all__ = ["PEERS", "SOURCES", "Peer", "convert_foreign", "fetch_foreign", "find_peer", "peer_notes", "peer_url"]

SOURCES = ("torchvision", "timm")


@dataclass(frozen=True)
class Peer:
    """One zoo architecture (``arch``) or a whole zoo family (``arch=None``) against one torchvision / timm model."""

    source: str
    family: str
    peer: str | None
    """Peer model name (a glob for a family row); None: the source has no such family."""
    arch: str | None = None
    """The zoo architecture that is the same network; None: the peer differs (see ``differs``)."""
    differs: str = ""
    """How the peer differs from PaddleClas's network (family rows)."""
    keymap: Callable[[nn.Module], dict[str, str]] | None = None
    """Our Conv2d/BatchNorm2d/Linear module path -> the peer's module path (same-network rows)."""

    @property
    def same(self) -> bool:
        return self.arch is not None


def _tv_shufflenet_v2(model: nn.Module) -> dict[str, str]:
    """torchvision ``ShuffleNetV2``: conv1/stage2-4/conv5/fc, each ConvBNAct a (conv, bn) pair inside a Sequential."""
    m: dict[str, str] = {}

    def cba(ours: str, seq: str, i: int) -> None:
        m[f"{ours}.conv"], m[f"{ours}.bn"] = f"{seq}.{i}", f"{seq}.{i + 1}"

    cba("stem.conv", "conv1", 0)
    for i, stage in enumerate(model.blocks):
        for j in range(len(stage)):
            ours, tv = f"blocks.{i}.{j}", f"stage{i + 2}.{j}"
            if j == 0:
                cba(f"{ours}.branch1_dw", f"{tv}.branch1", 0)
                cba(f"{ours}.branch1_pwl", f"{tv}.branch1", 2)
                pre = f"{ours}.branch2_"
            else:
                pre = f"{ours}.conv_"
            cba(f"{pre}pw", f"{tv}.branch2", 0)
            cba(f"{pre}dw", f"{tv}.branch2", 3)
            cba(f"{pre}pwl", f"{tv}.branch2", 5)
    cba("final_conv", "conv5", 0)
    m["head.fc"] = "fc"
    return m


_MBV3 = (
    "no expand 1x1 conv in the first block (exp == in; PaddleClas keeps it), SE width make_divisible(C/4, 8) "
    "(PaddleClas C//4) gated by hardsigmoid relu6(x+3)/6 (PaddleClas clip(0.2x+0.5, 0, 1)), no 0.8 eval-dropout "
    "scale, and "
)

PEERS: tuple[Peer, ...] = (
    *(
        Peer("torchvision", "ShuffleNetV2", f"shufflenet_v2_{w}", f"ShuffleNetV2_{w}", keymap=_tv_shufflenet_v2)
        for w in ("x0_5", "x1_0", "x1_5", "x2_0")
    ),
    Peer(
        "torchvision",
        "ShuffleNetV2",
        "shufflenet_v2_*",
        differs="torchvision builds ShuffleNetV2 only at widths x0_5/x1_0/x1_5/x2_0 with ReLU "
        "(no x0_25, x0_33 or swish)",
    ),
    Peer("timm", "ShuffleNetV2", None, differs="timm has no ShuffleNet"),
    Peer("torchvision", "ShuffleNetV1", None, differs="torchvision has no ShuffleNetV1"),
    Peer("timm", "ShuffleNetV1", None, differs="timm has no ShuffleNet"),
    Peer("torchvision", "MobileNetV1", None, differs="torchvision has no MobileNetV1"),
    Peer(
        "timm",
        "MobileNetV1",
        "mobilenetv1_*",
        differs="timm uses ReLU6 where PaddleClas uses ReLU (tensors otherwise identical at 100), so its weights give "
        "other logits; mobilenetv1_100h adds a 1x1 conv+BN head, mobilenetv1_125 is a width the zoo lacks",
    ),
    Peer(
        "torchvision",
        "MobileNetV2",
        "mobilenet_v2",
        differs="torchvision omits the expand 1x1 conv when t=1 (PaddleClas keeps a 32->32 conv+BN+ReLU6 in the first "
        "block) and rounds widths with make_divisible(8) (PaddleClas: int(c * scale))",
    ),
    Peer(
        "timm",
        "MobileNetV2",
        "mobilenetv2_*",
        differs="timm's first block is depthwise-separable without the t=1 expand 1x1 conv (PaddleClas keeps a "
        "32->32 conv+BN+ReLU6) and widths use make_divisible(8) (PaddleClas: int(c * scale))",
    ),
    Peer(
        "torchvision",
        "MobileNetV3",
        "mobilenet_v3_large/small",
        differs=_MBV3 + "BN eps 1e-3 and a 1280 head Linear with bias (PaddleClas: 1x1 conv, no bias)",
    ),
    Peer(
        "timm",
        "MobileNetV3",
        "mobilenetv3_*",
        differs=_MBV3 + "a 1280 head conv with bias (PaddleClas: none); tf_mobilenetv3_* also use TF 'same' padding "
        "and BN eps 1e-3",
    ),
    Peer("torchvision", "GhostNet", None, differs="torchvision has no GhostNet"),
    Peer(
        "timm",
        "GhostNet",
        "ghostnet_*",
        differs="timm's SE width is make_divisible(C/4, 4) (PaddleClas C//4) gated by hardsigmoid relu6(x+3)/6 "
        "(PaddleClas clip(x, 0, 1)), and its 1280 head is a 1x1 conv with bias and no BN (PaddleClas: conv, no bias, "
        "+ BN + ReLU)",
    ),
)


def _check_source(source: str) -> None:
    if source not in SOURCES:
        raise ValueError(f"unknown checkpoint source {source!r}; foreign sources are {', '.join(SOURCES)}")


def find_peer(entry: ModelEntry, source: str) -> Peer | None:
    """The same-network row for ``entry``'s architecture, else its family's row (None: no row)."""
    _check_source(source)
    rows = [p for p in PEERS if p.source == source and p.family == entry.family]
    return next((p for p in rows if p.arch == entry.arch), None) or next((p for p in rows if not p.same), None)


def peer_notes(entry: ModelEntry) -> list[str]:
    """One line per source: the peer that is the same network, or how the peers differ."""
    out = []
    for source in SOURCES:
        p = find_peer(entry, source)
        if p is None:
            out.append(f"{source}: not checked")
        elif p.same:
            out.append(f"{source} {p.peer}: same network (load_weights(..., source={source!r}))")
        elif p.peer is None:
            out.append(f"{source}: {p.differs}")
        else:
            out.append(f"{source} {p.peer}: differs: {p.differs}")
    return out


def _same_peer(entry: ModelEntry, source: str) -> Peer:
    p = find_peer(entry, source)
    if p is not None and p.same:
        return p
    if p is None:
        why = f"{source}: no peer known"
    else:
        why = f"{source} {p.peer}: {p.differs}" if p.peer else p.differs
    raise CheckpointError(f"{entry.name} has no {source} equivalent, so {source} weights cannot fit it ({why})")


def _expand(model: nn.Module, keymap: dict[str, str]) -> tuple[dict[str, str], set[str]]:
    """our tensor name -> source tensor name, and the source names that may be present but are not loaded."""
    plan: dict[str, str] = {}
    optional: set[str] = set()
    for ours, theirs in keymap.items():
        mod = model.get_submodule(ours)
        if isinstance(mod, nn.BatchNorm2d):
            leaves = ("weight", "bias", "running_mean", "running_var")
            optional.add(f"{theirs}.num_batches_tracked")
        elif isinstance(mod, (nn.Conv2d, nn.Linear)):
            leaves = ("weight", "bias") if mod.bias is not None else ("weight",)
        elif isinstance(mod, nn.Identity):
            continue  # a classifier removed with num_classes=0
        else:
            kind = type(mod).__name__
            raise TypeError(f"foreign keymap entry {ours!r} is a {kind}; expected Conv2d/BatchNorm2d/Linear")
        for leaf in leaves:
            plan[f"{ours}.{leaf}"] = f"{theirs}.{leaf}"
    return plan, optional


def convert_foreign(
    model: nn.Module, entry: ModelEntry, src: dict[str, torch.Tensor], source: str
) -> tuple[dict[str, torch.Tensor], MatchReport]:
    """Translate a torchvision / timm state dict into ``model``'s names; report what does not fit.

    Raises :class:`CheckpointError` (with the reason) when no ``source`` model is the same network as ``entry``.
    """
    _check_source(source)
    peer = _same_peer(entry, source)
    assert peer.keymap is not None
    plan, optional = _expand(model, peer.keymap(model))
    own = model.state_dict()
    report = MatchReport()
    out: dict[str, torch.Tensor] = {}
    for ours, theirs in plan.items():
        if theirs not in src:
            report.missing.append(theirs)
            continue
        t = src[theirs]
        if tuple(t.shape) != tuple(own[ours].shape):
            report.mismatched.append((theirs, ours, tuple(t.shape), tuple(own[ours].shape)))
            continue
        out[ours] = t.to(own[ours].dtype)
    used = set(plan.values()) | optional
    report.unexpected = [k for k in src if k not in used]
    return out, report


def peer_url(peer: Peer) -> str:
    """Download URL of the peer's published weights (torchvision: its weights enum's DEFAULT; timm: pretrained_cfg)."""
    _check_source(peer.source)
    if peer.peer is None:
        raise CheckpointError(f"{peer.source} has no {peer.family}")
    if peer.source == "torchvision":
        import torchvision

        return torchvision.models.get_model_weights(peer.peer).DEFAULT.url
    try:
        from timm.models import get_pretrained_cfg
    except ImportError:
        raise CheckpointError(f"timm is not installed; pass a local {peer.peer} checkpoint file") from None
    cfg = get_pretrained_cfg(peer.peer)
    if cfg is not None and cfg.url:
        return cfg.url
    hub_id = getattr(cfg, "hf_hub_id", None)
    where = f"on the Hugging Face hub as {hub_id}" if hub_id else "without a direct URL"
    raise CheckpointError(
        f"timm publishes {peer.peer} {where}; download it there and pass the local file with source='timm'"
    )


def fetch_foreign(entry: ModelEntry, source: str) -> Path:
    """Download (once, into the cache) the published weights of ``entry``'s same-network peer in ``source``."""
    from . import hub

    _check_source(source)
    url = peer_url(_same_peer(entry, source))
    # torchvision file names carry the first hex digits of the file's sha256 (torch.hub's convention)
    digest = re.search(r"-([a-f0-9]{8,})\.", url.rsplit("/", 1)[-1]) if source == "torchvision" else None
    return hub.download(url, sha256=digest.group(1) if digest else None)
