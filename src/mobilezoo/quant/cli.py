"""``mobilezoo quantize``."""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from pathlib import Path

from .._weights_options import add_weights_options


def cmd_quantize(args: argparse.Namespace) -> int:
    from .._weights_options import model_from_options
    from ..data import eval_preprocess
    from . import artifact_bytes, calibration_set, quantize_ptq

    if args.method == "qat" and args.toolchain != "onnxruntime":
        raise ValueError("--toolchain applies to --method ptq; qat exports its own ONNX QDQ graph")
    if args.method == "qat" and not (args.ckpt and args.ckpt.suffix == ".ckpt" and args.data):
        raise ValueError(
            "--method qat fine-tunes a trained model: it needs --ckpt (a training run's .ckpt, whose recipe it reuses) "
            "and --data (the dataset root to fine-tune on)"
        )
    if args.threads is not None:
        from ..measure.machine import check_threads

        check_threads(args.threads)  # before any work
    if not args.model and not args.ckpt:
        raise ValueError("give --model NAME (the published weights, --ckpt PATH or --random-weights), or --ckpt PATH")
    model = model_from_options(args, args.model)
    pre = eval_preprocess(model)
    calib_set = calibration_set(args.calib, pre, n=args.num_calib, seed=0)
    calib = calib_set.images
    print(f"{args.calib}: {calib_set.line()}", file=sys.stderr)
    if args.method == "qat":
        from .qat import quantize_qat

        with contextlib.redirect_stdout(sys.stderr) if args.json else contextlib.nullcontext():  # keep stdout JSON
            res = quantize_qat(
                args.ckpt,
                args.data,
                calib,
                args.output,
                overrides=args.override,
                device=args.device,
                progress=True,
                target=args.target,
            )
    else:
        res = quantize_ptq(
            model, calib, args.output, method=args.calibration, toolchain=args.toolchain, target=args.target
        )
    report: dict = {
        "model": getattr(model, "model_name", args.model),
        "fp32": str(res.fp32),
        "int8": str(res.int8),
        "fp32_bytes": artifact_bytes(res.fp32),
        "int8_bytes": artifact_bytes(res.int8),
        "size_ratio": round(res.size_ratio, 2),
        "method": args.method,
        "toolchain": args.toolchain if args.method == "ptq" else "qat (torch fake quantization, ONNX QDQ)",
        "calibration": {
            "images": len(calib),
            "found": calib_set.found,
            "unreadable": len(calib_set.unreadable),
            "method": args.calibration,
            "source": str(args.calib),
        },
        "target": args.target,
    }
    if args.method == "ptq":  # the ranges the toolchain actually estimated (its own, for an engine's quantizer)
        from ..backends.artifact import read_metadata

        q = read_metadata(res.int8).get("quantization") or {}
        report["calibration"]["method"] = q.get("calibration", args.calibration)
    if args.method == "qat":
        report["calibration"]["method"] = "moving-average min/max"
        report["qat_run"], report["qat_best_top1"] = str(res.run), res.best_top1
    if args.eval:
        report.update(_evaluate_both(args, model, pre, res))
    _print_report(args, report, res)
    return 0


def _evaluate_both(args: argparse.Namespace, model, pre, res) -> dict:
    """fp32 and int8 top-1/top-5 of the two artifacts on ``--eval``, and the drop."""
    import torch

    from ..data.datasets import open_split
    from ..runtime import load
    from ..train import build_eval_loader, evaluate

    ds = open_split(args.eval, "eval")
    loader = build_eval_loader(ds, pre, "stream" if ds.arrays is None else "memory", torch.device("cpu"), False)
    k = int(getattr(model, "num_classes", 1000))
    out: dict = {}
    for label, path in (("fp32", res.fp32), ("int8", res.int8)):
        r = evaluate(load(path, threads=args.threads), loader, k)  # the artifact's format picks the backend
        out[f"{label}_top1"], out[f"{label}_top5"] = r.top1, r.top5
    out["top1_drop"] = round(out["fp32_top1"] - out["int8_top1"], 2)
    return out


def _print_report(args: argparse.Namespace, report: dict, res) -> None:
    if args.json:
        print(json.dumps(report, indent=2))
        return
    mb, ratio = report["int8_bytes"] / 1e6, report["size_ratio"]
    print(f"{res.int8}  ({mb:.2f} MB, {ratio:.2f}x smaller than its fp32 {res.fp32.name})")
    if args.eval:
        print(
            f"top-1 on {args.eval}: fp32 {report['fp32_top1']:.2f}%  int8 {report['int8_top1']:.2f}%  "
            f"(drop {report['top1_drop']:+.2f})"
        )


def register(sub) -> None:
    from . import TOOLCHAINS

    p = sub.add_parser("quantize")  # its one-line help: mobilezoo.cli.COMMANDS
    p.add_argument("--model", help="zoo model name (optional with a --ckpt that records it)")
    add_weights_options(p)
    p.add_argument("--calib", required=True, help="folder (tree) of real images for calibration")
    p.add_argument("-n", "--num-calib", type=int, default=256)
    p.add_argument("--method", choices=("ptq", "qat"), default="ptq")
    p.add_argument(
        "--toolchain",
        choices=TOOLCHAINS,
        default="onnxruntime",
        help="ptq: onnxruntime (.int8.onnx QDQ, runs on onnxruntime), nncf (OpenVINO .int8.xml IR, fastest on "
        "openvino, notably for MobileNetV3), or a phone engine's own quantizer: executorch (.int8.pte, XNNPACK), "
        "litert (full-integer .int8.tflite), mnn (MNN's offline quantization, .int8.mnn), coreml (int8 weights, "
        ".int8.mlpackage)",
    )
    p.add_argument(
        "--target",
        choices=("portable", "vnni"),
        default="portable",
        help="portable (default): 7-bit weights, correct on every x86 CPU; vnni: 8-bit weights, a little more "
        "precise, correct only on CPUs with VNNI/AMX (or ARM): without them int8 sums saturate",
    )
    p.add_argument(
        "--calibration", choices=("minmax", "entropy", "percentile"), default="minmax", help="ptq, onnxruntime only"
    )
    p.add_argument(
        "--data",
        help="qat: dataset root to fine-tune on (the checkpoint's recipe with lr x0.01, 3 epochs, no warmup/EMA)",
    )
    p.add_argument(
        "--override", action="append", default=[], metavar="KEY=VALUE", help="qat: override a recipe field (epochs=5)"
    )
    p.add_argument("--device", default="auto", help="qat: training device (auto, cpu, cuda)")
    p.add_argument("--eval", help="dataset root: report fp32 vs int8 top-1 on its val/test split")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("-o", "--output", type=Path, default=Path("out"))
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_quantize)
