"""The seed's conclusions (``004_*.txt``: eleven networks on CIFAR-10, ncnn on a Raspberry Pi 4B) checked one by
one against a study's results: what this run measured, agree / disagree / not measured, and — where they disagree
— a reason generated from the measurements (the budget, the engine and CPU, FLOPs against memory access cost, the
model set)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

from .plan import STUDY_MODELS
from .results import IMAGENET, TOP1

__all__ = ["AGREE", "CLAIMS", "DISAGREE", "NOT_MEASURED", "Claim", "check_claims"]

SMALL_INPUT = {
    1: "stride-1 stem, no ShuffleNet stem max-pool",
    2: "stride-1 stem and first downsampling block, no ShuffleNet stem max-pool",
}
"""What each ``small_input`` level of the recipe changes (``mobilezoo.train.recipes.Recipe.small_input``)."""

AGREE, DISAGREE, NOT_MEASURED = "agree", "disagree", "not measured"
SEED_SETUP = "the seed ran ncnn on a Raspberry Pi 4B (Cortex-A72, ARM)"


@dataclass(frozen=True)
class Claim:
    key: str
    text: str
    families: tuple[str, ...]
    """the families the claim is about"""
    column: str
    """the result column it is judged on (``{size}`` filled with the CIFAR input size)"""
    lowest: bool
    """True: the claim says these families have the lowest value; False: the highest"""
    kind: str
    """accuracy | cost | latency | training: which reasons apply when it does not hold"""


_LAT = "fastest fp32 @{size} (ms)"
CLAIMS = (
    Claim("most_accurate", "MobileNetV2 is the most accurate on CIFAR-10", ("MobileNetV2",), TOP1, False, "accuracy"),
    Claim("fewest_params", "ShuffleNetV2 has the fewest parameters", ("ShuffleNetV2",), "params (M)", True, "cost"),
    Claim("least_memory", "ShuffleNetV2 uses the least memory", ("ShuffleNetV2",), "peak act (MB)", True, "cost"),
    Claim(
        "smallest_file", "ShuffleNetV2 has the smallest model file", ("ShuffleNetV2",), "ONNX fp32 (MB)", True, "cost"
    ),
    Claim("fastest", "ShuffleNetV2 is the fastest", ("ShuffleNetV2",), _LAT, True, "latency"),
    Claim(
        "fewest_flops",
        "MobileNetV3 and GhostNet have the fewest FLOPs",
        ("MobileNetV3", "GhostNet"),
        "FLOPs=2xMACs (M)",
        True,
        "cost",
    ),
    Claim(
        "disappointing",
        "MobileNetV3 and GhostNet disappoint on CIFAR-10 (less accurate than the others)",
        ("MobileNetV3", "GhostNet"),
        TOP1,
        False,
        "accuracy",
    ),
    Claim("slowest", "MobileNetV2 and GhostNet are the slowest", ("MobileNetV2", "GhostNet"), _LAT, False, "latency"),
    Claim(
        "pareto_king",
        "ShuffleNetV2 is the best on latency vs accuracy (the Pareto front)",
        ("ShuffleNetV2",),
        _LAT,
        True,
        "latency",
    ),
    Claim("trains_fastest", "ShuffleNetV2 trains fastest", ("ShuffleNetV2",), "train img/s", False, "training"),
)


def _v(row: dict[str, Any], col: str) -> float | None:
    v = row.get(col)
    return float(v) if isinstance(v, (int, float)) else None


def _best(rows: list[dict[str, Any]], col: str, lowest: bool) -> dict[str, Any]:
    return (min if lowest else max)(rows, key=lambda r: _v(r, col))


_UNITS = {TOP1: "%", "params (M)": " M params", "peak act (MB)": " MB peak activations", "ONNX fp32 (MB)": " MB",
          "FLOPs=2xMACs (M)": " MFLOPs", "train img/s": " img/s"}  # fmt: skip


def _desc(r: dict[str, Any], col: str) -> str:
    unit = _UNITS.get(col, " ms" if col.endswith("(ms)") else "")
    return f"{r['model']} {_v(r, col):.4g}{unit}"


def _with_imagenet(r: dict[str, Any], col: str) -> str:
    pub = _v(r, IMAGENET)
    return _desc(r, col) + (f" (ImageNet, published: {pub:.4g}%)" if pub is not None else "")


def _standard(c: Claim, rows: list[dict[str, Any]], col: str) -> tuple[str, bool, dict, dict]:
    """(measured, holds, the winner, the claimed families' best) for a lowest/highest claim."""
    if c.key == "disappointing":  # the claimed families' best is below the others' best
        mine = _best([r for r in rows if r["family"] in c.families], col, False)
        other = _best([r for r in rows if r["family"] not in c.families], col, False)
        measured = f"best MobileNetV3/GhostNet: {_with_imagenet(mine, col)}; best other: {_with_imagenet(other, col)}"
        return measured, _v(mine, col) < _v(other, col), other, mine
    win = _best(rows, col, c.lowest)
    mine = _best([r for r in rows if r["family"] in c.families], col, c.lowest)
    word = "lowest" if c.lowest else "highest"
    measured = f"{word}: {_desc(win, col)} ({win['family']})"
    if win["family"] not in c.families:
        measured += f"; best {'/'.join(c.families)}: {_desc(mine, col)}"
    return measured, win["family"] in c.families, win, mine


def _pareto(rows: list[dict[str, Any]], col: str) -> tuple[str, bool, dict, dict]:
    from ..bench.report import pareto_front

    front = [rows[i] for i in pareto_front([(_v(r, col), _v(r, TOP1)) for r in rows])]
    counts = Counter(r["family"] for r in front)
    top = max(counts.values())
    holds = counts.get("ShuffleNetV2", 0) == top
    measured = "front: " + ", ".join(r["model"] for r in front)
    leader = next(r for r in front if counts[r["family"]] == top)
    mine = next((r for r in rows if r["family"] == "ShuffleNetV2"), leader)
    return measured, holds, leader, mine


def _on_seed_engine(c: Claim, rows: list[dict[str, Any]], ctx: dict[str, Any]) -> str:
    """The latency claim's winner on ncnn, the seed's engine, where this run timed it on every model."""
    names = {r["model"] for r in rows}
    ms = {r["model"]: float(r["median_ms"]) for r in ctx.get("latency", [])
          if r["backend"] == "ncnn" and r["precision"] == "fp32" and r["input_size"] == ctx["size"]
          and r["status"] == "ok" and r["model"] in names}  # fmt: skip
    if set(ms) != names:
        return ""
    win = (min if c.lowest else max)(ms, key=ms.get)
    family = next(r["family"] for r in rows if r["model"] == win)
    return f"; on ncnn (the seed's engine): {win} {ms[win]:.4g} ms ({family})"


def _at_other_sizes(c: Claim, rows: list[dict[str, Any]], ctx: dict[str, Any]) -> str:
    """The same latency claim's winner at the other measured input sizes (e.g. 224x224)."""
    out = ""
    for size in ctx.get("other_sizes", []):
        col = c.column.format(size=size)
        have = [r for r in rows if _v(r, col) is not None]
        if have:
            win = _best(have, col, c.lowest)
            out += f"; at {size}x{size}: {_desc(win, col)} ({win['family']})"
    return out


def _cost_notes(c: Claim, win: dict, mine: dict) -> list[str]:
    """What the winner's MACs and memory access say about its latency against the claimed family's best."""
    if c.key == "pareto_king":
        return [f"the front is led by {win['family']}"]
    wm, mm = _v(win, "MACs (M)"), _v(mine, "MACs (M)")
    wa, ma = _v(win, "mem access (MB)"), _v(mine, "mem access (MB)")
    if win is mine or None in (wm, mm, wa, ma):
        return []
    pace = "faster" if c.lowest else "slower"
    if wm == mm:
        return [f"{win['model']} has the same MACs ({wm:.4g} M); memory access {wa:.4g} vs {ma:.4g} MB"]
    if (wm > mm) == c.lowest:  # faster with more MACs, or slower with fewer
        macs = f"{pace} despite {'more' if c.lowest else 'fewer'} MACs ({wm:.4g} vs {mm:.4g} M): FLOPs are not latency"
    else:
        macs = f"{'fewer' if c.lowest else 'more'} MACs ({wm:.4g} vs {mm:.4g} M)"
    mem = f"memory access {wa:.4g} vs {ma:.4g} MB"
    return [f"{win['model']} is {macs}; {mem}" if "despite" in macs else f"{win['model']} has {macs}; {mem}"]


def _reason(c: Claim, win: dict, mine: dict, col: str, ctx: dict[str, Any]) -> str:
    """Why this run disagrees, from the measurements."""
    parts = []
    if c.kind == "accuracy":
        s = ctx["settings"]
        how = f"a {s['budget_min']:g}-minute budget per model" if s["budget_min"] else f"{ctx['epochs']} epochs"
        parts.append(f"trained with {how} ({ctx['epochs']} epochs): rankings under a small budget may differ from "
                     "converged ones, and the seed trained to convergence")  # fmt: skip
    if c.kind == "latency":
        engine = win.get(f"engine @{ctx['size']}") or "?"
        parts.append(f"timed here on {ctx['cpu']} with {engine}"
                     f" (batch 1, 1 thread, {ctx['size']}x{ctx['size']}); {SEED_SETUP}")  # fmt: skip
        parts += _cost_notes(c, win, mine)
    if c.kind == "cost" and c.key in ("fewest_flops", "least_memory"):  # these depend on the input and the stem
        level = int(ctx.get("small_input") or 0)
        stem = f" with the CIFAR stem (small_input={level}: {SMALL_INPUT.get(level, '?')})" if level else ""
        parts.append(f"counted at {ctx['size']}x{ctx['size']}{stem}, where each "
                     "family's early feature maps weigh differently than in the 224x224 ImageNet networks")  # fmt: skip
    if c.kind == "training":
        parts.append(f"images/s of training on {win.get('device') or '?'}")
    if set(ctx["models"]) != set(STUDY_MODELS):
        parts.append(f"this run's {len(ctx['models'])} models are not the seed's eleven (widths differ)")
    if c.key != "pareto_king" and win is not mine:
        verb = "ties with" if _v(win, col) == _v(mine, col) else "beats"
        parts.insert(0, f"{win['model']} ({win['family']}) {verb} the best {'/'.join(c.families)}, {mine['model']}")
    return "; ".join(parts)


def check_claims(rows: list[dict[str, Any]], ctx: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per claim of :data:`CLAIMS`. ``rows``: :func:`mobilezoo.study.results.model_rows`; ``ctx``:
    ``settings`` (the study's), ``size`` (the CIFAR input the claims are judged at), ``other_sizes`` (also shown
    for the latency claims), ``cpu``, ``epochs`` (trained, e.g. ``"3-5"``), ``models``, ``small_input`` (the
    recipe's CIFAR stem), ``latency`` (every benchmark row: the ncnn winner is shown too)."""
    out = []
    for c in CLAIMS:
        col = c.column.format(size=ctx["size"])
        have = [r for r in rows if _v(r, col) is not None and (c.key != "pareto_king" or _v(r, TOP1) is not None)]
        fams = {r["family"] for r in have}
        row = {"claim (seed)": c.text, "this run measured": "", "verdict": NOT_MEASURED, "why": ""}
        if not fams & set(c.families):
            row["this run measured"] = f"no {'/'.join(c.families)} model in this run"
        elif not fams - set(c.families):
            row["this run measured"] = f"only {'/'.join(sorted(fams))} measured: nothing to compare with"
        else:
            measured, holds, win, mine = _pareto(have, col) if c.key == "pareto_king" else _standard(c, have, col)
            if c.kind == "latency" and c.key != "pareto_king":
                measured += _on_seed_engine(c, have, ctx) + _at_other_sizes(c, rows, ctx)
            row.update({"this run measured": measured, "verdict": AGREE if holds else DISAGREE})
            if not holds:
                row["why"] = _reason(c, win, mine, col, ctx)
        out.append(row)
    return out
