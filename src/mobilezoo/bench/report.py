"""The comparison report: the study's seven dimensions for every model, measured on this machine, beside the figures
PaddleClas published for a Snapdragon 855, a V100 and a T4 — as Markdown and a self-contained HTML page with plots.

Dimensions: top-1 (ImageNet: PaddleClas's published figure; CIFAR-10: measured by the training runs' committed
results, ``not measured`` where there are none), MACs (FLOPs = 2 x MACs), params, peak activation memory, model
file size, latency per backend and precision, training time. Plots: top-1 vs MACs, top-1 vs measured latency with
the Pareto front marked, latency vs MACs per backend (FLOPs are not latency), latency vs memory access cost, and
(optionally) one network's per-layer time against its MACs.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import math
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .grid import BenchRun
from .results import write_csv, write_json

__all__ = [
    "NOT_MEASURED",
    "Section",
    "build_report",
    "load_training",
    "model_rows",
    "pareto_front",
    "plot_latency_vs",
    "plot_top1_vs_latency",
    "plot_top1_vs_macs",
    "write_pages",
]

NOT_MEASURED = "not measured"
_PUBLISHED = (  # (reference column, report column)
    ("flops_g", "pub FLOPs (G)"),
    ("params_m", "pub params (M)"),
    ("storage_mb", "pub size (MB)"),
    ("sd855_t1_ms", "SD855 1t (ms)"),
    ("sd855_t2_ms", "SD855 2t (ms)"),
    ("sd855_t4_ms", "SD855 4t (ms)"),
    ("v100_trt_fp32_bs1_ms", "V100 TRT fp32 b1 (ms)"),
    ("t4_trt_fp32_bs1_ms", "T4 TRT fp32 b1 (ms)"),
    ("t4_trt_fp16_bs1_ms", "T4 TRT fp16 b1 (ms)"),
)
_FAMILY_COLORS = {
    "MobileNetV1": "#1f77b4",
    "MobileNetV2": "#ff7f0e",
    "MobileNetV3": "#2ca02c",
    "ShuffleNetV1": "#9467bd",
    "ShuffleNetV2": "#d62728",
    "GhostNet": "#8c564b",
}
Plot = tuple[str, str, bytes]  # (file name, caption, png)
Section = tuple[str, str, Any]  # (heading, kind: "lines" | "table" | "plots", content)


# ----------------------------------------------------------------------------------------------------------- data


def _arch(name: str) -> str:
    from ..models import get_entry

    try:
        return get_entry(name).arch
    except KeyError:
        return name


def load_training(path: str | Path | None) -> dict[str, dict[str, Any]]:
    """CIFAR-10 results per architecture from ``model,top1,top5,epochs,train_time_s,device,recipe`` (best top-1
    per model; top-1 in percent whether the file holds fractions or percents). Missing file: ``{}``."""
    if path is None or not Path(path).is_file():
        return {}
    out: dict[str, dict[str, Any]] = {}
    with Path(path).open(newline="") as f:
        for r in csv.DictReader(f):
            try:
                top1 = float(r.get("top1") or "nan")
            except ValueError:
                continue
            if math.isnan(top1):
                continue
            top1 = top1 * 100 if top1 <= 1.0 else top1
            key = _arch(r.get("model", "").strip())
            if key in out and out[key]["top1"] >= top1:
                continue
            t = r.get("train_time_s") or ""
            out[key] = {
                "top1": top1,
                "train_time_s": float(t) if t.strip() else None,
                "epochs": r.get("epochs"),
                "device": r.get("device"),
                "recipe": r.get("recipe"),
            }
    return out


def _ref(name: str) -> dict[str, Any]:
    from ..reference import reference_row

    try:
        return reference_row(name) or {}
    except KeyError:
        return {}


def _ssld_top1(arch: str) -> float | None:
    from ..models import get_entry, list_models

    best = None
    for n in list_models():
        e = get_entry(n)
        if e.arch == arch and e.weights_tag == "ssld":
            t = _ref(n).get("top1")
            if t is not None:
                best = max(best or 0.0, t)
    return best


def _config_key(r: dict[str, Any]) -> str:
    cl = " CL" if r.get("channels_last") in (True, "True", "true") else ""
    return f"{r['backend']} {r['precision']}{cl}"


def _headline(run: BenchRun) -> tuple[int, int]:
    """(threads, batch size) of the headline latency columns: the smallest measured."""
    ok = run.ok() or run.results
    threads = min((int(r["threads"]) for r in ok if r.get("threads")), default=1)
    batch = min((int(r["batch_size"]) for r in ok if r.get("batch_size")), default=1)
    return threads, batch


def latency_columns(run: BenchRun) -> tuple[list[str], dict[str, dict[str, dict[str, Any]]]]:
    """Headline latency per model and backend/precision: ``(column keys, {model: {key: row}})``."""
    threads, batch = _headline(run)
    table: dict[str, dict[str, dict[str, Any]]] = defaultdict(dict)
    keys: list[str] = []
    for r in run.results:
        if int(r.get("threads") or 0) != threads or int(r.get("batch_size") or 0) != batch:
            continue
        if r["status"] == "skipped":
            continue
        k = _config_key(r)
        if k not in keys:
            keys.append(k)
        table[r["model"]][k] = r
    return keys, table


def _fmt(v: Any, digits: int = 3) -> str:
    if v is None or v == "":
        return ""
    if isinstance(v, float):
        if math.isnan(v):
            return ""
        return f"{v:.{digits}g}" if abs(v) < 1e4 else f"{v:.0f}"
    return str(v)


def _sig(v: float | None, unit: float, digits: int = 4) -> float | None:
    """``v / unit`` to ``digits`` significant digits (None stays None)."""
    return float(f"{v / unit:.{digits}g}") if v else None


def model_rows(run: BenchRun, training: dict[str, dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """One row per model: the seven dimensions, then the published reference columns."""
    training = training or {}
    keys, lat = latency_columns(run)
    names = list(dict.fromkeys([*run.models, *(r["model"] for r in run.results)]))
    rows = []
    for name in names:
        info = run.models.get(name, {})
        ref = _ref(name)
        tr = training.get(_arch(name), {})
        row: dict[str, Any] = {"model": name, "family": info.get("family", "")}
        row["ImageNet top-1 % (pub)"] = round(ref["top1"] * 100, 1) if ref.get("top1") is not None else "not published"
        ssld = _ssld_top1(_arch(name))
        row["SSLD top-1 %"] = round(ssld * 100, 1) if ssld else ""
        row["CIFAR-10 top-1 %"] = round(tr["top1"], 2) if tr.get("top1") is not None else NOT_MEASURED
        row["MACs (M)"] = _sig(info.get("macs"), 1e6)
        row["FLOPs=2xMACs (G)"] = _sig(2 * info["macs"] if info.get("macs") else None, 1e9)
        row["params (M)"] = _sig(info.get("params"), 1e6)
        row["peak act (MB)"] = _sig(info.get("peak_activation_bytes"), 1e6)
        row["mem access (MB)"] = _sig(info.get("mem_access_bytes"), 1e6)
        row["file fp32 (MB)"] = _sig(info.get("onnx-fp32_bytes") or info.get("size_fp32_bytes"), 1e6)
        best_ms, best_key = math.inf, ""
        for k in keys:
            r = lat.get(name, {}).get(k)
            if r is None:
                row[f"{k} (ms)"] = ""
            elif r["status"] != "ok":
                row[f"{k} (ms)"] = r["status"]  # wrong / error: never a number
            else:
                ms = float(r["median_ms"])
                row[f"{k} (ms)"] = round(ms, 3) if not r.get("noisy") else f"{ms:.3g}~"
                if ms < best_ms and r["precision"] == "fp32":
                    best_ms, best_key = ms, k
        row["fastest fp32"] = best_key
        t = tr.get("train_time_s")
        how = ", ".join(x for x in (f"{tr['epochs']} ep" if tr.get("epochs") else "", tr.get("device") or "") if x)
        row["train time"] = (f"{t / 60:.1f} min" + (f" ({how})" if how else "")) if t is not None else NOT_MEASURED
        for col, label in _PUBLISHED:
            row[label] = ref.get(col)
        rows.append(row)
    return rows


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point beats on both axes (lower x = latency, higher y = accuracy),
    in order of increasing x."""
    order = sorted(range(len(points)), key=lambda i: (points[i][0], -points[i][1]))
    front, best = [], -math.inf
    for i in order:
        if points[i][1] > best:
            front.append(i)
            best = points[i][1]
    return front


