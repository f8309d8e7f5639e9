"""``mobilezoo study`` end to end on real CIFAR images (a subset of cifar10-mini), two tiny models, a tiny budget:
every output file, the conclusions table, and a resume after SIGINT that does not retrain the finished model."""

from __future__ import annotations

import csv
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mobilezoo.cli import main
from mobilezoo.study.conclusions import CLAIMS, NOT_MEASURED

ROOT = Path(__file__).resolve().parents[1]
MINI = ROOT.parent / "shared" / "data" / "cifar10-mini"
MODELS = ["ShuffleNetV2_x0_25", "MobileNetV3_small_x0_35"]
STUDY = ["--budget-min", "0.05", "--engines", "torch,onnxruntime", "--probe-steps", "3",
         "--override", "batch_size=32", "--no-progress"]  # fmt: skip


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """20 train + 8 test real CIFAR images per class (copied from cifar10-mini)."""
    root = tmp_path_factory.mktemp("cifar")
    for split, n in (("train", 20), ("test", 8)):
        for cls in sorted(p.name for p in (MINI / split).iterdir()):
            (root / split / cls).mkdir(parents=True)
            for f in sorted((MINI / split / cls).iterdir())[:n]:
                shutil.copy(f, root / split / cls / f.name)
    return root


def _env(tmp: Path) -> dict[str, str]:
    src = str(ROOT / "src")
    path = os.pathsep.join(p for p in (src, os.environ.get("PYTHONPATH")) if p)
    return {**os.environ, "PYTHONPATH": path, "MOBILEZOO_HOME": str(tmp / "home")}


def _fingerprint(path: Path) -> tuple[int, str]:
    return path.stat().st_mtime_ns, hashlib.sha256(path.read_bytes()).hexdigest()


def _study(*args: str, env: dict[str, str]) -> subprocess.Popen:
    cmd = [sys.executable, "-u", "-m", "mobilezoo", "study", *args]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


@pytest.fixture(scope="module")
def study(data, tmp_path_factory) -> dict:
    """The study interrupted by SIGINT once the first model is done, then resumed to the end."""
    tmp = tmp_path_factory.mktemp("study")
    out, env = tmp / "out", _env(tmp)
    first = out / "runs" / MODELS[0] / "last.ckpt"
    p = _study("--data", str(data), "-o", str(out), "--models", ",".join(MODELS), *STUDY, env=env)
    seen, before = [], None
    for line in p.stdout:  # the stage lines, as a user sees them; SIGINT once the first model is recorded done
        seen.append(line)
        if before is None and line.startswith(f"{MODELS[0]}: done"):
            before = _fingerprint(first)
            p.send_signal(signal.SIGINT)
    err = p.stderr.read()
    rc1 = p.wait(timeout=600)
    state1 = json.loads((out / "study.json").read_text())
    r = _study("--resume", str(out), "--no-progress", env=env)
    resumed_out, resumed_err = r.communicate(timeout=600)
    return {"out": out, "rc1": rc1, "err1": err, "first_run": "".join(seen), "state1": state1, "before": before,
            "after": _fingerprint(first), "rc2": r.returncode, "out2": resumed_out, "err2": resumed_err}  # fmt: skip


def test_interrupted_study_stops_cleanly_with_the_first_model_recorded(study):
    assert study["before"] is not None, study["first_run"] + study["err1"][-3000:]
    assert study["rc1"] == 130, study["err1"][-3000:]
    assert f"continue with `mobilezoo study --resume {study['out']}`" in study["err1"]  # how to continue
    models = study["state1"]["models"]
    assert models[MODELS[0]]["status"] == "done"
    assert models[MODELS[1]]["status"] != "done"


def test_resume_finishes_without_retraining_the_finished_model(study):
    assert study["rc2"] == 0, study["err2"][-3000:]
    assert study["after"] == study["before"]  # its checkpoint neither rewritten nor touched
    assert f"{MODELS[0]}:" not in study["out2"].replace(f"{MODELS[0]}: done", "")  # no stage of it ran again
    assert f"[2/2] {MODELS[1]}:" in study["out2"]
    state = json.loads((study["out"] / "study.json").read_text())
    assert [state["models"][m]["status"] for m in MODELS] == ["done", "done"]
    plan = state["models"][MODELS[1]]["plan"]
    assert plan["epochs"] >= 1 and plan["probe"]["steps"] == 3 and plan["probe"]["steps_per_s"] > 0


