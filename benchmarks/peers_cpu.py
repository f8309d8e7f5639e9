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

Two blocks per network, each gated then timed interleaved on one pinned core:

- ``imagenet-224``: PaddleClas's network and weights at 224x224: the fp32 peers above, ``auto`` fp32 and bf16,
  OpenVINO / PyTorch / Paddle bf16, and mobilezoo's int8 artifacts for speed only (random weights, calibrated on
  32 noise inputs: no goal uses them). The fp32 goals (auto as fast as / 1.15x the fastest peer, 3x eager).
- ``cifar10-32`` (with ``--ckpt-dir DIR``: ``DIR/<model>/best.ckpt`` or a ``save_pretrained`` folder
  ``DIR/<model>/``): the CIFAR-10-trained checkpoint at its
  32x32 input: the fp32 peers, ``auto``, and mobilezoo's reduced-precision artifacts calibrated on 256 training
  images (``mobilezoo.quant`` PTQ on ONNX Runtime and OpenVINO, NNCF, and each engine's own quantizer: ExecuTorch's
  XNNPACK PT2E, LiteRT's full integer, MNN's). Each of those artifacts is timed here and the same object evaluated
  on ``--eval-images`` CIFAR-10 test images (its file and sha256 recorded in the row): the reduced-precision goal
  (>= 1.5x the fastest fp32 peer of the block at <= 0.5 points of top-1 drop) is judged on it alone.

Statistic: the median over all calls; a goal is reached or missed only when the margin exceeds the two rows'
combined run-to-run spread (interquartile range of the round medians / their median), a tie otherwise; rows whose
run-to-run spread exceeds 10% are left out of the goals; a wrong answer (numerical gate) is recorded as wrong and
never timed. Paddle runs in its own process right before the in-process rounds. Writes ``peers_cpu.csv``,
``peers_cpu.json`` and ``peers_cpu.md``.
"""

from __future__ import annotations

import argparse
import json
import math
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
    "block",
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
    "run_to_run",
    "noisy",
    "noise_reason",
    "gate_rel_diff",
    "artifact",
    "sha256",
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


# -------------------------------------------------------------------------------------------- gate, then time


def artifact_id(path: Path | None) -> dict[str, str]:
    """The artifact a row timed (and, in the trained block, evaluated): its file name and digest
    (:func:`mobilezoo.backends.artifact.artifact_digest`)."""
    if path is None:
        return {}
    from mobilezoo.backends.artifact import artifact_digest

    return {"artifact": Path(path).name, "sha256": artifact_digest(path)}


class Block:
    """One set of engines timed side by side on one input: ``block`` names it (``imagenet-224``: PaddleClas's
    network with shared random weights at 224x224; ``cifar10-32``: the CIFAR-10-trained checkpoint at its 32x32
    input, whose reduced-precision artifacts are the ones evaluated)."""

    def __init__(self, model_name: str, block: str, ref: torch.Tensor) -> None:
        self.model, self.block, self.ref = model_name, block, ref
        self.engines: dict[str, tuple[str, str, Any, Any]] = {}  # key -> (network, precision, run, output)
        self.extra: dict[str, dict[str, Any]] = {}  # key -> note, artifact, sha256
        self.rows: list[dict[str, Any]] = []

    def row(self, key: str, network: str, precision: str, status: str, **kw) -> dict[str, Any]:
        r = {"model": self.model, "block": self.block, "engine": key, "network": network, "precision": precision}
        return {**r, "threads": 1, "batch": 1, "status": status, **kw}

    def add(self, key: str, network: str, precision: str, make, note: str = "", artifact: Path | None = None):
        try:
            run, out = make()
        except Exception as e:
            self.rows.append(self.row(key, network, precision, "error", note=f"{type(e).__name__}: {e}"[:300]))
            return
        self.engines[key] = (network, precision, run, out)
        self.extra[key] = {"note": note, **artifact_id(artifact)}

    def gate_and_time(self, args) -> None:
        """The numerical gate first: an engine that gives a wrong answer is recorded as wrong, with no latency, and
        is not timed; the correct ones are timed interleaved."""
        from mobilezoo.measure.gate import check
        from mobilezoo.measure.harness import measure_interleaved
        from mobilezoo.measure.stats import assess_noise

        timed, gated = {}, {}
        for key, (network, prec, run, out) in self.engines.items():
            g = None if out is None else check(self.ref, out(), prec)
            gated[key] = None if g is None else g.rel_diff
            if g is not None and not g.ok:
                self.rows.append(self.row(key, network, prec, "wrong", gate_rel_diff=g.rel_diff, **self.extra[key]))
                continue
            timed[key] = run
        rm: dict[str, list[float]] = {}
        stats = measure_interleaved(
            timed, rounds=args.rounds, min_iters=5, min_round_s=args.min_round_s, warmup_iters=10, round_medians=rm
        )
        for key in timed:
            s, (network, prec, _r, _o) = stats[key], self.engines[key]
            noisy, why = assess_noise(rm[key], s)
            self.rows.append(
                self.row(key, network, prec, "ok", gate_rel_diff=gated[key], noisy=noisy, noise_reason=why)
                | timing_fields(s, rm[key])
                | self.extra[key]
            )


def timing_fields(s, round_medians: list[float]) -> dict[str, Any]:
    """The figures a row records: the median over all calls (what the goals use), p90, min, the best round's median,
    and the run-to-run spread (interquartile range of the round medians / their median) a margin must exceed."""
    from mobilezoo.measure.stats import run_to_run

    return {
        "median_ms": s.median_ms,
        "p90_ms": s.p90_ms,
        "min_ms": s.min_ms,
        "best_round_ms": min(round_medians),
        "spread": s.spread,
        "run_to_run": run_to_run(round_medians),
    }


def add_fp32_peers(b: Block, model: torch.nn.Module, x: torch.Tensor, work: Path, tag: str) -> None:
    """Eager, the standard exports to ONNX Runtime / OpenVINO / ncnn and the registry's other engines."""
    wd = work / tag
    wd.mkdir(parents=True, exist_ok=True)
    b.add("pytorch-eager", "mobilezoo", "fp32", lambda: engine_torch(model, x))
    b.add("onnxruntime", "mobilezoo", "fp32", lambda: engine_ort(model, x, wd))
    b.add("openvino", "mobilezoo", "fp32", lambda: engine_openvino(model, x, "f32"))
    b.add("ncnn", "mobilezoo", "fp32", lambda: engine_ncnn(model, x, wd))
    for peer_name in registry_peers():  # ExecuTorch, LiteRT, MNN, ... through the engine layer
        b.add(peer_name, "mobilezoo", "fp32", lambda n=peer_name: engine_registry(n, model, x, wd))


