"""Training engine: data layouts, recipes, schedule, losses, exact resume, signals, NaN, DDP, eval, distillation."""

from __future__ import annotations

import json
import math
import os
import pickle
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import mobilezoo as mz
from mobilezoo.cli import main
from mobilezoo.data.datasets import DatasetError, open_split, read_file_list
from mobilezoo.train import (
    TrainConfig,
    TrainingDiverged,
    TrainingInterrupted,
    classification_loss,
    distill_loss,
    evaluate_checkpoint,
    fit,
    load_checkpoint,
    load_recipe,
)
from mobilezoo.train.engine import _check_total_steps, _param_groups, lr_factor
from mobilezoo.train.recipes import RecipeError

ROOT = Path(__file__).resolve().parents[1]
MINI = ROOT.parent / "shared" / "data" / "cifar10-mini"
SRC = str(ROOT / "src")
MODEL = "ShuffleNetV2_x0_25"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    """A 10-class ImageFolder of real CIFAR images: 8 train + 4 test per class (copied from cifar10-mini)."""
    root = tmp_path_factory.mktemp("tiny")
    for split, n in (("train", 8), ("test", 4)):
        for cls in sorted(p.name for p in (MINI / split).iterdir()):
            (root / split / cls).mkdir(parents=True)
            for f in sorted((MINI / split / cls).iterdir())[:n]:
                shutil.copy(f, root / split / cls / f.name)
    return root


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MOBILEZOO_HOME", str(tmp_path / "home"))  # decoded-dataset cache per test


def recipe(**over):
    base = {"epochs": 2, "batch_size": 16, "warmup_epochs": 0.5, "log_every": 2, "channels_last": False}
    return load_recipe(
        "cifar10", MODEL, [f"{k}={json.dumps(v) if isinstance(v, str) else v}" for k, v in {**base, **over}.items()]
    )


def run(data, out, **kw):
    rec = kw.pop("recipe", None) or recipe()
    return fit(TrainConfig(MODEL, data, out, rec, progress=False, tensorboard=False, **kw))


# ---------------------------------------------------------------- recipes


def test_recipes_resolve_family_file_per_model_tables_and_overrides():
    large = load_recipe("imagenet", "MobileNetV3_large_x1_0")
    small = load_recipe("imagenet", "MobileNetV3_small_x1_0")
    assert (large.lr, large.autoaugment, large.label_smoothing, large.epochs) == (0.65, True, 0.1, 360)
    assert (small.lr, small.batch_size, small.autoaugment) == (1.3, 512, False)  # PaddleClas's small yaml
    assert large.no_bn_decay and load_recipe("imagenet", "GhostNet_x1_0").no_bn_decay
    assert not load_recipe("imagenet", "MobileNetV2_x1_0").no_bn_decay
    v2 = load_recipe("imagenet", "MobileNetV2_x1_0")
    assert (v2.lr, v2.warmup_epochs, v2.weight_decay) == (0.045, 0, 4e-5)
    assert load_recipe("imagenet", "ShuffleNetV2_x0_25").weight_decay == 3e-5
    v1 = load_recipe("imagenet", "MobileNetV1_x1_0")
    assert (v1.schedule, v1.milestones) == ("piecewise", [30, 60, 90])
    r = load_recipe("cifar10", "GhostNet_x1_0", ["epochs=3", "lr=0.05", "amp=none", "small_input=false"])
    assert (r.epochs, r.lr, r.amp, r.small_input, r.no_bn_decay) == (3, 0.05, "none", False, True)
    assert load_recipe("cifar10", "GhostNet_x1_0").small_input == 1  # the shipped `small_input = true`
    assert load_recipe("cifar10", "GhostNet_x1_0", ["small_input=2"]).small_input == 2
    with pytest.raises(
        RecipeError, match=r"^recipe field 'small_input': 3 is out of range \(allowed: 0, 1 \(true\) or 2\)$"
    ):
        load_recipe("cifar10", "GhostNet_x1_0", ["small_input=3"])
    assert r.lr_for(256) == pytest.approx(0.05 * 256 / 128)  # lr scales with the global batch
    with pytest.raises(RecipeError, match="did you mean epochs"):
        load_recipe("cifar10", MODEL, ["epoch=3"])
    with pytest.raises(RecipeError, match="not a valid int"):
        load_recipe("cifar10", MODEL, ["epochs=many"])
    with pytest.raises(RecipeError, match="unknown recipe 'nope'"):
        load_recipe("nope", MODEL)


