"""Which deployment rewrites pay off on which engine: an ablation (``mobilezoo.models.rewrite``).

For each network where a rewrite applies and each fp32 engine of the registry that runs here, the network is
exported once per rewrite set (none, each rewrite alone, the default set, all), every artifact is gated against eager
PyTorch (a wrong one is recorded, never timed), and that engine's artifacts are timed side by side, interleaved in
rounds on one pinned core (batch 1, one thread, 224x224, random weights with BatchNorm statistics set). A rewrite is
called faster or slower only when its margin over "none" exceeds the two rows' combined run-to-run spread (IQR of the
round medians / their median), a tie otherwise.

    python benchmarks/rewrites_cpu.py                                  # MobileNetV3 large and small x1.0
    python benchmarks/rewrites_cpu.py --models MobileNetV3_small_x1_0 --engines onnxruntime --rounds 3 --out smoke

Writes ``benchmarks/results/rewrites_cpu.{csv,json,md}`` (after every network, so a stopped run keeps what it has).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE / "train"))
from _common import RESULTS, machine, write  # noqa: E402
from peers_cpu import _spread, machine_line, timing_fields  # noqa: E402

MODELS = ("MobileNetV3_large_x1_0", "MobileNetV3_small_x1_0")
ENGINES = ("onnxruntime", "openvino", "ncnn", "executorch", "litert", "mnn", "torch")


def variants(model: torch.nn.Module) -> dict[str, tuple[str, ...]]:
    """none, each rewrite alone, the default set and all of them; a set that changes this model no differently from
    an earlier one is left out."""
    from mobilezoo.models.rewrite import DEFAULT, REWRITES, applied, using

    cands = {"none": (), **{n: (n,) for n in REWRITES}, "default": DEFAULT, "all": tuple(REWRITES)}
    out, seen = {}, set()
    for key, names in cands.items():
        with using(names):
            effect = tuple(applied(model))
        if effect not in seen:
            seen.add(effect)
            out[key] = names
    return out


def network(name: str) -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor]:
    """The zoo network with random weights, BatchNorm statistics set from noise (bench.grid.prepare_model), its
    input and eager output."""
    from mobilezoo.bench.grid import prepare_model

    model = prepare_model(name, "random")
    x = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        return model, x, model(x)


def knob_variants(eng) -> dict[str, tuple[tuple[str, ...], dict[str, Any]]]:
    """The engine's own settings, one at a time away from its default, on the default rewrites: key -> (rewrites,
    knobs); judged against the ``default`` variant."""
    from mobilezoo.models.rewrite import DEFAULT

    return {f"{k}={v}": (DEFAULT, {k: v}) for k, vals in eng.knobs.items() for v in vals[1:]}


def sessions(eng, model, x, ref, vs: dict, work: Path, rows: list, base: dict) -> dict[str, Any]:
    """Each variant's artifact built, opened (one thread, with its knobs) and gated; returns variant -> timed call.
    ``vs``: key -> rewrite names, or (rewrite names, knobs)."""
    from mobilezoo.backends import quiet
    from mobilezoo.measure.gate import check
    from mobilezoo.models.rewrite import using

    fns = {}
    for key, v in vs.items():
        names, knobs = v if isinstance(v, tuple) and len(v) == 2 and isinstance(v[1], dict) else (v, {})
        row = {**base, "variant": key, "rewrites": "+".join(names) or "-", "baseline": "default" if knobs else "none"}
        row["knobs"] = ",".join(f"{k}={val}" for k, val in knobs.items()) or "-"
        try:
            with using(names), quiet():
                src = model if eng.name == "torch" else eng.export(model, work / eng.name / key, input_size=224)
                sess = eng.open(src, threads=1, batch_size=1, **({"knobs": knobs} if knobs else {}))
        except Exception as e:
            rows.append({**row, "status": "error", "note": f"{type(e).__name__}: {e}"[:300]})
            continue
        g = check(ref, sess(x), "fp32")
        if not g.ok:
            rows.append({**row, "status": "wrong", "gate_rel_diff": g.rel_diff})
            continue
        fns[key] = (sess.timed_call(x), {**row, "status": "ok", "gate_rel_diff": g.rel_diff})
    return fns


def judge(rows: list[dict]) -> None:
    """Each ok row's speed-up over its baseline row of the same engine ("none" for a rewrite variant, "default" for
    a knob) and the verdict (faster / slower / tie)."""
    by = {(r["model"], r["engine"], r["variant"]): r for r in rows if r["status"] == "ok"}
    for r in rows:
        none = by.get((r["model"], r["engine"], r.get("baseline", "none")))
        if r["status"] != "ok" or none is None or r is none:
            continue
        r["speedup_vs_none"] = s = none["median_ms"] / r["median_ms"]
        spread = _spread(r, none)
        margin = s - 1.0
        r["verdict"] = "faster" if margin > spread else "slower" if margin < -spread else "tie"
        r["spread_vs_none"] = spread


def run_engine(name: str, eng, model, x, ref, work: Path, args, rows: list) -> None:
    from mobilezoo.measure.harness import measure_interleaved

    base = {"model": name, "engine": eng.name, "version": eng.version(), "threads": 1, "batch": 1, "size": 224}
    from mobilezoo.models.rewrite import DEFAULT

    vs: dict[str, Any] = dict(variants(model))
    if args.knobs and eng.knobs:
        vs.setdefault("default", DEFAULT)  # the knobs' baseline, even where the default rewrites change nothing
        vs |= knob_variants(eng)
    fns = sessions(eng, model, x, ref, vs, work, rows, base)
    rm: dict[str, list[float]] = {}
    stats = measure_interleaved(
        {k: f for k, (f, _r) in fns.items()},
        rounds=args.rounds,
        min_iters=5,
        min_round_s=args.min_round_s,
        warmup_iters=10,
        round_medians=rm,
    )
    for key, (_f, row) in fns.items():
        rows.append(row | timing_fields(stats[key], rm[key]))
    print(
        f"  {name} {eng.name}: " + ", ".join(f"{k} {stats[k].median_ms:.3f} ms" for k in fns),
        file=sys.stderr,
        flush=True,
    )


def markdown(rows: list[dict], meta: dict) -> str:
    head = [
        "# Deployment rewrites, per engine and network (fp32, batch 1, one thread, 224x224)",
        "",
        f"Written by `{meta['command']}`. Machine: {meta['machine_line']}. Median of all calls; run-to-run = IQR of "
        "the round medians / their median; a rewrite is faster/slower than `none` only beyond the two rows' "
        "combined run-to-run spread, a tie otherwise. Every artifact was gated against eager PyTorch first.",
        "",
        "| model | engine | variant | rewrites | knobs | median ms | run-to-run | vs baseline | baseline | verdict |",
        "|---|---|---|---|---|---:|---:|---:|---|---|",
    ]
    body = []
    for r in rows:
        lead = f"| {r['model']} | {r['engine']} | {r['variant']} | {r['rewrites']} | {r.get('knobs', '-')}"
        if r["status"] != "ok":
            body.append(f"{lead} | {r['status']} | | | | |")
            continue
        vs = f"{r['speedup_vs_none']:.3f}x" if "speedup_vs_none" in r else ""
        body.append(
            f"{lead} | {r['median_ms']:.3f} | {r['run_to_run']:.1%} | {vs} | {r.get('baseline', 'none')} | "
            f"{r.get('verdict', '')} |"
        )
    return "\n".join(head + body + ["", f"No rewrite applies to: {', '.join(meta['untouched'])}.", ""])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--engines", default=",".join(ENGINES))
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--min-round-s", type=float, default=0.2)
    ap.add_argument("--out", default="rewrites_cpu")
    ap.add_argument("--knobs", action="store_true", help="also each engine's own settings (Backend.knobs), one by one")
    args = ap.parse_args()
    from mobilezoo import backends, create_model
    from mobilezoo.measure.harness import idlest_cores, pinned
    from mobilezoo.models import list_models

    engines = [backends.get(e) for e in args.engines.split(",")]
    engines = [e for e in engines if e.unsupported("fp32", "cpu") is None]
    info, t0, rows = machine(), time.perf_counter(), []
    untouched = [
        m
        for m in list_models(pattern="*x1_0", archs_only=True)
        if len(variants(create_model(m, weights="random"))) == 1
    ]
    meta = {"command": "python " + " ".join(["benchmarks/rewrites_cpu.py", *sys.argv[1:]]), "machine": info}
    meta |= {"machine_line": machine_line(info), "engines": [e.name for e in engines], "untouched": untouched}
    for name in args.models.split(","):
        print(f"== {name}", file=sys.stderr, flush=True)
        model, x, ref = network(name)
        with tempfile.TemporaryDirectory(prefix="rewrites-") as tmp, pinned(1, idlest_cores(1)):
            for eng in engines:
                run_engine(name, eng, model, x, ref, Path(tmp), args, rows)
        judge(rows)
        meta["wall_s"] = time.perf_counter() - t0
        write(args.out, rows, meta)
        (RESULTS / f"{args.out}.md").write_text(markdown(rows, meta))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
