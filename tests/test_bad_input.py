"""Bad input gets a one-line error, or the sensible behaviour, never a traceback or a false success: each test makes
the input and checks the exact message (the artifact content checks are ``tests/test_runtime.py``'s, the checkpoint
errors ``tests/test_weights_choice.py``'s, the API-key page ``tests/test_serve.py``'s)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

import mobilezoo as mz
from mobilezoo import runtime
from mobilezoo.cli import main

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
MINI = DATA / "cifar10-mini"
PHOTO = DATA / "images" / "cat.jpg"
NAME = "ShuffleNetV2_x0_25"


@pytest.fixture(autouse=True)
def _home(tmp_path, monkeypatch):
    monkeypatch.setenv("MOBILEZOO_HOME", str(tmp_path / "home"))


def cli(capsys, *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    rc = main(list(argv))
    out = capsys.readouterr()
    return rc, out.out, out.err


def tiny_folder(root: Path, per_class: int = 2, classes: int = 3, sizes: tuple[int, ...] = (32,)) -> Path:
    """An ImageFolder of real CIFAR images (train/ and test/), resized in turn to ``sizes``."""
    names = sorted(p.name for p in (MINI / "train").iterdir())[:classes]
    n = 0
    for split in ("train", "test"):
        for cls in names:
            (root / split / cls).mkdir(parents=True)
            for f in sorted((MINI / split / cls).iterdir())[:per_class]:
                size = sizes[n % len(sizes)]
                Image.open(f).convert("RGB").resize((size, size)).save(root / split / cls / f.name)
                n += 1
    return root


# ------------------------------------------------------------------------------------------------------ train recipes


@pytest.mark.parametrize(
    ("override", "msg"),
    [
        ("batch_size=0", "recipe field 'batch_size': 0 is out of range (allowed: an integer >= 1)"),
        ("epochs=-1", "recipe field 'epochs': -1 is out of range (allowed: an integer >= 1)"),
        ("lr=0", "recipe field 'lr': 0.0 is out of range (allowed: a number > 0)"),
        ("momentum=1.5", "recipe field 'momentum': 1.5 is out of range (allowed: 0 <= x < 1)"),
        ("label_smoothing=-0.1", "recipe field 'label_smoothing': -0.1 is out of range (allowed: 0 <= x < 1)"),
        ("amp=fp8", "recipe field 'amp': 'fp8' is out of range (allowed: one of auto, bf16, fp16, none, fp32)"),
        ("data_mode=disk", "recipe field 'data_mode': 'disk' is out of range (allowed: one of auto, memory, stream)"),
        (
            "milestones=[20,10]",
            "recipe field 'milestones': [20, 10] is out of range (allowed: increasing epoch numbers >= 1)",
        ),
        ("accum_steps=3", "recipe field 'accum_steps': 3 does not divide batch_size 256"),
    ],
)
def test_recipe_fields_are_checked_against_their_ranges(override, msg, tmp_path, capsys):
    out = tmp_path / "run"
    rc, stdout, err = cli(capsys, "train", "--model", NAME, "--data", str(MINI), "-o", override, "--output", str(out))
    assert (rc, err) == (2, f"mobilezoo: error: {msg}\n") and "best top-1" not in stdout
    assert not out.exists()  # nothing ran: no run folder


def test_a_recipe_built_in_python_is_checked_when_training_starts(tmp_path):
    from mobilezoo.train import Recipe, RecipeError, TrainConfig, fit

    with pytest.raises(RecipeError, match=r"^recipe field 'epochs': 0 is out of range \(allowed: an integer >= 1\)$"):
        fit(TrainConfig(NAME, MINI, tmp_path / "run", Recipe(epochs=0)))
    assert not (tmp_path / "run").exists()


def test_crops_below_the_networks_minimum_are_refused_before_training(tmp_path, capsys):
    out = tmp_path / "run"
    args = ["train", "--model", NAME, "--data", str(MINI), "--output", str(out), "--recipe", "imagenet"]
    rc, _, err = cli(capsys, *args, "-o", "train_crop=16", "-o", "batch_size=8")
    assert (rc, err) == (2, f"mobilezoo: error: recipe field 'train_crop': 16 is below {NAME}'s minimum input of "
                            "32x32 pixels (small_input=true lowers it)\n")  # fmt: skip
    assert not out.exists()


def test_a_failed_train_leaves_no_run_folder(tmp_path, capsys):
    data = tiny_folder(tmp_path / "d")
    out = tmp_path / "run"
    rc, _, err = cli(capsys, "train", "--model", NAME, "--data", str(tmp_path / "nope"), "--output", str(out))
    assert (rc, err) == (2, f"mobilezoo: error: dataset folder not found: {tmp_path / 'nope'}\n")
    rc, _, err = cli(capsys, "train", "--model", NAME, "--data", str(data), "--output", str(out))  # 6 < one batch
    assert (rc, err) == (2, "mobilezoo: error: only 6 samples: fewer than one global batch of 256\n")
    assert not out.exists()


def test_mixed_image_sizes_stream_with_the_default_data_mode(tmp_path, capsys):
    data = tiny_folder(tmp_path / "d", sizes=(32, 40, 48))
    args = ["train", "--model", NAME, "--data", str(data), "--output", str(tmp_path / "run"), "--no-progress"]
    rc, _out, err = cli(capsys, *args, "-o", "epochs=1", "-o", "batch_size=2", "-o", "workers=0")
    assert rc == 0, err
    assert f"{data / 'train'}: images of several sizes: data_mode=auto streams them" in err
    ck = mz.train.load_checkpoint(tmp_path / "run" / "last.ckpt")
    assert ck["data_mode"] == "stream" and ck["recipe"]["data_mode"] == "auto"
    args = [
        *args[:-3],
        "--output",
        str(tmp_path / "run2"),
        "--no-progress",
        "-o",
        "batch_size=2",
        "-o",
        "data_mode=memory",
    ]
    rc, _, err = cli(capsys, *args)  # memory, asked for: the images must then be of one size
    assert rc == 2 and err.startswith(f"mobilezoo: error: {data / 'train'}: images of several sizes [(3, 32, 32), ")
    assert err.endswith("...: use data_mode=stream\n") and not (tmp_path / "run2").exists()


# ----------------------------------------------------------------------------------------------------- evaluation


@pytest.mark.parametrize("mode", ["memory", "stream"])
def test_an_unreadable_eval_image_is_skipped_and_counted_never_replaced(mode, tmp_path):
    from mobilezoo.data.datasets import open_split
    from mobilezoo.train import build_eval_loader, evaluate

    data = tiny_folder(tmp_path / "d", per_class=4)  # 12 readable test images
    (data / "test" / sorted(os.listdir(data / "test"))[0] / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    model = mz.create_model(NAME, weights="random", num_classes=3, small_input=True).eval()
    ds = open_split(data, "eval")
    assert len(ds) == 13
    pre = mz.data.eval_preprocess(model, resize_short=32, crop_size=32)
    res = evaluate(model, build_eval_loader(ds, pre, mode, torch.device("cpu"), False), 3)
    assert (res.count, res.skipped, int(res.confusion.sum())) == (12, 1, 12)


def test_eval_takes_any_weights_and_reports_what_it_skipped(tmp_path, capsys):
    data = tiny_folder(tmp_path / "d", per_class=4)
    bad = data / "test" / sorted(os.listdir(data / "test"))[1] / "broken.png"
    bad.write_bytes(b"")
    model = mz.create_model(NAME, weights="random", num_classes=3)
    mz.save_pretrained(model, tmp_path / "sp")
    torch.save(model.state_dict(), tmp_path / "m.pth")
    for ckpt in (tmp_path / "sp", tmp_path / "m.pth"):
        rc, out, err = cli(capsys, "eval", "--model", NAME, "--ckpt", str(ckpt), "--data", str(data), "--json")
        res = json.loads(out)
        assert rc == 0 and (res["count"], res["skipped_unreadable"]) == (12, 1) and res["model"] == NAME
    rc, out, _ = cli(capsys, "eval", "--ckpt", str(tmp_path / "sp"), "--data", str(data))  # the folder names its model
    assert rc == 0 and "(12 images; 1 unreadable skipped)" in out.splitlines()[0]
    rc, _, err = cli(capsys, "eval", "--ckpt", str(tmp_path / "m.pth"), "--data", str(data))
    assert (rc, err) == (2, f"mobilezoo: error: {tmp_path / 'm.pth'} does not say which model it holds: give --model "
                            "NAME\n")  # fmt: skip
    rc, _, err = cli(capsys, "eval", "--model", NAME, "--ckpt", str(tmp_path / "m.pth"), "--data", str(MINI))
    assert (rc, err) == (2, f"mobilezoo: error: {tmp_path / 'm.pth'} has 3 classes, {MINI} has 10\n")


# ------------------------------------------------------------------------------------------------ predict / export


def test_the_pixel_limit_flag_also_raises_pils(tmp_path, capsys, monkeypatch):
    """PIL refuses images over its own limit (89 M pixels by default, here lowered to 1,000 to keep the test small)
    whatever --max-pixels says: the flag raises PIL's limit with it, and its own limit is the one that applies."""
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    img = tmp_path / "big.png"
    Image.new("RGB", (100, 100), (200, 30, 30)).save(img)  # 10,000 pixels: over twice PIL's (lowered) limit
    args = ["predict", str(img), "--model", NAME, "--random-weights", "--backend", "torch"]
    rc, out, err = cli(capsys, *args, "--max-pixels", "20000")
    assert rc == 0 and out.startswith(f"{img}: ") and err == ""
    rc, _, err = cli(capsys, *args, "--max-pixels", "5000")
    assert (rc, err) == (
        1,
        f"mobilezoo: error: {img}: 100x100 pixels is over the limit of 5000 (decompression bomb?)\n",
    )


