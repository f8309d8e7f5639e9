"""MNN and Core ML: each artifact built from a small model and checked against PyTorch. MNN runs here (fp32, fp16,
its own int8); Core ML cannot run on Linux, so its packages are validated (the ML program rebuilt by coremltools,
every op a Core ML op, input and output shapes) and the runtime refuses them with that reason."""

from __future__ import annotations

import json
import re
import shutil

import pytest
import torch

import mobilezoo as mz
from mobilezoo import backends, runtime
from mobilezoo.backends.artifact import ArtifactError, artifact_bytes, find_artifact, read_metadata, sidecar
from mobilezoo.cli import main
from mobilezoo.data import load_image
from mobilezoo.export import check_export, export
from mobilezoo.quant import calibration_images, quantize_ptq

from .conftest import DATA
from .test_runtime import ONE_PER_FAMILY, PHOTOS, calibrated


def _engine(name: str):
    eng = backends.get(name)
    if eng.available() is not None:
        pytest.skip(eng.available())  # a failure under scripts/test.sh (MOBILEZOO_TESTS_STRICT)
    return eng


def _photos(model) -> torch.Tensor:
    pre = mz.data.eval_preprocess(model)
    return torch.stack([pre(load_image(p)) for p in PHOTOS])


MNN_FAMILIES = [n for n in ONE_PER_FAMILY if n not in ("MobileNetV3_large_x0_5", "ShuffleNetV2_swish")]


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MOBILEZOO_HOME", str(tmp_path / "home"))


# ---- MNN -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", MNN_FAMILIES)
def test_mnn_export_matches_torch_on_photos(name, tmp_path):
    """One width of every family (MobileNetV3_large: tests/test_runtime.py's every-engine test; every zoo model:
    benchmarks/mobile_exports.py)."""
    _engine("mnn")
    model = calibrated(name)
    path = export(model, "mnn", tmp_path)
    assert path.name == f"{name}.mnn" and path.stat().st_size > 0
    meta = json.loads((tmp_path / f"{name}.mnn.json").read_text())  # the sidecar: the .mnn has no place for it
    assert meta["model_name"] == name and len(meta["class_names"]) == 1000 and meta["precision"] == "fp32"
    assert meta["preprocess"]["crop_size"] == 224
    chk = check_export(model, path, [load_image(p) for p in PHOTOS])
    assert chk.max_abs_diff < 1e-3 * chk.max_abs_logit and chk.top5_agreement == 1.0, chk.line()


def test_mnn_fp16_stores_half_weights_and_matches_torch(tmp_path):
    _engine("mnn")
    model = calibrated("MobileNetV3_small_x0_5")
    p32, p16 = export(model, "mnn", tmp_path / "fp32"), export(model, "mnn", tmp_path / "fp16", fp16=True)
    assert p16.stat().st_size < 0.6 * p32.stat().st_size  # the weights are stored in half precision
    chk = check_export(model, p16, [load_image(p) for p in PHOTOS])
    assert chk.max_abs_diff < 2e-2 * chk.max_abs_logit and chk.top5_agreement >= 0.8, chk.line()
    assert runtime.load(p16).precision == "fp16"


@pytest.fixture(scope="module")
def mnn_int8(tmp_path_factory):
    """ShuffleNetV2 (calibrated BatchNorm) quantized by MNN's own tool on the real photos."""
    if backends.get("mnn").available() is not None:
        pytest.skip(backends.get("mnn").available())
    model = calibrated("ShuffleNetV2_x0_5")
    x = _photos(model)
    return model, x, quantize_ptq(model, x, tmp_path_factory.mktemp("mnn8"), toolchain="mnn")


@pytest.fixture(scope="module")
def mnn_int8_cifar(cifar_net, tmp_path_factory):
    """conftest's CIFAR-10-trained ShuffleNetV2 (a network whose logits mean something, so agreement is a property of
    the quantization, not of a random network's near-flat logits) quantized by MNN's tool on 64 training images, its
    fp32 logits on the 10,000 test images and their labels."""
    if backends.get("mnn").available() is not None:
        pytest.skip(backends.get("mnn").available())
    from .conftest import CIFAR

    calib = calibration_images(CIFAR / "train", cifar_net.pre, n=64)
    res = quantize_ptq(cifar_net.model, calib, tmp_path_factory.mktemp("q"), toolchain="mnn")
    return cifar_net.x, cifar_net.y, cifar_net.ref, res


def _agrees_with_fp32(ref: torch.Tensor, got: torch.Tensor) -> None:
    """Int8 predictions, not a worst-case logit: on this network MNN's int8 moves the largest logit by 0.4 of the
    largest (over the numerical gate's 0.35) while 91% of the top-1 answers and the accuracy (-0.4 points) hold."""
    cos = torch.nn.functional.cosine_similarity(ref, got, dim=1)
    agree = (ref.argmax(1) == got.argmax(1)).float().mean().item()
    assert cos.mean() > 0.97 and agree >= 0.88, (cos.mean(), agree)


