"""The benchmark harness's logic: statistics, noise detection, the numerical gate, the grid's rows and files.

Timings here are synthetic (an injected clock) or merely present: no test asserts how fast anything is.
"""

import json
import math
import os
from itertools import cycle
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from mobilezoo.bench.backends import Session, Unsupported, unsupported_reason
from mobilezoo.bench.grid import RESULT_COLUMNS, SCHEMA, BenchSpec, prepare_model, run_bench, run_config
from mobilezoo.bench.results import read_csv, read_run, write_csv, write_json
from mobilezoo.cli import main
from mobilezoo.measure import gate, harness, stats

from .conftest import DATA

TINY = "MobileNetV3_small_x0_35"
SMALL_INPUT = 64
# The grid run below gates int8 too. prepare_model sets BatchNorm statistics from noise at half the input size: at
# 64 px that is 32 px, where the last stages are 1x1 maps, and the random network's logits reach ~3e7 on unit noise
# (int8 gate: max|diff|/max|ref| = 0.507 > 0.35). At 128 px they are O(100) and int8 passes with room (~0.08).
RUN_INPUT = 128


class FakeTime:
    """A virtual clock: each call of ``fn`` takes the next of ``durations`` seconds."""

    def __init__(self, durations):
        self.t = 0.0
        self.durations = iter(durations)
        self.calls = 0

    def clock(self) -> float:
        return self.t

    def fn(self) -> None:
        self.calls += 1
        self.t += next(self.durations)


# ------------------------------------------------------------------------------------------------ statistics


def test_summarize_matches_numpy():
    xs = [0.004, 0.001, 0.003, 0.010, 0.002, 0.005, 0.006, 0.007, 0.008, 0.009]
    s = stats.summarize(xs)
    ms = np.array(xs) * 1e3
    assert s.n == 10
    assert s.median_ms == pytest.approx(np.median(ms))
    assert s.p90_ms == pytest.approx(np.percentile(ms, 90))
    assert s.min_ms == pytest.approx(1.0) and s.max_ms == pytest.approx(10.0)
    assert s.mean_ms == pytest.approx(ms.mean())
    assert s.std_ms == pytest.approx(ms.std())
    assert s.spread == pytest.approx((np.percentile(ms, 90) - 1.0) / np.median(ms))
    assert s.throughput(8) == pytest.approx(8 * 1000 / np.median(ms))


def test_percentile_edges_and_errors():
    assert stats.percentile([3.0], 90) == 3.0
    assert stats.percentile([1.0, 2.0], 0) == 1.0 and stats.percentile([1.0, 2.0], 100) == 2.0
    with pytest.raises(ValueError):
        stats.percentile([], 50)
    with pytest.raises(ValueError):
        stats.summarize([])
    with pytest.raises(ValueError):
        stats.summarize([0.001, -1.0])


def test_noise_rule():
    clean = stats.summarize([0.010] * 20)
    assert stats.assess_noise([10.0, 10.2, 10.1], clean) == (False, "")
    noisy, why = stats.assess_noise([10.0, 13.0, 10.1], clean, round_tol=0.1)
    assert noisy and "round medians differ by 30%" in why
    wide = stats.summarize([0.010] * 8 + [0.030] * 2)
    noisy, why = stats.assess_noise([10.0, 10.0, 10.0], wide, spread_tol=0.5)
    assert noisy and "spread" in why


# ----------------------------------------------------------------------------------------------------- harness


def test_measure_warms_up_then_times_rounds():
    ft = FakeTime(cycle([0.002]))
    pol = harness.TimingPolicy(warmup_iters=5, warmup_s=0.0, min_iters=10, min_round_s=0.0, rounds=3, max_rounds=6)
    m = harness.measure(ft.fn, pol, clock=ft.clock, cpu_clock=ft.clock)
    assert m.warmup_iters == 5
    assert m.rounds == 3 and m.stats.n == 30 and ft.calls == 35
    assert m.stats.median_ms == pytest.approx(2.0) and not m.noisy and m.noise_reason == ""
    assert m.cpu_util == pytest.approx(1.0)