def test_every_output_file_and_the_measured_dimensions(study):
    out = study["out"]
    files = ["report.md", "report.html", "results.csv", "results.json", "latency.csv", "conclusions.csv"]
    files += ["training.csv", "plots/top1_vs_latency_32.png", "plots/top1_vs_latency_224.png", "plots/top1_vs_macs.png"]
    for f in files:
        assert (out / f).is_file() and (out / f).stat().st_size > 0, f
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert [r["model"] for r in rows] == MODELS
    for r in rows:
        assert 0 <= float(r["CIFAR-10 top-1 %"]) <= 100 and float(r["top-5 %"]) >= float(r["CIFAR-10 top-1 %"])
        assert float(r["FLOPs=2xMACs (M)"]) == pytest.approx(2 * float(r["MACs (M)"]), rel=1e-3)
        assert float(r["ONNX int8 (MB)"]) < float(r["ONNX fp32 (MB)"])
        assert float(r["fastest fp32 @32 (ms)"]) < float(r["fastest fp32 @224 (ms)"])
        assert r["device"].startswith("cpu") and float(r["train img/s"]) > 0
    lat = list(csv.DictReader((out / "latency.csv").open()))
    assert {(r["model"], r["backend"], r["input_size"]) for r in lat} == {
        (m, b, s) for m in MODELS for b in ("torch", "onnxruntime") for s in ("32", "224")
    }
    html = (out / "report.html").read_text()
    assert all(s.startswith("data:image/png;base64,") for s in re.findall(r"src='([^']*)'", html))
    md = (out / "report.md").read_text()
    assert "Training mode: budget" in md and "may differ from converged ones" in md
    from mobilezoo.measure.machine import cpu_features, cpu_model

    assert f"Machine: {cpu_model()} (" in md and "+".join(cpu_features()) in md  # the CPU and its ISA, as recorded


def test_a_study_resumed_on_another_machine_says_so_and_remeasure_times_every_model_here(study, tmp_path):
    """A study continued elsewhere: each model names its machines; the report says what no longer compares; one
    ``--resume --remeasure`` re-times every finished model in one run here and keeps its training."""
    from mobilezoo.measure.machine import machine_key

    here, other = machine_key(), "Other CPU [6/1/1] avx2 x2"
    out = tmp_path / "moved"
    shutil.copytree(study["out"], out)
    state = json.loads((out / "study.json").read_text())
    for m in MODELS:  # recorded by the run itself
        assert state["models"][m]["measure"]["machine"] == here
        assert state["models"][m]["train"]["machines"] == [here]
    first = state["models"][MODELS[0]]
    first["measure"]["machine"], first["train"]["machines"] = other, [other, here]  # as if trained/timed elsewhere
    (out / "study.json").write_text(json.dumps(state))
    ckpts = {m: _fingerprint(out / "runs" / m / "last.ckpt") for m in MODELS}
    r = _study("--resume", str(out), "--no-progress", env=_env(tmp_path))  # nothing to train: the report again
    assert r.wait(timeout=600) == 0, r.stderr.read()[-3000:]
    md = (out / "report.md").read_text()
    assert f"Latency was measured on 2 machines ({other}; {here})" in md and "--remeasure" in md
    assert "Training ran on 2 machines" in md and f"| {other}; {here} |" in md  # the model's own row says which

    r = _study("--resume", str(out), "--remeasure", "--no-progress", env=_env(tmp_path))
    stdout, err = r.communicate(timeout=600)
    assert r.returncode == 0, err[-3000:]
    assert f"[1/2] {MODELS[0]}: measuring again here (its training kept)" in stdout
    after = json.loads((out / "study.json").read_text())
    assert [after["models"][m]["measure"]["machine"] for m in MODELS] == [here, here]
    assert [after["models"][m]["train"] for m in MODELS] == [state["models"][m]["train"] for m in MODELS]
    assert {m: _fingerprint(out / "runs" / m / "last.ckpt") for m in MODELS} == ckpts  # nothing retrained
    md = (out / "report.md").read_text()
    assert "Latency was measured on" not in md and "Training ran on 2 machines" in md
    assert {r["model"] for r in csv.DictReader((out / "latency.csv").open())} == set(MODELS)


