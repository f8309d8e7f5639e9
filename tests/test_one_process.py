"""Every engine, the benchmark grid, quantization and prediction again, all in ONE process: the regression test for
the native crash seen when several engines' thread pools lived in one process (the suite used to run one pytest
process per file to keep it away)."""

from __future__ import annotations

import torch

import mobilezoo as mz
from mobilezoo import backends, runtime
from mobilezoo.bench.grid import BenchSpec, prepare_model, run_bench
from mobilezoo.measure import harness
from mobilezoo.quant import quantize_ptq

from .conftest import DATA

PHOTOS = sorted((DATA / "images").glob("*.jpg"))
MODEL = "MobileNetV3_small_x0_35"


def _tops(rt) -> list[list[int]]:
    return [p.indices for p in rt.predict(PHOTOS, topk=5)]


def test_every_engine_bench_quantize_and_predict_again_in_one_process(tmp_path, monkeypatch):
    monkeypatch.setenv("MOBILEZOO_HOME", str(tmp_path / "home"))
    model = prepare_model(MODEL, input_size=224)  # random weights, BatchNorm calibrated: logits depend on the image
    engines = backends.available()
    assert set(engines) >= {"torch", "onnxruntime", "torchscript", "openvino", "ncnn"}  # the suite needs them all
    first = {e: _tops(runtime.load(model, backend=e, threads=1)) for e in engines}
    assert all(t == first["torch"] for t in first.values())

    spec = BenchSpec(
        models=[MODEL],
        backends=list(backends.bench_defaults(full=True)),
        precisions=["fp32", "int8"],
        batch_sizes=[1],
        threads=[1, 2],
        input_size=128,
        policy=harness.QUICK,
    )
    run = run_bench(spec, progress=False)
    assert not [r for r in run.results if r["status"] == "error"], [r["reason"] for r in run.results]

    pre = mz.data.eval_preprocess(model)
    calib = torch.stack([pre(mz.data.load_image(p)) for p in PHOTOS])
    int8 = {t: quantize_ptq(model, calib, tmp_path / t, toolchain=t).int8 for t in ("onnxruntime", "nncf")}
    for path in int8.values():
        assert len(runtime.load(path, threads=1).predict(PHOTOS)) == len(PHOTOS)

    again = {e: _tops(runtime.load(model, backend=e, threads=2)) for e in engines}
    assert again == first  # every engine still loads and agrees after all of the above
    auto = runtime.load(model, backend="auto", threads=1, remeasure=True)
    assert _tops(auto) == first["torch"] and auto.backend in engines