def test_measure_respects_min_round_time():
    ft = FakeTime(cycle([2**-6]))  # exact in binary: 8 calls make exactly 0.125 s
    pol = harness.TimingPolicy(warmup_iters=1, warmup_s=0.0, min_iters=2, min_round_s=0.125, rounds=2, max_rounds=2)
    m = harness.measure(ft.fn, pol, clock=ft.clock, cpu_clock=ft.clock)
    assert m.stats.n == 16  # 8 calls per round


def test_noisy_measurement_is_repeated_then_flagged():
    # every round alternates between 1 ms and 2 ms per call: rounds never agree
    durations = [0.001] + [d for r in range(20) for d in [0.001 * (1 + r % 2)] * 4]
    ft = FakeTime(durations)
    pol = harness.TimingPolicy(warmup_iters=1, warmup_s=0.0, min_iters=4, min_round_s=0.0, rounds=2, max_rounds=5)
    m = harness.measure(ft.fn, pol, clock=ft.clock, cpu_clock=ft.clock)
    assert m.rounds == 5  # repeated up to the limit
    assert m.noisy and "after 5 rounds" in m.noise_reason
    assert m.round_medians_ms == pytest.approx([1.0, 2.0, 1.0, 2.0, 1.0])


def test_noise_that_settles_is_not_flagged():
    # a slow first round (another process finishing), then steady: the repeat rounds clear it
    durations = [0.001] + [0.003] * 4 + [0.001] * 40
    ft = FakeTime(durations)
    pol = harness.TimingPolicy(warmup_iters=1, warmup_s=0.0, min_iters=4, min_round_s=0.0, rounds=2, max_rounds=6)
    m = harness.measure(ft.fn, pol, clock=ft.clock, cpu_clock=ft.clock)
    assert not m.noisy and m.rounds == 3
    assert m.stats.median_ms == pytest.approx(1.0)  # judged on the last `rounds` rounds


def test_interleaved_measurement_rotates_and_summarizes():
    order = []
    t = {"now": 0.0}

    def make(name, dt):
        def fn():
            order.append(name)
            t["now"] += dt

        return fn

    res = harness.measure_interleaved(
        {"a": make("a", 0.001), "b": make("b", 0.003)},
        rounds=2,
        min_iters=2,
        min_round_s=0.0,
        warmup_iters=0,
        clock=lambda: t["now"],
    )
    assert order == ["a", "a", "b", "b", "b", "b", "a", "a"]  # round 2 starts with b
    assert res["a"].median_ms == pytest.approx(1.0) and res["b"].median_ms == pytest.approx(3.0)


def test_timed_calls_run_with_the_garbage_collector_off_and_it_is_restored():
    import gc

    seen = []
    harness.measure_interleaved({"a": lambda: seen.append(gc.isenabled())}, rounds=2, min_iters=2, min_round_s=0.0)
    harness.measure(lambda: seen.append(gc.isenabled()), harness.QUICK)
    assert seen and not any(seen)
    assert gc.isenabled()


@pytest.mark.skipif(not hasattr(os, "sched_getaffinity"), reason="no CPU affinity on this OS")
def test_pinned_limits_and_restores():
    before_threads, before_cpus = torch.get_num_threads(), os.sched_getaffinity(0)
    with harness.pinned(1) as cores:
        assert torch.get_num_threads() == 1
        assert len(cores) == 1 and os.sched_getaffinity(0) == set(cores)
    assert torch.get_num_threads() == before_threads and os.sched_getaffinity(0) == before_cpus
    assert len(harness.idlest_cores(1, sample_s=0.01)) == 1


# -------------------------------------------------------------------------------------------------------- gate


def test_gate_accepts_rounding_and_rejects_a_wrong_answer():
    torch.manual_seed(0)
    ref = torch.randn(4, 1000)
    assert gate.check(ref, ref + 1e-5, "fp32").ok
    assert gate.check(ref, ref.bfloat16().float(), "bf16").ok
    wrong = gate.check(ref, ref[:, torch.randperm(1000)], "fp32")  # e.g. channels in the wrong order
    assert not wrong.ok and wrong.rel_diff > 0.5 and "fp32" in wrong.message
    assert not gate.check(ref, ref * 1.05, "fp32").ok  # 5% off is wrong at fp32 ...
    assert gate.check(ref, ref * 1.05, "fp16").ok  # ... and within a half-precision tolerance
    assert not gate.check(ref, torch.full_like(ref, float("nan")), "fp32").ok
    bad_shape = gate.check(ref, torch.zeros(4, 10), "fp32")
    assert not bad_shape.ok and "shape" in bad_shape.message
    assert gate.check(ref.numpy(), ref.numpy().reshape(4, 1, 1000), "fp32").ok  # arrays, same numbers
    assert gate.tolerance("fp32", "cuda") >= 1e-2  # TF32 convolutions
    with pytest.raises(ValueError):
        gate.tolerance("int4")