def test_mnn_int8_is_mnns_own_quantization_and_agrees_with_fp32(mnn_int8, mnn_int8_cifar):
    _, x6, res = mnn_int8
    assert res.fp32.name == "ShuffleNetV2_x0_5.mnn" and res.int8.name == "ShuffleNetV2_x0_5.int8.mnn"
    assert artifact_bytes(res.int8) < artifact_bytes(res.fp32) / 3  # int8 weights
    q = read_metadata(res.int8)["quantization"]
    assert q["toolchain"].startswith("MNN 3.") and q["calibration_images"] == len(x6) == 6
    assert q["saturation_safe"] is True and q["calibration"] == "EMA"
    rt = runtime.load(res.int8, threads=1)
    assert rt.backend == "mnn" and rt.precision == "int8" and rt.class_names[0] == "tench"
    x, y, ref, res = mnn_int8_cifar
    rt = runtime.load(res.int8, threads=2)
    got = torch.cat([rt(x[i : i + 500]) for i in range(0, len(x), 500)])
    _agrees_with_fp32(ref, got)
    top1, top1_8 = (100.0 * (o.argmax(1) == y).float().mean().item() for o in (ref, got))
    assert top1 > 60 and top1 - top1_8 <= 1.5, (top1, top1_8)  # measured: 0.4
    assert float((got - ref).abs().max()) > 1e-3 * float(ref.abs().max())  # int8 arithmetic really ran, not fp32


def test_mnn_int8_does_not_saturate_on_a_cpu_without_vnni(mnn_int8_cifar, tmp_path):
    """MNN's 8-bit artifact on an emulated AVX2 CPU (no VNNI: where ONNX Runtime's 8-bit weights saturate): one image
    gives exactly this machine's logits (MNN widens int8 weights to int16 before multiplying); a batch (200 of the
    test images, all ten classes), which MNN runs through other kernels whose rounding differs by CPU, agrees with
    fp32 there as here."""
    from scripts.emulate_int8 import run_emulated, run_native

    x, _, ref, res = mnn_int8_cifar
    one = x[:1].numpy()
    native, emulated = run_native("mnn", res.int8, one), run_emulated("mnn", res.int8, one, tmp_path)
    assert abs(native - emulated).max() == 0.0
    _agrees_with_fp32(ref[::50], torch.from_numpy(run_emulated("mnn", res.int8, x[::50].numpy(), tmp_path)))