def add_auto(b: Block, model: torch.nn.Module, x: torch.Tensor, precision: str, choices: dict) -> None:
    from mobilezoo import runtime

    t0 = time.perf_counter()
    try:
        rt = runtime.load(model, backend="auto", threads=1, precision=precision, remeasure=True)
    except Exception as e:
        b.rows.append(b.row(f"mobilezoo-auto-{precision}", "mobilezoo", precision, "error", note=str(e)[:300]))
        return
    choices.setdefault(b.model, {}).setdefault(b.block, {})[precision] = {
        **rt.auto.as_dict(),
        "select_s": round(time.perf_counter() - t0, 2),
    }
    key = "mobilezoo-auto" if precision == "fp32" else f"mobilezoo-auto-{precision}"
    b.add(key, "mobilezoo", precision, lambda: engine_runtime(rt, x), f"auto chose {rt.auto.backend}")


def reduced_artifacts(model: torch.nn.Module, calib: torch.Tensor, work: Path) -> dict[str, tuple[Path, dict]]:
    """mobilezoo's reduced-precision artifacts of ``model``: key -> (artifact, runtime.load options). The same
    objects are timed and, in the trained block, evaluated."""
    from mobilezoo.quant import quantize_ptq

    with quiet():
        q = quantize_ptq(model, calib, work / "int8")
        qn = quantize_ptq(model, calib, work / "int8-nncf", toolchain="nncf")
        own = {tc: quantize_ptq(model, calib, work / f"int8-{tc}", toolchain=tc).int8 for tc in int8_engines()}
    out = {
        "mobilezoo-bf16-openvino": (q.fp32, {"precision": "bf16", "backend": "openvino"}),
        "mobilezoo-int8-onnxruntime": (q.int8, {}),
        "mobilezoo-int8-openvino": (q.int8, {"precision": "int8", "backend": "openvino"}),
        "mobilezoo-int8-nncf-openvino": (qn.int8, {}),
    }
    return out | {f"mobilezoo-int8-{tc}": (path, {}) for tc, path in own.items()}


def add_reduced(b: Block, arts: dict, x: torch.Tensor, n_calib: int) -> dict[str, Any]:
    """Open each reduced-precision artifact (one thread) and add it to the block; returns key -> runtime."""
    from mobilezoo import runtime

    rts = {}
    for key, (path, opts) in arts.items():
        prec = opts.get("precision", "int8")
        try:
            rts[key] = rt = runtime.load(path, threads=1, **opts)
        except Exception as e:
            b.rows.append(b.row(key, "mobilezoo", prec, "error", note=f"{type(e).__name__}: {e}"[:300]))
            continue
        note = f"{key.removeprefix('mobilezoo-')} ({n_calib} calibration inputs), {path.name}"
        b.add(key, "mobilezoo", prec, lambda rt=rt: engine_runtime(rt, x), note, artifact=path)
    return rts


# ------------------------------------------------------------------------------------------------------- blocks


def imagenet_block(name: str, args, work: Path, choices: dict) -> Block:
    """PaddleClas's network at 224x224 with the weights PaddleClas built (or random ones with ``--skip-paddle``):
    the fp32 and bf16 goals. Its int8 rows are speed only (random weights, noise calibration): no goal uses them."""
    from mobilezoo import create_model
    from mobilezoo.models import get_entry

    entry = get_entry(name)
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
        b = Block(name, "imagenet-224", model(x))
    add_fp32_peers(b, model, x, work, "224")
    src, peer = MODELS.get(name, (None, None))
    if peer:
        b.engines["pytorch-eager-peer"] = (f"{src}:{peer}", "fp32", engine_torch(peer_network(src, peer), x)[0], None)
        b.extra["pytorch-eager-peer"] = {"note": "a similar, not identical network (random weights; not gated)"}
    add_auto(b, model, x, "fp32", choices)
    b.add("pytorch-eager-bf16", "mobilezoo", "bf16", lambda: engine_torch(model, x, torch.bfloat16))
    b.add("openvino-bf16", "mobilezoo", "bf16", lambda: engine_openvino(model, x, "bf16"))
    add_auto(b, model, x, "bf16", choices)
    calib = torch.randn(32, 3, 224, 224, generator=torch.Generator().manual_seed(7))  # speed only: noise
    add_reduced(b, reduced_artifacts(model, calib, work / "224"), x, len(calib))
    if not args.skip_paddle:
        add_paddle(b, entry.paddle_arch, work, x, args)
    return b