def _fake_runner(fn):
    return Session("onnxruntime", "fp32", "cpu", run_native=fn, prepare=lambda x: x, to_torch=lambda y: y)


@pytest.fixture(scope="module")
def tiny_model():
    return prepare_model(TINY, "random", input_size=SMALL_INPUT)


def _config(tiny_model, monkeypatch, fn):
    import mobilezoo.bench.grid as grid

    monkeypatch.setattr(grid, "build_runner", lambda *a, **k: _fake_runner(fn))
    x = torch.randn(2, 3, SMALL_INPUT, SMALL_INPUT)
    with torch.inference_mode():
        ref = tiny_model(x)
    spec = BenchSpec(models=[TINY], backends=["onnxruntime"], input_size=SMALL_INPUT, policy=harness.QUICK)
    row = grid._row(TINY, "MobileNetV3", "onnxruntime", "fp32", "cpu", 1, 2, False)
    return run_config(tiny_model, "onnxruntime", "fp32", 1, 2, False, x=x, ref=ref, artifacts=None, spec=spec, row=row)


def test_grid_reports_a_fast_wrong_backend_as_wrong(tiny_model, monkeypatch):
    row = _config(tiny_model, monkeypatch, lambda x: torch.zeros(x.shape[0], 1000))  # instant, and wrong
    assert row["status"] == "wrong"
    assert row["median_ms"] is None and row["throughput_ips"] is None  # never reported as fast
    assert row["gate_rel_diff"] >= 0.99 and "fp32" in row["reason"]


def test_grid_times_a_correct_backend(tiny_model, monkeypatch):
    row = _config(tiny_model, monkeypatch, lambda x: tiny_model(x))
    assert row["status"] == "ok" and row["gate_rel_diff"] < 1e-4
    assert row["median_ms"] > 0 and row["iters"] >= 3 and row["throughput_ips"] > 0
    assert row["cores"] != "" or not hasattr(os, "sched_getaffinity")


def test_grid_reports_errors_and_unsupported(tiny_model, monkeypatch):
    def boom(x):
        raise RuntimeError("kernel missing")

    row = _config(tiny_model, monkeypatch, boom)
    assert row["status"] == "error" and "kernel missing" in row["reason"]
    assert "int8" in unsupported_reason("torch", "int8", "cpu")
    assert "CUDA" in (unsupported_reason("torch-cudagraph", "fp32", "cpu") or "")
    with pytest.raises(ValueError):
        unsupported_reason("torch", "fp8", "cpu")
    assert issubclass(Unsupported, Exception)


def test_spec_validation_and_configs():
    with pytest.raises(ValueError):
        BenchSpec(models=[TINY], backends=["tensorrt"])
    with pytest.raises(ValueError):
        BenchSpec(models=[TINY], precisions=["fp8"])
    with pytest.raises(ValueError):
        BenchSpec(models=[TINY], threads=[0])
    s = BenchSpec(
        models=[TINY],
        backends=["torch", "onnxruntime"],
        threads=[1, 2],
        batch_sizes=[1, 8],
        channels_last=[False, True],
    )
    cfgs = s.configs()
    assert len(cfgs) == 2 * 2 * 2 + 1 * 2 * 2  # channels_last only for torch
    assert all(not cl for b, _, _, _, cl in cfgs if b == "onnxruntime")


# ---------------------------------------------------------------------------------------------- files and CLI


@pytest.fixture(scope="module")
def tiny_run():
    spec = BenchSpec(
        models=[TINY],
        backends=["torch", "onnxruntime"],
        precisions=["fp32", "int8"],
        batch_sizes=[1, 2],
        input_size=RUN_INPUT,
        policy=harness.QUICK,
        weights="random",
    )
    return run_bench(spec, progress=False)