# ---------------------------------------------------------------------------------------------------------- plots


def _figure(w: float = 7.5, h: float = 5.0):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(w, h), dpi=110)
    return fig, fig.add_subplot(1, 1, 1)


def _plain_log_ticks(*axes) -> None:
    """Log axes labelled 2, 5, 10 ... instead of 2x10^0."""
    from matplotlib.ticker import FuncFormatter

    fmt = FuncFormatter(lambda v, _pos: f"{v:g}")
    for ax in axes:
        for axis in (ax.xaxis, ax.yaxis):
            if axis.get_scale() == "log":
                axis.set_major_formatter(fmt)
                axis.set_minor_formatter(FuncFormatter(lambda v, _pos: f"{v:g}" if str(v)[0] in "25" else ""))


def _png(fig) -> bytes:
    for ax in fig.axes:
        _plain_log_ticks(ax)
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def _best_fp32(run: BenchRun) -> dict[str, float]:
    threads, batch = _headline(run)
    best: dict[str, float] = {}
    for r in run.ok():
        if r["precision"] == "fp32" and int(r["threads"]) == threads and int(r["batch_size"]) == batch:
            best[r["model"]] = min(best.get(r["model"], math.inf), float(r["median_ms"]))
    return best


def _top1_points(rows: list[dict[str, Any]], key: str) -> dict[str, float]:
    return {r["model"]: float(r[key]) for r in rows if isinstance(r.get(key), (int, float))}


