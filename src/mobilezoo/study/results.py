"""The study's results as tables: one row per finished model (the seven dimensions), and the latency rows of every
engine at every input size; read from the study state, so the report can be rebuilt from ``study.json`` alone."""

from __future__ import annotations

import math
from typing import Any

__all__ = ["IMAGENET", "TOP1", "fastest", "latency_rows", "latency_table", "model_rows"]

TOP1 = "CIFAR-10 top-1 %"


IMAGENET = "ImageNet top-1 % (pub)"


def _published_top1(name: str) -> float | str:
    """PaddleClas's published ImageNet top-1 (the seed's 'official data'), beside the measured CIFAR-10 one."""
    from ..reference import reference_row

    ref = reference_row(name) or {}
    return round(ref["top1"] * 100, 1) if ref.get("top1") is not None else "not published"


def _mb(v: float | None) -> float | None:
    return round(v / 1e6, 4) if v else None


def latency_rows(state_doc: dict[str, Any], size: int | None = None) -> list[dict[str, Any]]:
    """Every benchmark row of the finished models (at ``size`` only, when given), with the model's family."""
    out = []
    for rec in state_doc["models"].values():
        m = rec.get("measure") or {}
        for r in m.get("latency", []):
            if size is None or r["input_size"] == size:
                out.append({**r, "family": m.get("family", "")})
    return out


def fastest(rows: list[dict[str, Any]], model: str, size: int) -> tuple[float | None, str]:
    """The lowest fp32 median (ms) of ``model`` at ``size`` over the engines that passed the gate, and which."""
    best, engine = math.inf, ""
    for r in rows:
        ok = r["model"] == model and r["input_size"] == size and r["status"] == "ok" and r["precision"] == "fp32"
        if ok and float(r["median_ms"]) < best:
            best, engine = float(r["median_ms"]), r["backend"]
    return (None, "") if engine == "" else (best, engine)


def model_rows(state_doc: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per finished model: accuracy, compute, size, memory, fastest latency per input size, training."""
    sizes = state_doc["settings"]["sizes"]
    lat = latency_rows(state_doc)
    rows = []
    for name, rec in state_doc["models"].items():
        if rec.get("status") != "done":
            continue
        m, t = rec["measure"], rec["train"]
        row: dict[str, Any] = {"model": name, "family": m["family"]}
        row[TOP1] = round(t["top1"], 2) if t.get("top1") is not None else None
        row["top-5 %"] = round(t["top5"], 2) if t.get("top5") is not None else None
        row[IMAGENET] = _published_top1(name)
        row["MACs (M)"] = round(m["macs"] / 1e6, 3)
        row["FLOPs=2xMACs (M)"] = round(m["flops"] / 1e6, 3)
        row["params (M)"] = round(m["params"] / 1e6, 4)
        row["peak act (MB)"] = _mb(m.get("peak_activation_bytes"))
        row["mem access (MB)"] = _mb(m.get("mem_access_bytes"))
        row["weights fp32 (MB)"] = _mb(m.get("size_fp32_bytes"))
        row["ONNX fp32 (MB)"] = _mb(m.get("onnx_fp32_bytes"))
        row["ONNX int8 (MB)"] = _mb(m.get("onnx_int8_bytes"))
        for s in sizes:
            ms, engine = fastest(lat, name, s)
            row[f"fastest fp32 @{s} (ms)"] = round(ms, 4) if ms is not None else None
            row[f"engine @{s}"] = engine
        row["epochs"] = t["epochs"]
        row["train time (min)"] = round(t["train_time_s"] / 60, 2)
        row["train img/s"] = round(t["img_per_s"], 1)
        row["device"] = t["device"]
        rows.append(row)
    return rows


def latency_table(state_doc: dict[str, Any], size: int) -> list[dict[str, Any]]:
    """Models x engines at ``size``: median ms (``~`` when noisy), or the status of a configuration that did not
    time (``wrong``: failed the numerical gate; ``error``; ``skipped``)."""
    table: dict[str, dict[str, Any]] = {}
    for r in latency_rows(state_doc, size):
        row = table.setdefault(r["model"], {"model": r["model"]})
        key = f"{r['backend']} {r['precision']}"
        if r["status"] == "ok":
            ms = float(r["median_ms"])
            row[key] = f"{ms:.3g}~" if r.get("noisy") else round(ms, 4)
        else:
            row[key] = r["status"]
    return list(table.values())
