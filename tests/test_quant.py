"""Int8 PTQ: a real int8 artifact (int8 weights, QDQ graph, metadata) that the runtime runs and agrees with fp32."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import onnx
import pytest
import torch

import mobilezoo as mz
from mobilezoo.cli import main
from mobilezoo.quant import calibration_images, quantize_ptq
from mobilezoo.train import TrainConfig, build_eval_loader, fit, load_recipe, model_from_checkpoint

ROOT = Path(__file__).resolve().parents[1]
MINI = ROOT.parent / "shared" / "data" / "cifar10-mini"
MODEL = "ShuffleNetV2_x0_5"


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A ShuffleNetV2 trained briefly on real CIFAR images (cifar10-mini), so int8 has real activations to keep."""
    root = tmp_path_factory.mktemp("q")
    data = root / "data"
    for split, n in (("train", 40), ("test", 10)):
        for cls in sorted(p.name for p in (MINI / split).iterdir()):
            (data / split / cls).mkdir(parents=True)
            for f in sorted((MINI / split / cls).iterdir())[:n]:
                shutil.copy(f, data / split / cls / f.name)
    rec = load_recipe("cifar10", MODEL, ["epochs=3", "batch_size=32", "warmup_epochs=0.5", "lr=0.2"])
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MOBILEZOO_HOME", str(root / "home"))  # the decoded-dataset cache stays in the test's folder
        res = fit(TrainConfig(MODEL, data, root / "run", rec, progress=False, tensorboard=False))
    return data, res.best


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MOBILEZOO_HOME", str(tmp_path / "home"))


def test_ptq_artifact_is_int8_and_agrees_with_fp32(trained, tmp_path):
    data, ckpt = trained
    model = model_from_checkpoint(ckpt)
    pre = mz.data.eval_preprocess(model)
    calib = calibration_images(data / "train", pre, n=128)
    assert calib.shape == (128, 3, 32, 32)
    res = quantize_ptq(model, calib, tmp_path)
    proto = onnx.load(str(res.int8))
    ops = {n.op_type for n in proto.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    conv_w = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Conv2d))
    int8_bytes = sum(len(t.raw_data) for t in proto.graph.initializer if t.data_type == onnx.TensorProto.INT8)
    assert int8_bytes >= 0.95 * conv_w  # the conv weights are stored as int8
    fp32_bytes = sum(len(t.raw_data) for t in onnx.load(str(res.fp32)).graph.initializer)
    assert int8_bytes < fp32_bytes / 3
    rt8 = mz.runtime.load(res.int8)
    assert (
        rt8.backend == "onnxruntime" and rt8.precision == "int8" and rt8.class_names[:2] == ["airplane", "automobile"]
    )
    loader = build_eval_loader(mz.data.datasets.open_split(data, "eval"), pre, "memory", torch.device("cpu"), False)
    x = torch.cat([b[0] for b in loader])
    with torch.no_grad():
        ref = model(x)
    got = rt8(x)
    cos = torch.nn.functional.cosine_similarity(ref, got, dim=1)
    assert cos.min() > 0.9, cos.min()
    assert (ref.argmax(1) == got.argmax(1)).float().mean() >= 0.85


def test_quantize_cli_reports_accuracy_and_refuses_qat_clearly(trained, tmp_path, capsys):
    data, ckpt = trained
    args = ["quantize", "--model", MODEL, "--ckpt", str(ckpt), "--calib", str(data / "train"), "-n", "64"]
    assert main([*args, "--eval", str(data), "-o", str(tmp_path), "--json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["int8_bytes"] < rep["fp32_bytes"] and abs(rep["top1_drop"]) <= 10
    assert rep["fp32_top1"] == pytest.approx(
        mz.train.evaluate_checkpoint(ckpt, data).top1
    )  # the fp32 ONNX reproduces the checkpoint's accuracy
    assert main([*args, "--method", "qat", "-o", str(tmp_path)]) == 2
    assert "qat is not available yet" in capsys.readouterr().err
