"""``mobilezoo`` command line: a thin layer over the library (each command calls one public function).

``mobilezoo --help``, ``list`` and ``info`` import no torch: they read the shipped metadata table
(:mod:`mobilezoo.metadata`). Any other command builds its own parser and imports its own module only when it runs
(:func:`build_parser`); :data:`COMMANDS` is the list of commands.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from . import _table, metadata
from ._weights_options import add_weights_options, model_from_options
from .metadata import UnknownModelError

COMMANDS: dict[str, tuple[str | None, str]] = {
    # command: (the module that defines it: None for this file, "pkg" for mobilezoo.<pkg>.cli; its one-line help)
    "list": (None, "the zoo as a table: params, MACs, published top-1, weights"),
    "info": (None, "one model in full: config, counts, weights, per-block table"),
    "profile": (None, "params, MACs, memory traffic, peak memory, file sizes"),
    "convert": (None, "a .pdparams/.pth/.safetensors checkpoint -> safetensors"),
    "predict": (None, "classify image files, folders and globs"),
    "export": (None, "to onnx/torchscript/openvino/ncnn/litert/executorch/mnn/coreml"),
    "train": ("train", "train a zoo model on an image dataset"),
    "distill": ("train", "train a student from a frozen teacher (SSLD-style)"),
    "eval": ("train", "a checkpoint's top-1/top-5, per-class accuracy, confusion"),
    "recipe": ("train", "list or show the shipped training recipes"),
    "quantize": ("quant", "int8 PTQ on real images (ONNX, OpenVINO, phone engines) or QAT"),
    "bench": ("bench", "time models x engines x threads x batches x precisions"),
    "report": ("bench", "the comparison report on this machine (Markdown, HTML)"),
    "study": ("study", "the seed's CIFAR-10 study end to end: train, measure, report"),
    "serve": ("serve", "HTTP inference service: dynamic batching, metrics, upload page"),
}
"""Every command, in ``mobilezoo --help`` order, with its help line (<= 64 characters: one line at 80 columns). A
command module's ``register(sub)`` adds exactly the commands given to it here."""


def _add_format(p: argparse.ArgumentParser, default: str = "table") -> None:
    p.add_argument("--format", choices=_table.FORMATS, default=default, help="output format (default: %(default)s)")


def _model_rows(names: Sequence[str]) -> list[dict]:
    from .reference import reference_table

    ref_table = reference_table()
    rows = []
    for name in names:
        r = metadata.resolve(name)
        a = metadata.arch_info(r["arch"])
        ref = ref_table[r["reference"]] if r["reference"] else None
        rows.append(
            {
                "name": r["name"],
                "family": r["family"],
                "arch": r["arch"] if r["arch"] != r["name"] else "",
                "params_M": a["params"] / 1e6,
                "MACs_M": a["macs"] / 1e6,
                "ref_top1": ref.get("top1") if ref else None,
                "ref_FLOPs_G": ref.get("flops_g") if ref else None,
            }
        )
    return rows


def cmd_list(args: argparse.Namespace) -> int:
    names = metadata.select(args.pattern, family=args.family)
    if args.pretrained:
        return _list_pretrained(names, args.format)
    if not names:
        asked = [f"{args.pattern!r}"] if args.pattern else []
        asked += [f"family {args.family!r}"] if args.family else []
        print(f"mobilezoo: no model matches {' in '.join(asked)}", file=sys.stderr)
        return 1
    title = "mobilezoo models (params: trainable; MACs: conv+linear at 224x224, FLOPs = 2 x MACs; ref: PaddleClas)"
    _table.render(_model_rows(names), args.format, title=title)
    return 0


def _list_pretrained(names: Sequence[str], fmt: str) -> int:
    from ._cache import cache_dir, load_index

    index = load_index()
    rows = []
    for name in names:
        w = metadata.resolve(name)["weights"]
        if w is None:
            continue
        url = metadata.weights_url(w["url"])
        pinned = index.get(url, {})
        rows.append(
            {
                "name": name,
                "arch": metadata.resolve(name)["arch"],
                "top1": w["top1"],
                "top5": w["top5"],
                "params": w["params"],
                "MACs": w["macs"],
                "file": w["file_name"],
                "sha256": w["sha256"] or pinned.get("sha256", "")[:16] or "(pinned at first download)",
                "cached": (cache_dir() / "converted" / f"{name}.safetensors").is_file(),
                "url": url,
            }
        )
    if not rows:
        print("mobilezoo: no published checkpoint matches", file=sys.stderr)
        return 1
    t = w["eval"]
    title = (
        f"PaddleClas checkpoints ({w['dataset']}; eval: resize {t['resize_short']} {t['interpolation']}, "
        f"crop {t['crop_size']}, ImageNet mean/std; license {w['license']})"
    )
    _table.render(rows, fmt, title=title)
    return 0