def test_mnn_runs_by_file_folder_and_cli_and_refuses_bad_files(mnn_int8, tmp_path, capsys):
    _, _, res = mnn_int8
    folder = tmp_path / "one"
    folder.mkdir()
    for f in (res.fp32, sidecar(res.fp32)):  # an export folder: the .mnn and its sidecar
        shutil.copy(f, folder / f.name)
    by_file, by_folder = runtime.load(res.fp32, threads=1), runtime.load(folder, threads=1)
    assert by_file.backend == by_folder.backend == "mnn" and by_folder.model_name == "ShuffleNetV2_x0_5"
    assert [p.indices for p in by_file.predict(PHOTOS)] == [p.indices for p in by_folder.predict(PHOTOS)]
    assert main(["predict", str(PHOTOS[0]), "--artifact", str(res.fp32), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["predictions"][0]["topk"][0]["name"]
    junk, cut = tmp_path / "cat.mnn", tmp_path / "cut.mnn"
    junk.write_bytes((DATA / "images" / "cat.jpg").read_bytes())
    cut.write_bytes(res.fp32.read_bytes()[: res.fp32.stat().st_size // 2])
    for path, msg in ((junk, "not an MNN model (.mnn: not a flatbuffer)"), (cut, "MNN could not load it")):
        with pytest.raises(ArtifactError, match=re.escape(msg)):
            runtime.load(path)
        assert main(["predict", str(PHOTOS[0]), "--artifact", str(path)]) == 2
        err = capsys.readouterr().err
        assert msg in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_mnn_is_an_auto_candidate_and_a_benchmark_peer():
    from mobilezoo.runtime.auto import candidates_for

    _engine("mnn")
    assert "mnn" in candidates_for("fp32", "cpu") and "mnn" in candidates_for("fp16", "cpu")
    assert "mnn" in backends.bench_defaults(full=True) and "mnn" not in backends.bench_defaults()
    assert "mnn" in backends.quantizers() and "mnn" in backends.formats()


# ---- Core ML -----------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def coreml(tmp_path_factory):
    """One small model's Core ML packages: fp32, fp16 and int8 (weights)."""
    eng = backends.get("coreml")
    if eng.available() is not None:
        pytest.skip(eng.available())
    root = tmp_path_factory.mktemp("coreml")
    model = calibrated("MobileNetV3_small_x0_35")
    return model, {
        "fp32": eng.export(model, root / "fp32"),
        "fp16": eng.export(model, root / "fp16", precision="fp16"),
        "int8": eng.quantize(model, _photos(model)[:2], root / "int8"),  # quantize_ptq's path: the MNN tests
    }


def _spec(path):
    from mobilezoo.backends.coreml import _ct

    return _ct().utils.load_spec(str(path))


def test_coreml_package_is_validated_and_carries_the_metadata(coreml):
    model, paths = coreml
    path = paths["fp32"]
    assert path.is_dir() and path.name == "MobileNetV3_small_x0_35.mlpackage"
    assert find_artifact(path.parent) == path and artifact_bytes(path) > 4 * 400_000  # the fp32 weights inside
    chk = check_export(model, path, [load_image(p) for p in PHOTOS])
    assert chk.validated.startswith("Core ML iOS16 ML program validated (not run)"), chk.line()
    assert "input (1, 3, 224, 224), logits (1, 1000)" in chk.validated and "all Core ML ops" in chk.validated
    meta = read_metadata(path)  # inside the package: its user-defined metadata
    assert meta["model_name"] == model.model_name and len(meta["class_names"]) == 1000
    assert meta["preprocess"]["mean"] == [0.485, 0.456, 0.406] and meta["precision"] == "fp32"
    desc = _spec(path).description
    assert desc.metadata.shortDescription.startswith("MobileNetV3_small_x0_35: image classifier, 1000 classes")
    assert [i.name for i in desc.input] == ["input"] and list(desc.input[0].type.multiArrayType.shape) == [
        1,
        3,
        224,
        224,
    ]
    assert "center crop 224" in desc.input[0].shortDescription
    assert [o.name for o in desc.output] == ["logits"]


def test_coreml_fp16_stores_half_weights_and_int8_stores_int8_weights(coreml):
    from mobilezoo.backends.coreml import weight_dtypes

    model, paths = coreml
    w32, w16, w8 = (weight_dtypes(_spec(paths[k])) for k in ("fp32", "fp16", "int8"))
    n = sum(w32.values())
    assert w32 == {"FLOAT32": n} and w16 == {"FLOAT16": n}  # every weight in half precision
    assert w8.get("INT8", 0) > 0.95 * n  # the weights are int8 (the smallest tensors stay float: coremltools' default)
    assert artifact_bytes(paths["fp16"]) < 0.6 * artifact_bytes(paths["fp32"])
    assert artifact_bytes(paths["int8"]) < 0.35 * artifact_bytes(paths["fp32"])
    for k in ("fp16", "int8"):
        assert read_metadata(paths[k])["precision"] == k
        assert "validated" in check_export(model, paths[k], []).validated
    q = read_metadata(paths["int8"])["quantization"]
    assert q["toolchain"].startswith("coremltools 9") and q["weights"].startswith("int8 per-channel symmetric")


def test_coreml_cannot_run_here_and_says_why(coreml, capsys):
    from mobilezoo.runtime.auto import candidates_for

    model, paths = coreml
    reason = backends.get("coreml").unsupported("fp32", "cpu")
    assert reason.startswith("Core ML runs only on Apple's operating systems (macOS, iOS), not Linux")
    with pytest.raises(backends.Unsupported, match=re.escape(reason)):
        runtime.load(paths["fp32"])
    with pytest.raises(ValueError, match=re.escape(reason)):
        runtime.load(model, backend="coreml")
    assert "coreml" not in candidates_for("fp32", "cpu") and "coreml" not in backends.bench_defaults(full=True)
    assert main(["predict", str(PHOTOS[0]), "--artifact", str(paths["int8"])]) == 2
    err = capsys.readouterr().err
    assert "Core ML runs only on Apple's" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_coreml_validation_refuses_what_core_ml_would_not_run(coreml, tmp_path):
    from mobilezoo.backends.coreml import _ct

    _, paths = coreml
    eng, ct = backends.get("coreml"), _ct()
    other = mz.create_model("MobileNetV3_small_x0_35", weights="random", num_classes=10)
    with pytest.raises(
        ArtifactError, match=re.escape("outputs [('logits', (1, 1000))], expected [('logits', (1, 10))]")
    ):
        eng.validate(paths["fp32"], other)  # not the model it claims to be
    spec = _spec(paths["fp32"])
    block = next(iter(spec.mlProgram.functions["main"].block_specializations.values()))
    next(op for op in block.operations if op.type == "reduce_mean").type = "torch_adaptive_pool"
    bad = tmp_path / "bad.mlpackage"
    weights = paths["fp32"] / "Data" / "com.apple.CoreML" / "weights"
    ct.models.MLModel(spec, weights_dir=str(weights), skip_model_load=True).save(str(bad))
    with pytest.raises(ArtifactError, match="ops that Core ML \\(iOS16\\) does not have: torch_adaptive_pool"):
        eng.validate(bad)
    (tmp_path / "file.mlpackage").write_text("not a folder")
    (tmp_path / "empty.mlpackage").mkdir()
    for path, msg in (("file.mlpackage", "a file, not a coreml artifact"), ("empty.mlpackage", "no readable Manifest")):
        with pytest.raises(ArtifactError, match=msg):
            runtime.load(tmp_path / path)