def plot_top1_vs_macs(rows: list[dict[str, Any]], run: BenchRun) -> bytes | None:
    fig, ax = _figure()
    n = 0
    for key, marker in (("ImageNet top-1 % (pub)", "o"), ("CIFAR-10 top-1 %", "^")):
        top = _top1_points(rows, key)
        for fam in dict.fromkeys(r["family"] for r in rows):
            pts = [
                (run.models[m]["macs"] / 1e6, t)
                for m, t in top.items()
                if m in run.models and run.models[m]["family"] == fam
            ]
            if pts:
                n += len(pts)
                ax.scatter(
                    *zip(*pts),
                    marker=marker,
                    color=_FAMILY_COLORS.get(fam),
                    alpha=0.85,
                    label=f"{fam} ({'ImageNet, published' if marker == 'o' else 'CIFAR-10, measured'})",
                )
    if not n:
        return None
    ax.set_xscale("log")
    ax.set_xlabel("MACs per image (M, log scale; FLOPs = 2 x MACs)")
    ax.set_ylabel("top-1 (%)")
    ax.set_title("Accuracy vs compute")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return _png(fig)


def plot_top1_vs_latency(
    rows: list[dict[str, Any]], run: BenchRun, key: str = "ImageNet top-1 % (pub)"
) -> bytes | None:
    best = _best_fp32(run)
    top = _top1_points(rows, key)
    names = [m for m in top if m in best]
    if not names:
        return None
    fig, ax = _figure()
    fam = {r["model"]: r["family"] for r in rows}
    pts = [(best[m], top[m]) for m in names]
    for f in dict.fromkeys(fam[m] for m in names):
        sel = [p for m, p in zip(names, pts) if fam[m] == f]
        ax.scatter(*zip(*sel), color=_FAMILY_COLORS.get(f), label=f, alpha=0.85)
    front = pareto_front(pts)
    fx, fy = zip(*(pts[i] for i in front))
    ax.step(fx, fy, where="post", color="black", lw=1.2, label="Pareto front")
    ax.scatter(fx, fy, s=90, facecolors="none", edgecolors="black")
    for i in front:
        ax.annotate(names[i], pts[i], fontsize=6, xytext=(3, -8), textcoords="offset points")
    threads, batch = _headline(run)
    ax.set_xscale("log")
    ax.set_xlabel(f"measured latency, fastest fp32 backend (ms, batch {batch}, {threads} thread(s), log scale)")
    ax.set_ylabel(key.replace(" %", " (%)"))
    ax.set_title("Accuracy vs measured latency on this machine")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return _png(fig)


def _corr(xs: list[float], ys: list[float]) -> float | None:
    if len(xs) < 3:
        return None
    lx, ly = [math.log(x) for x in xs], [math.log(y) for y in ys]
    mx, my = sum(lx) / len(lx), sum(ly) / len(ly)
    sxy = sum((a - mx) * (b - my) for a, b in zip(lx, ly))
    sxx = sum((a - mx) ** 2 for a in lx)
    syy = sum((b - my) ** 2 for b in ly)
    return sxy / math.sqrt(sxx * syy) if sxx > 0 and syy > 0 else None


