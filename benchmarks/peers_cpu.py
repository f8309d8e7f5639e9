"""Faster than every peer? CPU, batch 1, one thread: mobilezoo's ``backend="auto"`` against PyTorch eager, ONNX
Runtime, OpenVINO, ncnn, the phone engines of the registry (ExecuTorch, LiteRT, ...) and Paddle Inference on the same
network and weights, measured side by side in one run.

    python benchmarks/peers_cpu.py                         # the six networks of issue 5, writes benchmarks/results/
    python benchmarks/peers_cpu.py --models MobileNetV2_x1_0 --out /tmp/peers
    python benchmarks/peers_cpu.py --ckpt-dir runs/cifar10_study   # also verify bf16/int8 top-1 on CIFAR-10 weights

Weights: PaddleClas's own network is built in the PaddlePaddle environment (``bash scripts/paddle_env.sh``) with
random weights and BatchNorm statistics calibrated on noise (``tests/paddle_ref/make_reference.py``); mobilezoo loads
that ``.pdparams``, so every engine computes the same function with the same numbers, and every engine's output is
checked against PyTorch fp32 eager before it is timed (``gate_rel_diff``). Speed does not depend on weight values.

Engines (all pinned to one core, one thread):

- ``pytorch-eager``: the zoo network in eager PyTorch, BatchNorm not folded (what a PyTorch user runs);
- ``pytorch-eager-peer``: torchvision's / timm's network of the family (not the same network: see
  ``mobilezoo.weights.ecosystems``; shown for reference, not a goal baseline);
- ``onnxruntime``: ``torch.onnx.export`` (opset 17) + a default ``InferenceSession`` (all graph optimisations);
- ``openvino``: ``ov.convert_model(model, example_input)`` + ``compile_model`` (f32 inference precision, latency hint);
- ``ncnn``: pnnx export + ``ncnn.Net`` with default options;
- the registry's other engines (:func:`registry_peers`: ``executorch``, XNNPACK-delegated ``.pte``; ``litert``,
  ``.tflite`` on the XNNPACK delegate; ...): each engine's own export opened by its mobilezoo session, one thread
  (x86 timings of phone runtimes: their ARM numbers are the seeds' Snapdragon 855 and Raspberry Pi columns);
- ``paddle-inference``: PaddleClas's network, ``paddle.jit.save`` + ``paddle.inference`` with oneDNN (a subprocess
  in the PaddlePaddle environment, same core, same input);
- ``mobilezoo-auto``: ``mobilezoo.runtime.load(model, backend="auto", threads=1)`` (measured choice, timed through
  the runtime API's ``__call__``: tensor in, logits tensor out).

Reduced precision: OpenVINO / PyTorch / Paddle bf16 and mobilezoo ``auto`` bf16; mobilezoo int8 (``mobilezoo.quant``
PTQ, calibrated on 32 inputs of the timed input's distribution) on ONNX Runtime and OpenVINO, and each engine's own
int8 quantizer where it has one (ExecuTorch's XNNPACK PT2E, LiteRT's full integer: ``mobilezoo-int8-<engine>``).
Accuracy of reduced precision needs CIFAR-10-trained checkpoints (``--ckpt-dir DIR`` with ``DIR/<model>/best.ckpt``): without them it is
reported as not verified.

In-process engines are timed interleaved (every round runs each engine in turn, order rotating) so load changes hit
all alike; Paddle runs in its own process right before. Writes ``peers_cpu.csv``, ``peers_cpu.json`` and
``peers_cpu.md`` (goals reached or missed, by how much).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
PADDLE_PY = REPO / ".cache" / "paddle-env" / "bin" / "python"
MAKE_REF = REPO / "tests" / "paddle_ref" / "make_reference.py"
PADDLE_BENCH = Path(__file__).resolve().parent / "_paddle_infer.py"
CIFAR = REPO.parent / "shared" / "data" / "cifar10"

MODELS = {  # zoo name -> (torchvision/timm source, peer model name)
    "MobileNetV1_x1_0": ("timm", "mobilenetv1_100"),
    "MobileNetV2_x1_0": ("torchvision", "mobilenet_v2"),
    "MobileNetV3_large_x1_0": ("torchvision", "mobilenet_v3_large"),
    "MobileNetV3_small_x1_0": ("torchvision", "mobilenet_v3_small"),
    "ShuffleNetV2_x1_0": ("torchvision", "shufflenet_v2_x1_0"),
    "GhostNet_x1_0": ("timm", "ghostnet_100"),
}
HAND_SET_UP = ("onnxruntime", "openvino", "ncnn")
"""Engines set up here as their own users do (``engine_ort``, ``engine_openvino``, ``engine_ncnn``)."""


def registry_peers() -> tuple[str, ...]:
    """The other engines of mobilezoo's registry that run models here (its ``auto`` candidates besides torch and the
    hand-set-up ones: ExecuTorch, LiteRT, ...): each timed through its mobilezoo session on its own artifact."""
    from mobilezoo import backends

    return tuple(
        n for n in backends.names() if n not in (*HAND_SET_UP, "torch") and backends.get(n).auto_rank is not None
    )


def int8_engines() -> tuple[str, ...]:
    """The engines with an int8 quantizer of their own (:func:`mobilezoo.backends.quantizers`) that run int8 here."""
    from mobilezoo import backends

    return tuple(n for n in backends.quantizers() if backends.get(n).unsupported("int8", "cpu") is None)


FP32_PEERS = ("pytorch-eager", *HAND_SET_UP, *registry_peers(), "paddle-inference")
COLUMNS = (
    "model",
    "engine",
    "network",
    "precision",
    "threads",
    "batch",
    "status",
    "median_ms",
    "best_round_ms",
    "p90_ms",
    "min_ms",
    "spread",
    "noisy",
    "noise_reason",
    "gate_rel_diff",
    "note",
)


def quiet():
    from mobilezoo.backends import quiet as q

    return q()


# ------------------------------------------------------------------------------------------------------- engines


def peer_network(source: str, name: str) -> torch.nn.Module:
    if source == "torchvision":
        import torchvision

        return getattr(torchvision.models, name)(weights=None).eval()
    import timm

    return timm.create_model(name, pretrained=False).eval()


def engine_torch(model: torch.nn.Module, x: torch.Tensor, dtype=torch.float32):
    net = model if dtype == torch.float32 else __import__("copy").deepcopy(model).to(dtype)
    xx = x.to(dtype)

    def run():
        with torch.inference_mode():
            return net(xx)

    return run, lambda: run().float()


def engine_ort(model: torch.nn.Module, x: torch.Tensor, workdir: Path):
    import onnxruntime as ort

    path = workdir / "peer.onnx"
    with quiet():
        torch.onnx.export(
            model, (x,), str(path), dynamo=False, opset_version=17, input_names=["input"], output_names=["logits"]
        )
    ort.set_default_logger_severity(3)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    arr = x.numpy()

    def run():
        return sess.run(None, {"input": arr})[0]

    return run, lambda: torch.from_numpy(run())


def engine_openvino(model: torch.nn.Module, x: torch.Tensor, hint: str = "f32"):
    import openvino as ov

    with quiet():
        ov_model = ov.convert_model(model, example_input=x)
    cfg = {"INFERENCE_NUM_THREADS": 1, "INFERENCE_PRECISION_HINT": hint, "PERFORMANCE_HINT": "LATENCY"}
    compiled = ov.Core().compile_model(ov_model, "CPU", cfg)
    req = compiled.create_infer_request()
    arr = x.numpy()

    def run():
        return req.infer({0: arr})

    return run, lambda: torch.from_numpy(np.array(run()[compiled.output(0)]))


def engine_ncnn(model: torch.nn.Module, x: torch.Tensor, workdir: Path):
    import ncnn

    from mobilezoo.export import export

    with quiet():
        param = export(model, "ncnn", workdir / "ncnn")
    net = ncnn.Net()
    net.opt.num_threads = 1
    net.load_param(str(param))
    net.load_model(str(param.with_name(param.name.removesuffix(".param") + ".bin")))
    arr = np.ascontiguousarray(x.numpy()[0])
    mat = ncnn.Mat(arr)

    def run():
        ex = net.create_extractor()
        ex.input("in0", mat)
        return ex.extract("out0")[1]

    return run, lambda: torch.from_numpy(np.array(run()).reshape(1, -1))


def engine_runtime(rt, x: torch.Tensor):
    return (lambda: rt(x)), (lambda: rt(x))


def engine_registry(name: str, model: torch.nn.Module, x: torch.Tensor, workdir: Path, calib=None):
    """Engine ``name`` of the registry on its own artifact (``calib``: its own int8 quantizer's), one thread: the
    engine's native call timed, its output through the session."""
    from mobilezoo import backends

    eng = backends.get(name)
    with quiet():
        if calib is None:
            path = eng.export(model, workdir / name, input_size=int(x.shape[-1]))
        else:
            path = eng.quantize(model, calib, workdir / f"{name}-int8")
    sess = eng.open(path, threads=1, batch_size=int(x.shape[0]))
    return sess.timed_call(x), lambda: sess(x)


def paddle_inference(constructor: str, workdir: Path, x: np.ndarray, cores: list[int], args, bf16: bool = False):
    """(rounds of per-call seconds, logits) from the Paddle environment, pinned to ``cores``."""
    np.save(workdir / "x.npy", x)
    cmd = [
        str(PADDLE_PY),
        str(PADDLE_BENCH),
        constructor,
        str(workdir),
        "--input",
        str(workdir / "x.npy"),
        "--threads",
        "1",
        "--rounds",
        str(args.rounds),
        "--min-round-s",
        str(args.min_round_s),
    ]
    if bf16:
        cmd.append("--bf16")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GLOG_minloglevel": "3"}
    res = subprocess.run(
        cmd,
        capture_output=True,
        text=True,
        timeout=900,
        env=env,
        preexec_fn=lambda: os.sched_setaffinity(0, set(cores)),
    )
    if res.returncode != 0:
        raise RuntimeError(res.stderr.strip().splitlines()[-1] if res.stderr.strip() else "paddle failed")
    doc = json.loads(res.stdout.strip().splitlines()[-1])
    return doc, torch.from_numpy(np.load(workdir / "paddle_out.npy"))


# ------------------------------------------------------------------------------------------------------ accuracy


def cifar_accuracy(name: str, ckpt: Path, n_images: int) -> dict[str, Any]:
    """Top-1 on the CIFAR-10 test folder of the fp32 checkpoint, OpenVINO bf16 and each mobilezoo int8 engine."""
    from mobilezoo import runtime
    from mobilezoo.data import find_images
    from mobilezoo.quant import calibration_images, quantize_ptq

    model = runtime.load_checkpoint_model(name, ckpt)
    fp32 = runtime.load(model, backend="torch", threads=1)
    paths, _ = find_images([CIFAR / "test"])
    rng = np.random.default_rng(0)
    paths = [paths[i] for i in sorted(rng.choice(len(paths), min(n_images, len(paths)), replace=False))]
    labels = [p.parent.name for p in paths]
    out: dict[str, Any] = {"images": len(paths)}
    with tempfile.TemporaryDirectory() as tmp:
        calib = calibration_images(CIFAR / "train", fp32.preprocess, n=256)
        q = quantize_ptq(model, calib, tmp)
        common = {"model_name": name, "class_names": fp32.class_names, "preprocess": fp32.preprocess}
        qn = quantize_ptq(model, calib, Path(tmp) / "nncf", toolchain="nncf")
        engines = {
            "fp32": fp32,
            "bf16-openvino": runtime.load(q.fp32, threads=1, precision="bf16", backend="openvino"),
            "int8-onnxruntime": runtime.load(q.int8, threads=1),
            "int8-openvino": runtime.load(q.int8, threads=1, precision="int8", backend="openvino"),
            "int8-nncf-openvino": runtime.load(qn.int8, threads=1),
        }
        for tc in int8_engines():  # the engines with a quantizer of their own, on their own artifact
            qe = quantize_ptq(model, calib, Path(tmp) / tc, toolchain=tc)
            engines[f"int8-{tc}"] = runtime.load(qe.int8, threads=1)
        for k, rt in engines.items():
            preds = rt.predict(paths, topk=1, batch_size=32)
            out[k] = 100.0 * sum(p.names[0] == y for p, y in zip(preds, labels)) / len(paths)
    return out


# ---------------------------------------------------------------------------------------------------------- main


def run_model(name: str, args, rows: list, choices: dict, accuracy: dict) -> None:
    """Gate and time every engine on one network, appending to ``rows`` / ``choices`` / ``accuracy``."""
    from mobilezoo import runtime
    from mobilezoo.measure.gate import check
    from mobilezoo.measure.harness import idlest_cores, load_average, measure_interleaved, pinned
    from mobilezoo.measure.stats import assess_noise, summarize
    from mobilezoo import create_model
    from mobilezoo.models import get_entry
    from mobilezoo.quant import quantize_ptq

    entry = get_entry(name)
    print(f"== {name}", file=sys.stderr, flush=True)
    with tempfile.TemporaryDirectory(prefix="peers-") as tmpdir:
        work = Path(tmpdir)
        if args.skip_paddle:
            from mobilezoo.bench.grid import prepare_model

            model = prepare_model(name, "random")
            x = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(0))
        else:  # same weights everywhere: PaddleClas builds them, mobilezoo loads the .pdparams
            res = subprocess.run(
                [str(PADDLE_PY), str(MAKE_REF), entry.paddle_arch, str(work), "--batch", "1"],
                capture_output=True,
                text=True,
                timeout=600,
            )
            if res.returncode != 0:
                raise RuntimeError(f"make_reference failed for {name}: {res.stderr[-2000:]}")
            model = create_model(name, pretrained=work / "model.pdparams").eval()
            x = torch.from_numpy(np.load(work / "io.npz")["x"].astype(np.float32))
        with torch.inference_mode():
            ref = model(x)
        cores = idlest_cores(1)
        load_before = load_average()
        with pinned(1, cores):
            engines: dict[str, tuple[str, str, Any, Any]] = {}  # key -> (network, precision, run, output)
            notes: dict[str, str] = {}

            def add(key, network, precision, make, note=""):
                try:
                    run, out = make()
                    engines[key] = (network, precision, run, out)
                    notes[key] = note
                except Exception as e:
                    rows.append(
                        {
                            "model": name,
                            "engine": key,
                            "network": network,
                            "precision": precision,
                            "threads": 1,
                            "batch": 1,
                            "status": "error",
                            "note": f"{type(e).__name__}: {e}"[:300],
                        }
                    )

            src, peer = MODELS.get(name, (None, None))
            add("pytorch-eager", "mobilezoo", "fp32", lambda: engine_torch(model, x))
            if peer:
                pnet = peer_network(src, peer)
                engines_peer = engine_torch(pnet, x)
                engines["pytorch-eager-peer"] = (f"{src}:{peer}", "fp32", engines_peer[0], None)
                notes["pytorch-eager-peer"] = "a similar, not identical network (random weights; not gated)"
            add("onnxruntime", "mobilezoo", "fp32", lambda: engine_ort(model, x, work))
            add("openvino", "mobilezoo", "fp32", lambda: engine_openvino(model, x, "f32"))
            add("ncnn", "mobilezoo", "fp32", lambda: engine_ncnn(model, x, work))
            for peer_name in registry_peers():  # ExecuTorch, LiteRT, ... through the engine layer
                add(peer_name, "mobilezoo", "fp32", lambda n=peer_name: engine_registry(n, model, x, work))
            t0 = time.perf_counter()
            rt_auto = runtime.load(model, backend="auto", threads=1, remeasure=True)
            choices[name] = {"fp32": {**rt_auto.auto.as_dict(), "select_s": round(time.perf_counter() - t0, 2)}}
            add(
                "mobilezoo-auto",
                "mobilezoo",
                "fp32",
                lambda: engine_runtime(rt_auto, x),
                f"auto chose {rt_auto.auto.backend}",
            )
            # reduced precision
            add("pytorch-eager-bf16", "mobilezoo", "bf16", lambda: engine_torch(model, x, torch.bfloat16))
            add("openvino-bf16", "mobilezoo", "bf16", lambda: engine_openvino(model, x, "bf16"))
            t0 = time.perf_counter()
            rt_bf16 = runtime.load(model, backend="auto", threads=1, precision="bf16", remeasure=True)
            choices[name]["bf16"] = {**rt_bf16.auto.as_dict(), "select_s": round(time.perf_counter() - t0, 2)}
            add(
                "mobilezoo-auto-bf16",
                "mobilezoo",
                "bf16",
                lambda: engine_runtime(rt_bf16, x),
                f"auto chose {rt_bf16.auto.backend}",
            )
            # calibrated on the distribution the (random) weights and the timed input come from: noise images
            # (other samples than the timed one); real-image accuracy of int8 is the --ckpt-dir check
            calib = torch.randn(32, 3, 224, 224, generator=torch.Generator().manual_seed(7))
            with quiet():
                q = quantize_ptq(model, calib, work / "int8")
            common = {"model_name": name}
            rt_i8_ort = runtime.load(q.int8, threads=1)
            rt_i8_ov = runtime.load(q.int8, threads=1, precision="int8", backend="openvino")
            note = f"mobilezoo.quant PTQ ({len(calib)} calibration inputs), {q.int8.stat().st_size / 1e6:.1f} MB"
            add("mobilezoo-int8-onnxruntime", "mobilezoo", "int8", lambda: engine_runtime(rt_i8_ort, x), note)
            add("mobilezoo-int8-openvino", "mobilezoo", "int8", lambda: engine_runtime(rt_i8_ov, x), note)
            with quiet():
                qn = quantize_ptq(model, calib, work / "int8-nncf", toolchain="nncf")
            rt_i8_nncf = runtime.load(qn.int8, threads=1)
            note = f"mobilezoo.quant PTQ, nncf toolchain ({len(calib)} calibration inputs), OpenVINO IR"
            add("mobilezoo-int8-nncf-openvino", "mobilezoo", "int8", lambda: engine_runtime(rt_i8_nncf, x), note)
            for tc in int8_engines():  # each engine's own quantizer, same calibration inputs
                note = f"{tc}'s own quantizer ({len(calib)} calibration inputs)"
                make = lambda n=tc: engine_registry(n, model, x, work, calib)  # noqa: E731
                add(f"mobilezoo-int8-{tc}", "mobilezoo", "int8", make, note)

            # Paddle Inference in its own process on the same core, right before the in-process rounds
            paddle = {}
            if not args.skip_paddle:
                for key, bf16 in (("paddle-inference", False), ("paddle-inference-bf16", True)):
                    try:
                        paddle[key] = paddle_inference(entry.paddle_arch, work, x.numpy(), cores, args, bf16)
                    except Exception as e:
                        rows.append(
                            {
                                "model": name,
                                "engine": key,
                                "network": "paddleclas",
                                "threads": 1,
                                "batch": 1,
                                "precision": "bf16" if bf16 else "fp32",
                                "status": "error",
                                "note": str(e)[:300],
                            }
                        )

            # numerical gate, then interleaved timing
            gated: dict[str, float | None] = {}
            for key, (_net, prec, _run, out) in engines.items():
                gated[key] = None if out is None else check(ref, out(), prec).rel_diff
            rm: dict[str, list[float]] = {}
            timed = {k: v[2] for k, v in engines.items()}
            stats = measure_interleaved(
                timed,
                rounds=args.rounds,
                min_iters=5,
                min_round_s=args.min_round_s,
                warmup_iters=10,
                round_medians=rm,
            )
        load_after = load_average()
        for key, (network, prec, _run, _out) in engines.items():
            s = stats[key]
            noisy, why = assess_noise(rm[key], s)
            g = gated[key]
            tol_ok = g is None or check(ref, ref, prec).tol >= g
            rows.append(
                {
                    "model": name,
                    "engine": key,
                    "network": network,
                    "precision": prec,
                    "threads": 1,
                    "batch": 1,
                    "status": "ok" if tol_ok else "wrong",
                    "median_ms": s.median_ms,
                    "best_round_ms": min(rm[key]),
                    "p90_ms": s.p90_ms,
                    "min_ms": s.min_ms,
                    "spread": s.spread,
                    "noisy": noisy,
                    "noise_reason": why,
                    "gate_rel_diff": g,
                    "note": notes.get(key, ""),
                }
            )
        for key, (doc, logits) in paddle.items():
            flat = [t for r in doc["rounds"] for t in r]
            s = summarize(flat)
            noisy, why = assess_noise([summarize(r).median_ms for r in doc["rounds"]], s)
            prec = "bf16" if doc["bf16"] else "fp32"
            g = check(ref, logits, prec)
            rows.append(
                {
                    "model": name,
                    "engine": key,
                    "network": f"paddleclas:{entry.paddle_arch}",
                    "precision": prec,
                    "threads": 1,
                    "batch": 1,
                    "status": "ok" if g.ok else "wrong",
                    "median_ms": s.median_ms,
                    "best_round_ms": min(summarize(r).median_ms for r in doc["rounds"]),
                    "p90_ms": s.p90_ms,
                    "min_ms": s.min_ms,
                    "spread": s.spread,
                    "noisy": noisy,
                    "noise_reason": why,
                    "gate_rel_diff": g.rel_diff,
                    "note": f"paddle {doc['paddle']}, oneDNN, own process",
                }
            )
        choices[name]["load_average"] = [load_before, load_after]
        ckpt = args.ckpt_dir / name / "best.ckpt" if args.ckpt_dir else None
        if ckpt is not None and ckpt.is_file():
            accuracy[name] = cifar_accuracy(name, ckpt, args.eval_images)
    for r in rows:
        if r["model"] == name and r.get("median_ms"):
            print(
                f"  {r['engine']:28s} {r['precision']:5s} {r['median_ms']:8.3f} ms  {r['status']}"
                f"{'  noisy' if r.get('noisy') else ''}",
                file=sys.stderr,
            )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    ap.add_argument("--name", default="peers_cpu")
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--min-round-s", type=float, default=0.2)
    ap.add_argument("--skip-paddle", action="store_true")
    ap.add_argument("--ckpt-dir", type=Path, default=None, help="CIFAR-10 checkpoints: DIR/<model>/best.ckpt")
    ap.add_argument("--eval-images", type=int, default=2000)
    ap.add_argument(
        "--rewrite", action="store_true", help="judge the goals again and rewrite the .md/.json from the existing JSON"
    )
    args = ap.parse_args()
    if args.rewrite:
        from mobilezoo import create_model
        from mobilezoo.profile import count_macs

        doc = json.loads((args.out / f"{args.name}.json").read_text())
        info, rows = doc["machine"], doc["rows"]
        accuracy = doc["accuracy"] if isinstance(doc["accuracy"], dict) else {}
        models = list(dict.fromkeys(r["model"] for r in rows))
        macs = {m: count_macs(create_model(m, weights="random")) for m in models}
        goals = evaluate(rows, accuracy, info.get("peaks_1_thread"), macs)
        write(
            args,
            info,
            rows,
            doc["auto_choices"],
            goals,
            accuracy,
            doc["wall_s"],
            doc["command"],
            doc["load_average_end"],
        )
        return 0

    from mobilezoo.measure.machine import machine_info

    if not args.skip_paddle and not PADDLE_PY.is_file():
        raise SystemExit("the PaddlePaddle environment is missing: run `bash scripts/paddle_env.sh` (or --skip-paddle)")
    from mobilezoo.measure.harness import pinned
    from mobilezoo.measure.machine import measure_peaks

    t_start = time.perf_counter()
    info = machine_info()
    with pinned(1):
        peaks_start = measure_peaks(1).as_dict()
    rows: list[dict[str, Any]] = []
    choices: dict[str, Any] = {}
    accuracy: dict[str, Any] = {}
    torch.manual_seed(0)
    for name in args.models.split(","):
        run_model(name, args, rows, choices, accuracy)

    from mobilezoo import create_model
    from mobilezoo.profile import count_macs

    measure_peaks.cache_clear()
    with pinned(1):
        peaks_end = measure_peaks(1).as_dict()
    peaks = max(peaks_start, peaks_end, key=lambda p: p["peak_gflops"])  # ceilings: the less disturbed one
    macs = {m: count_macs(create_model(m, weights="random")) for m in args.models.split(",")}
    info["peaks_1_thread"] = peaks
    goals = evaluate(rows, accuracy, peaks, macs)
    write(args, info, rows, choices, goals, accuracy, time.perf_counter() - t_start)
    return 0