def trained_block(name: str, ckpt: Path, args, work: Path, choices: dict, accuracy: dict) -> Block:
    """The CIFAR-10-trained checkpoint at its 32x32 input: fp32 peers, auto, and mobilezoo's reduced-precision
    artifacts calibrated on 256 training images; each reduced artifact is gated and timed here, then the same object
    evaluated on ``--eval-images`` test images (the reduced-precision goal is judged on this block only)."""
    from mobilezoo import runtime
    from mobilezoo.quant import calibration_images

    model = runtime.load_checkpoint_model(name, ckpt).eval()
    fp32 = runtime.load(model, backend="torch", threads=1)
    x = calibration_images(CIFAR / "test", fp32.preprocess, n=1, seed=1)  # one real test image
    with torch.inference_mode():
        b = Block(name, "cifar10-32", model(x))
    add_fp32_peers(b, model, x, work, "32")
    add_auto(b, model, x, "fp32", choices)
    calib = calibration_images(CIFAR / "train", fp32.preprocess, n=256)
    rts = add_reduced(b, reduced_artifacts(model, calib, work / "32"), x, len(calib))
    b.gate_and_time(args)  # timed first: the evaluation's garbage and caches do not land in the rounds
    accuracy[name] = cifar_accuracy({"fp32": fp32, **rts}, args.eval_images)
    accuracy[name]["checkpoint"] = str(ckpt)
    accuracy[name]["artifacts"] = {k: b.extra[k] for k in rts if k in b.extra}
    return b


def add_paddle(b: Block, arch: str, work: Path, x: torch.Tensor, args) -> None:
    """Paddle Inference in its own process on the same core, before the in-process rounds (gated, then kept)."""
    from mobilezoo.measure.gate import check
    from mobilezoo.measure.harness import idlest_cores
    from mobilezoo.measure.stats import assess_noise, summarize

    for key, bf16 in (("paddle-inference", False), ("paddle-inference-bf16", True)):
        prec = "bf16" if bf16 else "fp32"
        try:
            doc, logits = paddle_inference(arch, work, x.numpy(), idlest_cores(1), args, bf16)
        except Exception as e:
            b.rows.append(b.row(key, "paddleclas", prec, "error", note=str(e)[:300]))
            continue
        g, note = check(b.ref, logits, prec), f"paddle {doc['paddle']}, oneDNN, own process"
        if not g.ok:
            b.rows.append(b.row(key, f"paddleclas:{arch}", prec, "wrong", gate_rel_diff=g.rel_diff, note=note))
            continue
        s = summarize([t for r in doc["rounds"] for t in r])
        meds = [summarize(r).median_ms for r in doc["rounds"]]
        noisy, why = assess_noise(meds, s)
        r = b.row(key, f"paddleclas:{arch}", prec, "ok", gate_rel_diff=g.rel_diff, noisy=noisy, noise_reason=why)
        b.rows.append(r | timing_fields(s, meds) | {"note": note})


def cifar_accuracy(rts: dict[str, Any], n_images: int) -> dict[str, Any]:
    """Top-1 (%) of each runtime on the same random sample of the CIFAR-10 test folder."""
    from mobilezoo.data import find_images

    paths, _ = find_images([CIFAR / "test"])
    rng = np.random.default_rng(0)
    paths = [paths[i] for i in sorted(rng.choice(len(paths), min(n_images, len(paths)), replace=False))]
    labels = [p.parent.name for p in paths]
    out: dict[str, Any] = {"images": len(paths)}
    for k, rt in rts.items():
        preds = rt.predict(paths, topk=1, batch_size=32)
        out[k] = 100.0 * sum(p.names[0] == y for p, y in zip(preds, labels)) / len(paths)
    return out


# ---------------------------------------------------------------------------------------------------------- main


def trained_checkpoint(ckpt_dir: Path, name: str) -> Path | None:
    """``DIR/<model>/best.ckpt`` (a study's or training run's folder), else ``DIR/<model>/`` if it is a
    ``save_pretrained`` folder (``mobilezoo convert DIR/<model>/best.ckpt --model <model> -o OUT/<model>``)."""
    folder = ckpt_dir / name
    if (folder / "best.ckpt").is_file():
        return folder / "best.ckpt"
    return folder if (folder / "config.json").is_file() else None