def test_conclusions_table_is_generated_from_the_results(study):
    claims = list(csv.DictReader((study["out"] / "conclusions.csv").open()))
    assert [c["claim (seed)"] for c in claims] == [c.text for c in CLAIMS]
    by = {c["claim (seed)"]: c for c in claims}
    assert by["MobileNetV2 is the most accurate on CIFAR-10"]["verdict"] == NOT_MEASURED  # no MobileNetV2 here
    assert by["MobileNetV2 and GhostNet are the slowest"]["verdict"] == NOT_MEASURED
    params = by["ShuffleNetV2 has the fewest parameters"]  # 0.10 M against 0.40 M: measured, it holds
    assert params["verdict"] == "agree" and MODELS[0] in params["this run measured"]
    for c in claims:
        assert c["verdict"] in ("agree", "disagree", NOT_MEASURED)
        assert (c["why"] != "") == (c["verdict"] == "disagree")  # a reason exactly where they disagree
    md = (study["out"] / "report.md").read_text()
    assert "## The seed's conclusions, checked against this run" in md


def test_a_budget_run_refits_its_steps_at_the_warmups_end_to_the_pace_it_measured(data, tmp_path):
    """The run stops at its warm-up's end and sets its remaining steps from the time spent and the pace measured
    over its own steps, so the plan fills the budget; the steps before the re-fit count in its training time, and
    the schedule stays continuous: the run equals, bit for bit, one planned with the re-fitted steps from the
    start."""
    from mobilezoo.study.plan import Settings
    from mobilezoo.study.training import (
        _steps_per_epoch,
        budget_recipe,
        refit_budget,
        refit_point,
        study_recipe,
        train_model,
    )
    from mobilezoo.train import load_checkpoint

    s = Settings(str(data), models=[MODELS[0]], budget_min=0.1,
                 overrides=["batch_size=32", "warmup_epochs=4", "channels_last=false"]).check()  # fmt: skip
    r0 = study_recipe(s, MODELS[0])
    spe = _steps_per_epoch(s, r0)
    assert spe == 6  # 200 images, 32 a batch
    recipe, plan = budget_recipe(r0, s, steps_per_s=200 / 6, steps_per_epoch=spe)  # a probe's guess: 200 steps
    assert (plan["total_steps"], refit_point(plan)) == (200, 24)  # the warm-up: 4 epochs of 6 steps
    plan["probe"] = {"steps_per_s": 200 / 6}
    refitted, rec = refit_budget(MODELS[0], s, recipe, plan, tmp_path / "a", progress=False)
    assert load_checkpoint(tmp_path / "a" / "last.ckpt")["global_step"] == rec["at_step"] == 24
    assert rec["paced_steps"] == 20 and rec["steps_per_s"] > 0 and 0 < rec["spent_s"] < 6
    assert abs(rec["planned_train_s"] - 6) <= 1 / rec["steps_per_s"]  # the budget filled at the measured pace
    assert (refitted.total_steps, refitted.epochs) == (rec["total_steps"], -(-rec["total_steps"] // spe))
    assert refitted.warmup_epochs == recipe.warmup_epochs
    t = train_model(MODELS[0], s, refitted, tmp_path / "a", progress=False)
    assert t["steps"] == rec["total_steps"] and t["train_time_s"] > rec["spent_s"]  # the first 24 steps count
    whole = train_model(MODELS[0], s, refitted, tmp_path / "b", progress=False)
    a, b = load_checkpoint(t["checkpoint"])["model"], load_checkpoint(whole["checkpoint"])["model"]
    assert all(torch.equal(a[k], b[k]) for k in a) and t["top1"] == whole["top1"]


def test_a_budget_run_refits_again_at_half_its_steps_with_the_lr_continuous(data, tmp_path):
    """The second re-fit: after the first (at the warm-up's end), the run stops at half its re-fitted steps, sets
    its end from the time spent and the pace of the steps since, and its cosine gets a knot there: the lr before
    the knot is the one it trained with, continuous at it, zero at the new end; the run then resumes exactly: it
    equals a run planned with the final steps from the start (same lr at every step, up to rounding)."""
    from mobilezoo.study.plan import Settings
    from mobilezoo.study.training import (
        _steps_per_epoch,
        budget_recipe,
        mid_refit_point,
        refit_budget,
        study_recipe,
        train_model,
    )
    from mobilezoo.train import load_checkpoint
    from mobilezoo.train.engine import lr_factor

    s = Settings(str(data), models=[MODELS[0]], budget_min=0.2,
                 overrides=["batch_size=32", "warmup_epochs=1", "channels_last=false"]).check()  # fmt: skip
    r0 = study_recipe(s, MODELS[0])
    spe = _steps_per_epoch(s, r0)
    recipe, plan = budget_recipe(r0, s, steps_per_s=100 / 12, steps_per_epoch=spe)  # 100 steps planned
    plan["probe"] = {"steps_per_s": 100 / 12}
    first = {"at_step": 20, "total_steps": 100, "steps_per_s": 100 / 12}  # as if re-fitted at step 20 to 100 steps
    assert mid_refit_point({**plan, "refit": first}) == 50 and mid_refit_point(plan) is None
    assert mid_refit_point({**plan, "refit": {**first, "total_steps": 39}}) is None  # too short a second half
    plan["refit"] = first
    mid, rec = refit_budget(MODELS[0], s, recipe, plan, tmp_path / "a", progress=False, at=50)
    assert load_checkpoint(tmp_path / "a" / "last.ckpt")["global_step"] == rec["at_step"] == 50
    assert (
        rec["paced_steps"] == 46
        and 0 < rec["spent_s"] < 12
        and abs(rec["planned_train_s"] - 12) <= 1 / rec["steps_per_s"]
    )
    assert (mid.total_steps, mid.epochs, mid.cosine_knot_step) == (
        rec["total_steps"],
        -(-rec["total_steps"] // spe),
        50,
    )
    f, g = lr_factor(recipe, spe), lr_factor(mid, spe)
    assert [g(i) for i in range(51)] == pytest.approx([f(i) for i in range(51)], rel=1e-12)  # as it trained
    assert g(rec["total_steps"]) == pytest.approx(0, abs=1e-12) and g(rec["total_steps"] - 1) > 0
    t = train_model(MODELS[0], s, mid, tmp_path / "a", progress=False)
    assert t["steps"] == rec["total_steps"] and t["train_time_s"] > rec["spent_s"]
    whole = train_model(MODELS[0], s, mid, tmp_path / "b", progress=False)
    a, b = load_checkpoint(t["checkpoint"])["model"], load_checkpoint(whole["checkpoint"])["model"]
    assert all(torch.allclose(a[k].float(), b[k].float(), rtol=1e-4, atol=1e-6) for k in a)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--data", "/nonexistent/cifar"], "data folder not found"),
        (["--data", str(MINI), "--models", "ShuffleNetV2_x9"], "unknown model 'ShuffleNetV2_x9'"),
        (["--data", str(MINI), "--budget-min", "0"], "--budget-min must be > 0"),
        (["--data", str(MINI), "--engines", "tensorrt"], "unknown engine 'tensorrt'"),
        (["--data", str(MINI), "--remeasure"], "--remeasure times a study's finished models again: give --resume"),
    ],
)
def test_bad_input_is_one_line(args, message, tmp_path, capsys):
    assert main(["study", *args, "-o", str(tmp_path / "s")]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not (tmp_path / "s").exists()  # nothing made before the input is checked


def test_resume_of_a_folder_that_is_not_a_study(tmp_path, capsys):
    assert main(["study", "--resume", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert "is not a mobilezoo study (no study.json)" in err and len(err.splitlines()) == 1


def _row(model: str, family: str, top1: float, ms: float, params: float, flops: float) -> dict:
    return {"model": model, "family": family, "CIFAR-10 top-1 %": top1, "fastest fp32 @32 (ms)": ms,
            "engine @32": "onnxruntime", "params (M)": params, "peak act (MB)": params, "ONNX fp32 (MB)": params * 4,
            "FLOPs=2xMACs (M)": flops, "MACs (M)": flops / 2, "mem access (MB)": ms * 10, "train img/s": 1 / ms,
            "device": "cpu"}  # fmt: skip


def test_conclusions_follow_the_numbers_of_all_four_families():
    from mobilezoo.study.conclusions import check_claims

    rows = [  # the seed's picture: MobileNetV2 most accurate, ShuffleNetV2 small and fast, GhostNet slow
        _row("ShuffleNetV2_x1_0", "ShuffleNetV2", 90.0, 1.0, 1.3, 290),
        _row("MobileNetV2_x1_0", "MobileNetV2", 92.0, 3.0, 2.2, 600),
        _row("MobileNetV3_small_x1_0", "MobileNetV3", 85.0, 1.5, 1.5, 110),
        _row("GhostNet_x1_0", "GhostNet", 86.0, 4.0, 3.9, 280),
    ]
    ctx = {
        "settings": {"budget_min": 8.0},
        "size": 32,
        "cpu": "a CPU",
        "epochs": "5",
        "models": [r["model"] for r in rows],
    }
    verdicts = {c["claim (seed)"]: c["verdict"] for c in check_claims(rows, ctx)}
    assert set(verdicts.values()) == {"agree"}, verdicts
    rows[2]["fastest fp32 @32 (ms)"] = 0.5  # MobileNetV3 now the fastest: two latency claims turn, with reasons
    out = {c["claim (seed)"]: c for c in check_claims(rows, ctx)}
    fastest = out["ShuffleNetV2 is the fastest"]
    assert fastest["verdict"] == "disagree" and "MobileNetV3_small_x1_0" in fastest["this run measured"]
    assert "ncnn on a Raspberry Pi 4B" in fastest["why"] and "memory access" in fastest["why"]
    assert out["ShuffleNetV2 is the best on latency vs accuracy (the Pareto front)"]["verdict"] == "agree"  # tied
    assert out["MobileNetV2 is the most accurate on CIFAR-10"]["verdict"] == "agree"


def test_resume_keeps_the_recorded_settings(tmp_path, capsys):
    from mobilezoo.study import Settings, State

    State.create(tmp_path / "s", Settings(str(MINI), models=MODELS, budget_min=1.0).check(), machine={})
    assert main(["study", "--resume", str(tmp_path / "s"), "--epochs", "3"]) == 2
    err = capsys.readouterr().err.strip()
    assert "recorded settings: drop --epochs" in err and len(err.splitlines()) == 1


def test_a_budget_fixes_the_steps_and_a_warm_up_the_cosine_can_follow():
    from mobilezoo.study import Settings
    from mobilezoo.study.training import WARMUP_SHARE, budget_recipe, study_recipe

    s = Settings(str(MINI), models=MODELS[:1], budget_min=2.0).check()
    base = study_recipe(s, MODELS[0])
    fitted, plan = budget_recipe(base, s, steps_per_s=5.0, steps_per_epoch=160)  # 600 steps in 2 min: 3.75 epochs
    assert (fitted.total_steps, fitted.epochs, plan["epochs"], plan["over_budget"]) == (600, 4, 4, False)
    assert plan["planned_train_s"] == 120 and plan["epochs_in_budget"] == 3.75 and fitted.eval_every == 4
    assert fitted.warmup_epochs == min(base.warmup_epochs, WARMUP_SHARE * 3.75)
    short, plan = budget_recipe(base, s, steps_per_s=0.5, steps_per_epoch=100)  # not one epoch in the budget
    assert (short.epochs, short.total_steps, plan["over_budget"]) == (1, 60, True)
    kept = Settings(str(MINI), models=MODELS[:1], budget_min=2.0, overrides=["warmup_epochs=1"]).check()
    assert budget_recipe(study_recipe(kept, MODELS[0]), kept, 5.0, 100)[0].warmup_epochs == 1
