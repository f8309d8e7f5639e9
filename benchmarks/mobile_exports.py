"""Every zoo model exported to the phone engines' formats, each artifact checked: run on its engine and compared with
eager PyTorch on the bundled photos where the engine runs here (ExecuTorch, LiteRT, MNN), validated where it cannot
(Core ML on Linux: the ML program rebuilt by coremltools, every op a Core ML op, input and output shapes).

    python benchmarks/mobile_exports.py                          # every model: executorch, litert, mnn and coreml
    python benchmarks/mobile_exports.py --engines mnn --models GhostNet_x0_5,ShuffleNetV2_x1_0 --out subset

Weights: random, with BatchNorm statistics measured on the photos (as the tests do), so the logits depend on the
image; an export that computes another function shows as a large difference. Writes
``benchmarks/results/mobile_exports.{csv,json,md}`` (one row per model and engine; failures with their one-line
reason). The CI tests check one width of every family (``tests/test_mnn_coreml.py``,
``tests/test_executorch_litert.py``); this is the every-model check.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import traceback
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent / "train"))
from _common import DATA, RESULTS, machine, rel, write

TOLERANCE = 1e-3
"""fp32: max |diff| below this fraction of the largest logit, and the same top-5 on every photo."""


def calibrated(name: str) -> torch.nn.Module:
    """Random weights with BatchNorm statistics measured on the photos (tests/test_runtime.py's ``calibrated``)."""
    import mobilezoo as mz
    from mobilezoo.data import load_image

    torch.manual_seed(0)
    model = mz.create_model(name, weights="random")
    pre = mz.data.eval_preprocess(model)
    batch = torch.stack([pre(load_image(p)) for p in sorted((DATA / "images").glob("*.jpg"))])
    for bn in model.modules():
        if isinstance(bn, torch.nn.BatchNorm2d):
            bn.momentum = None
    model.train()
    with torch.no_grad():
        model(batch)
    return model.eval()


def one(name: str, engine: str, work: Path) -> dict:
    from mobilezoo import backends
    from mobilezoo.data import load_image
    from mobilezoo.export import check_export

    eng = backends.get(engine)
    row: dict = {"model": name, "engine": engine, "precision": "fp32", "version": eng.version()}
    model = calibrated(name)
    t = time.perf_counter()
    try:
        path = eng.export(model, work / f"{name}-{engine}")
        row["export_s"] = round(time.perf_counter() - t, 1)
        chk = check_export(model, path, [load_image(p) for p in sorted((DATA / "images").glob("*.jpg"))])
    except Exception as e:  # a model that does not export is a result: its one-line reason
        lines = f"{type(e).__name__}: {e}".strip().splitlines() or [type(e).__name__]
        return {**row, "status": "fail", "reason": lines[0][:300], "where": traceback.format_exc(limit=-2)[-300:]}
    if chk.validated:
        return {**row, "status": "validated", "check": chk.validated}
    ok = chk.max_abs_diff < TOLERANCE * chk.max_abs_logit and chk.top5_agreement == 1.0
    return {
        **row,
        "status": "ok" if ok else "wrong",
        "max_abs_diff": chk.max_abs_diff,
        "max_abs_logit": chk.max_abs_logit,
        "rel_diff": chk.max_abs_diff / chk.max_abs_logit,
        "top5_agreement": chk.top5_agreement,
        "check": chk.line(),
    }


def markdown(rows: list[dict], meta: dict) -> str:
    engines = list(dict.fromkeys(r["engine"] for r in rows))
    out = [
        "# Every zoo model exported to the phone engines",
        "",
        f"Written by `{meta['command']}` on {meta['machine'].get('cpu_model', '?')}. fp32, random weights with "
        f"BatchNorm statistics from the photos; `ok`: the artifact ran on its engine and matched eager PyTorch on the "
        f"{meta['photos']} photos (max |diff| < {TOLERANCE:g} x max |logit|, same top-5); `validated`: the engine "
        "cannot run here, the artifact passed its structural check instead.",
        "",
    ]
    for e in engines:
        mine = [r for r in rows if r["engine"] == e]
        counts = {s: sum(r["status"] == s for r in mine) for s in ("ok", "validated", "wrong", "fail")}
        summary = ", ".join(f"{n} {s}" for s, n in counts.items() if n)
        worst = max((r.get("rel_diff", 0.0) for r in mine), default=0.0)
        out.append(
            f"- **{e}** ({mine[0].get('version')}): {len(mine)} models: {summary}"
            + (f"; largest max|diff|/max|logit| {worst:.2g}" if worst else "")
        )
        for r in mine:
            if r["status"] in ("wrong", "fail"):
                out.append(f"  - {r['model']}: {r['status']}: {r.get('reason') or r.get('check')}")
    return "\n".join(out) + "\n"


def main() -> None:
    from mobilezoo.models import list_models

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="all", help="comma list of zoo names, or all")
    ap.add_argument(
        "--engines", default="executorch,litert,mnn,coreml", help="comma list of engines with a format of their own"
    )
    ap.add_argument("--out", default="mobile_exports")
    args = ap.parse_args()
    names = list_models(archs_only=True) if args.models == "all" else args.models.split(",")
    meta = {
        "machine": machine(),
        "command": "python benchmarks/mobile_exports.py " + " ".join(sys.argv[1:]),
        "photos": len(list((DATA / "images").glob("*.jpg"))),
        "data": rel(DATA / "images"),
        "tolerance": TOLERANCE,
    }
    rows: list[dict] = []
    for name in names:
        for engine in args.engines.split(","):
            with tempfile.TemporaryDirectory(prefix="mobile-exports-") as tmp:
                rows.append(one(name, engine, Path(tmp)))
            print(f"{name} {engine}: {rows[-1]['status']} {rows[-1].get('reason') or ''}", flush=True)
            write(args.out, rows, meta)
    (RESULTS / f"{args.out}.md").write_text(markdown(rows, meta))


if __name__ == "__main__":
    main()
