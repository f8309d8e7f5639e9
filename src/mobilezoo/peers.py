"""torchvision / timm peers of the zoo: which of their networks is the same as a zoo architecture, how the others
differ, and what their model names mean here. Torch-free (the registry, the weights and the torch-free metadata
table all read it).

Each row of :data:`PEERS` was checked by building both networks with random weights and comparing tensors and
logits (``tests/test_ecosystems.py`` repeats the check). Only torchvision's ``shufflenet_v2_x0_5/x1_0/x1_5/x2_0``
compute the same function as a zoo architecture; every other peer differs in structure or activation.

The name rule (:func:`foreign_name`): a torchvision / timm model name resolves to a zoo architecture only where that
library's network is the same one (torchvision's four ShuffleNetV2 widths); any other name of theirs for a zoo
family (``mobilenet_v2``, ``mobilenet_v3_small``, timm's ``mobilenetv3_large_100`` ...) is refused with how the
networks differ, rather than silently building PaddleClas's network under the other library's name.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable, Container
from dataclasses import dataclass
from typing import Any

__all__ = [
    "PEERS",
    "SOURCES",
    "DifferentNetworkError",
    "Peer",
    "check_source",
    "find_peer",
    "foreign_name",
    "peer_notes",
    "same_network_names",
]

SOURCES = ("torchvision", "timm")


class DifferentNetworkError(ValueError):
    """A torchvision / timm model name whose network is not the zoo's (the message says how it differs)."""


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
    keymap: Callable[[Any], dict[str, str]] | None = None
    """Our Conv2d/BatchNorm2d/Linear module path -> the peer's module path (same-network rows)."""
    names: tuple[str, ...] = ()
    """Globs of the source's model names for this different network (family rows): refused as zoo names."""

    @property
    def same(self) -> bool:
        return self.arch is not None


def _tv_shufflenet_v2(model: Any) -> dict[str, str]:
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
        names=("mobilenetv1_*",),
    ),
    Peer(
        "torchvision",
        "MobileNetV2",
        "mobilenet_v2",
        differs="torchvision omits the expand 1x1 conv when t=1 (PaddleClas keeps a 32->32 conv+BN+ReLU6 in the first "
        "block) and rounds widths with make_divisible(8) (PaddleClas: int(c * scale))",
        names=("mobilenet_v2",),
    ),
    Peer(
        "timm",
        "MobileNetV2",
        "mobilenetv2_*",
        differs="timm's first block is depthwise-separable without the t=1 expand 1x1 conv (PaddleClas keeps a "
        "32->32 conv+BN+ReLU6) and widths use make_divisible(8) (PaddleClas: int(c * scale))",
        names=("mobilenetv2_*",),
    ),
    Peer(
        "torchvision",
        "MobileNetV3",
        "mobilenet_v3_large/small",
        differs=_MBV3 + "BN eps 1e-3 and a 1280 head Linear with bias (PaddleClas: 1x1 conv, no bias)",
        names=("mobilenet_v3_large", "mobilenet_v3_small"),
    ),
    Peer(
        "timm",
        "MobileNetV3",
        "mobilenetv3_*",
        differs=_MBV3 + "a 1280 head conv with bias (PaddleClas: none); tf_mobilenetv3_* also use TF 'same' padding "
        "and BN eps 1e-3",
        names=("mobilenetv3_*", "tf_mobilenetv3_*"),
    ),
    Peer("torchvision", "GhostNet", None, differs="torchvision has no GhostNet"),
    Peer(
        "timm",
        "GhostNet",
        "ghostnet_*",
        differs="timm's SE width is make_divisible(C/4, 4) (PaddleClas C//4) gated by hardsigmoid relu6(x+3)/6 "
        "(PaddleClas clip(x, 0, 1)), and its 1280 head is a 1x1 conv with bias and no BN (PaddleClas: conv, no bias, "
        "+ BN + ReLU)",
        names=("ghostnet_*",),
    ),
)


def check_source(source: str) -> None:
    if source not in SOURCES:
        raise ValueError(f"unknown checkpoint source {source!r}; foreign sources are {', '.join(SOURCES)}")


def find_peer(entry: Any, source: str) -> Peer | None:
    """The same-network row for ``entry``'s architecture (a registry entry), else its family's row (None: no row)."""
    check_source(source)
    rows = [p for p in PEERS if p.source == source and p.family == entry.family]
    return next((p for p in rows if p.arch == entry.arch), None) or next((p for p in rows if not p.same), None)


def peer_notes(entry: Any) -> list[str]:
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


def same_network_names() -> dict[str, str]:
    """torchvision / timm model name -> the zoo architecture that is the same network."""
    return {p.peer: p.arch for p in PEERS if p.same and p.peer and p.arch}


def _width(digits: str) -> str:
    """timm's width digits as a PaddleClas suffix: ``100`` -> ``x1_0``, ``075`` -> ``x0_75``, ``130`` -> ``x1_3``."""
    whole, frac = divmod(int(digits), 100)
    return f"x{whole}_{f'{frac:02d}'.rstrip('0') or '0'}"


def _counterpart(name: str, family: str) -> str:
    """The zoo name of the same family and width as a peer's model name (it may not exist)."""
    mode = re.search(r"(large|small)", name)
    digits = re.search(r"_(\d{3})$", name)
    width = _width(digits.group(1)) if digits else "x1_0" if not re.search(r"\d{3}", name) else ""
    return "_".join(p for p in (family, mode.group(1) if mode else "", width) if p) if width else ""


def foreign_name(name: str, known: Container[str] = (), *, zoo_spelling: bool = False) -> str | None:
    """The rule for torchvision / timm names: the zoo architecture for a same-network name (``shufflenet_v2_x1_0``
    -> ``ShuffleNetV2_x1_0``), :class:`DifferentNetworkError` for one of theirs whose network differs, None for any
    other name. ``known``: the zoo's names, so that the error can name PaddleClas's network of that width.
    torchvision's names match in any case, timm's patterns (``mobilenetv3_*``) case-sensitively and never with a
    PaddleClas width (``_x1_0``). ``zoo_spelling``: the name also spells a zoo name; then only a peer's exact model
    name (``mobilenet_v2``), not a pattern, is theirs."""
    low = name.lower()
    same = same_network_names()
    if low in same:
        return same[low]
    base = name.split(".", 1)[0]  # timm's ``name.pretrained_tag``
    # a pattern (timm's lower-case names) never takes a PaddleClas-style width (``_x1_0``): that is a zoo name
    patterns_apply = not zoo_spelling and not re.search(r"_x\d", base)
    for p in PEERS:
        exact = [g for g in p.names if "*" not in g]
        globs = [g for g in p.names if "*" in g and patterns_apply]
        if base.lower() in exact or any(fnmatch.fnmatchcase(base, g) for g in globs):
            zoo = _counterpart(base.lower(), p.family)
            hint = f"; PaddleClas's network of that width is {zoo!r} (`mobilezoo info {zoo}`)" if zoo in known else ""
            raise DifferentNetworkError(
                f"{name!r} is {p.source}'s {p.family}, a different network from the zoo's PaddleClas one: "
                f"{p.differs}{hint}"
            )
    return None