def run_model(name: str, args, rows: list, choices: dict, accuracy: dict) -> None:
    """Both blocks of one network, each gated then timed on one pinned core, appended to ``rows``."""
    from mobilezoo.measure.harness import idlest_cores, load_average, pinned

    print(f"== {name}", file=sys.stderr, flush=True)
    ckpt = trained_checkpoint(args.ckpt_dir, name) if args.ckpt_dir else None
    with tempfile.TemporaryDirectory(prefix="peers-") as tmpdir:
        load_before = load_average()
        with pinned(1, idlest_cores(1)):
            blocks = [imagenet_block(name, args, Path(tmpdir), choices)]
            blocks[0].gate_and_time(args)
            blocks[0].engines.clear()  # its sessions released before the next block is built and timed
            if ckpt is not None:
                blocks.append(trained_block(name, ckpt, args, Path(tmpdir), choices, accuracy))
        choices.setdefault(name, {})["load_average"] = [load_before, load_average()]
    for b in blocks:
        rows.extend(b.rows)
        for r in b.rows:
            ms = f"{r['median_ms']:8.3f} ms" if r.get("median_ms") else " " * 11
            print(f"  {b.block:12s} {r['engine']:30s} {r['precision']:5s} {ms}  {r['status']}", file=sys.stderr)


# ------------------------------------------------------------------------------------------------------- README

README_MARK = ("<!-- peers-figures: benchmarks/peers_cpu.py --readme -->", "<!-- /peers-figures -->")


def _short(model: str) -> str:
    return model.replace("_x1_0", "")


def _head(verdict: str) -> str:
    """A goal's verdict without its parenthesised detail: ``tie``, ``reached``, ``missed by 0.18x``."""
    return verdict.split(" (")[0]


def readme_figures(doc: dict) -> str:
    """The README's account of a peers run, every figure from ``doc`` (the JSON this script wrote)."""
    goals, acc = doc["goals"], doc["accuracy"] if isinstance(doc["accuracy"], dict) else {}
    fp32, red = [], []
    for g in goals:
        m = _short(g["model"])
        if g.get("fp32_speedup_vs_fastest_peer"):
            v = _head(g["goal_fp32_vs_fastest_peer"])
            fp32.append(f"{m} {g['fp32_speedup_vs_fastest_peer']:.2f}x {g['fastest_peer']} ({v})")
        else:
            fp32.append(f"{m} {g['goal_fp32_vs_fastest_peer']}")
        if g.get("best_reduced"):
            art, v = g["best_reduced"].removeprefix("mobilezoo-"), _head(g["goal_reduced_1_5x"])
            sp = g["reduced_speedup_vs_best_fp32_peer"]
            red.append(f"{m} {art} {sp:.2f}x ({v}, drop {g['top1_drop_points']:+.2f})")
        else:
            red.append(f"{m} {g['goal_reduced_1_5x']}")
    eager = [
        f"{_short(g['model'])} {g['speedup_vs_pytorch_eager']:.2f}x" for g in goals if g.get("speedup_vs_pytorch_eager")
    ]
    phone = []
    for model, a in acc.items():
        d = [
            f"{e} {a[f'mobilezoo-int8-{e}'] - a['fp32']:+.2f}"
            for e in ("executorch", "litert", "mnn")
            if f"mobilezoo-int8-{e}" in a
        ]
        phone.append(f"{_short(model)} " + ", ".join(d))
    done = [g["model"] for g in goals]
    left = [m for m in MODELS if m not in done]
    cover = "all six networks" if not left else f"{len(done)} of the six networks; not measured: {', '.join(left)}"
    if "; then " in doc["command"]:  # folded in by --merge
        later = doc["command"].split("; then ", 1)[1].split(" by: ", 1)[0]
        cover += f" ({later} in a second run, same kind of machine, after the rewrites)"
    top1 = [a["fp32"] for a in acc.values()]
    ck = f"fp32 top-1 of the CIFAR-10 checkpoints {min(top1):.2f}-{max(top1):.2f}%" if top1 else "no checkpoints"
    return (
        f"The committed run ({cover}; {machine_line(doc['machine'])}; {ck}): `auto` against the fastest fp32 peer "
        f"{'; '.join(fp32)}; against PyTorch eager {'; '.join(eager) or 'not judged'}; reduced precision against the "
        f"fastest fp32 peer of the trained block (goal >= 1.5x at <= 0.5 points): {'; '.join(red)}. The phone "
        f"engines' int8 top-1 change on the {next(iter(acc.values()))['images'] if acc else 0:,} test images: "
        f"{'; '.join(phone)}. These figures hold for this machine; the file says why each goal is missed."
    )


def rewrite_readme(doc: dict, readme: Path = REPO / "README.md") -> None:
    """Replace the text between the README's peers markers with :func:`readme_figures`."""
    text = readme.read_text()
    start, end = README_MARK
    if start not in text or end not in text:
        raise SystemExit(f"README.md has no {start} ... {end} markers")
    a, b = text.index(start) + len(start), text.index(end)
    readme.write_text(text[:a] + "\n" + readme_figures(doc) + "\n" + text[b:])


