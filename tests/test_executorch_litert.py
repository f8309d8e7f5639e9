"""ExecuTorch (``.pte``, XNNPACK delegate) and LiteRT (``.tflite``): one width of every family exported and checked
against eager PyTorch on the bundled photos; fp16 and int8 (each engine's own quantizer, calibrated on real images)
on a network trained on real CIFAR-10 images; metadata, broken files; LiteRT int8 on an emulated CPU without VNNI.
(``tests/test_runtime.py::test_every_engine...`` runs both through ``runtime.load`` by name, ``auto`` and an export
folder.)"""

from __future__ import annotations

import shutil
from types import SimpleNamespace

import numpy as np
import pytest
import torch

import mobilezoo as mz
from mobilezoo import backends, runtime
from mobilezoo.backends import artifact
from mobilezoo.data import load_image
from mobilezoo.export import check_export, export
from mobilezoo.measure.gate import check
from mobilezoo.quant import calibration_images, quantize_ptq

from .conftest import CIFAR, DATA
from .test_runtime import PHOTOS, calibrated

ENGINES = ("executorch", "litert")
FAMILIES = [  # one width of every family (MobileNetV3_large: test_runtime's every-engine test)
    "MobileNetV1_x0_25",
    "MobileNetV2_x0_25",
    "MobileNetV3_small_x0_35",
    "ShuffleNetV1_g3_x0_5",
    "ShuffleNetV2_x0_25",
    "GhostNet_x0_5",
]


def _engine(name: str):
    eng = backends.get(name)
    if eng.available() is not None:
        pytest.skip(eng.available())  # a failure under scripts/test.sh (MOBILEZOO_TESTS_STRICT)
    return eng


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MOBILEZOO_HOME", str(tmp_path / "home"))


@pytest.mark.parametrize("engine", ENGINES)
def test_registered_for_export_quantize_auto_and_bench(engine):
    """The registry is the only list: export formats, quantize toolchains, auto's candidates, the full benchmark."""
    from mobilezoo.quant import TOOLCHAINS
    from mobilezoo.runtime.auto import candidates_for

    eng = _engine(engine)
    assert eng.format in backends.formats() and engine in backends.quantizers() and engine in TOOLCHAINS
    assert engine in candidates_for("fp32", "cpu") and engine not in candidates_for("bf16", "cpu")
    assert engine in backends.bench_defaults(full=True) and engine not in backends.bench_defaults()
    assert eng.unsupported("int8", "cpu") is None and "runs on cpu" in eng.unsupported("fp32", "cuda")


@pytest.mark.parametrize("name", FAMILIES)
@pytest.mark.parametrize("engine", ENGINES)
def test_one_width_per_family_gives_eager_top5_on_the_photos(engine, name, tmp_path):
    eng = _engine(engine)
    model = calibrated(name)
    path = export(model, eng.format, tmp_path)  # what `mobilezoo export --format` calls
    assert path.name == f"{name}{eng.suffix}"
    meta = artifact.read_metadata(path)
    assert meta["model_name"] == name and len(meta["class_names"]) == 1000 and meta["precision"] == "fp32"
    assert meta["preprocess"]["crop_size"] == 224
    assert artifact.sidecar(path).is_file() == (engine == "executorch")  # LiteRT keeps it inside the .tflite
    chk = check_export(model, path, [load_image(p) for p in PHOTOS])  # 6 photos: 6 calls of the batch-1 graph
    assert chk.backend == engine
    assert chk.max_abs_diff < 1e-3 * chk.max_abs_logit and chk.top5_agreement == 1.0, chk.line()
    rt = runtime.load(path, threads=1)
    ref = runtime.load(model, backend="torch")
    assert rt.backend == engine and rt.model_name == name
    assert [p.indices for p in rt.predict(PHOTOS)] == [p.indices for p in ref.predict(PHOTOS)]


@pytest.fixture(scope="module", params=ENGINES)
def built(request, cifar_net, tmp_path_factory):
    """fp32, fp16 and int8 artifacts of conftest's CIFAR-10-trained ShuffleNetV2 (a network whose logits mean
    something) on one engine, int8 calibrated on 64 training images, and 1,000 of the test images (all ten classes)
    with the fp32 logits."""
    eng = _engine(request.param)
    model = cifar_net.model
    out = tmp_path_factory.mktemp(request.param)
    calib = calibration_images(CIFAR / "train", cifar_net.pre, n=64)
    q = quantize_ptq(model, calib, out / "int8", toolchain=request.param)
    fp16 = eng.export(model, out / "fp16", precision="fp16", input_size=32) if "fp16" in eng.precisions else None
    weights = sum(m.weight.numel() for m in model.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)))
    return SimpleNamespace(
        engine=eng,
        fp32=q.fp32,
        int8=q.int8,
        fp16=fp16,
        x=cifar_net.x[::10],
        ref=cifar_net.ref[::10],
        calib=len(calib),
        weights=weights,
    )


