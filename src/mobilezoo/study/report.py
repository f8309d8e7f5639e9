"""The study's report, rebuilt from ``study.json`` alone: ``report.md``, a self-contained ``report.html``,
``results.csv``/``results.json`` (one row per model), ``latency.csv`` (every engine at every input size),
``conclusions.csv``, ``training.csv`` (what ``mobilezoo report --training-results`` reads) and ``plots/`` (top-1
vs latency with the Pareto front at each input size, top-1 vs MACs, latency vs MACs and vs memory access cost) —
with :mod:`mobilezoo.bench.report`'s plots and page writer."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from ..bench.grid import BenchRun
from ..bench.report import Section, plot_latency_vs, plot_top1_vs_latency, plot_top1_vs_macs, write_pages
from .conclusions import check_claims
from .plan import State
from .results import TOP1, latency_rows, latency_table, model_rows

__all__ = ["write_report"]

TITLE = "mobilezoo study: CIFAR-10 on seven dimensions"
INTRO = ("Regenerate with `mobilezoo study --resume DIR` (finished models are not retrained); the numbers are in "
         "results.csv / results.json, every timed configuration in latency.csv.")  # fmt: skip
CONVENTIONS = (
    "Top-1/top-5: the final weights on the test split (never used to pick a checkpoint). MACs: multiply-accumulates "
    "of convolutions and linear layers at the CIFAR input (FLOPs = 2 x MACs). Params: trainable parameters. Peak "
    "act: the largest total of live activations in one eager batch-1 pass; mem access: bytes read + written by "
    "every eager op. Weights fp32: the parameters' bytes; ONNX fp32/int8: the exported files (BatchNorm folded; "
    "int8: ONNX Runtime static PTQ, QDQ, calibrated on training images). Latency: median per call, batch 1, one "
    "thread, after the numerical gate against eager PyTorch (`wrong`: failed it, never timed)."
)


def _write_csv(rows: list[dict[str, Any]], path: Path) -> Path:
    fields = list(dict.fromkeys(k for r in rows for k in r)) or ["model"]
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields, lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
    return path


def _epochs_text(rows: list[dict[str, Any]]) -> str:
    eps = sorted({round(float(r["epochs"]), 1) for r in rows})  # a budget-fitted run ends inside an epoch
    return "?" if not eps else f"{eps[0]:g}" if len(eps) == 1 else f"{eps[0]:g}-{eps[-1]:g}"


def _refitted(doc: dict[str, Any], key: str = "refit") -> bool:
    return any((r.get("plan") or {}).get(key) for r in doc["models"].values())


def _setup_lines(doc: dict[str, Any], rows: list[dict[str, Any]]) -> list[str]:
    s, m = doc["settings"], doc["machine"]
    done = [r["model"] for r in rows]
    missing = [n for n in s["models"] if n not in done]
    if s["budget_min"] is not None:
        again = " and again at half its steps" if _refitted(doc, "refit_mid") else ""
        how = (f"a wall-clock training budget of {s['budget_min']:g} min per model (the same for all); each model's "
               "steps (the last epoch partial) and cosine schedule fitted to it from a "
               f"{s['probe_steps']}-step speed probe (its median step"
               + (f"), then re-fitted at the end of the warm-up{again} to the pace the run itself measured (the "
                  "Training table's run steps/s)" if _refitted(doc) else "")
               + "; where the machine's speed changed, the Training table's trained / planned says so)")  # fmt: skip
    else:
        how = f"{_epochs_text(rows)} epochs per model (fixed)"
    lines = [
        f"Data: {s['data']}; models: {', '.join(done) or 'none finished'}"
        + (f" (not finished: {', '.join(missing)})" if missing else ""),
        f"Training mode: {'budget' if s['budget_min'] is not None else 'epochs'}: {how}; recipe {s['recipe']}"
        + (f" with {' '.join(s['overrides'])}" if s["overrides"] else "")
        + f"; trained {_epochs_text(rows)} epochs. Rankings under a small budget may differ from converged ones.",
        f"Machine: {_cpu_text(m)}, {m.get('logical_cpus')} logical CPUs, {m.get('memory_gb')} GB"
        + (f"; GPU {m['gpu']['name']}" if m.get("gpu") else "")
        + f"; training device: {', '.join(sorted({r['device'] for r in rows})) or '?'}",
        *_machine_lines(doc),
        f"Latency engines: {', '.join(dict.fromkeys(r['backend'] for r in latency_rows(doc))) or 'none yet'}"
        f"{'' if s['engines'] else ' (every one that runs fp32 here)'}; batch 1, one thread; input sizes "
        f"{', '.join(f'{x}x{x}' for x in s['sizes'])}; the harness's quick policy (few rounds).",
        f"Started {doc.get('created')}, last updated {doc.get('updated')}.",
    ]
    return lines


def _cpu_text(m: dict[str, Any]) -> str:
    """The CPU as a reader compares machines: its name, microarchitecture, family/model and vector ISA."""
    fm = m.get("cpu_family_model")
    arch = ", ".join(x for x in (m.get("microarchitecture"), fm and f"family/model {fm}") if x)
    parts = [arch] if arch else []
    if m.get("cpu_features"):
        parts.append("+".join(m["cpu_features"]))
    return f"{m.get('cpu_model')}" + (f" ({'; '.join(parts)})" if parts else "")


def _machines(doc: dict[str, Any]) -> tuple[list[str], list[str]]:
    """The machines the finished models trained on and were measured on (records from before machines were kept
    count as the study's own machine)."""
    own = doc["machine"].get("key") or doc["machine"].get("cpu_model") or "?"
    done = [r for r in doc["models"].values() if r.get("status") == "done"]
    train = [k for r in done for k in (r.get("train") or {}).get("machines") or [own]]
    measure = [(r.get("measure") or {}).get("machine") or own for r in done]
    return list(dict.fromkeys(train)), list(dict.fromkeys(measure))


def _machine_lines(doc: dict[str, Any]) -> list[str]:
    """Where a study resumed on other machines: which, and what compares only within one."""
    train, measure = _machines(doc)
    out = []
    if len(train) > 1:
        out.append(f"Training ran on {len(train)} machines ({'; '.join(train)}): training time and img/s compare "
                   "only between models trained on one (the Training table names each model's).")  # fmt: skip
    if len(measure) > 1:
        out.append(f"Latency was measured on {len(measure)} machines ({'; '.join(measure)}): it compares only "
                   "within one. `mobilezoo study --resume DIR --remeasure` measures every finished model again "
                   "here, in one run.")  # fmt: skip
    return out


def _training_rows(doc: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for name, rec in doc["models"].items():
        t, p = rec.get("train"), rec.get("plan") or {}
        if not t:
            continue
        probe, refit, mid = p.get("probe") or {}, p.get("refit") or {}, p.get("refit_mid") or {}
        p = {**p, **refit, **mid}  # the plan the run ended with
        paces = " then ".join(f"{r['steps_per_s']:.2f}" for r in (refit, mid) if r)
        out.append({
            "model": name,
            "epochs": t["epochs"],
            "planned (min)": round(p["planned_train_s"] / 60, 2) if p.get("planned_train_s") else "",
            "trained (min)": round(t["train_time_s"] / 60, 2),
            "trained / planned": round(t["train_time_s"] / p["planned_train_s"], 2) if p.get("planned_train_s") else "",
            "over budget": "yes: not one whole epoch fits" if p.get("over_budget") else "",
            "probe steps/s": round(probe["steps_per_s"], 2) if probe else "",
            **({"run steps/s (re-fit)": paces} if _refitted(doc) else {}),
            "train img/s": round(t["img_per_s"], 1),
            "final train loss": round(t["final_loss"], 4) if t.get("final_loss") is not None else "",
            "device": t["device"],
            **({"machines": "; ".join(t.get("machines") or [])} if len(_machines(doc)[0]) > 1 else {}),
        })  # fmt: skip
    return out


def _training_csv_rows(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """The trained models in the format ``mobilezoo report --training-results`` reads (its CIFAR-10 column)."""
    out = []
    for name, rec in doc["models"].items():
        t = rec.get("train")
        if t:
            out.append({"model": name, "top1": t["top1"], "top5": t["top5"], "epochs": t["epochs"],
                        "train_time_s": round(t["train_time_s"], 1), "device": t["device"],
                        "recipe": t["recipe"].get("name", "")})  # fmt: skip
    return out


def _plots(doc: dict[str, Any], rows: list[dict[str, Any]], plot_dir: Path) -> list[tuple[str, str, bytes]]:
    models = {n: r["measure"] for n, r in doc["models"].items() if r.get("status") == "done"}
    sizes = doc["settings"]["sizes"]
    runs = {s: BenchRun(doc["machine"], {}, latency_rows(doc, s), models) for s in sizes}
    todo = [(f"top1_vs_latency_{s}.png", f"CIFAR-10 top-1 vs latency at {s}x{s} (fastest fp32 engine), Pareto front",
             lambda s=s: plot_top1_vs_latency(rows, runs[s], TOP1)) for s in sizes]  # fmt: skip
    todo += [
        ("top1_vs_macs.png", "CIFAR-10 top-1 vs MACs", lambda: plot_top1_vs_macs(rows, runs[sizes[0]])),
        (f"latency_vs_macs_{sizes[0]}.png", f"Latency vs MACs at {sizes[0]}x{sizes[0]} per engine",
         lambda: plot_latency_vs(runs[sizes[0]], "macs")),
        (f"latency_vs_memory_access_{sizes[0]}.png", f"Latency vs memory access cost at {sizes[0]}x{sizes[0]}",
         lambda: plot_latency_vs(runs[sizes[0]], "mem")),
    ]  # fmt: skip
    plots = []
    for fname, caption, make in todo:
        png = make() if rows else None
        if png:
            (plot_dir / fname).write_bytes(png)
            plots.append((fname, caption, png))
    return plots


def _problems(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """Engines that answered wrong or failed, and file sizes that could not be measured."""
    out = [{"model": r["model"], "input": r["input_size"], "engine": f"{r['backend']} {r['precision']}",
            "status": r["status"], "detail": r.get("reason") or ""}
           for r in latency_rows(doc) if r["status"] in ("wrong", "error")]  # fmt: skip
    for name, rec in doc["models"].items():
        err = (rec.get("measure") or {}).get("file_size_error")
        if err:
            out.append({"model": name, "input": "", "engine": "onnx export / int8 PTQ", "status": "error",
                        "detail": err})  # fmt: skip
    return out


def write_report(state: State) -> dict[str, Path]:
    """Every output file of the study from its state (finished models only); returns their paths."""
    doc, out = state.doc, state.out
    (out / "plots").mkdir(parents=True, exist_ok=True)
    rows = model_rows(doc)
    s = doc["settings"]
    ctx = {"settings": s, "size": s["sizes"][0], "other_sizes": s["sizes"][1:],
           "cpu": doc["machine"].get("cpu_model") or "this CPU",
           "epochs": _epochs_text(rows), "models": [r["model"] for r in rows], "latency": latency_rows(doc),
           "small_input": max((int(m["train"]["recipe"].get("small_input") or 0) for m in doc["models"].values()
                               if m.get("status") == "done"), default=0)}  # fmt: skip
    claims = check_claims(rows, ctx)
    paths = {
        "results_csv": _write_csv(rows, out / "results.csv"),
        "latency_csv": _write_csv(latency_rows(doc), out / "latency.csv"),
        "conclusions_csv": _write_csv(claims, out / "conclusions.csv"),
        "training_csv": _write_csv(_training_csv_rows(doc), out / "training.csv"),
    }
    doc_out = {"schema": doc["schema"], "settings": s, "machine": doc["machine"], "models": rows,
               "conclusions": claims, "training": _training_rows(doc), "latency": latency_rows(doc)}  # fmt: skip
    (out / "results.json").write_text(json.dumps(doc_out, indent=1, default=str) + "\n")
    paths["results_json"] = out / "results.json"
    plots = _plots(doc, rows, out / "plots")
    sections: list[Section] = [
        ("Setup", "lines", _setup_lines(doc, rows)),
        ("Conventions", "lines", [CONVENTIONS]),
        ("The seven dimensions", "table", (rows, None)),
        ("The seed's conclusions, checked against this run", "table", (claims, None)),
        *[
            (f"Latency at {x}x{x} per engine (median ms; ~ = noisy)", "table", (latency_table(doc, x), None))
            for x in s["sizes"]
        ],
        ("Training", "table", (_training_rows(doc), None)),
        ("Plots", "plots", plots),
        ("Problems: wrong answers and errors", "table", (_problems(doc), None)),
    ]
    paths.update(write_pages(out, TITLE, sections, INTRO))
    paths.update({fname: out / "plots" / fname for fname, _, _ in plots})
    return paths
