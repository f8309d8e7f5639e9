"""``mobilezoo bench`` and ``mobilezoo report`` (registered by mobilezoo.cli; heavy imports stay in the commands)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from .._weights_options import add_weights_options, chosen_weights

HEADLINE = [
    "MobileNetV1_x1_0",
    "MobileNetV2_x1_0",
    "MobileNetV3_large_x1_0",
    "MobileNetV3_small_x1_0",
    "ShuffleNetV2_x1_0",
    "GhostNet_x1_0",
]
DEFAULT_TRAINING_CSVS = (
    Path("benchmarks/results/study_cifar10/training.csv"),  # the committed `mobilezoo study` of the eleven
    Path("benchmarks/results/cifar10_training.csv"),  # the earlier 2-epoch training runs
)
"""Where ``mobilezoo report`` finds its CIFAR-10 column unless ``--training-results`` says: the first present."""


def default_training_csv() -> Path | None:
    return next((p for p in DEFAULT_TRAINING_CSVS if p.is_file()), None)


def _torch_modes() -> dict[str, str]:
    """torch mode -> benchmark configuration name (eager -> torch, jit -> torch-jit, ...), from the engine registry."""
    from .. import backends

    return {mode: b for n in backends.names() for b, mode in backends.get(n).modes.items() if mode != "-"}


def _csv(s: str) -> list[str]:
    return [x.strip() for x in s.split(",") if x.strip()]


def _ints(s: str) -> list[int]:
    try:
        return [int(x) for x in _csv(s)]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {s!r}") from None


def _models(spec: str | None, default: list[str]) -> list[str]:
    from ..models import get_entry, list_models

    if not spec:
        return default
    if spec == "all":
        return list_models(archs_only=True)
    out = []
    for item in _csv(spec):
        if any(ch in item for ch in "*?["):
            out += list_models(item, archs_only=True)
        else:
            out.append(get_entry(item).name)
    return list(dict.fromkeys(out))


def _backends(args: argparse.Namespace, default: list[str]) -> list[str]:
    backends = _csv(args.backends) if args.backends else list(default)
    if getattr(args, "modes", None):
        modes = _torch_modes()
        backends = [b for b in backends if b not in modes.values()]
        for m in _csv(args.modes):
            if m not in modes:
                raise ValueError(f"unknown mode {m!r}; choose from {', '.join(modes)}")
            if modes[m] not in backends:
                backends.append(modes[m])
        backends.sort(key=lambda b: not b.startswith("torch"))
    return backends


def _policy(name: str):
    from ..measure import harness

    return {"quick": harness.QUICK, "standard": harness.STANDARD, "full": harness.FULL}[name]


def _channels_last(v: str) -> list[bool]:
    return {"off": [False], "on": [True], "both": [False, True]}[v]


def _spec(
    args: argparse.Namespace,
    models: list[str],
    backends: list[str],
    threads: list[int],
    batches: list[int],
    precisions: list[str],
    policy: str,
):
    from .grid import BenchSpec

    return BenchSpec(
        models=models,
        backends=backends,
        threads=threads,
        batch_sizes=batches,
        precisions=precisions,
        device=args.device,
        channels_last=_channels_last(args.channels_last),
        input_size=args.input_size,
        policy=_policy(policy),
        # bench: the weights flags (default published); report: random, for speed over every architecture offline
        weights=chosen_weights(args) if hasattr(args, "random_weights") else "random",
        gate=not args.no_gate,
        compile_mode=getattr(args, "compile_mode", None),
        pin=not args.no_pin,
    )


def _print_rows(rows: list[dict], fmt: str) -> None:
    from .. import _table

    cols = [
        "model",
        "backend",
        "precision",
        "threads",
        "batch_size",
        "channels_last",
        "status",
        "median_ms",
        "p90_ms",
        "min_ms",
        "spread",
        "throughput_ips",
        "noisy",
        "gate_rel_diff",
        "reason",
    ]
    _table.render(rows, fmt, columns=cols, title="mobilezoo bench (ms per batch; images/s at the median)")


def _per_layer_calib(args: argparse.Namespace, model, precision: str, backend: str):
    """``--calib DIR``'s images, preprocessed as ``model``'s at ``--input-size`` (int8 on an engine only); None: the
    fixed noise batch."""
    if not args.calib:
        return None
    if precision != "int8" or backend == "torch":
        raise ValueError("--calib calibrates --precision int8 on an engine (--backends onnxruntime or openvino)")
    from ..data import eval_preprocess
    from ..quant import calibration_set

    pre = eval_preprocess(model)
    if pre.crop_size != args.input_size:  # the model's own preprocessing, scaled to the profiled input size
        pre = eval_preprocess(
            model, crop_size=args.input_size, resize_short=round(pre.resize_short * args.input_size / pre.crop_size)
        )
    cs = calibration_set(args.calib, pre, n=args.num_calib)
    print(f"{args.calib}: {cs.line()}", file=sys.stderr)
    return cs.images


def cmd_per_layer(args: argparse.Namespace) -> int:
    from .. import _table
    from ..models import get_entry
    from .grid import prepare_model
    from .perlayer import per_layer

    name = get_entry(args.per_layer).name
    threads = _ints(args.threads)[0] if args.threads else 1
    if not args.device.startswith("cuda"):
        from ..measure.machine import check_threads

        check_threads(threads)
    batch = _ints(args.batch_sizes)[0] if args.batch_sizes else 1
    precision = _csv(args.precision)[0] if args.precision else "fp32"
    backend = _csv(args.backends)[0] if args.backends else "torch"
    if backend != "torch" and args.device != "cpu":
        raise ValueError(f"--per-layer on {backend} profiles on the CPU")
    model = prepare_model(name, chosen_weights(args), input_size=args.input_size)
    res = per_layer(
        model,
        threads=threads,
        device=args.device,
        precision=precision,
        batch_size=batch,
        input_size=args.input_size,
        iters=args.iters,
        fuse=args.fuse,
        backend=backend,
        calib=_per_layer_calib(args, model, precision, backend),
    )
    p = res.peaks
    title = (
        f"{name} per layer: {res.engine}, {precision}, {args.device}, {threads} thread(s), batch {batch}; roofline "
        f"from measured ceilings {p['peak_gflops']} GFLOP/s, {p['cache_gbps']}/{p.get('llc_gbps')}/{p['dram_gbps']} "
        "GB/s (cache/LLC/DRAM); FLOPs = 2 x MACs"
        + ("; the compute ceiling is fp32's: int8 layers can run above it" if precision == "int8" else "")
    )
    _table.render(res.rows, args.format, title=title)
    _table.render(res.by_kind(), args.format, title="time share vs MACs share by operator kind")
    if res.nodes:
        _table.render(res.by_engine_op(), args.format, title=f"{backend}'s time per operator as it ran")
    _table.render([res.summary()], args.format, title="whole network")
    if args.output:
        import json

        out = Path(args.output)
        out.mkdir(parents=True, exist_ok=True)
        with (out / f"per_layer_{name}.csv").open("w") as f:
            _table.render(res.rows, "csv", out=f)
        doc = {"summary": res.summary(), "peaks": res.peaks, "by_kind": res.by_kind(), "layers": res.rows}
        doc |= {"engine": res.engine, "by_engine_op": res.by_engine_op()} if res.nodes else {}
        (out / f"per_layer_{name}.json").write_text(json.dumps(doc, indent=1) + "\n")
        with (out / f"per_layer_{name}.md").open("w") as f:
            f.write(f"# {title}\n\n")
            for rows, sub in (
                ([res.summary()], "whole network"),
                (res.by_kind(), "time share vs MACs share by operator kind"),
                (res.rows, "per layer"),
            ):
                _table.render(rows, "md", title=sub, out=f)
                f.write("\n")
        print(f"wrote {out / f'per_layer_{name}'}.csv/.json/.md", file=sys.stderr)
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    if args.per_layer:
        return cmd_per_layer(args)
    from .grid import run_bench
    from .results import write_csv, write_json

    models = _models(args.models, HEADLINE)
    from ..backends import bench_defaults

    backends = _backends(args, bench_defaults(args.device))
    spec = _spec(
        args,
        models,
        backends,
        _ints(args.threads) if args.threads else [1],
        _ints(args.batch_sizes) if args.batch_sizes else [1],
        _csv(args.precision) if args.precision else ["fp32"],
        args.policy,
    )
    run = run_bench(spec, progress=not args.no_progress)
    out = Path(args.output)
    csv_path, json_path = write_csv(run.results, out / "results.csv"), write_json(run, out / "results.json")
    _print_rows(run.results, args.format)
    print(f"wrote {csv_path} and {json_path} ({run.wall_s:.0f} s)", file=sys.stderr)
    return 1 if any(r["status"] == "wrong" for r in run.results) else 0


def cmd_report(args: argparse.Namespace) -> int:
    import time

    from .report import build_report

    t0 = time.perf_counter()
    training = args.training_results or default_training_csv()
    cuda = args.device.startswith("cuda")
    if args.from_results:
        from .results import read_run

        run = read_run(args.from_results)
    else:
        from ..backends import bench_defaults
        from .grid import run_bench

        models = _models(args.models, _models("all", []))
        if args.full:
            ncpu = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
            default_backends = bench_defaults(args.device, full=True)
            if cuda:
                threads, batches, precisions = [1], [1, 8, 256], ["fp32", "fp16", "bf16"]
                if args.channels_last == "off":
                    args.channels_last = "both"
            else:
                threads = sorted({1, ncpu})
                batches, precisions = [1, 8], ["fp32", "bf16", "int8"]
            policy = args.policy or "standard"
        else:
            default_backends = bench_defaults(args.device)
            threads, batches, precisions, policy = [1], [1], ["fp32"], args.policy or "quick"
        spec = _spec(
            args,
            models,
            _backends(args, default_backends),
            _ints(args.threads) if args.threads else threads,
            _ints(args.batch_sizes) if args.batch_sizes else batches,
            _csv(args.precision) if args.precision else precisions,
            policy,
        )
        run = run_bench(spec, progress=not args.no_progress)
    pl = None
    if args.per_layer.lower() != "none":
        from ..models import get_entry
        from .perlayer import per_layer

        th = min((int(r["threads"]) for r in run.results), default=1)
        size = int(run.spec.get("input_size") or args.input_size)
        pl = per_layer(get_entry(args.per_layer).name, threads=th, device=args.device, iters=10, input_size=size,
                       weights="random")  # fmt: skip
    paths = build_report(run, args.output, training_csv=training, per_layer=pl)
    took = time.perf_counter() - t0
    wrong = sum(r["status"] == "wrong" for r in run.results)
    print(
        f"report: {paths['report_md']} and {paths['report_html']} ({len(run.results)} configurations, "
        f"{wrong} wrong, {took:.0f} s)"
    )
    return 0


def _common(p: argparse.ArgumentParser) -> None:
    from .. import _table, backends

    p.add_argument("--models", help="comma list of zoo names, globs ('ShuffleNetV1_*'), or 'all'")
    p.add_argument("--backends", help=f"comma list: {', '.join(backends.bench_names())}")
    p.add_argument("--modes", help="torch modes (replace torch backends): eager, jit, compile, cudagraph")
    p.add_argument("--threads", help="comma list of thread counts, e.g. 1,2 (threads are pinned to cores)")
    p.add_argument("--batch-sizes", help="comma list, e.g. 1,8,256")
    p.add_argument("--precision", help="comma list: fp32, fp16, bf16, int8")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--channels-last", choices=("off", "on", "both"), default="off", help="torch memory format")
    p.add_argument("--input-size", type=int, default=224)
    p.add_argument("--no-gate", action="store_true", help="skip the numerical check against fp32 eager (not advised)")
    p.add_argument("--no-pin", action="store_true", help="do not pin the process to `threads` cores")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument(
        "--compile-mode",
        default=None,
        help="torch.compile mode (default on CUDA: reduce-overhead, i.e. CUDA graphs; max-autotune tunes for minutes)",
    )
    p.add_argument("--format", choices=_table.FORMATS, default="table", help="printed table format")


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("bench")  # one-line helps: mobilezoo.cli.COMMANDS
    _common(p)
    add_weights_options(p)  # default: the published weights; --random-weights needs no network (speed is the same)
    p.add_argument("--policy", choices=("quick", "standard", "full"), default="standard", help="timing effort")
    p.add_argument("-o", "--output", default="mobilezoo-bench", help="folder for results.csv / results.json")
    p.add_argument("--per-layer", metavar="MODEL", help="where the time goes in MODEL, layer by layer")
    p.add_argument("--iters", type=int, default=30, help="--per-layer: passes per layer timing")
    p.add_argument("--fuse", action="store_true", help="--per-layer: fold BatchNorm first (as deployed)")
    p.add_argument(
        "--calib",
        help="--per-layer --precision int8 on an engine: folder of real images to calibrate on "
        "(default: a fixed noise batch; the times are the same, the ranges are not)",
    )
    p.add_argument("--num-calib", type=int, default=256, help="--calib: images to use (default: %(default)s)")
    p.set_defaults(func=cmd_bench)

    p = subparsers.add_parser("report")
    _common(p)
    p.add_argument(
        "--full",
        action="store_true",
        help="the whole grid (all backends, threads, batch 1/8, "
        "fp32/bf16/int8; on CUDA eager/cudagraph/compile, fp32/fp16/bf16, batch 1/8/256, channels_last)",
    )
    p.add_argument(
        "--policy",
        choices=("quick", "standard", "full"),
        default=None,
        help="timing effort (default: quick; standard with --full)",
    )
    p.add_argument("-o", "--output", default="mobilezoo-report", help="output folder (default: %(default)s)")
    p.add_argument(
        "--training-results",
        type=Path,
        default=None,
        help="CIFAR-10 training results CSV (default: the first present of "
        + ", ".join(map(str, DEFAULT_TRAINING_CSVS))
        + ")",
    )
    p.add_argument("--from-results", type=Path, help="build the report from a bench results.json instead of measuring")
    p.add_argument(
        "--per-layer",
        default="ShuffleNetV2_x1_0",
        metavar="MODEL",
        help="model for the per-layer section ('none' to skip; default: %(default)s)",
    )
    p.set_defaults(func=cmd_report)