def test_recipe_show_cli(capsys):
    assert main(["recipe", "show", "imagenet", "--model", "MobileNetV3_small_x1_0", "-o", "epochs=7"]) == 0
    out = capsys.readouterr().out
    assert "lr = 1.3" in out and "epochs = 7" in out and "mobilenet_v3.imagenet" in out
    assert main(["recipe", "list"]) == 0
    assert "shufflenet_v2.cifar10" in capsys.readouterr().out.split()


def test_lr_schedule_is_paddleclas_per_iteration_cosine_with_linear_warmup():
    r = load_recipe("cifar10", MODEL, ["epochs=10", "warmup_epochs=2"])
    f = lr_factor(r, 100)
    assert f(0) == 0 and f(100) == pytest.approx(0.5) and f(200) == pytest.approx(1.0)
    assert f(200 + 400) == pytest.approx(0.5)  # halfway through the cosine part
    assert f(1000) == pytest.approx(0.0, abs=1e-12)
    assert f(201) == pytest.approx(0.5 * (1 + math.cos(math.pi / 800)))
    p = lr_factor(load_recipe("imagenet", "MobileNetV1_x1_0"), 10)
    assert [p(299), p(300), p(600), p(900)] == pytest.approx([1, 0.1, 0.01, 0.001])


def test_a_cosine_knot_keeps_the_schedule_before_it_and_the_lr_continuous_then_ends_at_zero():
    """A run fitted to 1000 steps re-fitted at step 600 to end at 1400: the lr before 600 is the old schedule's
    (pk = its progress there), continuous at 600, then a cosine of the remaining progress to zero at 1400."""
    old = load_recipe("cifar10", MODEL, ["epochs=10", "total_steps=1000", "warmup_epochs=2"])
    f = lr_factor(old, 100)
    pk = (600 - 200) / (1000 - 200)
    new = old.with_overrides({"epochs": 14, "total_steps": 1400, "cosine_knot_step": 600, "cosine_knot_progress": pk})
    g = lr_factor(new, 100)
    assert [g(i) for i in (0, 100, 200, 350, 599)] == pytest.approx([f(i) for i in (0, 100, 200, 350, 599)])
    assert g(600) == pytest.approx(f(600)) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.5)))
    assert g(1000) == pytest.approx(0.5 * (1 + math.cos(math.pi * (pk + (1 - pk) * 400 / 800))))
    assert g(1400) == pytest.approx(0.0, abs=1e-12) and g(1399) > 0
    assert all(g(i) >= g(i + 1) for i in range(200, 1400))  # still decreasing through the knot


@pytest.mark.parametrize("knot", [150, 1000])
def test_a_cosine_knot_outside_the_cosine_is_refused(knot):
    rec = recipe(epochs=10, total_steps=1000, warmup_epochs=2, cosine_knot_step=knot, cosine_knot_progress=0.5)
    with pytest.raises(RecipeError, match=f"'cosine_knot_step': {knot} must lie after the warm-up and before the "
                                          "last step \\(1000\\)"):  # fmt: skip
        _check_total_steps(rec, 100)


def test_bn_is_not_decayed_where_paddleclas_says_so():
    m = mz.create_model("MobileNetV3_small_x0_35", weights="random")
    groups = _param_groups(m, load_recipe("imagenet", "MobileNetV3_small_x0_35"))
    bn = {id(p) for mod in m.modules() if isinstance(mod, torch.nn.BatchNorm2d) for p in mod.parameters()}
    assert {id(p) for p in groups[1]["params"]} == bn and groups[1]["weight_decay"] == 0
    assert bn.isdisjoint(id(p) for p in groups[0]["params"]) and groups[0]["weight_decay"] == 2e-5
    (g,) = _param_groups(m, load_recipe("imagenet", "MobileNetV2_x1_0"))  # V2: everything decayed
    assert len(g["params"]) == len(list(m.parameters()))