def _t(r: dict) -> float:
    """The latency the goals are judged on: the best round's median (each round's median drops call-level spikes;
    the best round drops the stretches when another process shared the core — same rule for every engine), else the
    median over all calls."""
    return r.get("best_round_ms") or r["median_ms"]


def _best(rows, model, engines, precision=None):
    c = [
        r
        for r in rows
        if r["model"] == model
        and r["engine"] in engines
        and r["status"] == "ok"
        and (precision is None or r["precision"] == precision)
    ]
    return min(c, key=_t) if c else None


REDUCED_ACCURACY = {  # reduced-precision engine -> its accuracy check in cifar_accuracy
    "mobilezoo-auto-bf16": "bf16-openvino",
    "mobilezoo-int8-onnxruntime": "int8-onnxruntime",
    "mobilezoo-int8-openvino": "int8-openvino",
    "mobilezoo-int8-nncf-openvino": "int8-nncf-openvino",
    **{f"mobilezoo-int8-{tc}": f"int8-{tc}" for tc in int8_engines()},
}


def evaluate(rows: list[dict], accuracy: dict, peaks: dict | None = None, macs: dict | None = None) -> list[dict]:
    """Each goal per model: reached or missed and by how much; with the machine's measured fp32 peak (one core) and
    the network's MACs, also how close auto runs to the compute roofline (the "why" when a goal is missed)."""
    out = []
    for model in dict.fromkeys(r["model"] for r in rows):
        auto = _best(rows, model, ["mobilezoo-auto"])
        peer = _best(rows, model, FP32_PEERS, "fp32")
        eager = _best(rows, model, ["pytorch-eager"])
        acc = accuracy.get(model)
        reduced, skipped = None, []
        timed = [r for r in rows if r["model"] == model and r["engine"] in REDUCED_ACCURACY and r.get("median_ms")]
        for eng in sorted(timed, key=_t):
            # the fastest reduced-precision engine that passes the gate and whose accuracy holds (when checked)
            if eng["status"] != "ok":
                skipped.append(f"{eng['engine']} {_t(eng):.2f} ms ({eng['status']}: fails the numerical gate)")
                continue
            key = REDUCED_ACCURACY[eng["engine"]]
            drop = acc["fp32"] - acc[key] if acc and key in acc else None  # None: not checked for this engine
            if drop is not None and drop > 0.5:
                skipped.append(f"{eng['engine']} {_t(eng):.2f} ms (CIFAR-10 top-1 drop {drop:.2f} > 0.5)")
                continue
            reduced = eng
            break
        g: dict[str, Any] = {"model": model}
        if auto and peer:
            ratio = _t(peer) / _t(auto)
            g["auto_ms"], g["fastest_peer"], g["fastest_peer_ms"] = _t(auto), peer["engine"], _t(peer)
            g["goal_fp32_vs_fastest_peer"] = "reached" if ratio >= 1.0 else "missed"
            g["fp32_speedup_vs_fastest_peer"] = ratio
            g["fp32_margin"] = (
                f"{(ratio - 1) * 100:+.1f}% ({'auto faster' if ratio >= 1 else 'auto slower'}"
                f"{', within noise' if abs(ratio - 1) < 0.05 else ''})"
            )
        if auto and eager:
            s = _t(eager) / _t(auto)
            g["speedup_vs_pytorch_eager"] = s
            g["goal_3x_vs_eager"] = "reached" if s >= 3.0 else f"missed by {3.0 - s:.2f}x"
        if auto and peaks and macs and macs.get(model):
            gflops = 2 * macs[model] / (_t(auto) * 1e-3) / 1e9
            g["auto_gflops"] = gflops
            g["auto_of_fp32_peak"] = gflops / peaks["peak_gflops"]
            g["compute_floor_ms"] = 2 * macs[model] / (peaks["peak_gflops"] * 1e9) * 1e3
            if eager:
                g["eager_over_3_ms"] = _t(eager) / 3
        if reduced and peer:
            s = _t(peer) / _t(reduced)
            g["best_reduced"], g["best_reduced_ms"], g["reduced_speedup_vs_best_fp32_peer"] = (
                reduced["engine"],
                _t(reduced),
                s,
            )
            speed = "reached" if s >= 1.5 else f"missed by {1.5 - s:.2f}x"
            if acc and REDUCED_ACCURACY[reduced["engine"]] in acc:
                key = REDUCED_ACCURACY[reduced["engine"]]
                drop = acc["fp32"] - acc[key]
                g["top1_drop_points"] = drop
                verified = "verified" if drop <= 0.5 else f"accuracy missed: drop {drop:.2f} > 0.5 points"
            else:
                verified = (
                    "accuracy not verified (no check for this engine)"
                    if acc
                    else "accuracy not verified (no CIFAR-10-trained checkpoint given)"
                )
            g["goal_reduced_1_5x"] = f"speed {speed}; {verified}"
            g["reduced_skipped_faster"] = skipped
        out.append(g)
    return out