def test_run_records_machine_settings_and_rows(tiny_run):
    assert len(tiny_run.results) == 2 * 2 * 2
    by = {(r["backend"], r["precision"], r["batch_size"]): r for r in tiny_run.results}
    assert by[("torch", "int8", 1)]["status"] == "skipped"
    # every row the grid can run is gated and timed, int8 (onnxruntime's QDQ artifact) included
    for key in [(b, p, n) for b in ("torch", "onnxruntime") for p in ("fp32", "int8") for n in (1, 2)]:
        if key[:2] == ("torch", "int8"):
            assert by[key]["status"] == "skipped" and "onnxruntime" in by[key]["reason"], key
        else:
            assert by[key]["status"] == "ok", (key, by[key]["reason"])
    for n in (1, 2):
        r = by[("onnxruntime", "int8", n)]
        assert r["precision"] == "int8" and r["gate_tol"] == gate.TOLERANCE["int8"]
        assert r["gate_rel_diff"] is not None and r["median_ms"] > 0 and r["iters"] >= harness.QUICK.min_iters
    ok = [r for r in tiny_run.results if r["status"] == "ok"]
    assert len(ok) == 6
    for r in ok:
        assert set(RESULT_COLUMNS) == set(r)
        assert r["median_ms"] > 0 and r["min_ms"] <= r["median_ms"] <= r["p90_ms"]
        assert r["gate_rel_diff"] <= r["gate_tol"]
    m = tiny_run.machine
    assert m["cpu_model"] and m["versions"]["torch"] == torch.__version__.split("+")[0]
    assert tiny_run.spec["input_size"] == RUN_INPUT and tiny_run.spec["policy"]["rounds"] == harness.QUICK.rounds
    info = tiny_run.models[TINY]
    assert info["macs"] > 0 and info["peak_activation_bytes"] > 0 and info["onnx-fp32_bytes"] > 0
    assert "1" in tiny_run.peaks and tiny_run.peaks["1"]["peak_gflops"] > 0


def test_csv_and_json_schema_roundtrip(tiny_run, tmp_path):
    csv_path = write_csv(tiny_run.results, tmp_path / "r.csv")
    header = csv_path.read_text().splitlines()[0].split(",")
    assert header == list(RESULT_COLUMNS)
    rows = read_csv(csv_path)
    assert len(rows) == len(tiny_run.results)
    for a, b in zip(rows, tiny_run.results):
        assert a["status"] == b["status"] and a["threads"] == b["threads"] and isinstance(a["channels_last"], bool)
        if b["median_ms"] is not None:
            assert a["median_ms"] == pytest.approx(b["median_ms"], rel=1e-5)
    js = write_json(tiny_run, tmp_path / "r.json")
    doc = json.loads(js.read_text())
    assert doc["schema"] == SCHEMA and set(doc) >= {"machine", "spec", "models", "results", "peaks"}
    assert all(list(r) == list(RESULT_COLUMNS) for r in doc["results"])
    back = read_run(js)
    assert back.results == doc["results"] and back.models.keys() == tiny_run.models.keys()
    assert read_run(csv_path).results[0]["model"] == TINY
    bad = tmp_path / "other.json"
    bad.write_text(json.dumps({"schema": "something-else"}))
    with pytest.raises(ValueError, match="not a mobilezoo benchmark"):
        read_run(bad)


def test_json_has_no_nan(tiny_run, tmp_path):
    text = write_json(tiny_run, tmp_path / "r.json").read_text()
    assert "NaN" not in text and "Infinity" not in text


def test_bench_cli_writes_results(tmp_path, capsys):
    rc = main(
        [
            "bench",
            "--random-weights",
            "--models",
            TINY,
            "--backends",
            "torch",
            "--input-size",
            str(SMALL_INPUT),
            "--policy",
            "quick",
            "-o",
            str(tmp_path),
            "--format",
            "csv",
            "--no-progress",
        ]
    )
    assert rc == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].startswith("model,backend,precision")
    assert (tmp_path / "results.csv").is_file() and (tmp_path / "results.json").is_file()


def test_bench_cli_modes_map_to_torch_backends():
    import argparse

    from mobilezoo.bench.cli import _backends

    ns = argparse.Namespace(backends="torch,onnxruntime", modes="eager,jit")
    assert _backends(ns, []) == ["torch", "torch-jit", "onnxruntime"]
    ns = argparse.Namespace(backends=None, modes="cudagraph,compile")
    assert _backends(ns, ["torch"]) == ["torch-cudagraph", "torch-compile"]


