"""``mobilezoo`` command line: a thin layer over the library (each command calls one public function)."""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from . import _table

COMMAND_PACKAGES = ("train", "quant", "bench", "serve")


def _add_format(p: argparse.ArgumentParser, default: str = "table") -> None:
    p.add_argument("--format", choices=_table.FORMATS, default=default, help="output format (default: %(default)s)")


def _model_rows(names: Sequence[str]) -> list[dict]:
    from .factory import create_model
    from .models import get_entry
    from .profile import count_macs, count_params
    from .reference import reference_row

    rows, cache = [], {}
    for name in names:
        e = get_entry(name)
        if e.arch not in cache:
            m = create_model(e.arch)
            cache[e.arch] = (count_params(m), count_macs(m))
        params, macs = cache[e.arch]
        ref = reference_row(name) if e.paddle_arch or e.weights_tag else None
        rows.append(
            {
                "name": e.name,
                "family": e.family,
                "arch": e.arch if e.arch != e.name else "",
                "params_M": params / 1e6,
                "MACs_M": macs / 1e6,
                "ref_top1": ref.get("top1") if ref else None,
                "ref_FLOPs_G": ref.get("flops_g") if ref else None,
            }
        )
    return rows


def cmd_list(args: argparse.Namespace) -> int:
    from .models import list_models

    names = list_models(args.pattern, family=args.family)
    if args.pretrained:
        return _list_pretrained(names, args.format)
    if not names:
        print(f"no model matches {args.pattern!r}", file=sys.stderr)
        return 1
    title = "mobilezoo models (params: trainable; MACs: conv+linear at 224x224, FLOPs = 2 x MACs; ref: PaddleClas)"
    _table.render(_model_rows(names), args.format, title=title)
    return 0


def _list_pretrained(names: Sequence[str], fmt: str) -> int:
    from .weights.catalog import weights_info
    from .weights.hub import cache_dir, load_index

    index = load_index()
    rows = []
    for name in names:
        w = weights_info(name)
        if w is None:
            continue
        pinned = index.get(w.url, {})
        rows.append(
            {
                "name": w.name,
                "arch": w.arch,
                "top1": w.top1,
                "top5": w.top5,
                "params": w.params,
                "MACs": w.macs,
                "file": w.file_name,
                "sha256": w.sha256 or pinned.get("sha256", "")[:16] or "(pinned at first download)",
                "cached": (cache_dir() / "converted" / f"{w.name}.safetensors").is_file(),
                "url": w.url,
            }
        )
    if not rows:
        print("no published checkpoint matches", file=sys.stderr)
        return 1
    t = w.transforms
    title = (
        f"PaddleClas checkpoints ({w.dataset}; eval: resize {t.resize_short} {t.interpolation}, "
        f"crop {t.crop_size}, ImageNet mean/std; license {w.license})"
    )
    _table.render(rows, fmt, title=title)
    return 0


def cmd_convert(args: argparse.Namespace) -> int:
    """Any supported checkpoint -> safetensors in mobilezoo's names (or a save_pretrained directory)."""
    from .models import get_entry
    from .weights import load_weights, save_pretrained

    entry = get_entry(args.model)
    model = entry.builder(entry.config, num_classes=args.num_classes)
    model.model_name = entry.name
    report = load_weights(model, entry, args.src, source=args.source)
    out = args.output
    if out.suffix == ".safetensors":
        from safetensors.torch import save_file

        out.parent.mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(out), {"model_name": entry.name})
    else:
        save_pretrained(model, out)
    n = len(model.state_dict())
    print(f"{args.src} -> {out}: {entry.name}, {n} tensors" + (f" ({report.describe()})" if not report.ok else ""))
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    from .factory import create_model
    from .models import get_entry
    from .profile import block_table, profile_model
    from .reference import reference_row
    from .weights.ecosystems import peer_notes
    from .weights.hub import paddle_url

    e = get_entry(args.name)
    model = create_model(e.arch)
    prof = profile_model(model, input_size=args.input_size)
    ref = reference_row(e.name) if e.paddle_arch or e.weights_tag else None
    info = {
        "name": e.name,
        "family": e.family,
        "architecture": e.arch,
        "aliases": list(e.aliases),
        "config": repr(e.config),
        "source": e.source,
        "paddleclas_constructor": e.paddle_arch,
        "pretrained": paddle_url(e) or "none published",
        "params (trainable)": prof.params,
        "MACs (conv+linear)": prof.macs,
        "FLOPs (= 2 x MACs)": prof.flops,
        "memory access cost (bytes)": prof.mem_access_bytes,
        "peak activation memory (bytes, batch 1, eager)": prof.peak_activation_bytes,
        "weights size fp32/fp16/int8 (bytes)": [prof.size_fp32_bytes, prof.size_fp16_bytes, prof.size_int8_bytes],
        "num_features": model.num_features,
        "default_cfg": model.default_cfg,
        "reference (PaddleClas tables)": ref,
        "notes": e.notes or None,
        "torchvision / timm": peer_notes(e),
    }
    blocks = block_table(model, prof)
    if args.format == "json":
        print(json.dumps({**info, "blocks": blocks}, indent=2, default=list))
        return 0
    for k, v in info.items():
        if v not in (None, [], ""):
            print(f"{k}: {v}")
    print()
    _table.render(blocks, args.format, title=f"{e.arch} blocks at {args.input_size}x{args.input_size}")
    return 0