def plot_latency_vs(run: BenchRun, what: str) -> bytes | None:
    """Latency (headline threads/batch, fp32 unless only other precisions exist) against MACs or memory access."""
    threads, batch = _headline(run)
    field, label = {
        "macs": ("macs", "MACs per image (M)"),
        "mem": ("mem_access_bytes", "memory access cost per image (MB read + written, eager ops)"),
    }[what]
    series: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for r in run.ok():
        info = run.models.get(r["model"])
        if not info or not info.get(field) or int(r["threads"]) != threads or int(r["batch_size"]) != batch:
            continue
        series[_config_key(r)].append((info[field] / 1e6, float(r["median_ms"])))
    if not series:
        return None
    fig, ax = _figure()
    for k, pts in series.items():
        c = _corr(*map(list, zip(*pts))) if len(pts) > 2 else None
        ax.scatter(*zip(*pts), label=f"{k}" + (f" (log-log r={c:.2f})" if c is not None else ""), alpha=0.75, s=18)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel(label + ", log scale")
    ax.set_ylabel(f"latency (ms, batch {batch}, {threads} thread(s)), log scale")
    title = "FLOPs are not latency: same MACs, different time" if what == "macs" else "Latency vs memory access cost"
    ax.set_title(title)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7)
    return _png(fig)


def plot_per_layer(pl: Any) -> bytes | None:
    from matplotlib.figure import Figure

    kinds = pl.by_kind()
    if not kinds:
        return None
    fig = Figure(figsize=(11, 4.5), dpi=110)
    _plot_kind_shares(fig.add_subplot(1, 2, 1), pl.model, kinds)
    _plot_layers_vs_roofline(fig.add_subplot(1, 2, 2), pl.rows)
    return _png(fig)


def _plot_kind_shares(ax, model: str, kinds: list[dict[str, Any]]) -> None:
    """Left panel: each operator kind's share of the time beside its share of the MACs."""
    labels = [k["kind"] for k in kinds]
    ys = range(len(kinds))
    ax.barh([y + 0.2 for y in ys], [k["time_%"] for k in kinds], height=0.4, label="time %")
    ax.barh([y - 0.2 for y in ys], [k["MACs_%"] for k in kinds], height=0.4, label="MACs %")
    ax.set_yticks(list(ys), labels, fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("share of the network (%)")
    ax.set_title(f"{model}: time vs MACs by operator kind")
    ax.legend(fontsize=7)


def _plot_layers_vs_roofline(ax, rows: list[dict[str, Any]]) -> None:
    """Right panel: every timed layer's measured time and roofline bound against its MACs."""
    pts = [(r["MACs"] / 1e6, r["time_ms"], r["roofline_ms"]) for r in rows if r["time_ms"] > 0]
    ax.scatter([p[0] + 1e-3 for p in pts], [p[1] for p in pts], s=10, label="measured")
    ax.scatter([p[0] + 1e-3 for p in pts], [max(p[2], 1e-5) for p in pts], s=10, marker="x", label="roofline bound")
    ax.set_xscale("symlog", linthresh=0.01)
    ax.set_yscale("log")
    ax.set_xlabel("layer MACs (M)")
    ax.set_ylabel("layer time (ms)")
    ax.set_title("each layer: measured time vs roofline bound")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)


# -------------------------------------------------------------------------------------------------------- writers


def _md_table(rows: list[dict[str, Any]], columns: Sequence[str] | None = None) -> str:
    if not rows:
        return "_(none)_\n"
    cols = list(columns or rows[0].keys())
    out = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for r in rows:
        out.append("| " + " | ".join(_fmt(r.get(c)).replace("|", "\\|") for c in cols) + " |")
    return "\n".join(out) + "\n"


