"""The comparison report on a tiny real run (2 small models, small input): files, dimensions, plots, HTML."""

import base64
import copy
import csv
import re

import pytest

from mobilezoo.bench.grid import BenchSpec, run_bench
from mobilezoo.bench.report import NOT_MEASURED, build_report, load_training, model_rows, pareto_front
from mobilezoo.bench.results import write_json
from mobilezoo.cli import main
from mobilezoo.measure import harness

MODELS = ["MobileNetV3_small_x0_35", "ShuffleNetV2_x0_25"]
SIZE = 64


@pytest.fixture(scope="module")
def tiny_run():
    spec = BenchSpec(
        models=MODELS, backends=["torch", "onnxruntime"], input_size=SIZE, policy=harness.QUICK, weights="random"
    )
    return run_bench(spec, progress=False)


@pytest.fixture()
def training_csv(tmp_path):
    p = tmp_path / "cifar10_training.csv"
    with p.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["model", "top1", "top5", "epochs", "train_time_s", "device", "recipe"])
        w.writerow(["MobileNetV3_small_x0_35", "0.801", "0.99", "30", "1200", "cpu", "cifar10-small"])
        w.writerow(["MobileNetV3_small_x0_35", "0.75", "0.98", "10", "400", "cpu", "short"])  # worse: ignored
    return p


def test_report_reads_the_committed_study_when_present(training_csv, tmp_path, monkeypatch):
    from mobilezoo.bench.cli import DEFAULT_TRAINING_CSVS, default_training_csv

    monkeypatch.chdir(tmp_path)
    assert default_training_csv() is None
    study, older = DEFAULT_TRAINING_CSVS
    older.parent.mkdir(parents=True)
    older.write_text(training_csv.read_text())
    assert default_training_csv() == older
    study.parent.mkdir(parents=True)
    study.write_text(training_csv.read_text())
    assert default_training_csv() == study


def test_pareto_front():
    pts = [(1.0, 50.0), (2.0, 60.0), (3.0, 55.0), (4.0, 70.0), (0.5, 40.0), (2.0, 58.0)]
    assert pareto_front(pts) == [4, 0, 1, 3]
    assert pareto_front([]) == []


def test_load_training_normalises_and_keeps_best(training_csv, tmp_path):
    t = load_training(training_csv)
    assert t["MobileNetV3_small_x0_35"]["top1"] == pytest.approx(80.1)
    assert t["MobileNetV3_small_x0_35"]["train_time_s"] == 1200
    assert load_training(tmp_path / "missing.csv") == {} and load_training(None) == {}


def test_model_rows_have_the_seven_dimensions(tiny_run, training_csv):
    rows = {r["model"]: r for r in model_rows(tiny_run, load_training(training_csv))}
    assert set(rows) == set(MODELS)
    mb = rows["MobileNetV3_small_x0_35"]
    assert mb["ImageNet top-1 % (pub)"] == pytest.approx(53.0)  # PaddleClas's table
    assert mb["CIFAR-10 top-1 %"] == pytest.approx(80.1) and mb["train time"] == "20.0 min (30 ep, cpu)"
    sh = rows["ShuffleNetV2_x0_25"]
    assert sh["CIFAR-10 top-1 %"] == NOT_MEASURED and sh["train time"] == NOT_MEASURED
    for r in rows.values():
        assert r["MACs (M)"] > 0 and r["params (M)"] > 0 and r["peak act (MB)"] > 0 and r["file fp32 (MB)"] > 0
        assert r["FLOPs=2xMACs (G)"] == pytest.approx(2 * r["MACs (M)"] / 1000, rel=1e-2)
        for col in ("torch fp32 (ms)", "onnxruntime fp32 (ms)"):  # a number, with ~ when flagged noisy
            assert float(str(r[col]).rstrip("~")) > 0
        assert r["SD855 1t (ms)"] is not None and r["V100 TRT fp32 b1 (ms)"] is not None  # published, beside


def test_report_files_and_self_contained_html(tiny_run, training_csv, tmp_path):
    paths = build_report(tiny_run, tmp_path / "rep", training_csv=training_csv)
    out = tmp_path / "rep"
    for name in ("report.md", "report.html", "results.csv", "results.json", "models.csv"):
        assert (out / name).is_file(), name
    pngs = sorted(p.name for p in (out / "plots").glob("*.png"))
    assert {"top1_vs_macs.png", "top1_vs_latency.png", "latency_vs_macs.png", "latency_vs_memory_access.png"} <= set(
        pngs
    )
    for p in pngs:
        assert (out / "plots" / p).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    md = paths["report_md"].read_text()
    assert "## The seven dimensions" in md and "FLOPs = 2 x MACs" in md and NOT_MEASURED in md
    assert "SD855 1t (ms)" in md and "(plots/top1_vs_latency.png)" in md
    html = paths["report_html"].read_text()
    srcs = re.findall(r"src='([^']*)'", html)
    assert srcs and all(s.startswith("data:image/png;base64,") for s in srcs)  # nothing to fetch
    base64.b64decode(srcs[0].split(",", 1)[1], validate=True)
    assert "<link" not in html and "<script" not in html
    assert "Pareto" in html


def test_wrong_answers_show_as_wrong_never_as_numbers(tiny_run, tmp_path):
    run = copy.deepcopy(tiny_run)
    r = next(r for r in run.results if r["backend"] == "onnxruntime" and r["model"] == MODELS[0])
    r.update(status="wrong", reason="max|diff|/max|ref| = 1 > 0.002 (fp32)", median_ms=None)
    rows = {x["model"]: x for x in model_rows(run)}
    assert rows[MODELS[0]]["onnxruntime fp32 (ms)"] == "wrong"
    md = build_report(run, tmp_path / "rep")["report_md"].read_text()
    assert "wrong" in md and "max|diff|" in md.replace("\\|", "|")


def test_report_cli_from_results(tiny_run, tmp_path, capsys):
    src = write_json(tiny_run, tmp_path / "bench.json")
    rc = main(["report", "--from-results", str(src), "-o", str(tmp_path / "r"), "--per-layer", "none"])
    assert rc == 0
    assert "report:" in capsys.readouterr().out
    assert (tmp_path / "r" / "report.html").is_file()


def test_report_cli_measures_a_tiny_grid_with_per_layer(tmp_path, training_csv):
    rc = main(
        [
            "report",
            "--models",
            MODELS[1],
            "--backends",
            "torch",
            "--input-size",
            str(SIZE),
            "--no-progress",
            "--per-layer",
            MODELS[1],
            "--training-results",
            str(training_csv),
            "-o",
            str(tmp_path / "r"),
        ]
    )
    assert rc == 0
    md = (tmp_path / "r" / "report.md").read_text()
    assert f"## Per layer: {MODELS[1]}" in md and f"per_layer_{MODELS[1]}.png" in md