def cmd_profile(args: argparse.Namespace) -> int:
    from .factory import create_model
    from .models import list_models
    from .profile import profile_model

    names = list_models(archs_only=True) if args.models == ["all"] else args.models
    rows = []
    for name in names:
        model = create_model(name)
        p = profile_model(model, input_size=args.input_size, batch_size=args.batch_size, name=name)
        if args.per_layer:
            layer_rows = [
                {
                    "layer": s.name,
                    "type": s.type,
                    "out_shape": s.out_shape,
                    "params": s.params,
                    "MACs": s.macs,
                    "bytes_read": s.bytes_read,
                    "bytes_written": s.bytes_written,
                    "FLOPs_per_byte": round(s.intensity, 3),
                }
                for s in p.layers
            ]
            _table.render(layer_rows, args.format, title=f"{name} per layer")
        rows.append(
            {
                "model": name,
                "params_M": p.params / 1e6,
                "MACs_M": p.macs / 1e6,
                "FLOPs_M": p.flops / 1e6,
                "mem_access_MB": p.mem_access_bytes / 1e6,
                "peak_act_MB": p.peak_activation_bytes / 1e6,
                "fp32_MB": p.size_fp32_bytes / 1e6,
                "fp16_MB": p.size_fp16_bytes / 1e6,
                "int8_MB": p.size_int8_bytes / 1e6,
            }
        )
    size = f"{args.batch_size}x3x{args.input_size}x{args.input_size}"
    _table.render(rows, args.format, title=f"profile at {size} (MACs: conv+linear; FLOPs = 2 x MACs)")
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from . import runtime
    from .data import ImageError, find_images, load_image

    paths, problems = find_images(args.inputs)
    if args.artifact:
        rt = runtime.load(args.artifact, backend=args.backend, threads=args.threads)
    else:
        if not args.model:
            raise ValueError("give --model NAME (with --ckpt FILE, or the published weights) or --artifact FILE")
        if args.ckpt:
            model = runtime.load_checkpoint_model(args.model, args.ckpt)
        else:
            from .factory import create_model

            model = create_model(args.model, pretrained=not args.random_weights)
        rt = runtime.load(model, backend=args.backend, threads=args.threads)
    images, sources = [], []
    for p in paths:
        try:
            images.append(load_image(p, max_pixels=args.max_pixels))
            sources.append(str(p))
        except ImageError as e:
            problems.append(str(e))
    preds = rt.predict(images, topk=args.topk, batch_size=args.batch_size) if images else []
    for pred, src in zip(preds, sources):
        pred.source = src
    if args.json:
        print(json.dumps({"model": rt.model_name, "backend": rt.backend, "predictions": [p.as_dict() for p in preds],
                          "errors": problems}, indent=2))  # fmt: skip
    else:
        for p in preds:
            top = ", ".join(f"{n} ({s:.3f})" for n, s in zip(p.names, p.scores))
            print(f"{p.source}: {top}")
    for msg in problems:
        print(f"mobilezoo: error: {msg}", file=sys.stderr)
    return 1 if problems else 0