def merge(args) -> None:
    """Networks measured by another run (``--merge NAME``: a run stopped for time, completed later) folded into this
    one's results: each network's rows come from one run (its engines timed side by side there); the goals are judged
    again; both commands are recorded."""
    from mobilezoo import create_model
    from mobilezoo.profile import count_macs

    main_doc = json.loads((args.out / f"{args.name}.json").read_text())
    part = json.loads((args.out / f"{args.merge}.json").read_text())
    moved = list(dict.fromkeys(r["model"] for r in part["rows"]))
    rows = [r for r in main_doc["rows"] if r["model"] not in moved] + part["rows"]
    acc = {k: v for k, v in (main_doc["accuracy"] if isinstance(main_doc["accuracy"], dict) else {}).items()}
    acc |= part["accuracy"] if isinstance(part["accuracy"], dict) else {}
    choices = {**main_doc["auto_choices"], **part["auto_choices"]}
    info = main_doc["machine"]
    models = list(dict.fromkeys(r["model"] for r in rows))
    macs = {m: count_macs(create_model(m, weights="random")) for m in models}
    goals = evaluate(rows, acc, info.get("peaks_1_thread"), macs)
    command = f"{main_doc['command']}; then {', '.join(moved)} by: {part['command']} ({part['machine_named']})"
    write(args, info, rows, choices, goals, acc, main_doc["wall_s"] + part["wall_s"], command, part["load_average_end"])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    ap.add_argument("--name", default="peers_cpu")
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--min-round-s", type=float, default=0.2)
    ap.add_argument("--skip-paddle", action="store_true")
    ap.add_argument("--ckpt-dir", type=Path, help="CIFAR-10 checkpoints: DIR/<model>/best.ckpt or DIR/<model>/")
    ap.add_argument("--eval-images", type=int, default=2000)
    ap.add_argument(
        "--rewrite", action="store_true", help="judge the goals again and rewrite the .md/.json from the existing JSON"
    )
    ap.add_argument("--readme", action="store_true", help="rewrite the README's peers figures from the existing JSON")
    ap.add_argument("--merge", default=None, help="fold the networks of run NAME (same --out) into --name's results")
    args = ap.parse_args()
    if args.readme:
        rewrite_readme(json.loads((args.out / f"{args.name}.json").read_text()))
        return 0
    if args.merge:
        merge(args)
        return 0
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
        # what has finished is written after every network (goals without the roofline until the end)
        write(args, info, rows, choices, evaluate(rows, accuracy), accuracy, time.perf_counter() - t_start)

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
    """The latency the goals are judged on: the median over all calls (every round of every engine)."""
    return r["median_ms"]


def _candidates(rows, model, block, engines, precision=None) -> tuple[dict | None, list[dict]]:
    """The fastest correct, clean row among ``engines`` in one block, and the faster rows left out as noisy."""
    c = [
        r
        for r in rows
        if r["model"] == model
        and r.get("block", "imagenet-224") == block
        and r["engine"] in engines
        and r["status"] == "ok"
        and r.get("median_ms")
        and (precision is None or r["precision"] == precision)
    ]
    c.sort(key=_t)
    clean = [r for r in c if not too_noisy(r)]
    best = clean[0] if clean else None
    return best, [r for r in c if best is None or _t(r) < _t(best)]


def _noisy_lines(rows: list[dict]) -> list[str]:
    return [f"{r['engine']} {_t(r):.3f} ms (noisy: {_why(r)})" for r in rows]


GOAL_SPREAD = 0.10
"""A row whose run-to-run spread (IQR of its round medians / their median) exceeds this is left out of the goals.
The harness's ``noisy`` flag (one round 10% off, or a wide tail) stays in the tables but does not exclude: one
disturbed round of nine moves the median of all calls little, and the tie rule accounts for the spread."""


def too_noisy(r: dict) -> bool:
    return (r.get("run_to_run") or 0.0) > GOAL_SPREAD


def _why(r: dict) -> str:
    return f"run-to-run spread {r.get('run_to_run', 0):.0%} > {GOAL_SPREAD:.0%}"


def _spread(a: dict, b: dict) -> float:
    """The run-to-run spread of a ratio of two medians: both rows' spreads combined."""
    return math.hypot(a.get("run_to_run") or 0.0, b.get("run_to_run") or 0.0)


def verdict(ratio: float, goal: float, spread: float) -> str:
    """:func:`mobilezoo.measure.stats.verdict`: reached / missed only beyond the run-to-run spread, a tie within."""
    from mobilezoo.measure.stats import verdict as judged

    return judged(ratio, goal, spread)


REDUCED = (
    "mobilezoo-bf16-openvino",
    "mobilezoo-int8-onnxruntime",
    "mobilezoo-int8-openvino",
    "mobilezoo-int8-nncf-openvino",
    *(f"mobilezoo-int8-{tc}" for tc in int8_engines()),
)
"""The reduced-precision artifacts of the trained block: each is timed there and evaluated (same object)."""


def _unless_faster_noisy(v: str, faster_noisy: list[dict], mine: dict, goal: float) -> str:
    """A goal met or tied against the fastest *clean* peer says nothing while faster peers were left out as noisy
    (the comparison would be against a slower engine): not judged then, unless the goal is reached against each of
    those faster rows too with that row's own (wide) spread counted, a margin no noise of that size can undo. A miss
    stands (faster peers only widen it)."""
    if not faster_noisy or v.startswith("missed"):
        return v
    if v.startswith("reached") and all(
        verdict(_t(r) / _t(mine), goal, _spread(r, mine)).startswith("reached") for r in faster_noisy
    ):
        worst = max(_spread(r, mine) for r in faster_noisy)
        return (
            f"{v}; also against the {len(faster_noisy)} faster noisy fp32 peers, beyond their spread (<= {worst:.0%})"
        )
    return f"not judged: {len(faster_noisy)} faster fp32 peers too noisy (against the fastest clean one: {v})"