def test_fp16_artifact_stores_half_weights_and_agrees(built, tmp_path):
    if built.fp16 is None:  # ExecuTorch: refused with the reason, in one line, at every entry point
        reason = built.engine.unsupported("fp16", "cpu")
        assert "crash" in reason and "\n" not in reason
        with pytest.raises(ValueError, match="fp16 is not offered"):
            export(torch.nn.Identity(), built.engine.format, tmp_path, fp16=True)
        with pytest.raises(ValueError, match="fp16 is not offered"):
            runtime.load("ShuffleNetV2_x0_5", weights="random", backend=built.engine.name, precision="fp16")
        return
    rt = runtime.load(built.fp16, threads=1)
    assert rt.backend == built.engine.name and rt.precision == "fp16"
    saved = artifact.artifact_bytes(built.fp32) - artifact.artifact_bytes(built.fp16)
    assert saved > 1.8 * built.weights  # every conv/linear weight stored in 2 bytes instead of 4
    got = rt(built.x)
    assert check(built.ref, got, "fp16").ok, check(built.ref, got, "fp16").message
    assert (got.argmax(1) == built.ref.argmax(1)).float().mean() >= 0.95


def test_int8_artifact_runs_on_its_engine_and_agrees_with_fp32(built):
    rt8 = runtime.load(built.int8)
    assert rt8.backend == built.engine.name and rt8.precision == "int8"
    assert rt8.class_names[:2] == ["airplane", "automobile"]
    q = artifact.read_metadata(built.int8)["quantization"]
    assert q["calibration_images"] == built.calib and q["saturation_safe"] is True
    saved = artifact.artifact_bytes(built.fp32) - artifact.artifact_bytes(built.int8)
    assert saved > 2.5 * built.weights  # every conv/linear weight in 1 byte instead of 4 (+ scales, int32 biases)
    got = rt8(built.x)
    cos = torch.nn.functional.cosine_similarity(built.ref, got, dim=1)
    assert cos.min() > 0.9, cos.min()  # as tests/test_quant.py asks of ONNX Runtime's int8
    assert (got.argmax(1) == built.ref.argmax(1)).float().mean() >= 0.9
    fp32 = runtime.load(built.fp32, threads=1)(built.x)
    assert check(built.ref, fp32, "fp32").ok  # and the same engine's fp32 artifact beside it


def test_metadata_travels_and_broken_files_get_one_line(built, tmp_path):
    eng = built.engine
    alone = tmp_path / "alone" / built.fp32.name
    alone.parent.mkdir()
    shutil.copy(built.fp32, alone)  # the file without its sidecar
    rt = runtime.load(alone, threads=1)
    if eng.name == "litert":  # the metadata is inside the .tflite
        assert rt.model_name == "ShuffleNetV2_x1_0" and rt.class_names[:2] == ["airplane", "automobile"]
        assert rt.preprocess.crop_size == 32
    else:  # ExecuTorch's lives in the sidecar: without it, the name from the file and the ImageNet defaults
        assert artifact.sidecar(built.fp32).is_file() and rt.model_name == "ShuffleNetV2_x1_0"
    jpeg = tmp_path / f"photo{eng.suffix}"
    shutil.copy(DATA / "images" / "cat.jpg", jpeg)
    cut = tmp_path / f"cut{eng.suffix}"
    cut.write_bytes(built.fp32.read_bytes()[: built.fp32.stat().st_size // 2])
    for bad, why in ((jpeg, "not an ExecuTorch program|not a LiteRT model"), (cut, "truncated")):
        with pytest.raises(artifact.ArtifactError, match=why) as e:
            runtime.load(bad)
        assert "\n" not in str(e.value)


@pytest.mark.parametrize("built", ["litert"], indirect=True)  # ExecuTorch's runtime imports torch: too slow in qemu
def test_litert_int8_is_full_integer_and_exact_without_vnni(built, tmp_path):
    """The int8 .tflite takes and gives int8 tensors; an AVX2 CPU without VNNI (emulated) computes exactly what this
    one does: XNNPACK widens int8 to 16 bits before it multiplies, no saturating pair sums."""
    from ai_edge_litert.interpreter import Interpreter
    from scripts.emulate_int8 import run_emulated, run_native

    interp = Interpreter(model_path=str(built.int8))
    assert interp.get_input_details()[0]["dtype"] == np.int8 and interp.get_output_details()[0]["dtype"] == np.int8
    x = built.x[:8].numpy()
    native, emulated = run_native("litert", built.int8, x), run_emulated("litert", built.int8, x, tmp_path)
    assert np.abs(native - emulated).max() <= 1e-6 * np.abs(native).max()
    assert torch.allclose(runtime.load(built.int8)(built.x[:8]), torch.from_numpy(native), atol=1e-6)


def test_executorch_sessions_with_different_thread_counts_interleave(tmp_path):
    """XNNPACK's thread pool is one per process and a loaded ExecuTorch program keeps a pointer into it: resizing the
    pool under a live program crashed the process (SIGSEGV on its next call; how `auto` crashed CI when a 1-thread and
    a default-thread session met). Sessions of 1 and 2 threads, called in turn, all give eager's answer."""
    _engine("executorch")
    model = mz.create_model("ShuffleNetV2_x0_25", weights="random", num_classes=10).eval()
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        ref = model(x)
    path = export(model, "executorch", tmp_path, input_size=64)
    one, two = runtime.load(path, threads=1), runtime.load(path, threads=2)
    for rt in (one, two, one, two, one):
        g = check(ref, rt(x), "fp32")
        assert g.ok, g.message