# ----------------------------------------------------------------------------------------------------- per layer


def test_per_layer_view_lines_up_with_the_profiler():
    from mobilezoo.bench.perlayer import per_layer
    from mobilezoo.measure.machine import Peaks
    from mobilezoo.profile import profile_model

    model = prepare_model("ShuffleNetV2_x0_25", "random", input_size=SMALL_INPUT)
    peaks = Peaks("cpu", 1, peak_gflops=100.0, dram_gbps=10.0, cache_gbps=50.0, cache_bytes=1 << 20)
    res = per_layer(model, input_size=SMALL_INPUT, iters=3, warmup=1, peaks=peaks)
    prof = profile_model(model, input_size=SMALL_INPUT)
    assert sum(r["MACs"] for r in res.rows) == prof.macs
    assert sum(r["bytes"] for r in res.rows) == prof.mem_access_bytes
    assert all(r["time_ms"] >= 0 and r["roofline_ms"] >= 0 for r in res.rows)
    assert any(r["kind"].startswith("conv dw") for r in res.rows)
    assert any("ShuffleUnit" in r["kind"] for r in res.rows)  # channel shuffle / concat charged to the block
    # roofline arithmetic for one layer
    r = next(r for r in res.rows if r["MACs"] > 0)
    expect = max(2 * r["MACs"] / 100e9, r["bytes"] / peaks.bandwidth(r["bytes"])) * 1e3
    assert r["roofline_ms"] == pytest.approx(expect, rel=1e-3, abs=1e-4)
    kinds = res.by_kind()
    assert sum(k["MACs_%"] for k in kinds) == pytest.approx(100, abs=0.5)
    assert sum(k["time_%"] for k in kinds) == pytest.approx(100, abs=0.5)
    s = res.summary()
    assert s["latency_ms (no hooks)"] > 0 and math.isfinite(s["roofline / latency"])


def test_engine_nodes_are_charged_to_the_module_their_name_scopes():
    from mobilezoo.bench.perlayer import module_of

    known = {"stem.conv", "blocks.0", "blocks.0.conv_pw.conv", "blocks.0.0.branch1_dw.conv", "head.fc"}
    assert module_of("/blocks/blocks.0/conv_pw/conv/Conv", known) == "blocks.0.conv_pw.conv"  # ONNX scopes
    assert module_of("/blocks/blocks.0/blocks.0.0/branch1_dw/conv/Conv", known) == "blocks.0.0.branch1_dw.conv"
    assert module_of("/blocks/blocks.0/Add", known) == "blocks.0"  # a block's own op: the block
    assert module_of("/stem/conv/Conv/WithoutBiases", known) == "stem.conv"  # OpenVINO's name for the same node
    assert module_of("__module.head.fc/aten::linear/MatMul", known) == "head.fc"  # OpenVINO from torch
    assert module_of("ReorderInput_token_7", known) == "(model)"  # a node the engine added


@pytest.mark.parametrize("engine", ["onnxruntime", "openvino"])
def test_per_layer_on_an_engine_times_the_artifact_with_its_own_profiler(engine, capsys):
    from mobilezoo.bench.perlayer import per_layer
    from mobilezoo.measure.machine import Peaks
    from mobilezoo.models.rewrite import deploy_form
    from mobilezoo.profile import profile_model

    if engine == "openvino":
        pytest.importorskip("openvino")
    model = prepare_model("MobileNetV3_small_x0_35", "random", input_size=SMALL_INPUT)
    peaks = Peaks("cpu", 1, peak_gflops=100.0, dram_gbps=10.0, cache_gbps=50.0, cache_bytes=1 << 20)
    res = per_layer(model, input_size=SMALL_INPUT, iters=3, peaks=peaks, backend=engine)
    assert res.engine.startswith(engine) and res.nodes and all(len(n.times_ms) == 3 for n in res.nodes)
    # the deployed graph's costs (BatchNorm folded): the same MACs as the profiler's
    assert sum(r["MACs"] for r in res.rows) == profile_model(deploy_form(model), input_size=SMALL_INPUT).macs
    convs = [r for r in res.rows if r["kind"].startswith("conv") and r["MACs"] > 0]
    assert convs and all(r["time_ms"] > 0 and r["engine_ops"] != "-" for r in convs), [
        r["layer"] for r in convs if r["time_ms"] <= 0
    ]
    ops = res.by_engine_op()
    assert sum(o["time_%"] for o in ops) == pytest.approx(100, abs=0.5)
    assert sum(o["nodes"] for o in ops) == len(res.nodes)
    s = res.summary()
    assert s["latency_ms (no profiler)"] > 0 and s["sum of nodes_ms (profiled)"] > 0
    args = ["bench", "--per-layer", "MobileNetV3_small_x0_35", "--random-weights", "--input-size", "64"]
    assert main([*args, "--backends", "ncnn", "--iters", "2"]) != 0
    err = capsys.readouterr().err
    assert "ncnn has no per-node profiler here (onnxruntime and openvino have)" in err and "Traceback" not in err