def test_check_images_that_are_not_there_are_an_error_not_noise(tmp_path, capsys):
    missing = tmp_path / "photos"
    rc, out, err = cli(capsys, "export", NAME, "--random-weights", "--check-images", str(missing), "-o", str(tmp_path))
    assert (rc, out, err) == (2, "", f"mobilezoo: error: --check-images: {missing}: no such file\n")
    assert not list(tmp_path.glob("*.onnx"))
    rc, _, err = cli(capsys, "export", NAME, "--random-weights", "--format", "onnx,tflite", "-o", str(tmp_path))
    from mobilezoo import backends

    choices = ", ".join(backends.formats())
    assert (rc, err) == (2, f"mobilezoo: error: unknown export format 'tflite'; choose from {choices} or 'all'\n")
    assert not list(tmp_path.glob("*.onnx"))  # refused before any format was written


def test_inputs_below_the_networks_minimum_are_refused(tmp_path):
    m = mz.create_model(NAME, weights="random").eval()
    msg = r"^input 16x40 is below ShuffleNetV2_x0_25's minimum of 32x32 pixels \(its total stride\)$"
    with pytest.raises(ValueError, match=msg):
        m(torch.zeros(1, 3, 16, 40))
    assert m(torch.zeros(1, 3, 32, 32)).shape == (1, 1000)
    with pytest.raises(ValueError, match=msg):
        runtime.load(m, backend="torch")(torch.zeros(1, 3, 16, 40))
    onnx = mz.export.export(m, "onnx", tmp_path)
    with pytest.raises(ValueError, match=msg):  # an artifact knows its network's minimum too
        runtime.load(onnx)(torch.zeros(1, 3, 16, 40))
    with pytest.raises(ValueError, match=r"^this ONNX model takes \(3, 224, 224\) inputs, not \(3, 64, 64\)$"):
        runtime.load(onnx, backend="onnxruntime")(torch.zeros(1, 3, 64, 64))  # exported at its 224 crop, static H/W
    small = mz.create_model("MobileNetV2_x0_25", weights="random", small_input=True).eval()  # stride-1 stem
    with pytest.raises(ValueError, match="minimum of 16x16 pixels"):
        small(torch.zeros(1, 3, 8, 8))
    assert small(torch.zeros(1, 3, 16, 16)).shape == (1, 1000)