def why_lines(goals: list[dict], rows: list[dict], info: dict) -> list[str]:
    """The reasons behind each missed goal, computed from this run's numbers."""
    out = ["\n## Why goals are missed where they are\n"]
    for g in goals:
        if g.get("goal_fp32_vs_fastest_peer") == "missed":
            chose = next(
                (r.get("note", "") for r in rows if r["model"] == g["model"] and r["engine"] == "mobilezoo-auto"), ""
            )
            out.append(
                f"- {g['model']}, auto vs {g['fastest_peer']}: {g['fp32_margin']}; {chose}. auto runs one of the "
                "peers' engines (compiled for the static shape), so its edge is a few percent, the size of this shared "
                "VM's run-to-run noise; a selection disturbed by other processes can pick the slower engine "
                "(`remeasure=True` measures again)."
            )
        if str(g.get("goal_3x_vs_eager", "")).startswith("missed") and g.get("auto_gflops"):
            need = g["auto_gflops"] * g["auto_ms"] / g["eager_over_3_ms"]  # same FLOPs in a third of eager's time
            out.append(
                f"- {g['model']}, 3x PyTorch eager: auto already computes {g['auto_gflops']:.0f} GFLOP/s "
                f"({g['auto_of_fp32_peak']:.0%} of this core's measured fp32 matmul peak); 3x eager "
                f"({g['eager_over_3_ms']:.2f} ms) would need {need:.0f} GFLOP/s "
                f"({need / (g['auto_gflops'] / g['auto_of_fp32_peak']):.0%} of peak)."
            )
    bf = []
    for m in dict.fromkeys(r["model"] for r in rows):
        f32 = next((r for r in rows if r["model"] == m and r["engine"] == "openvino" and r["status"] == "ok"), None)
        b16 = next(
            (r for r in rows if r["model"] == m and r["engine"] == "openvino-bf16" and r["status"] == "ok"), None
        )
        if f32 and b16:
            bf.append(_t(b16) / _t(f32))
    if bf:
        amx = "amx_bf16" in info.get("cpu_features", [])
        out.append(
            f"- bf16: OpenVINO bf16 takes {min(bf):.2f}-{max(bf):.2f}x the time of its fp32 here; this CPU "
            + ("has AMX." if amx else "exposes AVX512-BF16 but no AMX (a VM), so bf16 only adds conversions.")
        )
    wrong = sorted({r["model"] for r in rows if r["engine"].startswith("mobilezoo-int8") and r["status"] == "wrong"})
    if wrong:
        out.append(
            f"- int8: the PTQ graph of {', '.join(wrong)} fails the numerical gate (max|diff|/max|logit| above "
            "0.35): no speed is claimed for it (MobileNetV3/GhostNet hard-swish and SE ranges are the known PTQ "
            "problem; QAT is the quantization work's answer)."
        )
    for g in goals:
        if "speed missed" in str(g.get("goal_reduced_1_5x", "")):
            skipped = g.get("reduced_skipped_faster") or []
            out.append(
                f"- {g['model']}, reduced precision: best is {g.get('best_reduced')} at "
                f"{g.get('reduced_speedup_vs_best_fp32_peer', 0):.2f}x the fastest fp32 peer"
                + (f"; faster but not counted: {'; '.join(skipped)}." if skipped else ".")
            )
    if any("not verified" in str(g.get("goal_reduced_1_5x", "")) for g in goals):
        out.append(
            "- Accuracy of bf16/int8 on CIFAR-10-trained weights: not verified in this run for some models (no "
            "checkpoint given; `--ckpt-dir` runs the check)."
        )
    return out