def fp32_goals(rows: list[dict], model: str, peaks: dict | None, macs: dict | None) -> dict[str, Any]:
    """auto vs the fastest fp32 peer (as fast: issue 5; 1.15x: issue 15) and vs eager (3x), ImageNet block."""
    auto, _ = _candidates(rows, model, "imagenet-224", ["mobilezoo-auto"])
    peer, left = _candidates(rows, model, "imagenet-224", FP32_PEERS, "fp32")
    eager, _ = _candidates(rows, model, "imagenet-224", ["pytorch-eager"])
    g: dict[str, Any] = {"model": model, "fp32_excluded_noisy": _noisy_lines(left)}
    if auto is None:
        g["goal_fp32_vs_fastest_peer"] = "not judged: auto's row is missing, wrong or noisy"
        return g
    if peer:
        ratio, sp = _t(peer) / _t(auto), _spread(peer, auto)
        g.update(auto_ms=_t(auto), fastest_peer=peer["engine"], fastest_peer_ms=_t(peer), ratio_spread=sp)
        g["fp32_speedup_vs_fastest_peer"] = ratio
        g["goal_fp32_vs_fastest_peer"] = _unless_faster_noisy(verdict(ratio, 1.0, sp), left, auto, 1.0)
        g["goal_fp32_1_15x"] = _unless_faster_noisy(verdict(ratio, 1.15, sp), left, auto, 1.15)
    if eager:
        s = _t(eager) / _t(auto)
        g["speedup_vs_pytorch_eager"] = s
        g["goal_3x_vs_eager"] = verdict(s, 3.0, _spread(eager, auto))
        g["eager_over_3_ms"] = _t(eager) / 3
    else:
        g["goal_3x_vs_eager"] = "not judged: the eager row is missing, wrong or noisy"
    if peaks and macs and macs.get(model):
        gflops = 2 * macs[model] / (_t(auto) * 1e-3) / 1e9
        g["auto_gflops"], g["auto_of_fp32_peak"] = gflops, gflops / peaks["peak_gflops"]
        g["compute_floor_ms"] = 2 * macs[model] / (peaks["peak_gflops"] * 1e9) * 1e3
    return g


def reduced_goal(rows: list[dict], model: str, acc: dict | None) -> dict[str, Any]:
    """The fastest reduced-precision artifact of the trained block whose measured CIFAR-10 top-1 drop is <= 0.5,
    against the fastest fp32 peer of the same block: >= 1.5x. The timed artifact is the evaluated one."""
    if not acc:
        return {"goal_reduced_1_5x": "not judged: no CIFAR-10-trained checkpoint (--ckpt-dir)"}
    peer, peers_left = _candidates(rows, model, "cifar10-32", FP32_PEERS, "fp32")
    mine = [r for r in rows if r["model"] == model and r.get("block") == "cifar10-32" and r["engine"] in REDUCED]
    wrong = {"reduced_wrong": [f"{r['engine']}: {r['status']}, not timed" for r in mine if r["status"] != "ok"]}
    skipped: list[str] = []
    for r in sorted((r for r in mine if r["status"] == "ok"), key=_rowkey):
        if too_noisy(r):
            skipped.append(f"{r['engine']} {_t(r):.3f} ms (noisy: {_why(r)})")
            continue
        drop = acc["fp32"] - acc[r["engine"]]
        if drop > 0.5:
            skipped.append(f"{r['engine']} {_t(r):.3f} ms (top-1 drop {drop:.2f} > 0.5)")
            continue
        if peer is None:
            return {"goal_reduced_1_5x": "not judged: no clean fp32 peer in the trained block"}
        s, sp = _t(peer) / _t(r), _spread(peer, r)
        return wrong | {
            "best_reduced": r["engine"],
            "best_reduced_ms": _t(r),
            "best_reduced_artifact": f"{r.get('artifact')} sha256:{r.get('sha256')}",
            "reduced_vs_peer": peer["engine"],
            "reduced_peer_ms": _t(peer),
            "reduced_speedup_vs_best_fp32_peer": s,
            "top1_drop_points": drop,
            "goal_reduced_1_5x": _reduced_verdict(
                _unless_faster_noisy(verdict(s, 1.5, sp), peers_left, r, 1.5), drop, skipped
            ),
            "fp32_peers_excluded_noisy": _noisy_lines(peers_left),
            "reduced_skipped_faster": skipped,
        }
    noisy = [x for x in skipped if "(noisy" in x]
    verdict_ = (
        f"not judged: {len(noisy)} reduced-precision rows are noisy"
        if noisy
        else "missed: no correct artifact within 0.5"
    )
    return wrong | {"goal_reduced_1_5x": verdict_, "reduced_skipped": skipped}


def _reduced_verdict(v: str, drop: float, skipped: list[str]) -> str:
    """A miss by the best clean artifact while faster ones were too noisy to judge is no verdict at all."""
    if not v.startswith("reached") and any("(noisy" in x for x in skipped):
        return f"not judged: faster artifacts too noisy (the best clean one: {v}, top-1 drop {drop:+.2f})"
    return f"{v} (top-1 drop {drop:+.2f} points, measured on this artifact)"


def _rowkey(r: dict) -> float:
    return r.get("median_ms") or float("inf")