# ---------------------------------------------------------------- losses


def test_losses_match_their_definitions():
    torch.manual_seed(0)
    s, t = torch.randn(6, 5), torch.randn(6, 5)
    y = torch.tensor([0, 1, 2, 3, 4, -1])
    eps = 0.1
    target = torch.full((5, 5), eps / 5) + torch.eye(5) * (1 - eps)  # PaddleClas's label_smooth
    want = -(target[y[:5]] * torch.log_softmax(s[:5], 1)).sum(1).mean()
    assert classification_loss(s, y, eps) == pytest.approx(float(want), rel=1e-6)  # the -1 sample is ignored
    assert classification_loss(s, torch.full((6,), -1), 0.0) == 0
    pt = torch.softmax(t, 1)
    assert distill_loss(s, t, "dce") == pytest.approx(float(-(pt * torch.log_softmax(s, 1)).sum(1).mean()), rel=1e-6)
    ps = torch.softmax(s, 1)
    kl = lambda a, b: (a * (a / b).log()).sum(1).mean()  # noqa: E731
    assert distill_loss(s, t, "dml") == pytest.approx(float((kl(ps, pt) + kl(pt, ps)) / 2), rel=1e-5)
    pt2, ps2 = torch.softmax(t / 4, 1), torch.softmax(s / 4, 1)
    assert distill_loss(s, t, "kl", 4.0) == pytest.approx(float(kl(pt2, ps2) * 16), rel=1e-5)
    assert distill_loss(t, t, "dml") == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ValueError, match="unknown distillation loss"):
        distill_loss(s, t, "mse")


# ---------------------------------------------------------------- data layouts