def cmd_export(args: argparse.Namespace) -> int:
    import torch

    from .data import find_images, load_image
    from .export import FORMATS, check_export, export
    from .factory import create_model
    from .runtime import load_checkpoint_model

    if args.ckpt:
        model = load_checkpoint_model(args.model, args.ckpt)
    else:
        model = create_model(args.model, pretrained=not args.random_weights).eval()
    formats = FORMATS if args.format == "all" else [f.strip() for f in args.format.split(",")]
    paths, _ = find_images(args.check_images or [])
    images = [load_image(p) for p in paths[:16]]
    if not images:  # no photos given: a fixed synthetic batch still catches a broken graph
        size = model.default_cfg.get("crop_size", 224) if hasattr(model, "default_cfg") else 224
        images = torch.randn(4, 3, size, size, generator=torch.Generator().manual_seed(0))
        print("checking on a synthetic batch (pass --check-images PHOTOS to check on real images)")
    failed = False
    for fmt in formats:
        path = export(model, fmt, args.output, fp16=args.fp16)
        chk = check_export(model, path, images)
        failed |= chk.top5_agreement < 1.0 and not args.fp16
        print(f"{path}  [{chk.line()}]")
    return 1 if failed else 0


def build_parser() -> argparse.ArgumentParser:
    from . import __version__
    from .backends import formats as export_formats
    from .backends import names as engine_names

    ap = argparse.ArgumentParser(prog="mobilezoo", description=__doc__)
    ap.add_argument("--version", action="version", version=f"mobilezoo {__version__}")
    sub = ap.add_subparsers(dest="command", required=True)

    p = sub.add_parser("list", help="the zoo as a table")
    p.add_argument("pattern", nargs="?", default=None, help="glob on names, e.g. '*ssld*'")
    p.add_argument("--family", default=None)
    p.add_argument("--pretrained", action="store_true", help="only names with a published checkpoint, with URLs")
    _add_format(p)
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("convert", help="convert a .pdparams/.pth/.safetensors checkpoint to mobilezoo safetensors")
    p.add_argument("src", type=Path)
    p.add_argument("--model", required=True, help="the zoo architecture the checkpoint is for")
    p.add_argument("-o", "--output", type=Path, required=True, help="out.safetensors, or a directory (save_pretrained)")
    p.add_argument("--source", choices=("auto", "paddle", "mobilezoo", "torchvision", "timm"), default="auto")
    p.add_argument("--num-classes", type=int, default=1000)
    p.set_defaults(func=cmd_convert)

    p = sub.add_parser("predict", help="classify image files, folders and globs")
    p.add_argument("inputs", nargs="+")
    p.add_argument("--model", help="zoo model name")
    p.add_argument("--ckpt", type=Path, help="checkpoint for --model (default: the published weights)")
    p.add_argument("--artifact", type=Path, help="an exported model (.onnx) instead of --model")
    p.add_argument("--random-weights", action="store_true", help="no weights at all (smoke tests)")
    p.add_argument("--backend", default="auto", choices=("auto", *engine_names()))
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--topk", type=int, default=5)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--max-pixels", type=int, default=64_000_000, help="refuse larger images (decompression bombs)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("export", help=f"export to {', '.join(export_formats())} (checked against PyTorch)")
    p.add_argument("model")
    p.add_argument("--ckpt", type=Path)
    p.add_argument("--format", default="onnx", help=f"{', '.join(export_formats())}, a comma list, or all")
    p.add_argument("-o", "--output", type=Path, default=Path("out"))
    p.add_argument("--fp16", action="store_true")
    p.add_argument("--check-images", nargs="*", help="photos to compare the artifact with PyTorch on")
    p.add_argument("--random-weights", action="store_true", help="export without weights (default: published ones)")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("info", help="one model in full")
    p.add_argument("name")
    p.add_argument("--input-size", type=int, default=224)
    _add_format(p)
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("profile", help="params, MACs, memory access cost, peak memory, file sizes")
    p.add_argument("models", nargs="+", help="model names, or 'all'")
    p.add_argument("--input-size", type=int, default=224)
    p.add_argument("--batch-size", type=int, default=1)
    p.add_argument("--per-layer", action="store_true", help="also print each model's per-layer table")
    _add_format(p)
    p.set_defaults(func=cmd_profile)

    # capability subpackages add their own commands: mobilezoo.<pkg>.cli.register(subparsers)
    for pkg in COMMAND_PACKAGES:
        try:
            mod = importlib.import_module(f"mobilezoo.{pkg}.cli")
        except ModuleNotFoundError as e:
            if e.name == f"mobilezoo.{pkg}.cli":
                continue
            raise
        mod.register(sub)
    return ap


def main(argv: Sequence[str] | None = None) -> int:
    from .models import UnknownModelError

    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (
        UnknownModelError,
        FileNotFoundError,
        ValueError,
        RuntimeError,
    ) as e:  # also Checkpoint/Download/MissingDependency errors
        print(f"mobilezoo: error: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `mobilezoo list | head`
        return 0


if __name__ == "__main__":
    sys.exit(main())