@pytest.mark.parametrize("engine", ["onnxruntime", "openvino"])
def test_per_layer_int8_profiles_the_int8_artifact_the_engine_runs(engine, capsys, tmp_path):
    from mobilezoo.bench.perlayer import per_layer
    from mobilezoo.measure.machine import Peaks

    if engine == "openvino":
        pytest.importorskip("nncf")
    model = prepare_model("MobileNetV3_small_x0_35", "random", input_size=SMALL_INPUT)
    peaks = Peaks("cpu", 1, peak_gflops=100.0, dram_gbps=10.0, cache_gbps=50.0, cache_bytes=1 << 20)
    res = per_layer(model, input_size=SMALL_INPUT, iters=2, peaks=peaks, backend=engine, precision="int8")
    assert res.precision == "int8" and ".int8." in res.engine
    convs = [n for n in res.nodes if "Conv" in n.op]
    if engine == "onnxruntime":  # the QDQ graph as ONNX Runtime fused it: integer convolutions
        assert {n.op for n in convs} >= {"QLinearConv"} and "Conv" not in {n.op for n in convs}
    else:  # OpenVINO names each kernel by its input precision: every convolution runs on int8 inputs
        assert convs and all(n.kernel.lower().endswith("i8") for n in convs), {n.kernel for n in convs}
    rows = [r for r in res.rows if r["kind"].startswith("conv") and r["MACs"] > 0]
    assert rows and all(r["time_ms"] > 0 and r["engine_ops"] != "-" for r in rows)
    args = ["bench", "--per-layer", "MobileNetV3_small_x0_35", "--random-weights", "--input-size", "32"]
    calib = str(DATA / "cifar10-mini" / "train")
    assert main([*args, "--precision", "int8"]) != 0  # eager PyTorch has no int8 here
    err = capsys.readouterr().err
    assert "--per-layer in eager PyTorch times fp32, fp16 or bf16, not int8; for int8 name an engine" in err
    assert main([*args, "--backends", engine, "--calib", calib]) != 0
    err = capsys.readouterr().err
    assert "--calib calibrates --precision int8 on an engine" in err and "Traceback" not in err
    assert (
        main(
            [
                *args,
                "--backends",
                engine,
                "--precision",
                "int8",
                "--calib",
                calib,
                "--num-calib",
                "16",
                "--iters",
                "2",
                "-o",
                str(tmp_path),
                "--format",
                "json",
            ]
        )
        == 0
    )
    doc = json.loads((tmp_path / "per_layer_MobileNetV3_small_x0_35.json").read_text())
    assert ".int8." in doc["engine"] and doc["by_engine_op"]
    assert "16 images" in capsys.readouterr().err


def test_peaks_bandwidth_levels():
    from mobilezoo.measure.machine import Peaks

    p = Peaks("cpu", 1, 100.0, dram_gbps=10.0, cache_gbps=100.0, cache_bytes=1000, llc_gbps=50.0, llc_bytes=10_000)
    assert p.bandwidth(500) == 100e9 and p.bandwidth(5000) == 50e9 and p.bandwidth(50_000) == 10e9
    assert p.roofline_s(2e9, 10) == pytest.approx(0.02)  # compute bound
    assert p.roofline_s(0, 50_000) == pytest.approx(5e-6)  # memory bound


# ------------------------------------------------------------------------------------------- the peers' verdicts