def test_dataset_layouts_and_bad_files(tmp_path, tiny, caplog):
    ds = open_split(tiny, "train")
    assert len(ds) == 80 and ds.class_names[:2] == ["airplane", "automobile"]
    assert open_split(tiny, "eval").source.endswith("test")
    # PaddleClas file list: relative paths + labels
    lines = [f"{Path(p).relative_to(tiny)} {lbl}" for p, lbl in ds.samples]
    (tiny / "train_list.txt").write_text("\n".join(lines) + "\n")
    try:
        fl = open_split(tiny, "train")
        assert fl.source.endswith("train_list.txt") and fl.samples == ds.samples
    finally:
        (tiny / "train_list.txt").unlink()
    bad_list = tmp_path / "l.txt"
    bad_list.write_text("a.jpg 1\nb.jpg\n")
    with pytest.raises(DatasetError, match=r"l.txt:2: expected"):
        read_file_list(bad_list)
    # torchvision's CIFAR python batches, written from real images
    cif = tmp_path / "cifar" / "cifar-10-batches-py"
    cif.mkdir(parents=True)
    arr = np.stack([np.asarray(Image.open(p)).transpose(2, 0, 1).reshape(-1) for p, _ in ds.samples])
    for i, name in enumerate(["data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5"]):
        with open(cif / name, "wb") as f:
            pickle.dump({b"data": arr[i::5], b"labels": [lbl for _, lbl in ds.samples][i::5]}, f)
    with open(cif / "test_batch", "wb") as f:
        pickle.dump({b"data": arr[:10], b"labels": [0] * 10}, f)
    with open(cif / "batches.meta", "wb") as f:
        pickle.dump({b"label_names": [c.encode() for c in ds.class_names]}, f)
    c = open_split(tmp_path / "cifar", "train")
    assert len(c) == 80 and c.class_names == ds.class_names
    img, _ = c[0]
    assert img.shape == (3, 32, 32) and torch.equal(img, torch.from_numpy(arr[0].reshape(3, 32, 32)))
    # a CIFAR file that asks for code is refused
    with open(cif / "test_batch", "wb") as f:
        f.write(b"cos\nsystem\n(S'echo pwned'\ntR.")
    with pytest.raises(Exception, match=r"(?i)refus|not allowed|unsafe"):
        open_split(tmp_path / "cifar", "eval")
    # unreadable files are reported by name and skipped; a dataset with none left fails clearly
    broken = tmp_path / "broken" / "train" / "a"
    broken.mkdir(parents=True)
    (broken / "ok.png").write_bytes(Path(ds.samples[0][0]).read_bytes())
    (broken / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    b = open_split(tmp_path / "broken", "train")
    with caplog.at_level("WARNING"):
        items = [b[i] for i in range(len(b))]
    assert all(x.shape == (3, 32, 32) for x, _ in items) and "bad.png" in caplog.text
    (broken / "ok.png").write_bytes(b"")
    with pytest.raises(DatasetError, match="none of its 2 images could be read"):
        open_split(tmp_path / "broken", "train")[0]
    with pytest.raises(DatasetError, match="no train split found"):
        open_split(tmp_path, "train")


# ---------------------------------------------------------------- the loop


def _weights(path):
    return load_checkpoint(path)["model"]


@pytest.mark.parametrize("mode", ["memory", "stream"])
def test_interrupted_and_resumed_run_ends_with_identical_weights(tmp_path, tiny, mode):
    rec = recipe(data_mode=mode, workers=0 if mode == "memory" else 1, ema_decay=0.9, drop_rate=0.2)
    full = run(tiny, tmp_path / "full", recipe=rec)
    with pytest.raises(TrainingInterrupted, match="--resume"):
        run(tiny, tmp_path / "cut", recipe=rec, max_steps=3)  # stops mid-epoch 1 (5 steps per epoch)
    ck = load_checkpoint(tmp_path / "cut" / "last.ckpt")
    assert (ck["epoch"], ck["step_in_epoch"]) == (0, 3)
    resumed = run(tiny, tmp_path / "cut", recipe=rec, resume=tmp_path / "cut" / "last.ckpt")
    a, b = _weights(full.last), _weights(resumed.last)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    ea, eb = load_checkpoint(full.last)["ema"], load_checkpoint(resumed.last)["ema"]
    assert all(torch.equal(ea[k], eb[k]) for k in ea)
    assert [r["top1"] for r in full.history] == [r["top1"] for r in resumed.history]
    # the cut epoch's log row covers all of it: its loss over every step, its images and time before the stop too
    assert [r["train_loss"] for r in full.history] == [r["train_loss"] for r in resumed.history]
    assert [round(r["img_s"] * r["epoch_time_s"]) for r in resumed.history] == [80, 80]  # 80 train images
    assert not any(k.startswith("module.") for k in a)  # plain state dicts


def test_a_signal_during_the_final_evaluation_is_not_lost(tmp_path, tiny, monkeypatch):
    from mobilezoo.train import engine

    end_epoch = engine._end_epoch

    def interrupted_last_epoch(run, epoch, row):  # SIGINT while the last epoch is evaluated and saved (no step left)
        if epoch == run.cfg.recipe.epochs - 1:
            os.kill(os.getpid(), signal.SIGINT)
        end_epoch(run, epoch, row)

    monkeypatch.setattr(engine, "_end_epoch", interrupted_last_epoch)
    with pytest.raises(TrainingInterrupted, match="SIGINT: arrived as training finished"):
        run(tiny, tmp_path / "r", recipe=recipe(epochs=1))
    ck = load_checkpoint(tmp_path / "r" / "last.ckpt")
    assert ck["epoch"] == 1  # the finished run was saved before the stop was honoured
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # and the handler given back


def test_a_run_of_total_steps_ends_inside_its_last_epoch_at_the_schedules_end_and_resumes_exactly(tmp_path, tiny):
    f = lr_factor(load_recipe("cifar10", MODEL, ["epochs=2", "total_steps=150", "warmup_epochs=0"]), 100)
    assert f(0) == 1 and f(75) == pytest.approx(0.5) and f(150) == 0  # the cosine ends at step 150, not 200
    rec = recipe(total_steps=8, warmup_epochs=0)  # 5 steps per epoch: the second epoch stops after 3
    full = run(tiny, tmp_path / "full", recipe=rec)
    ck = load_checkpoint(full.last)
    assert (ck["epoch"], ck["global_step"], len(full.history)) == (2, 8, 2)
    assert full.history[-1]["lr"] == 0 and "top1" in full.history[-1]  # evaluated after the partial epoch
    with pytest.raises(TrainingInterrupted, match="stopped at epoch 2, step 2/5"):
        run(tiny, tmp_path / "cut", recipe=rec, max_steps=7)
    resumed = run(tiny, tmp_path / "cut", recipe=rec, resume=tmp_path / "cut" / "last.ckpt")
    a, b = _weights(full.last), _weights(resumed.last)
    assert all(torch.equal(a[k], b[k]) for k in a) and load_checkpoint(resumed.last)["global_step"] == 8
    with pytest.raises(RecipeError) as e:
        run(tiny, tmp_path / "bad", recipe=recipe(total_steps=12))
    assert str(e.value) == ("recipe field 'total_steps': 12 steps at 5 per epoch end in epoch 3, not in epoch 2 "
                            "(set epochs=3)")  # fmt: skip


def test_checkpoint_mismatch_and_nan_are_clear_errors(tmp_path, tiny):
    run(tiny, tmp_path / "a", recipe=recipe(epochs=1))
    cfg = TrainConfig("MobileNetV2_x0_25", tiny, tmp_path / "b", recipe(), resume=tmp_path / "a" / "last.ckpt")
    with pytest.raises(ValueError, match="is a ShuffleNetV2_x0_25 with 10 classes"):
        fit(cfg)
    before = (tmp_path / "a" / "last.ckpt").read_bytes()
    with pytest.raises(TrainingDiverged, match=r"NaN/inf.*last good checkpoint is .*last\.ckpt"):
        run(tiny, tmp_path / "a", recipe=recipe(epochs=3, lr=1e12, warmup_epochs=0))
    assert (tmp_path / "a" / "last.ckpt").read_bytes() == before  # the last good checkpoint is untouched


def test_eval_reproduces_the_training_runs_final_eval(tmp_path, tiny, capsys):
    res = run(tiny, tmp_path / "r", recipe=recipe(epochs=2))
    ck = load_checkpoint(res.best)
    e = evaluate_checkpoint(res.best, tiny)
    assert (e.top1, e.top5) == (ck["metrics"]["top1"], ck["metrics"]["top5"])
    assert e.count == 40 and int(e.confusion.sum()) == 40
    rows = (tmp_path / "r" / "log.csv").read_text().splitlines()
    assert rows[0].startswith("epoch,train_loss,lr") and len(rows) == 3
    png = tmp_path / "conf.png"
    capsys.readouterr()
    assert main(["eval", "--ckpt", str(res.best), "--data", str(tiny), "--json", "--confusion", str(png)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["top1"] == e.top1 and len(out["per_class_top1"]) == 10 and png.read_bytes()[:4] == b"\x89PNG"
    assert main(["eval", "--model", "GhostNet_x0_5", "--ckpt", str(res.best), "--data", str(tiny)]) == 2
    # a trained checkpoint is a first-class input of the runtime: same logits through predict
    r = mz.runtime.load(MODEL, backend="torch", checkpoint=res.best)
    assert r.class_names[:2] == ["airplane", "automobile"] and r.preprocess.crop_size == 32
    (p,) = r.predict([sorted((tiny / "test" / "cat").iterdir())[0]], topk=3)
    assert len(p.indices) == 3


def test_sigterm_saves_position_and_exits_cleanly(tmp_path, tiny):
    cmd = [
        sys.executable,
        "-m",
        "mobilezoo",
        "train",
        "--model",
        MODEL,
        "--data",
        str(tiny),
        "--output",
        str(tmp_path / "run"),
        "-o",
        "epochs=50",
        "-o",
        "batch_size=8",
        "-o",
        "log_every=1",
        "--no-progress",
    ]
    env = {**os.environ, "PYTHONPATH": SRC, "MOBILEZOO_HOME": str(tmp_path / "home")}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for line in proc.stdout:  # wait for the first finished epoch, then interrupt mid-run
        if line.startswith("epoch 1/50"):
            break
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "SIGTERM" in err and "--resume" in err and "Traceback" not in err
    assert "decoding" not in err  # --no-progress: no decoding bar, of the training split nor of the eval split
    ck = load_checkpoint(tmp_path / "run" / "last.ckpt")
    assert ck["epoch"] >= 1 and ck["global_step"] == ck["epoch"] * 10 + ck["step_in_epoch"]


def test_two_processes_with_gloo_match_one_process_with_the_same_global_batch(tmp_path, tiny):
    """DDP on CPU: 2 ranks x 8 vs 1 rank x 16 split into 2 micro-batches of 8 (BatchNorm sees 8 images either way;
    SyncBatchNorm is CUDA-only), no dropout: the weights agree after several steps."""
    env = {**os.environ, "PYTHONPATH": SRC, "MOBILEZOO_HOME": str(tmp_path / "home"), "OMP_NUM_THREADS": "1"}
    common = [
        "--model",
        MODEL,
        "--data",
        str(tiny),
        "--no-progress",
        "-o",
        "epochs=1",
        "-o",
        "drop_rate=0.0",
        "-o",
        "channels_last=false",
        "-o",
        "warmup_epochs=0",
    ]
    one = [
        sys.executable,
        "-m",
        "mobilezoo",
        "train",
        *common,
        "--output",
        str(tmp_path / "one"),
        "-o",
        "batch_size=16",
        "-o",
        "accum_steps=2",
    ]
    two = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node",
        "2",
        "-m",
        "mobilezoo",
        "train",
        *common,
        "--output",
        str(tmp_path / "two"),
        "-o",
        "batch_size=8",
    ]
    for cmd in (one, two):
        r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr[-3000:]
    a, b = _weights(tmp_path / "one" / "last.ckpt"), _weights(tmp_path / "two" / "last.ckpt")
    params = [k for k in a if not k.endswith(("running_mean", "running_var", "num_batches_tracked"))]
    init = mz.create_model(MODEL, weights="random", num_classes=10, small_input=True).state_dict()
    assert any(not torch.allclose(a[k], init[k]) for k in params)  # it trained
    for k in params:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5, msg=k)
    assert load_checkpoint(tmp_path / "two" / "last.ckpt")["world_size"] == 2


def test_distillation_with_cached_teacher_and_unlabeled_images(tmp_path, tiny):
    teacher = run(tiny, tmp_path / "t", recipe=recipe(epochs=1))
    unl = tmp_path / "unlabeled"
    unl.mkdir()
    for f in sorted((MINI / "train" / "cat").iterdir())[50:58]:
        shutil.copy(f, unl / f.name)
    rec = load_recipe("distill", MODEL, ["epochs=1", "batch_size=16", "gt_weight=0.5", "channels_last=false"])
    res = fit(
        TrainConfig(
            MODEL,
            tiny,
            tmp_path / "s",
            rec,
            teacher=MODEL,
            teacher_ckpt=teacher.best,
            unlabeled=[str(unl)],
            cache_teacher=True,
            progress=False,
            tensorboard=False,
        )
    )
    from safetensors.torch import load_file

    logits = load_file(str(tmp_path / "s" / "teacher_logits.safetensors"))["logits"]
    assert logits.shape == (88, 10)  # 80 labelled + 8 unlabeled training images
    t = mz.runtime.load(MODEL, backend="torch", checkpoint=teacher.best)
    x = torch.stack([t.preprocess(Image.open(p).convert("RGB")) for p, _ in open_split(tiny, "train").samples[:4]])
    torch.testing.assert_close(logits[:4], t(x), rtol=1e-4, atol=1e-4)
    assert math.isfinite(res.history[-1]["train_loss"]) and res.best is not None


@pytest.mark.slow
def test_short_cpu_run_on_cifar10_mini_beats_chance(tmp_path):
    """Regression check (not timed): 8 epochs on 1,000 real CIFAR images must clearly beat 10% chance."""
    rec = load_recipe("cifar10", MODEL, ["epochs=8", "batch_size=32", "warmup_epochs=1", "lr=0.2"])
    res = fit(TrainConfig(MODEL, MINI, tmp_path / "r", rec, progress=False, tensorboard=False))
    assert res.best_top1 >= 25.0, res.history