# ---------------------------------------------------------------------------------------------- threads and cores


def test_threads_beyond_the_usable_cores_are_refused(capsys, tmp_path):
    from mobilezoo.bench.grid import BenchSpec
    from mobilezoo.measure.machine import usable_cores

    n = usable_cores()
    msg = f"{n + 1} threads: this process may use only {n} CPU cores; use at most {n}"
    with pytest.raises(ValueError, match=f"^{msg}$"):
        runtime.load(mz.create_model(NAME, weights="random"), backend="torch", threads=n + 1)
    with pytest.raises(ValueError, match=f"^{msg}$"):
        BenchSpec(models=[NAME], threads=[1, n + 1], weights="random")
    for argv in (
        ["bench", "--models", NAME, "--random-weights", "--threads", f"1,{n + 1}", "-o", str(tmp_path)],
        ["bench", "--per-layer", NAME, "--random-weights", "--threads", str(n + 1)],
        ["predict", str(PHOTO), "--model", NAME, "--random-weights", "--threads", str(n + 1)],
        ["quantize", "--model", NAME, "--random-weights", "--calib", str(PHOTO), "--threads", str(n + 1)],
    ):
        rc, _, err = cli(capsys, *argv)
        assert (rc, err) == (2, f"mobilezoo: error: {msg}\n"), argv[0]