def _peers_module():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "peers_cpu.py"
    spec = importlib.util.spec_from_file_location("peers_cpu", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _row(model, engine, ms, precision="fp32", status="ok", block="imagenet-224", rr=0.01, noisy=False):
    return {
        "model": model,
        "block": block,
        "engine": engine,
        "precision": precision,
        "status": status,
        "median_ms": None if status != "ok" else ms,
        "run_to_run": rr,
        "noisy": noisy,
    }


def test_peers_goals_use_medians_and_call_a_margin_within_the_spread_a_tie():
    peers = _peers_module()
    rows = [
        _row("A", "pytorch-eager", 15.0),
        _row("A", "onnxruntime", 5.5),
        _row("A", "openvino", 5.0),
        _row("A", "ncnn", 3.0, rr=0.3, noisy=True),  # too noisy (30% run to run): left out, and named
        _row("A", "paddle-inference", 4.0, status="wrong"),  # a wrong answer is never the baseline
        _row("A", "mobilezoo-auto", 4.0),
        _row("B", "pytorch-eager", 10.0),
        _row("B", "ncnn", 4.0),
        _row("B", "mobilezoo-auto", 4.4),
        _row("C", "onnxruntime", 5.0, rr=0.03),
        _row("C", "mobilezoo-auto", 4.9, rr=0.03),  # +2% with a 4% combined spread: a tie, not "reached"
    ]
    goals = {g["model"]: g for g in peers.evaluate(rows, {}, {"peak_gflops": 100.0}, {"A": 300e6, "B": 100e6})}
    a, b, c = goals["A"], goals["B"], goals["C"]
    # beaten, the fastest clean peer; but ncnn, faster, was too noisy to compare with: no claim (seen in a real run:
    # GhostNet "3.09x" against Paddle Inference while five faster peers were noisy)
    faster_noisy = "not judged: 1 faster fp32 peers too noisy (against the fastest clean one: reached)"
    assert a["fastest_peer"] == "openvino" and a["goal_fp32_vs_fastest_peer"] == faster_noisy
    assert a["fp32_speedup_vs_fastest_peer"] == pytest.approx(5.0 / 4.0) and a["goal_fp32_1_15x"] == faster_noisy
    assert "ncnn 3.000 ms (noisy" in " ".join(a["fp32_excluded_noisy"])
    assert a["goal_3x_vs_eager"] == "reached" and a["speedup_vs_pytorch_eager"] == pytest.approx(15 / 4.0)
    assert a["auto_gflops"] == pytest.approx(2 * 300e6 / 4.0e-3 / 1e9)
    assert "not judged: no CIFAR-10-trained checkpoint" in a["goal_reduced_1_5x"]
    assert b["goal_fp32_vs_fastest_peer"].startswith("missed by 0.09x")
    assert b["goal_3x_vs_eager"] == "missed by 0.73x"
    assert c["goal_fp32_vs_fastest_peer"].startswith("tie (margin +2.0%")
    why = "\n".join(peers.why_lines(list(goals.values()), rows, {"cpu_features": []}))
    assert "B, auto vs ncnn: missed" in why and "B, 3x PyTorch eager" in why and "C, auto vs onnxruntime: tie" in why


def test_peers_reduced_goal_is_judged_on_the_evaluated_artifact_of_the_trained_block():
    peers = _peers_module()
    t = "cifar10-32"
    rows = [
        _row("A", "mobilezoo-int8-openvino", 0.1, "int8"),  # the ImageNet block's int8: speed only, never the goal
        _row("A", "onnxruntime", 1.0, block=t),
        _row("A", "openvino", 0.9, block=t),
        _row("A", "mobilezoo-int8-onnxruntime", 0.2, "int8", status="wrong", block=t),
        _row("A", "mobilezoo-int8-nncf-openvino", 0.4, "int8", block=t),
        _row("A", "mobilezoo-int8-openvino", 0.5, "int8", block=t),
    ]
    acc = {"A": {"fp32": 90.0, "mobilezoo-int8-nncf-openvino": 88.0, "mobilezoo-int8-openvino": 89.8}}
    g = next(g for g in peers.evaluate(rows, acc) if g["model"] == "A")
    assert g["best_reduced"] == "mobilezoo-int8-openvino" and g["reduced_vs_peer"] == "openvino"
    assert g["reduced_speedup_vs_best_fp32_peer"] == pytest.approx(1.8) and g["top1_drop_points"] == pytest.approx(0.2)
    assert g["goal_reduced_1_5x"].startswith("reached (top-1 drop +0.20 points, measured on this artifact)")
    assert g["reduced_skipped_faster"] == ["mobilezoo-int8-nncf-openvino 0.400 ms (top-1 drop 2.00 > 0.5)"]
    assert g["reduced_wrong"] == ["mobilezoo-int8-onnxruntime: wrong, not timed"]


def test_peers_a_goal_stands_against_a_faster_noisy_peer_only_beyond_that_peers_spread():
    peers = _peers_module()
    t = "cifar10-32"
    acc = {m: {"fp32": 86.46, "mobilezoo-int8-executorch": 86.51} for m in "AB"}
    rows = []
    for m, noisy_ms in (("A", 1.188), ("B", 0.70)):  # A: the committed MobileNetV1 run's figures (peers_cpu_v1_amd)
        rows += [
            _row(m, "litert", noisy_ms, block=t, rr=0.20, noisy=True),  # faster, but 20% run to run: no baseline
            _row(m, "executorch", 1.249, block=t, rr=0.02),
            _row(m, "mobilezoo-int8-executorch", 0.420, "int8", block=t, rr=0.01),
        ]
    goals = {g["model"]: g for g in peers.evaluate(rows, acc)}
    a, b = goals["A"], goals["B"]
    assert a["reduced_vs_peer"] == "executorch" and a["reduced_speedup_vs_best_fp32_peer"] == pytest.approx(
        1.249 / 0.42
    )
    # 1.188 / 0.420 = 2.83x: 89% beyond 1.5x against a 20% spread: no noise of that size undoes it
    assert a["goal_reduced_1_5x"].startswith("reached; also against the 1 faster noisy fp32 peers, beyond their spread")
    # 0.70 / 0.420 = 1.67x: 11% beyond 1.5x, within that row's 20%: the faster noisy peer leaves it unjudged
    assert b["goal_reduced_1_5x"].startswith("not judged: 1 faster fp32 peers too noisy (against the fastest clean")


def test_peers_never_time_a_wrong_answer():
    peers = _peers_module()
    ref = torch.ones(1, 10)
    b = peers.Block("A", "imagenet-224", ref)
    calls = {"right": 0, "wrong": 0}

    def engine(name, out):
        def run():
            calls[name] += 1

        return lambda: (run, lambda: out)

    b.add("right", "mobilezoo", "fp32", engine("right", ref.clone()))
    b.add("wrong", "mobilezoo", "fp32", engine("wrong", -ref))
    b.add("broken", "mobilezoo", "fp32", lambda: 1 / 0)
    b.gate_and_time(SimpleNamespace(rounds=2, min_round_s=0.0))
    by = {r["engine"]: r for r in b.rows}
    assert by["wrong"]["status"] == "wrong" and "median_ms" not in by["wrong"] and calls["wrong"] == 0
    assert by["right"]["status"] == "ok" and by["right"]["median_ms"] > 0 and calls["right"] >= 10
    assert by["broken"]["status"] == "error" and "ZeroDivisionError" in by["broken"]["note"]


def test_a_very_slow_configuration_stops_at_the_time_budget():
    ft = FakeTime(cycle([1.0]))  # one second per call
    pol = harness.TimingPolicy(
        warmup_iters=1, warmup_s=0.0, min_iters=3, min_round_s=0.0, rounds=3, max_rounds=6, max_time_s=5.0
    )
    m = harness.measure(ft.fn, pol, clock=ft.clock, cpu_clock=ft.clock)
    assert m.rounds == 2 and m.noisy and "time budget" in m.noise_reason
    assert m.stats.median_ms == pytest.approx(1000.0)


def test_a_speed_goal_counts_only_beyond_the_run_to_run_spread():
    from mobilezoo.measure.stats import run_to_run, verdict

    assert run_to_run([1.0, 1.0, 1.0, 1.0, 1.0]) == 0.0
    assert run_to_run([0.9, 1.0, 1.0, 1.1, 1.2]) == pytest.approx((1.1 - 1.0) / 1.0)  # IQR / median
    assert verdict(1.60, 1.5, 0.05) == "reached"  # +6.7% beyond a 5% spread
    assert verdict(1.54, 1.5, 0.05) == "tie (margin +2.7% within the run-to-run spread 5.0%)"
    assert verdict(1.30, 1.5, 0.05) == "missed by 0.20x"