def cmd_convert(args: argparse.Namespace) -> int:
    """Any supported checkpoint -> safetensors in mobilezoo's names (or a save_pretrained directory)."""
    from .models import get_entry
    from .weights import load_model, load_weights, read_train_checkpoint, save_pretrained

    entry = get_entry(args.model)
    if args.src.is_file() and read_train_checkpoint(args.src) is not None:  # its classes and layout, as trained
        model, report = load_model(entry.name, args.src, num_classes=args.num_classes), None
    else:
        model = entry.builder(entry.config, num_classes=args.num_classes or 1000)
        model.model_name = entry.name
        report = load_weights(model, entry, args.src, source=args.source)
    out = args.output
    if out.suffix == ".safetensors":
        from safetensors.torch import save_file

        out.parent.mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(out), {"model_name": entry.name})
    else:
        save_pretrained(model, out, class_names=getattr(model, "class_names", None) or None)
    n = len(model.state_dict())
    print(
        f"{args.src} -> {out}: {entry.name}, {n} tensors"
        + (f" ({report.describe()})" if report and not report.ok else "")
    )
    return 0


def _arch_info(arch: str, input_size: int) -> dict:
    """An architecture's counts: from the shipped table at its input size, else measured on the built network."""
    if input_size == metadata.load_table()["input_size"]:
        return metadata.arch_info(arch)
    from .factory import create_model
    from .profile.table import arch_row

    return arch_row(create_model(arch, weights="random"), input_size=input_size)  # counts: values do not matter


def cmd_info(args: argparse.Namespace) -> int:
    from types import SimpleNamespace

    from .peers import peer_notes
    from .reference import reference_table

    r = metadata.resolve(args.name)
    a = _arch_info(r["arch"], args.input_size)
    info = {
        "name": r["name"],
        "family": r["family"],
        "architecture": r["arch"],
        "aliases": r["aliases"],
        "config": r["config"],
        "source": r["source"],
        "paddleclas_constructor": r["paddle_arch"],
        "pretrained": metadata.weights_url(r["pretrained_url"]) or "none published",
        "params (trainable)": a["params"],
        "MACs (conv+linear)": a["macs"],
        "FLOPs (= 2 x MACs)": a["flops"],
        "memory access cost (bytes)": a["mem_access_bytes"],
        "peak activation memory (bytes, batch 1, eager)": a["peak_activation_bytes"],
        "weights size fp32/fp16/int8 (bytes)": a["size_bytes"],
        "num_features": a["num_features"],
        "default_cfg": a["default_cfg"],
        "reference (PaddleClas tables)": reference_table()[r["reference"]] if r["reference"] else None,
        "notes": r["notes"] or None,
        "torchvision / timm": peer_notes(SimpleNamespace(**r)),
    }
    blocks = a["blocks"]
    if args.format == "json":
        print(json.dumps({**info, "blocks": blocks}, indent=2, default=list))
        return 0
    for k, v in info.items():
        if v not in (None, [], ""):
            print(f"{k}: {v}")
    print()
    _table.render(blocks, args.format, title=f"{r['arch']} blocks at {args.input_size}x{args.input_size}")
    return 0


