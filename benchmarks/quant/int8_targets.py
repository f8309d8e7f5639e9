"""Int8 with and without VNNI: what the ``portable`` target (7-bit weights) costs, and what ``vnni`` (8-bit) gives on a
CPU without VNNI.

For each CIFAR-10 checkpoint (``DIR/<model>/best.ckpt``) and each PTQ toolchain (onnxruntime QDQ, nncf OpenVINO IR),
both targets are built from the same calibration images and evaluated on

- this machine (its CPU and whether its int8 is exact — VNNI/AMX — are in the JSON), on the whole test split;
- an emulated AVX2 CPU without AVX-512/VNNI (``qemu-x86_64 -cpu Haswell``, ``scripts/emulate_int8.py``), on
  the first ``--emulated`` test images, beside this machine's answer on the same images (emulation is ~50x slower).

Writes ``benchmarks/results/int8_targets.{csv,json,md}``. Example (2-epoch CPU checkpoints):

    python benchmarks/train/cifar10_study.py --epochs 2 -o warmup_epochs=0.2 --device cpu --runs runs/int8_targets \\
        --models MobileNetV3_small_x1_0,ShuffleNetV2_x1_0,MobileNetV1_x1_0 --out int8_targets_training
    python benchmarks/quant/int8_targets.py --ckpt-dir runs/int8_targets
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "train"))
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
from _common import DATA, RESULTS, machine, rel, write

ENGINES = {"onnxruntime": "onnxruntime", "nncf": "openvino"}


def _top1(logits: np.ndarray, y: np.ndarray) -> float:
    return round(float((logits.argmax(1) == y).mean() * 100), 2)


def _test_set(ckpt: Path, data: Path):
    import torch

    import mobilezoo as mz
    from mobilezoo.train import build_eval_loader, model_from_checkpoint

    model = model_from_checkpoint(ckpt)
    pre = mz.data.eval_preprocess(model)
    split = mz.data.datasets.open_split(data, "eval")
    loader = build_eval_loader(split, pre, "memory", torch.device("cpu"), False)
    xs, ys = zip(*[(b[0], b[1]) for b in loader])
    return model, pre, torch.cat(xs).numpy(), torch.cat(ys).numpy()


def one_model(name: str, ckpt: Path, data: Path, n_calib: int, n_emulated: int, work: Path) -> list[dict]:
    import torch
    from emulate_int8 import run_emulated, run_native

    from mobilezoo.export.int8 import int8_weight_max
    from mobilezoo.quant import calibration_images, quantize_ptq

    model, pre, x, y = _test_set(ckpt, data)
    calib = calibration_images(data / "train", pre, n=n_calib, seed=0)
    with torch.no_grad():
        fp32 = torch.cat([model(torch.from_numpy(x[i : i + 500])) for i in range(0, len(x), 500)]).numpy()
    xe, ye = x[:n_emulated], y[:n_emulated]
    rows = []
    for toolchain, engine in ENGINES.items():
        for target in ("portable", "vnni"):
            art = quantize_ptq(model, calib, work / name / toolchain / target, toolchain=toolchain, target=target)
            native = np.concatenate([run_native(engine, art.int8, x[i : i + 500]) for i in range(0, len(x), 500)])
            emulated = run_emulated(engine, art.int8, xe, work)
            row = {
                "model": name,
                "toolchain": toolchain,
                "engine": engine,
                "target": target,
                "weight_max_abs": int8_weight_max(art.int8),
                "fp32_top1": _top1(fp32, y),
                "int8_top1_here": _top1(native, y),
                "drop_here": round(_top1(fp32, y) - _top1(native, y), 2),
                "images_emulated": len(xe),
                "fp32_top1_subset": _top1(fp32[:n_emulated], ye),
                "int8_top1_here_subset": _top1(native[:n_emulated], ye),
                "int8_top1_avx2_subset": _top1(emulated, ye),
                "avx2_vs_here_agree": round(float((emulated.argmax(1) == native[:n_emulated].argmax(1)).mean()), 4),
                "avx2_vs_here_max_rel_diff": round(
                    float(abs(emulated - native[:n_emulated]).max() / abs(native[:n_emulated]).max()), 5
                ),
            }
            print(row, flush=True)
            rows.append(row)
    return rows


def markdown(rows: list[dict], meta: dict) -> str:
    m = meta["machine"]
    lines = [
        "# Int8 targets: 7-bit (`portable`) vs 8-bit (`vnni`) weights, here and on an AVX2 CPU without VNNI",
        "",
        f"Here: {m['cpu_model']} ({'+'.join(m['cpu_features'])}; int8 exact: {m['int8_exact']}). "
        f"Emulated: qemu-x86_64 -cpu {meta['emulated_cpu']} (AVX2, FMA; no AVX-512, no VNNI). "
        f"Checkpoints: {meta['ckpt_dir']} ({meta['training']}). PTQ calibrated on {meta['calib']} training images. "
        "Top-1 in %; `here` on the whole test split, `subset` on its first "
        f"{rows[0]['images_emulated'] if rows else 0} images (the emulated run's).",
        "",
        "| model | toolchain | target | largest weight | fp32 | int8 here | drop | subset: fp32 | int8 here "
        "| int8 AVX2 | AVX2 = here (top-1 agree) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['toolchain']} | {r['target']} | {r['weight_max_abs']} | {r['fp32_top1']:.2f} | "
            f"{r['int8_top1_here']:.2f} | {r['drop_here']:+.2f} | {r['fp32_top1_subset']:.2f} | "
            f"{r['int8_top1_here_subset']:.2f} | {r['int8_top1_avx2_subset']:.2f} | {r['avx2_vs_here_agree']:.4f} |"
        )
    cost = [
        (p["model"], p["toolchain"], round(p["int8_top1_here"] - v["int8_top1_here"], 2))
        for p in rows
        if p["target"] == "portable"
        for v in rows
        if v["target"] == "vnni" and (v["model"], v["toolchain"]) == (p["model"], p["toolchain"])
    ]
    lines += [
        "",
        "Cost of `portable` on this machine (int8 top-1, portable - vnni, points): "
        + ", ".join(f"{m} {t} {c:+.2f}" for m, t, c in cost),
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ckpt-dir", type=Path, default=Path("runs/int8_targets"))
    ap.add_argument("--models", default="MobileNetV3_small_x1_0,ShuffleNetV2_x1_0,MobileNetV1_x1_0")
    ap.add_argument("--data", type=Path, default=DATA / "cifar10")
    ap.add_argument("--calib", type=int, default=512)
    ap.add_argument("--emulated", type=int, default=1000, help="test images run on the emulated AVX2 CPU")
    ap.add_argument("--out", default="int8_targets")
    ap.add_argument(
        "--training",
        default="trained by benchmarks/train/cifar10_study.py, see benchmarks/results/int8_targets_training.csv",
        help="where the checkpoints come from, as the results should say it",
    )
    ap.add_argument("--render", action="store_true", help="only re-render the .md from the committed .json")
    args = ap.parse_args()
    if args.render:
        import json

        doc = json.loads((RESULTS / f"{args.out}.json").read_text())
        (RESULTS / f"{args.out}.md").write_text(markdown(doc["rows"], doc["meta"]))
        return

    from emulate_int8 import CPU

    meta = {
        "machine": machine(),
        "emulated_cpu": CPU,
        "command": " ".join(sys.argv),
        "ckpt_dir": str(args.ckpt_dir),
        "training": args.training,
        "calib": args.calib,
        "data": rel(args.data),
    }
    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="int8-targets-") as tmp:
        for name in args.models.split(","):
            ckpt = args.ckpt_dir / name / "best.ckpt"
            rows += one_model(name, ckpt, args.data, args.calib, args.emulated, Path(tmp))
            write(args.out, rows, meta)
    (RESULTS / f"{args.out}.md").write_text(markdown(rows, meta))


if __name__ == "__main__":
    main()
