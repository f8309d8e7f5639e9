"""torchvision / timm checkpoints for zoo architectures: the key mapping and the download of a same-network peer.

Which peer is the same network, and how the others differ, is :mod:`mobilezoo.peers` (torch-free, so the registry
and the metadata table read it too); a peer that differs has its weights refused with the reason instead of being
loaded approximately.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch
from torch import nn

from ..models.registry import ModelEntry
from ..peers import PEERS, SOURCES, Peer, find_peer, peer_notes
from ..peers import check_source as _check_source
from .convert import MatchReport
from .formats import CheckpointError

__all__ = ["PEERS", "SOURCES", "Peer", "convert_foreign", "fetch_foreign", "find_peer", "peer_notes", "peer_url"]


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