def _fmt(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.3f}" if abs(v) < 100 else f"{v:.1f}"
    return str(v)


def write(args, info, rows, choices, goals, accuracy, wall_s, command=None, load_end=None) -> None:
    command = command or " ".join(sys.argv)
    load_end = load_end or list(os.getloadavg())
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    import csv

    with (out / f"{args.name}.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(COLUMNS), extrasaction="ignore", lineterminator="\n")
        w.writeheader()
        for r in rows:
            w.writerow({k: _fmt(r.get(k)) if isinstance(r.get(k), float) else r.get(k, "") for k in COLUMNS})
    cpu = f"{info['cpu_model']} ({info.get('microarchitecture') or '?'}, family/model {info['cpu_family_model']})"
    machine = (
        f"{cpu}, {info['logical_cpus']} logical CPUs, ISA {'/'.join(info['cpu_features'])}"
        f"{' (no AMX exposed)' if 'amx_bf16' not in info['cpu_features'] else ''}"
        f"{', virtual machine' if info['hypervisor'] else ''}"
    )
    doc = {
        "machine": info,
        "machine_named": machine,
        "command": command,
        "wall_s": round(wall_s, 1),
        "load_average_end": load_end,
        "goals": goals,
        "auto_choices": choices,
        "accuracy": accuracy or "not verified: no CIFAR-10-trained checkpoints were given (--ckpt-dir)",
        "gpu": "not run here (no GPU in this session): see benchmarks/peers_gpu.py",
        "rows": rows,
    }
    (out / f"{args.name}.json").write_text(json.dumps(doc, indent=1, default=str) + "\n")

    md = [
        f"# Peers on CPU: batch 1, one thread (`{command}`)\n",
        f"Machine: {machine}. Versions: " + ", ".join(f"{k} {v}" for k, v in info["versions"].items() if v) + ".",
        f"Load average at start {info['load_average']}, at end {[round(v, 2) for v in load_end]}"
        " (2 cores shared with other work: noisy rows are marked).\n",
        "Latency in ms: **best round's median** (median over all calls / p90). Engines run interleaved in rounds; "
        "the best round is the one least disturbed by other processes on this shared machine, judged by the same "
        "rule for every engine, and the goals below use it. Every engine's logits were checked against PyTorch "
        "fp32 eager on the same input and weights before timing (`gate` = max|diff| / max|logit|).\n",
    ]
    engines = list(dict.fromkeys(r["engine"] for r in rows))
    md.append("| engine | " + " | ".join(dict.fromkeys(r["model"] for r in rows)) + " |")
    models = list(dict.fromkeys(r["model"] for r in rows))
    md.append("|---|" + "---|" * len(models))
    for e in engines:
        cells = []
        for m in models:
            r = next((r for r in rows if r["model"] == m and r["engine"] == e), None)
            if r is None:
                cells.append("")
            elif r.get("median_ms") is None or r["status"] != "ok":
                cells.append(r["status"] + (f": {r.get('note', '')[:60]}" if r.get("note") else ""))
            else:
                cells.append(
                    f"**{_t(r):.2f}** ({r['median_ms']:.2f} / {r['p90_ms']:.2f}){' ~noisy' if r['noisy'] else ''}"
                )
        md.append(f"| {e} | " + " | ".join(cells) + " |")
    md.append("\n## Goals (issue 5, point 4)\n")
    pk = info.get("peaks_1_thread", {})
    md.append(
        f"Roofline of one core, measured: fp32 matmul {pk.get('peak_gflops')} GFLOP/s, copy {pk.get('cache_gbps')} / "
        f"{pk.get('llc_gbps')} / {pk.get('dram_gbps')} GB/s (L2 / LLC / DRAM). `auto GFLOP/s` = 2 x MACs / auto's "
        "median: how close the fastest engine already runs to the compute ceiling.\n"
    )
    md.append(
        "| model | auto (ms) | fastest fp32 peer | auto vs it | >= 3x PyTorch eager | auto GFLOP/s (of peak) "
        "| reduced precision >= 1.5x |"
    )
    md.append("|---|---|---|---|---|---|---|")
    for g in goals:
        md.append(
            f"| {g['model']} | {_fmt(g.get('auto_ms'))} | {g.get('fastest_peer', '')} "
            f"{_fmt(g.get('fastest_peer_ms'))} | {g.get('goal_fp32_vs_fastest_peer', '')} {g.get('fp32_margin', '')} "
            f"| {g.get('goal_3x_vs_eager', '')} ({_fmt(g.get('speedup_vs_pytorch_eager'))}x) "
            f"| {g.get('auto_gflops', 0):.0f} ({g.get('auto_of_fp32_peak', 0):.0%}) "
            f"| {g.get('best_reduced', '')} {_fmt(g.get('reduced_speedup_vs_best_fp32_peer'))}x: "
            f"{g.get('goal_reduced_1_5x', '')} |"
        )
    md.append(
        "\nauto's choices: "
        + "; ".join(f"{m}: fp32 {c['fp32']['backend']}, bf16 {c['bf16']['backend']}" for m, c in choices.items())
        + "."
    )
    if accuracy:
        keys = list(dict.fromkeys(k for a in accuracy.values() for k in a if k not in ("images", "checkpoint")))
        md.append(
            "\n## Reduced-precision accuracy on CIFAR-10-trained weights (`--ckpt-dir`)\n\nTop-1 in % on CIFAR-10 "
            "test images (the same random sample for every engine), each network's own checkpoint at its 32x32 "
            "input; int8 calibrated on 256 training images. Drop = fp32 - engine; the reduced-precision goal needs "
            "<= 0.5. (`benchmarks/results/quant_cifar10.md` has the whole test set, QAT and latency at 32x32.)\n"
        )
        md.append("| model | images | " + " | ".join(keys) + " |")
        md.append("|---|---|" + "---|" * len(keys))
        for m, a in accuracy.items():
            cells = [f"{a[k]:.2f}" + ("" if k == "fp32" else f" ({a[k] - a['fp32']:+.2f})") for k in keys]
            md.append(f"| {m} | {a['images']} | " + " | ".join(cells) + " |")
    md.extend(why_lines(goals, rows, info))
    md.append("\nGPU (H100) goals: not measured in this run (no GPU); `benchmarks/peers_gpu.py` is ready to run.")
    (out / f"{args.name}.md").write_text("\n".join(md) + "\n")
    print(f"wrote {out / args.name}.csv/.json/.md ({wall_s:.0f} s)", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