def evaluate(rows: list[dict], accuracy: dict, peaks: dict | None = None, macs: dict | None = None) -> list[dict]:
    """Each goal per model: reached, missed or a tie (margin within the run-to-run spread); with the machine's
    measured fp32 peak (one core) and the network's MACs, how close auto runs to the compute roofline."""
    return [
        fp32_goals(rows, m, peaks, macs) | reduced_goal(rows, m, accuracy.get(m))
        for m in dict.fromkeys(r["model"] for r in rows)
    ]


def why_lines(goals: list[dict], rows: list[dict], info: dict) -> list[str]:
    """The reasons behind each missed goal, computed from this run's numbers."""
    out = ["\n## Why goals are missed where they are\n"]
    for g in goals:
        v = str(g.get("goal_fp32_vs_fastest_peer", ""))
        if v.startswith(("missed", "tie")):
            out.append(
                f"- {g['model']}, auto vs {g.get('fastest_peer')}: {v}. auto runs one of the peers' engines (compiled "
                "for the static shape), so its edge over the fastest is a few percent at most until the family-aware "
                "rewrites (issue 15) exist."
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
        f32, _ = _candidates(rows, m, "imagenet-224", ["openvino"])
        b16, _ = _candidates(rows, m, "imagenet-224", ["openvino-bf16"])
        if f32 and b16:
            bf.append(_t(b16) / _t(f32))
    if bf:
        amx = "amx_bf16" in info.get("cpu_features", [])
        out.append(
            f"- bf16: OpenVINO bf16 takes {min(bf):.2f}-{max(bf):.2f}x the time of its fp32 here; this CPU "
            + ("has AMX." if amx else "has no AMX, so bf16 runs on AVX-512 (BF16 or emulated) and gains little.")
        )
    wrong = sorted({f"{r['model']} {r['engine']} ({r['block']})" for r in rows if r["status"] == "wrong"})
    if wrong:
        out.append(
            f"- Wrong answers (failed the numerical gate, not timed): {', '.join(wrong)}. At 224x224 the int8 "
            "artifacts are calibrated on noise with random weights: speed only, no goal uses them."
        )
    for g in goals:
        if str(g.get("goal_reduced_1_5x", "")).startswith(("missed", "tie")):
            skipped = g.get("reduced_skipped_faster") or g.get("reduced_skipped") or []
            out.append(
                f"- {g['model']}, reduced precision: {g['goal_reduced_1_5x']}"
                + (
                    f"; best {g['best_reduced']} {g['reduced_speedup_vs_best_fp32_peer']:.2f}x"
                    if g.get("best_reduced")
                    else ""
                )
                + (f"; faster but not counted: {'; '.join(skipped)}." if skipped else ".")
            )
    return out


def _fmt(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.3f}" if abs(v) < 100 else f"{v:.1f}"
    return str(v)


def machine_line(info: dict) -> str:
    feats = info["cpu_features"]
    cpu = f"{info['cpu_model']} ({info.get('microarchitecture') or '?'}, family/model {info['cpu_family_model']})"
    isa = ", ".join(
        f"{k} {'yes' if any(f.startswith(k.lower()) for f in feats) else 'no'}"
        for k in ("AVX2", "AVX512", "AVX512_VNNI", "AMX")
    )
    return f"{cpu}, {info['logical_cpus']} logical CPUs, {isa}{', virtual machine' if info['hypervisor'] else ''}"


def latency_table(rows: list[dict], block: str) -> list[str]:
    b = [r for r in rows if r.get("block", "imagenet-224") == block]
    models = list(dict.fromkeys(r["model"] for r in b))
    md = ["| engine | " + " | ".join(models) + " |", "|---|" + "---|" * len(models)]
    for e in dict.fromkeys(r["engine"] for r in b):
        cells = []
        for m in models:
            r = next((r for r in b if r["model"] == m and r["engine"] == e), None)
            if r is None:
                cells.append("")
            elif r["status"] != "ok":
                gate = f" (gate {r['gate_rel_diff']:.3g})" if r.get("gate_rel_diff") is not None else ""
                cells.append(
                    f"{r['status']}{gate}, not timed" + (f": {r['note'][:60]}" if r["status"] == "error" else "")
                )
            else:
                cells.append(
                    f"**{r['median_ms']:.3f}** ±{r.get('run_to_run', 0):.0%} ({r['p90_ms']:.3f})"
                    f"{' ~noisy' if r['noisy'] else ''}"
                )
        md.append(f"| {e} | " + " | ".join(cells) + " |")
    return md


def _gflops_cell(g: dict) -> str:
    if g.get("auto_gflops") is None:
        return "not measured"
    return f"{g['auto_gflops']:.0f} ({g['auto_of_fp32_peak']:.0%})"


def goals_table(goals: list[dict]) -> list[str]:
    md = [
        "| model | auto (ms) | fastest fp32 peer (ms) | auto as fast as it | auto >= 1.15x it | >= 3x PyTorch eager "
        "| auto GFLOP/s (of peak) | reduced precision >= 1.5x the fastest fp32 peer (trained block) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for g in goals:
        red = g.get("goal_reduced_1_5x", "")
        if g.get("best_reduced"):
            red = (
                f"{g['best_reduced']} {g['best_reduced_ms']:.3f} ms vs {g['reduced_vs_peer']} "
                f"{g['reduced_peer_ms']:.3f} ms = {g['reduced_speedup_vs_best_fp32_peer']:.2f}x: {red}"
            )
        fast = g.get("fp32_speedup_vs_fastest_peer")
        eager = g.get("speedup_vs_pytorch_eager")
        cells = [
            g["model"],
            _fmt(g.get("auto_ms")),
            f"{g.get('fastest_peer', '')} {_fmt(g.get('fastest_peer_ms'))}",
            g.get("goal_fp32_vs_fastest_peer", "") + (f" ({fast:.3f}x)" if fast else ""),
            g.get("goal_fp32_1_15x", ""),
            g.get("goal_3x_vs_eager", "") + (f" ({eager:.3f}x)" if eager else ""),
            _gflops_cell(g),
            red,
        ]
        md.append("| " + " | ".join(cells) + " |")
    return md


def accuracy_table(accuracy: dict) -> list[str]:
    skip = ("images", "checkpoint", "artifacts")
    keys = list(dict.fromkeys(k for a in accuracy.values() for k in a if k not in skip))
    md = [
        "\n## Reduced-precision accuracy of the timed artifacts (trained block)\n",
        "Top-1 in % on a random sample of the CIFAR-10 test images (the same for every engine), each network's own "
        "checkpoint at its 32x32 input; the reduced-precision artifacts are calibrated on 256 training images and are "
        "the very objects timed in the trained block (file and sha256 in the JSON/CSV). Drop = fp32 - engine.\n",
        "| model | images | " + " | ".join(keys) + " |",
        "|---|---|" + "---|" * len(keys),
    ]
    for m, a in accuracy.items():
        cells = [f"{a[k]:.2f}" + ("" if k == "fp32" else f" ({a[k] - a['fp32']:+.2f})") for k in keys if k in a]
        md.append(f"| {m} | {a['images']} | " + " | ".join(cells) + " |")
    return md


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
    machine = machine_line(info)
    doc = {
        "machine": info,
        "machine_named": machine,
        "command": command,
        "statistic": "median over all calls (ms); run_to_run = IQR of the round medians / their median",
        "wall_s": round(wall_s, 1),
        "load_average_end": load_end,
        "goals": goals,
        "auto_choices": choices,
        "accuracy": accuracy or "not verified: no CIFAR-10-trained checkpoints were given (--ckpt-dir)",
        "gpu": "not measured on a GPU (no GPU in this session): benchmarks/peers_gpu.py is written, not yet run",
        "rows": rows,
    }
    (out / f"{args.name}.json").write_text(json.dumps(doc, indent=1, default=str) + "\n")
    pk = info.get("peaks_1_thread", {})
    md = [
        f"# Peers on CPU: batch 1, one thread (`{command}`)\n",
        f"Machine: {machine}. Versions: " + ", ".join(f"{k} {v}" for k, v in info["versions"].items() if v) + ".",
        f"Load average at start {info['load_average']}, at end {[round(v, 2) for v in load_end]}.\n",
        "Latency in ms: **median over all calls** ±run-to-run spread (interquartile range of the round medians / "
        "their median) (p90). Engines run interleaved in rounds on one pinned core. Every engine's logits were "
        "checked against PyTorch fp32 eager on the same input and weights first: a wrong answer is recorded as "
        "wrong and never timed. A goal is reached or missed only when its margin exceeds the two rows' combined "
        "run-to-run spread, a tie otherwise; rows whose run-to-run spread exceeds 10% are left out of the goals "
        "(`~noisy`, the harness's stricter flag, marks rows with one disturbed round or a wide tail).\n",
        "## ImageNet configuration: PaddleClas's network, its weights, 224x224\n",
        "The int8 rows here are speed only (random weights, calibrated on noise): no goal uses them.\n",
        *latency_table(rows, "imagenet-224"),
    ]
    if any(r.get("block") == "cifar10-32" for r in rows):
        md += ["\n## Trained block: the CIFAR-10 checkpoint at its 32x32 input (`--ckpt-dir`)\n"]
        md += latency_table(rows, "cifar10-32")
    md += [
        "\n## Goals\n",
        (
            f"Roofline of one core, measured: fp32 matmul {pk.get('peak_gflops')} GFLOP/s, copy {pk.get('cache_gbps')} "
            f"/ {pk.get('llc_gbps')} / {pk.get('dram_gbps')} GB/s (L2 / LLC / DRAM). `auto GFLOP/s` = 2 x MACs / "
            "auto's median."
            if pk.get("peak_gflops")
            else "Roofline: not measured (the run stopped before its closing peak measurement), so no GFLOP/s or "
            "fraction of peak below."
        )
        + " The fp32 goals use the ImageNet block; the reduced-precision goal the trained block, on the artifact "
        "whose accuracy was measured.\n",
        *goals_table(goals),
        "\nauto's choices: "
        + "; ".join(
            f"{m}: "
            + ", ".join(
                f"{blk} {p} {c['backend']}" for blk, d in cs.items() if blk != "load_average" for p, c in d.items()
            )
            for m, cs in choices.items()
        )
        + ".",
    ]
    if accuracy:
        md += accuracy_table(accuracy)
    md.extend(why_lines(goals, rows, info))
    md.append("\nGPU goals: not measured on a GPU (no GPU in this session); `benchmarks/peers_gpu.py` is not yet run.")
    (out / f"{args.name}.md").write_text("\n".join(md) + "\n")
    print(f"wrote {out / args.name}.csv/.json/.md ({wall_s:.0f} s)", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