def cmd_profile(args: argparse.Namespace) -> int:
    from .factory import create_model
    from .models import list_models
    from .profile import profile_model

    names = list_models(archs_only=True) if args.models == ["all"] else args.models
    rows = []
    for name in names:
        model = create_model(name, weights="random")  # counts do not depend on weight values
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
        if args.model or args.ckpt or args.random_weights:
            raise ValueError("--artifact is an exported model: give it without --model, --ckpt or --random-weights")
        rt = runtime.load(args.artifact, backend=args.backend, threads=args.threads)
    else:
        if not args.model and not args.ckpt:
            raise ValueError("give --model NAME (the published weights, --ckpt PATH or --random-weights), "
                             "--ckpt PATH alone (a checkpoint that names its model) or --artifact FILE")  # fmt: skip
        rt = runtime.load(model_from_options(args, args.model), backend=args.backend, threads=args.threads)
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

    from .backends import for_format
    from .data import find_images, load_image
    from .export import FORMATS, check_export, export

    if args.verbose:  # the converters' own output (pnnx) and the deprecation notices
        import os
        import warnings

        os.environ["MOBILEZOO_VERBOSE"] = "1"
        warnings.simplefilter("default")
    formats = FORMATS if args.format == "all" else [f.strip() for f in args.format.split(",")]
    for fmt in formats:
        for_format(fmt)  # an unknown format: one line naming the choices, before any work
    paths, problems = find_images(args.check_images or [])
    if problems:  # a photo that is not there: never check on noise instead
        raise FileNotFoundError(f"--check-images: {'; '.join(problems)}")
    if not args.model and not args.ckpt:
        raise ValueError("give the model name, or --ckpt PATH alone (a checkpoint that names its model)")
    model = model_from_options(args, args.model)
    images = [load_image(p) for p in paths[:16]]
    if not images:  # no photos given: a fixed synthetic batch still catches a broken graph
        size = model.default_cfg.get("crop_size", 224) if hasattr(model, "default_cfg") else 224
        images = torch.randn(4, 3, size, size, generator=torch.Generator().manual_seed(0))
        print("checking on a synthetic batch (pass --check-images PHOTOS to check on real images)")
    failed = False
    for fmt in formats:
        if args.fp16 and args.format == "all" and "fp16" not in for_format(fmt).precisions:
            print(f"{fmt}: skipped ({for_format(fmt).unsupported('fp16', 'cpu')})")  # named alone: its one-line error
            continue
        path = export(model, fmt, args.output, fp16=args.fp16)
        chk = check_export(model, path, images)
        failed |= chk.top5_agreement < 1.0 and not args.fp16
        print(f"{path}  [{chk.line()}]")
    return 1 if failed else 0


class _Commands:
    """The subparsers action as a command module sees it: each command takes its one-line help from
    :data:`COMMANDS` (the only list of commands), and only the commands :data:`COMMANDS` gives to that module."""

    def __init__(self, sub: argparse._SubParsersAction, owner: str | None) -> None:
        self._sub, self._owner, self.added = sub, owner, []

    def add_parser(self, name: str, **kwargs) -> argparse.ArgumentParser:
        owner, line = COMMANDS[name]
        if owner != self._owner or "help" in kwargs:
            raise AssertionError(f"command {name!r}: its module and one-line help belong in mobilezoo.cli.COMMANDS")
        kwargs.setdefault("description", line[0].upper() + line[1:] + ".")
        self.added.append(name)
        return self._sub.add_parser(name, help=line, **kwargs)


def _add_list(sub: _Commands) -> None:
    p = sub.add_parser("list")
    p.add_argument("pattern", nargs="?", default=None, help="glob on names and aliases, e.g. '*ssld*'")
    p.add_argument("--family", default=None, help="a family or the start of one (MobileNetV3, Ghost, ShuffleNet)")
    p.add_argument("--pretrained", action="store_true", help="only names with a published checkpoint, with URLs")
    _add_format(p)
    p.set_defaults(func=cmd_list)


def _add_convert(sub: _Commands) -> None:
    p = sub.add_parser("convert")
    p.add_argument("src", type=Path)
    p.add_argument("--model", required=True, help="the zoo architecture the checkpoint is for")
    p.add_argument("-o", "--output", type=Path, required=True, help="out.safetensors, or a directory (save_pretrained)")
    p.add_argument("--source", choices=("auto", "paddle", "mobilezoo", "torchvision", "timm"), default="auto")
    p.add_argument("--num-classes", type=int, default=None,
                   help="classifier size (default: 1000, or a training .ckpt's own)")  # fmt: skip
    p.set_defaults(func=cmd_convert)


