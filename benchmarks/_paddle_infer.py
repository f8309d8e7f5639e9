"""Paddle Inference timing of one PaddleClas network, run inside the PaddlePaddle environment (never imports mobilezoo).

    .cache/paddle-env/bin/python benchmarks/_paddle_infer.py NAME WORKDIR --input x.npy [--threads 1] [--bf16]

``WORKDIR/model.pdparams`` holds the weights (written by ``tests/paddle_ref/make_reference.py``, the same file
mobilezoo's model of the comparison loads, so every engine runs the same numbers). The network is PaddleClas's own
backbone; it is saved with ``paddle.jit.save`` (static input 1x3x224x224) and run by ``paddle.inference`` on the CPU
with oneDNN (MKLDNN) and IR optimisation on, ``threads`` math-library threads. Writes ``WORKDIR/paddle_out.npy``
(logits for the input) and prints one JSON line: per-call times in seconds for each round, after warm-up.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "paddle_ref"))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("name", help="PaddleClas constructor, e.g. MobileNetV2")
    ap.add_argument("workdir", type=Path)
    ap.add_argument("--input", type=Path, required=True)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--bf16", action="store_true", help="oneDNN bf16 (AMX/AVX512-BF16)")
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--min-round-s", type=float, default=0.3)
    ap.add_argument("--min-iters", type=int, default=5)
    args = ap.parse_args()

    import paddle
    import paddle.inference as pi
    from make_reference import _backbone_module

    paddle.set_device("cpu")
    model = getattr(_backbone_module(args.name), args.name)(pretrained=False)
    model.set_state_dict(paddle.load(str(args.workdir / "model.pdparams")))
    model.eval()
    x = np.load(args.input).astype("float32")
    prefix = args.workdir / "inference" / "model"
    spec = [paddle.static.InputSpec(shape=list(x.shape), dtype="float32", name="x")]
    paddle.jit.save(paddle.jit.to_static(model, input_spec=spec, full_graph=True), str(prefix))
    model_file = next(p for p in (prefix.with_suffix(".json"), prefix.with_suffix(".pdmodel")) if p.is_file())

    config = pi.Config(str(model_file), str(prefix.with_suffix(".pdiparams")))
    config.disable_gpu()
    config.enable_onednn() if hasattr(config, "enable_onednn") else config.enable_mkldnn()
    if args.bf16:
        config.enable_onednn_bfloat16() if hasattr(
            config, "enable_onednn_bfloat16"
        ) else config.enable_mkldnn_bfloat16()
    config.set_cpu_math_library_num_threads(args.threads)
    config.switch_ir_optim(True)
    config.disable_glog_info()
    predictor = pi.create_predictor(config)
    inp = predictor.get_input_handle(predictor.get_input_names()[0])
    out = predictor.get_output_handle(predictor.get_output_names()[0])
    inp.reshape(list(x.shape))
    inp.copy_from_cpu(x)

    def call() -> None:
        predictor.run()

    call()
    logits = out.copy_to_cpu()
    np.save(args.workdir / "paddle_out.npy", logits)
    for _ in range(args.warmup):
        call()
    rounds = []
    for _ in range(args.rounds):
        samples, spent = [], 0.0
        while len(samples) < args.min_iters or spent < args.min_round_s:
            t0 = time.perf_counter()
            call()
            dt = time.perf_counter() - t0
            samples.append(dt)
            spent += dt
        rounds.append(samples)
    print(
        json.dumps(
            {
                "paddle": paddle.__version__,
                "model_file": model_file.name,
                "onednn": True,
                "bf16": args.bf16,
                "threads": args.threads,
                "rounds": rounds,
            }
        )
    )


if __name__ == "__main__":
    main()