def _html_table(rows: list[dict[str, Any]], columns: Sequence[str] | None = None) -> str:
    if not rows:
        return "<p><em>(none)</em></p>"
    cols = list(columns or rows[0].keys())
    head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
    body = []
    for r in rows:
        cells = []
        for c in cols:
            v = r.get(c)
            cls = ' class="bad"' if v in ("wrong", "error") else (' class="na"' if v == NOT_MEASURED else "")
            cells.append(f"<td{cls}>{html.escape(_fmt(v))}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _issues(run: BenchRun) -> list[dict[str, Any]]:
    out = []
    for r in run.results:
        if r["status"] in ("wrong", "error") or r.get("noisy"):
            out.append(
                {
                    "model": r["model"],
                    "config": f"{_config_key(r)} t{r['threads']} b{r['batch_size']}",
                    "status": r["status"] + (" (noisy)" if r.get("noisy") else ""),
                    "detail": r.get("reason") or r.get("noise_reason") or "",
                }
            )
    return out


def _skipped(run: BenchRun) -> list[dict[str, Any]]:
    seen: dict[tuple[str, str], int] = defaultdict(int)
    for r in run.results:
        if r["status"] == "skipped":
            seen[(_config_key(r), r.get("reason") or "")] += 1
    return [{"config": k, "reason": why, "rows": n} for (k, why), n in seen.items()]


def _all_configs(run: BenchRun) -> list[dict[str, Any]]:
    return [
        {
            "model": r["model"],
            "backend": r["backend"],
            "precision": r["precision"],
            "threads": r["threads"],
            "batch": r["batch_size"],
            "CL": "yes" if r.get("channels_last") in (True, "True", "true") else "",
            "median ms": r.get("median_ms"),
            "p90 ms": r.get("p90_ms"),
            "min ms": r.get("min_ms"),
            "spread": r.get("spread"),
            "img/s": r.get("throughput_ips"),
            "noisy": "yes" if r.get("noisy") else "",
            "gate rel diff": r.get("gate_rel_diff"),
        }
        for r in run.ok()
    ]


def _settings_lines(run: BenchRun) -> list[str]:
    m, s = run.machine, run.spec
    v = m.get("versions", {})
    cpu = m.get("cpu_model", "?")
    if m.get("microarchitecture"):
        cpu += f" ({m['microarchitecture']}, family/model {m.get('cpu_family_model')})"
    lines = [
        f"Machine: {cpu}, {m.get('logical_cpus')} logical CPUs, {m.get('memory_gb')} GB, "
        f"ISA {'/'.join(m.get('cpu_features') or [])}" + (", virtual machine" if m.get("hypervisor") else ""),
    ]
    if m.get("gpu"):
        lines.append(f"GPU: {m['gpu']['name']} ({m['gpu']['memory_gb']} GB, CUDA {m['gpu'].get('cuda')})")
    lines.append("Versions: " + ", ".join(f"{k} {val}" for k, val in v.items() if val))
    lines.append(
        f"Settings: device {s.get('device')}, threads {s.get('threads')}, batch sizes {s.get('batch_sizes')}, "
        f"precisions {s.get('precisions')}, backends {s.get('backends')}, weights {s.get('weights')} (speed does not "
        f"depend on weight values), input {s.get('input_size')}px, threads pinned to cores: {s.get('pin')}"
    )
    pol = s.get("policy") or {}
    if pol:
        lines.append(
            f"Timing: {pol.get('warmup_iters')}+ warm-up calls, then rounds of >= {pol.get('min_iters')} calls and "
            f">= {pol.get('min_round_s')} s; {pol.get('rounds')} rounds must agree within {pol.get('round_tol'):.0%} "
            f"(up to {pol.get('max_rounds')} rounds), else the result is flagged noisy (shown with ~). Each "
            "configuration first passes the numerical gate against fp32 eager PyTorch (else: `wrong`, not timed)."
        )
    la, le = m.get("load_average"), m.get("load_average_end")
    noisy = sum(1 for r in run.results if r.get("noisy"))
    lines.append(
        f"Load average at start {la}, at end {le}; {noisy} of {len(run.ok())} timed configurations flagged noisy; "
        f"run took {run.wall_s:.0f} s."
    )
    for t, p in (run.peaks or {}).items():
        lines.append(
            f"Roofline ceilings measured at {t} thread(s): {p['peak_gflops']} GFLOP/s fp32 matmul, copy bandwidth "
            f"{p['cache_gbps']} GB/s (<= {p['cache_bytes'] >> 20} MiB), {p.get('llc_gbps')} GB/s "
            f"(<= {p.get('llc_bytes', 0) >> 20} MiB), {p['dram_gbps']} GB/s (DRAM)."
        )
    return lines


_CONVENTIONS = (
    "MACs are multiply-accumulates of convolutions and linear layers (FLOPs = 2 x MACs; PaddleClas's published "
    "'FLOPs' column is roughly that). Params are trainable parameters. Peak activation memory: the largest total of "
    "live activations in one eager batch-1 pass. Memory access cost: bytes read + written by every eager op (the "
    "ShuffleNetV2 paper's MAC). File size: the fp32 ONNX export (BatchNorm folded). Latency: median per batch after "
    "warm-up. Published columns are PaddleClas's own figures (Snapdragon 855 with Paddle Lite; V100/T4 with "
    "TensorRT), shown beside, never mixed with, the measured ones."
)

_INTRO = "Regenerate with `mobilezoo report` (this machine) — see results.csv / results.json."

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px;color:#222;max-width:1600px}
table{border-collapse:collapse;font-size:12px;margin:8px 0 20px}
th,td{border:1px solid #ccc;padding:3px 6px;text-align:right;white-space:nowrap}
th{background:#f3f3f3;position:sticky;top:0}td:first-child,th:first-child{text-align:left}
td.bad{color:#b00;font-weight:bold}td.na{color:#999}img{max-width:100%;border:1px solid #eee;margin:6px 0}
.wrap{overflow-x:auto}code{background:#f5f5f5;padding:1px 3px}
"""


def build_report(
    run: BenchRun,
    out_dir: str | Path,
    *,
    training_csv: str | Path | None = None,
    per_layer: Any = None,
    title: str = "mobilezoo comparison report",
) -> dict[str, Path]:
    """Write ``report.md``, ``report.html`` (self-contained), ``plots/*.png``, ``results.csv/json`` and
    ``models.csv`` into ``out_dir``; returns their paths."""
    out = Path(out_dir)
    (out / "plots").mkdir(parents=True, exist_ok=True)
    rows = model_rows(run, load_training(training_csv))
    paths = _write_data(run, rows, out)
    plots = _write_plots(run, rows, per_layer, out / "plots")
    sections = _sections(run, rows, plots, per_layer)
    paths.update(write_pages(out, title, sections))
    for fname, _, _ in plots:
        paths[fname] = out / "plots" / fname
    return paths


def write_pages(out_dir: str | Path, title: str, sections: list[Section], intro: str = _INTRO) -> dict[str, Path]:
    """``report.md`` and a self-contained ``report.html`` (plots inline) of ``sections`` (``(heading, kind,
    content)``; kind ``lines``: a list of strings, ``table``: ``(rows, columns or None)``, ``plots``: ``(file name,
    caption, png)`` triples, the files under ``plots/``); returns their paths."""
    out = Path(out_dir)
    (out / "report.md").write_text(_render_markdown(title, sections, intro))
    (out / "report.html").write_text(_render_html(title, sections, intro))
    return {"report_md": out / "report.md", "report_html": out / "report.html"}


def _write_data(run: BenchRun, rows: list[dict[str, Any]], out: Path) -> dict[str, Path]:
    """``results.csv``, ``results.json`` and (with any model) ``models.csv``."""
    paths: dict[str, Path] = {
        "results_csv": write_csv(run.results, out / "results.csv"),
        "results_json": write_json(run, out / "results.json"),
    }
    if rows:
        with (out / "models.csv").open("w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]), lineterminator="\n")
            w.writeheader()
            w.writerows(rows)
        paths["models_csv"] = out / "models.csv"
    return paths


def _write_plots(run: BenchRun, rows: list[dict[str, Any]], per_layer: Any, plot_dir: Path) -> list[Plot]:
    """Draw every plot there is data for into ``plot_dir``; returns ``(file name, caption, png)`` of each drawn."""
    plots: list[Plot] = []
    cifar = sum(isinstance(r.get("CIFAR-10 top-1 %"), float) for r in rows)
    model = getattr(per_layer, "model", "")
    for fname, caption, make in (
        ("top1_vs_macs.png", "Top-1 vs MACs", lambda: plot_top1_vs_macs(rows, run)),
        (
            "top1_vs_latency.png",
            "ImageNet top-1 (published) vs latency measured here, Pareto front marked",
            lambda: plot_top1_vs_latency(rows, run),
        ),
        (
            "cifar10_top1_vs_latency.png",
            "CIFAR-10 top-1 (measured) vs latency, Pareto front marked",
            lambda: plot_top1_vs_latency(rows, run, "CIFAR-10 top-1 %") if cifar >= 2 else None,
        ),
        (
            "latency_vs_macs.png",
            "Latency vs MACs per backend (FLOPs are not latency)",
            lambda: plot_latency_vs(run, "macs"),
        ),
        (
            "latency_vs_memory_access.png",
            "Latency vs memory access cost per backend",
            lambda: plot_latency_vs(run, "mem"),
        ),
        (
            f"per_layer_{model}.png",
            f"{model}: where the time goes (eager PyTorch, per layer)",
            lambda: plot_per_layer(per_layer) if per_layer is not None else None,
        ),
    ):
        png = make()
        if png:
            (plot_dir / fname).write_bytes(png)
            plots.append((fname, caption, png))
    return plots


# ------------------------------------------------------------------------------------------------------- sections


def _main_columns(rows: list[dict[str, Any]]) -> list[str]:
    """The seven dimensions' table: every model-row column but the published ones."""
    return [c for c in rows[0] if c not in {label for _, label in _PUBLISHED}] if rows else []


def _published_columns(rows: list[dict[str, Any]]) -> list[str]:
    """The measured-beside-published table: costs, the published columns, then the measured latencies."""
    cols = [
        "model",
        "ImageNet top-1 % (pub)",
        "MACs (M)",
        "FLOPs=2xMACs (G)",
        "params (M)",
        "file fp32 (MB)",
        *[label for _, label in _PUBLISHED],
        "fastest fp32",
    ]
    fastest = [c for c in rows[0] if c.endswith("(ms)") and not any(c == lab for _, lab in _PUBLISHED)] if rows else []
    return cols + fastest


def _sections(run: BenchRun, rows: list[dict[str, Any]], plots: list[Plot], per_layer: Any) -> list[Section]:
    """The report's sections in order, each ``(heading, kind, content)``."""
    threads, batch = _headline(run)
    sections: list[Section] = [
        ("Setup", "lines", _settings_lines(run)),
        ("Conventions", "lines", [_CONVENTIONS]),
        (
            f"The seven dimensions (latency: batch {batch}, {threads} thread(s), median ms; ~ = noisy)",
            "table",
            (rows, _main_columns(rows)),
        ),
        (
            "Measured beside published (PaddleClas: Snapdragon 855 / V100 / T4)",
            "table",
            (rows, _published_columns(rows)),
        ),
        ("Plots", "plots", plots),
    ]
    if per_layer is not None:
        sections.append((f"Per layer: {per_layer.model}", "table", ([per_layer.summary()], None)))
        sections.append((f"Per operator kind: {per_layer.model}", "table", (per_layer.by_kind(), None)))
    sections += [
        ("Problems: wrong answers, errors, noisy timings", "table", (_issues(run), None)),
        ("Skipped configurations", "table", (_skipped(run), None)),
        ("Every timed configuration", "table", (_all_configs(run), None)),
    ]
    return sections


# ------------------------------------------------------------------------------------------------------ renderers


def _render_markdown(title: str, sections: list[Section], intro: str = _INTRO) -> str:
    md = [f"# {title}\n", f"{intro}\n"]
    for heading, kind, content in sections:
        md.append(f"\n## {heading}\n")
        md.extend(_md_section(kind, content))
    return "\n".join(md) + "\n"


def _md_section(kind: str, content: Any) -> list[str]:
    if kind == "lines":
        return [f"- {line}" for line in content]
    if kind == "table":
        trows, cols = content
        return [_md_table(trows, cols)]
    return [f"![{caption}](plots/{fname})\n" for fname, caption, _png in content]


def _render_html(title: str, sections: list[Section], intro: str = _INTRO) -> str:
    hp = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
        f"<style>{_CSS}</style></head><body><h1>{html.escape(title)}</h1><p>{html.escape(intro)}</p>",
    ]
    for heading, kind, content in sections:
        hp.append(f"<h2>{html.escape(heading)}</h2>")
        hp.extend(_html_section(kind, content))
    hp.append("</body></html>")
    return "\n".join(hp) + "\n"


def _html_section(kind: str, content: Any) -> list[str]:
    if kind == "lines":
        return ["<ul>" + "".join(f"<li>{html.escape(line)}</li>" for line in content) + "</ul>"]
    if kind == "table":
        trows, cols = content
        return [f"<div class='wrap'>{_html_table(trows, cols)}</div>"]
    return [_html_figure(caption, png) for _fname, caption, png in content]


def _html_figure(caption: str, png: bytes) -> str:
    b64 = base64.b64encode(png).decode()
    return (
        f"<figure><img alt='{html.escape(caption)}' src='data:image/png;base64,{b64}'>"
        f"<figcaption>{html.escape(caption)}</figcaption></figure>"
    )