def _add_predict(sub: _Commands) -> None:
    from .backends import get as engine
    from .backends import names as engine_names

    suffixes = ", ".join(engine(n).suffix for n in engine_names() if engine(n).suffix)
    p = sub.add_parser("predict")
    p.add_argument("inputs", nargs="+")
    p.add_argument("--model", help="zoo model name (optional with a --ckpt that records it)")
    add_weights_options(p)
    p.add_argument("--artifact", type=Path, help=f"an exported model ({suffixes})")
    p.add_argument("--backend", default="auto", choices=("auto", *engine_names()))
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--topk", type=int, default=5)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--max-pixels", type=int, default=64_000_000, help="refuse larger images (decompression bombs)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_predict)


def _add_export(sub: _Commands) -> None:
    from .backends import formats as export_formats

    p = sub.add_parser("export")
    p.add_argument("model", nargs="?", help="zoo model name (optional with a --ckpt that records it)")
    add_weights_options(p)
    p.add_argument("--format", default="onnx", help=f"{', '.join(export_formats())}, a comma list, or all")
    p.add_argument("-o", "--output", type=Path, default=Path("out"))
    p.add_argument("--fp16", action="store_true")
    p.add_argument("--check-images", nargs="*", help="photos to compare the artifact with PyTorch on")
    p.add_argument("--verbose", action="store_true", help="show the converters' own output and warnings")
    p.set_defaults(func=cmd_export)


def _add_info(sub: _Commands) -> None:
    p = sub.add_parser("info")
    p.add_argument("name")
    p.add_argument("--input-size", type=int, default=224, help="other than 224: the network is built and measured")
    _add_format(p)
    p.set_defaults(func=cmd_info)


def _add_profile(sub: _Commands) -> None:
    p = sub.add_parser("profile")
    p.add_argument("models", nargs="+", help="model names, or 'all'")
    p.add_argument("--input-size", type=int, default=224)
    p.add_argument("--batch-size", type=int, default=1)
    p.add_argument("--per-layer", action="store_true", help="also print each model's per-layer table")
    _add_format(p)
    p.set_defaults(func=cmd_profile)


_CORE = {
    "list": _add_list,
    "info": _add_info,
    "profile": _add_profile,
    "convert": _add_convert,
    "predict": _add_predict,
    "export": _add_export,
}


def _register(sub: argparse._SubParsersAction, name: str) -> list[str]:
    """Add ``name`` in full: a command of this file alone, or every command of ``mobilezoo.<pkg>.cli``."""
    owner = COMMANDS[name][0]
    cmds = _Commands(sub, owner)
    if owner is None:
        _CORE[name](cmds)
    else:
        importlib.import_module(f"mobilezoo.{owner}.cli").register(cmds)
    return cmds.added


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser, with ``command`` (and the commands its module registers) in full and every other command as a
    one-line stub: ``mobilezoo --help`` imports no command module, a command imports only its own."""
    from . import __version__

    ap = argparse.ArgumentParser(
        prog="mobilezoo",
        description="PaddleClas's mobile CNNs in PyTorch: list, profile, load weights, train, quantize, export, "
        "predict, benchmark, serve.",
        epilog="`mobilezoo COMMAND --help` gives a command's options.",
    )
    ap.add_argument("--version", action="version", version=f"mobilezoo {__version__}")
    sub = ap.add_subparsers(dest="command", required=True, title="commands", metavar="COMMAND")
    done: set[str] = set()
    for name, (owner, line) in COMMANDS.items():
        if name in done:
            continue
        if command in COMMANDS and owner == COMMANDS[command][0] and (owner is not None or name == command):
            done.update(_register(sub, name))
        else:
            sub.add_parser(name, help=line, add_help=False)
    return ap


def _command(argv: Sequence[str]) -> str | None:
    """The command word: the first argument that is not an option (the top level has only --help/--version)."""
    return next((a for a in argv if not a.startswith("-")), None)


USER_ERRORS = (UnknownModelError, FileNotFoundError, ValueError, RuntimeError)
"""Bad input, told in one line without a traceback (also Checkpoint/Download/MissingDependency/DifferentNetwork
errors: subclasses of these)."""


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser(_command(argv)).parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except USER_ERRORS as e:
        print(f"mobilezoo: error: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `mobilezoo list | head`
        return 0


if __name__ == "__main__":
    sys.exit(main())