# ------------------------------------------------------------------------------------------------------- quantize


def test_quantize_counts_the_calibration_images_it_used(tmp_path, capsys):
    calib = tmp_path / "calib"
    calib.mkdir()
    for p in sorted((DATA / "images").glob("*.jpg"))[:3]:
        shutil.copy(p, calib / p.name)
    (calib / "zz_broken.jpg").write_bytes(b"\xff\xd8\xff not a jpeg")
    args = ["quantize", "--model", NAME, "--random-weights", "--calib", str(calib), "-o", str(tmp_path / "q")]
    rc, out, err = cli(capsys, *args, "--json")
    assert rc == 0, err
    assert json.loads(out)["calibration"] | {"source": ""} == {"images": 3, "found": 4, "unreadable": 1,
                                                                "method": "minmax", "source": ""}  # fmt: skip
    line = f"{calib}: calibrated on 3 images of 4 found, 1 unreadable skipped ({calib / 'zz_broken.jpg'}: "
    assert err.startswith(line)
    rc, _, err = cli(capsys, "quantize", "--model", NAME, "--random-weights", "--calib", str(tmp_path / "none"))
    assert (rc, err) == (2, f"mobilezoo: error: calibration images: {tmp_path / 'none'}: no such file\n")


# ---------------------------------------------------------------------------------------------- converter chatter


def test_export_prints_results_not_converter_chatter(tmp_path):
    """pnnx's pass logs and torch.jit's deprecation notices stay out of the output (``--verbose`` shows them); a child
    process, as a user runs it: pytest installs its own warning filters in-process."""
    cmd = [sys.executable, "-m", "mobilezoo", "export", NAME, "--random-weights", "-o", str(tmp_path)]
    env = {**os.environ, "MOBILEZOO_HOME": str(tmp_path / "home")}
    env.pop("MOBILEZOO_VERBOSE", None)
    r = subprocess.run([*cmd, "--format", "torchscript,ncnn"], capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert len(lines) == 3 and lines[0].startswith("checking on a synthetic batch") and r.stderr == ""
    assert lines[1].startswith(f"{tmp_path / NAME}.torchscript.pt  [") and "top-5 agreement 100%" in lines[2]
