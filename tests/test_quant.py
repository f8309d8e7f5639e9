"""Int8 PTQ and QAT: a real int8 artifact (int8 weights, QDQ graph, metadata) that the runtime runs, agreeing with
the fp32 model (PTQ) or the fake-quantized model it was trained as (QAT)."""

from __future__ import annotations

import json
from pathlib import Path

import onnx
import pytest
import torch

import mobilezoo as mz
from mobilezoo.cli import main
from mobilezoo.quant import artifact_bytes, calibration_images, quantize_ptq
from mobilezoo.quant.qat import ActFakeQuant, QATConv2d, prepare_qat, qat_model_from_checkpoint, quantize_qat
from mobilezoo.train import (
    TrainConfig,
    TrainingInterrupted,
    build_eval_loader,
    fit,
    load_checkpoint,
    load_recipe,
    model_from_checkpoint,
)

from .conftest import CIFAR

ROOT = Path(__file__).resolve().parents[1]
MINI = ROOT.parent / "shared" / "data" / "cifar10-mini"
MODEL = "ShuffleNetV2_x0_5"  # the network of conftest.py's `trained` fixture


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


@pytest.fixture(scope="module")
def cifar_ptq(cifar_net, tmp_path_factory):
    """The default PTQ artifact (portable target, min-max) of conftest's CIFAR-trained network per toolchain,
    calibrated on 256 training images, made once per toolchain."""
    calib = calibration_images(CIFAR / "train", cifar_net.pre, n=256)
    made: dict = {}

    def make(toolchain: str):
        if toolchain not in made:
            out = tmp_path_factory.mktemp(toolchain)
            made[toolchain] = quantize_ptq(cifar_net.model, calib, out, toolchain=toolchain)
        return made[toolchain]

    return make


def _chunked(fn, x: torch.Tensor, n: int = 500) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([fn(x[i : i + n]) for i in range(0, len(x), n)])


@pytest.mark.parametrize("toolchain", ["onnxruntime", "nncf"])
def test_ptq_loses_at_most_half_a_point_on_a_cifar10_trained_network(cifar_net, cifar_ptq, toolchain):
    """What the README says of int8 on ShuffleNetV2 (benchmarks/results/quant_cifar10: PTQ within 0.3 points), held
    on a real checkpoint: the default artifact (portable target, min-max) on all 10,000 test images."""
    if toolchain == "nncf":
        pytest.importorskip("nncf")
    x, y, ref = cifar_net.x, cifar_net.y, cifar_net.ref
    assert len(x) == 10000
    got = _chunked(mz.runtime.load(cifar_ptq(toolchain).int8), x)
    top1, top1_8 = (100.0 * (o.argmax(1) == y).float().mean().item() for o in (ref, got))
    agree = (ref.argmax(1) == got.argmax(1)).float().mean().item()
    assert top1 > 60, top1  # the network the claim is about, not a near-chance one
    assert top1 - top1_8 <= 0.5 and agree >= 0.95, (toolchain, top1, top1_8, agree)


def _test_set(data, pre):
    loader = build_eval_loader(mz.data.datasets.open_split(data, "eval"), pre, "memory", torch.device("cpu"), False)
    xs, ys = zip(*[(b[0], b[1]) for b in loader])
    return torch.cat(xs), torch.cat(ys)


def _int8_weight_bytes(path: Path) -> tuple[int, int]:
    inits = onnx.load(str(path)).graph.initializer
    int8 = sum(len(t.raw_data) for t in inits if t.data_type == onnx.TensorProto.INT8)
    fp32 = sum(len(t.raw_data) + 4 * len(t.float_data) for t in inits if t.data_type == onnx.TensorProto.FLOAT)
    return int8, fp32


def test_qat_artifact_is_int8_agrees_with_fake_quant_model_and_keeps_accuracy(trained, tmp_path):
    data, ckpt = trained
    model = model_from_checkpoint(ckpt)
    pre = mz.data.eval_preprocess(model)
    calib = calibration_images(data / "train", pre, n=128)
    res = quantize_qat(ckpt, data, calib, tmp_path / "qat", overrides=["epochs=2"], device="cpu")
    assert res.int8.name == f"{MODEL}.qat.int8.onnx" and (res.run / "best.ckpt").is_file()
    proto = onnx.load(str(res.int8))
    ops = [n.op_type for n in proto.graph.node]
    assert {"QuantizeLinear", "DequantizeLinear"} <= set(ops) and "BatchNormalization" not in ops
    conv_w = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Conv2d))
    int8_bytes, fp32_bytes = _int8_weight_bytes(res.int8)
    assert int8_bytes >= 0.95 * conv_w and fp32_bytes < 0.1 * int8_bytes  # weights int8; fp32 left: scales only
    assert res.size_ratio > 1.8  # (a tiny model: graph overhead; initializers alone are ~3.4x smaller)
    rt8 = mz.runtime.load(res.int8)
    assert rt8.backend == "onnxruntime" and rt8.precision == "int8"
    meta = mz.export.read_onnx_metadata(res.int8)
    assert meta["quantization"]["method"] == "qat" and meta["class_names"][:2] == ["airplane", "automobile"]

    x, y = _test_set(data, pre)
    qmodel = qat_model_from_checkpoint(res.run / "best.ckpt")
    with torch.no_grad():
        fake = qmodel(x)
    got = rt8(x)
    cos = torch.nn.functional.cosine_similarity(fake, got, dim=1)
    agree = (fake.argmax(1) == got.argmax(1)).float().mean().item()
    # the same int8 arithmetic up to rounding-boundary flips (x / s in onnxruntime, x * (1 / s) in torch)
    # (the fixture model is near chance, its logits close together: a few samples flip; measured 0.99+/0.90+)
    assert cos.mean() > 0.98 and agree >= 0.85, (cos.mean(), cos.min(), agree)

    ptq = mz.runtime.load(quantize_ptq(model, calib, tmp_path / "ptq").int8)
    qat_top1 = (got.argmax(1) == y).float().mean().item() * 100
    ptq_top1 = (ptq(x).argmax(1) == y).float().mean().item() * 100
    print(
        f"\nQAT int8 top-1 {qat_top1:.1f}%  PTQ int8 top-1 {ptq_top1:.1f}%  "
        f"cos mean {cos.mean():.4f} min {cos.min():.4f}  agree {agree}"
    )
    assert qat_top1 >= ptq_top1 - 5  # 100 test images: 5 points is noise

    # the default target is portable: 7-bit weights, and an AVX2 CPU without VNNI computes the same logits
    from scripts.emulate_int8 import run_emulated, run_native

    from mobilezoo.export.int8 import SAFE_MAX, int8_weight_max

    assert int8_weight_max(res.int8) <= SAFE_MAX and meta["quantization"]["saturation_safe"] is True
    native, emulated = (
        run_native("onnxruntime", res.int8, x[:40].numpy()),
        run_emulated("onnxruntime", res.int8, x[:40].numpy(), tmp_path),
    )
    assert abs(native - emulated).max() <= 1e-5 * abs(native).max()


def test_model_transform_checkpoints_round_trip_and_resume(trained, tmp_path):
    """The engine's model_transform hook: QAT state (fused convs, observer ranges) saves, resumes and reloads."""
    data, ckpt = trained
    ck = load_checkpoint(ckpt)
    calib = calibration_images(data / "train", mz.data.eval_preprocess(model_from_checkpoint(ck)), n=32)

    def transform(m):
        m.load_state_dict(ck["model"])
        return prepare_qat(m, calib)

    rec = load_recipe("cifar10", MODEL, ["epochs=1", "batch_size=64", "lr=0.002", "amp=none"])
    cfg = TrainConfig(MODEL, data, tmp_path / "run", rec, progress=False, tensorboard=False, model_transform=transform)
    with pytest.raises(TrainingInterrupted) as e:
        fit(TrainConfig(**{**cfg.__dict__, "max_steps": 2}))
    last = load_checkpoint(e.value.checkpoint)
    assert last["step_in_epoch"] == 2 and any(k.endswith("act_in.count") for k in last["model"])
    res = fit(TrainConfig(**{**cfg.__dict__, "resume": e.value.checkpoint}))
    assert res.best is not None
    q = qat_model_from_checkpoint(res.best)
    assert sum(isinstance(m, QATConv2d) for m in q.modules()) > 10
    # every quantizer the model applies was calibrated and trained (a conv reading a quantizer's output leaves its
    # own input quantizer unused)
    unused = {id(m.act_in) for m in q.modules() if getattr(m, "in_shared", False)}
    used = [m for m in q.modules() if isinstance(m, ActFakeQuant) and id(m) not in unused]
    assert unused and all(float(m.count) > 0 for m in used)


def _ort_optimized_ops(path: Path, tmp_path: Path, batch: int) -> dict[str, int]:
    """Node counts of the graph ONNX Runtime actually runs (its optimized model written out), compiled for a static
    batch size as the ``onnxruntime`` backend compiles it."""
    import collections

    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.add_free_dimension_override_by_name("batch", batch)
    so.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    return collections.Counter(n.op_type for n in onnx.load(so.optimized_model_filepath).graph.node)


def _joins_read_quantized_tensors(proto) -> bool:
    """Every Add, Mul (an SE block's scale) and Concat of the graph reads DequantizeLinear outputs only: the int8
    form ONNX Runtime fuses, and the one OpenVINO runs right (a gate unquantized after its Clip, it did not)."""
    consts = {t.name for t in proto.graph.initializer}
    producer = {o: n.op_type for n in proto.graph.node for o in n.output}
    joins = [n for n in proto.graph.node if n.op_type in ("Add", "Mul", "Concat")]
    return bool(joins) and all(producer.get(i) == "DequantizeLinear" for n in joins for i in n.input if i not in consts)


@pytest.mark.parametrize(
    ("name", "most"),
    [("MobileNetV1_x0_25", 5), ("MobileNetV2_x0_25", 5), ("ShuffleNetV2_x0_25", 30), ("GhostNet_x0_5", 60)],
)
def test_qat_quantizes_each_tensor_once_where_onnxruntime_fuses_it(name, most, tmp_path):
    """After a ReLU/ReLU6 (folded into the quantization), at a residual sum or a concat (int8 Add/Concat), and not
    again at the consumer: ONNX Runtime runs the artifact as int8 kernels with a few standalone Q/DQ nodes left. The
    scheme of older QAT checkpoints (``legacy``: every conv's input and output quantized, before the activation)
    leaves a Q/DQ pair per conv as separate nodes - about half of those artifacts' time on this CPU. Both artifacts
    compute what their fake-quant model computes."""
    from mobilezoo.quant.qat import export_qat_onnx

    x = torch.randn(32, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    ops = {}
    for legacy in (False, True):
        net = mz.create_model(name, weights="random", num_classes=10, small_input=1).eval()
        q = prepare_qat(net, calib=x, legacy=legacy).eval()
        path = export_qat_onnx(q, tmp_path / f"{legacy}.onnx", input_size=32)
        ops[legacy] = _ort_optimized_ops(path, tmp_path, batch=8)
        if name.startswith(("MobileNetV2", "GhostNet")):  # residual sums, ghost concats, SE scales: only now
            assert _joins_read_quantized_tensors(onnx.load(path)) != legacy, name
        with torch.no_grad():
            want = q(x[:8])
        got = mz.runtime.load(path, backend="onnxruntime", threads=1, batch_size=8)(x[:8])
        assert (want - got).abs().max() <= 1e-3 * want.abs().max(), legacy  # the model it was trained as
    convs = sum(isinstance(m, torch.nn.Conv2d) for m in mz.create_model(name, weights="random").modules())
    new, old = ({k: c[k] for k in ("QLinearConv", "QuantizeLinear", "DequantizeLinear", "Relu")} for c in ops.values())
    assert new["QLinearConv"] == old["QLinearConv"] == convs, ops  # every conv int8 either way
    assert new["Relu"] == 0, ops  # folded into the quantization
    standalone = new["QuantizeLinear"] + new["DequantizeLinear"]
    assert standalone <= most and old["QuantizeLinear"] + old["DequantizeLinear"] >= 2 * standalone, ops


def test_qat_checkpoints_keep_their_quantization_scheme():
    """A QAT checkpoint rebuilds with the scheme it was trained with: each tensor quantized once now; every conv's
    input and output, before its activation, for checkpoints written before (their state has no ``out_after_act``)."""
    name = "MobileNetV2_x0_25"

    def scheme(q):
        convs = [(n, m) for n, m in q.named_modules() if isinstance(m, QATConv2d)]
        blocks = {n for n, m in q.named_modules() if hasattr(m, "out_quant")}
        return {n for n, m in convs if m._after_act}, {n for n, m in convs if m.in_shared}, blocks

    q = prepare_qat(mz.create_model(name, weights="random", num_classes=10))
    after, shared, blocks = scheme(q)
    n_convs = sum(isinstance(m, QATConv2d) for m in q.modules())
    assert 0 < len(after) < n_convs and 0 < len(shared) < n_convs and blocks  # conv_pwl: no act; the stem: the image
    ck = {"model_name": name, "num_classes": 10, "model": q.state_dict(), "class_names": []}
    assert scheme(qat_model_from_checkpoint(ck)) == (after, shared, blocks)
    legacy = prepare_qat(mz.create_model(name, weights="random", num_classes=10), legacy=True)
    old = {k: v for k, v in legacy.state_dict().items() if not k.endswith("out_after_act")}
    assert scheme(qat_model_from_checkpoint({**ck, "model": old})) == (set(), set(), set())


def test_quantize_cli_reports_accuracy_and_refuses_qat_clearly(trained, tmp_path, capsys):
    data, ckpt = trained
    args = ["quantize", "--model", MODEL, "--ckpt", str(ckpt), "--calib", str(data / "train"), "-n", "64"]
    assert main([*args, "--eval", str(data), "-o", str(tmp_path), "--json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["int8_bytes"] < rep["fp32_bytes"] and abs(rep["top1_drop"]) <= 10
    assert rep["fp32_top1"] == pytest.approx(
        mz.train.evaluate_checkpoint(ckpt, data).top1
    )  # the fp32 ONNX reproduces the checkpoint's accuracy
    assert main([*args, "--method", "qat", "-o", str(tmp_path)]) == 2  # qat fine-tunes: it needs --data
    assert "--method qat fine-tunes a trained model" in capsys.readouterr().err
    qat = ["--method", "qat", "--data", str(data), "--override", "epochs=1", "--device", "cpu"]
    assert main([*args, *qat, "-o", str(tmp_path / "qat"), "--json"]) == 0
    rep = json.loads(capsys.readouterr().out)  # the training log went to stderr
    assert rep["method"] == "qat" and rep["int8"].endswith(".qat.int8.onnx") and rep["int8_bytes"] < rep["fp32_bytes"]
    assert Path(rep["qat_run"], "best.ckpt").is_file() and rep["qat_best_top1"] > 0


def test_nncf_ptq_is_an_openvino_int8_ir_that_agrees_with_fp32(trained, cifar_net, cifar_ptq, tmp_path, capsys):
    ov = pytest.importorskip("openvino")
    model = cifar_net.model
    calib = calibration_images(CIFAR / "train", cifar_net.pre, n=16)
    with pytest.raises(ValueError, match="nncf toolchain estimates ranges itself"):
        quantize_ptq(model, calib, tmp_path, method="percentile", toolchain="nncf")
    with pytest.raises(ValueError, match="unknown quantization toolchain 'tensorrt'"):
        quantize_ptq(model, calib, tmp_path, toolchain="tensorrt")
    res = cifar_ptq("nncf")
    assert res.int8.name == "ShuffleNetV2_x1_0.int8.xml" and res.int8.with_suffix(".bin").is_file()
    ops = [op.get_type_name() for op in ov.Core().read_model(str(res.int8)).get_ops()]
    convs = sum(t in ("Convolution", "GroupConvolution") for t in ops)
    assert ops.count("FakeQuantize") >= convs > 0  # every conv has its quantized input (and int8 weights)
    assert artifact_bytes(res.fp32) > 3.0 * res.int8.with_suffix(".bin").stat().st_size  # int8 weights in the .bin
    assert res.size_ratio > 1.5  # the whole artifact: the .xml text is a large part of so small a network
    rt8 = mz.runtime.load(res.int8)
    assert rt8.backend == "openvino" and rt8.precision == "int8" and rt8.class_names[:2] == ["airplane", "automobile"]
    ref, got = cifar_net.ref[::10], _chunked(rt8, cifar_net.x[::10])  # 1,000 test images, all ten classes
    cos = torch.nn.functional.cosine_similarity(ref, got, dim=1)
    assert cos.min() > 0.9 and (ref.argmax(1) == got.argmax(1)).float().mean() >= 0.95, cos.min()
    # the CLI: the artifact's format picks the backend for --eval
    data, ckpt = trained
    args = ["quantize", "--model", MODEL, "--ckpt", str(ckpt), "--calib", str(data / "train"), "-n", "32"]
    assert main([*args, "--toolchain", "nncf", "--eval", str(data), "-o", str(tmp_path / "cli"), "--json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["toolchain"] == "nncf" and rep["int8"].endswith(".int8.xml") and rep["size_ratio"] > 1.5
    assert abs(rep["top1_drop"]) <= 10


# --- int8 on CPUs without VNNI -------------------------------------------------------------------------------------
# AVX2's vpmaddubsw adds two uint8 x int8 products into a saturating int16: 8-bit weights overflow it, 7-bit weights
# (|q| <= 64, the default `portable` target) cannot. Each artifact also runs under `qemu-x86_64 -cpu Haswell` (an
# AVX2 CPU without AVX-512/VNNI), so both kinds of machine are checked whichever one runs the tests.

ENGINE = {"onnxruntime": "onnxruntime", "nncf": "openvino"}


def _no_vnni_here() -> bool:
    from mobilezoo.measure.machine import int8_dot_saturates

    return int8_dot_saturates()


def _amx_int8_here() -> bool:
    from mobilezoo.measure.machine import cpu_features

    return "amx_int8" in cpu_features()


@pytest.mark.parametrize("toolchain", ["onnxruntime", "nncf"])
def test_portable_int8_computes_the_same_without_vnni_and_8bit_does_not(trained, tmp_path, toolchain):
    from scripts.emulate_int8 import run_emulated, run_native

    from mobilezoo.export.int8 import SAFE_MAX, Int8SaturationError, int8_weight_max
    from mobilezoo.measure.gate import check

    if toolchain == "nncf":
        pytest.importorskip("nncf")
    data, ckpt = trained
    model = model_from_checkpoint(ckpt)
    pre = mz.data.eval_preprocess(model)
    calib = calibration_images(data / "train", pre, n=128)
    portable = quantize_ptq(model, calib, tmp_path / "p", toolchain=toolchain).int8
    vnni = quantize_ptq(model, calib, tmp_path / "v", toolchain=toolchain, target="vnni").int8
    assert int8_weight_max(portable) <= SAFE_MAX < int8_weight_max(vnni) == 127
    rec = mz.runtime.load(portable)  # metadata says how it was built
    meta = mz.export.read_onnx_metadata(portable) if toolchain == "onnxruntime" else mz.export.read_sidecar(portable)
    assert rec.precision == "int8" and meta["quantization"]["target"] == "portable"
    assert meta["quantization"]["saturation_safe"] is True and meta["quantization"]["weight_max_abs"] <= SAFE_MAX

    x, _ = _test_set(data, pre)
    x = x[:40].numpy()
    engine = ENGINE[toolchain]
    native_p, emulated_p = run_native(engine, portable, x), run_emulated(engine, portable, x, tmp_path)
    # 7-bit weights: the AVX2 CPU computes exactly what this one does - except where OpenVINO runs its AMX int8
    # kernels, which round differently from its AVX2/VNNI ones (measured on a Sapphire Rapids-class CPU: 0.5% of the
    # largest logit apart, bit-exact there under ONEDNN_MAX_CPU_ISA=AVX512_CORE_VNNI); the 8-bit artifact's
    # saturation below shows far beyond that bound
    amx = toolchain == "nncf" and _amx_int8_here()
    assert abs(native_p - emulated_p).max() <= (0.02 if amx else 1e-5) * abs(native_p).max(), f"AMX int8: {amx}"
    emulated_v = run_emulated(engine, vnni, x, tmp_path)
    if _no_vnni_here():  # this machine has no VNNI: the 8-bit artifact is refused, not run wrong
        with pytest.raises(Int8SaturationError, match="saturate on this CPU"):
            mz.runtime.load(vnni)
    else:  # a VNNI machine computes the 8-bit artifact exactly; the emulated AVX2 CPU saturates and differs: by 100x
        # the 7-bit bound at least (how much depends on the trained weights, which differ between CPUs: 0.8-5.0% of
        # the largest logit on an AMD EPYC 25/17, more than 5% on the Intel VMs)
        native_v = run_native(engine, vnni, x)
        assert abs(native_v - emulated_v).max() > 1e-3 * abs(native_v).max()
    if toolchain == "onnxruntime":  # and the numerical gate (bench, auto) rejects the saturated answer
        with torch.no_grad():
            ref = model(torch.from_numpy(x)).numpy()
        g_p, g_v = check(ref, emulated_p, "int8"), check(ref, emulated_v, "int8")
        assert g_p.ok and g_p.rel_diff < g_v.rel_diff, (g_p, g_v)  # the saturated answer is the worse one


def test_runtime_refuses_8bit_int8_where_it_would_saturate(trained, tmp_path, monkeypatch, capsys):
    import mobilezoo.measure.machine as machine
    from mobilezoo.export.int8 import Int8SaturationError

    data, ckpt = trained
    model = model_from_checkpoint(ckpt)
    calib = calibration_images(data / "train", mz.data.eval_preprocess(model), n=32)
    vnni = quantize_ptq(model, calib, tmp_path / "v", target="vnni").int8
    portable = quantize_ptq(model, calib, tmp_path / "p").int8
    monkeypatch.setattr(machine, "int8_dot_saturates", lambda: True)  # as on an AVX2-only CPU
    with pytest.raises(Int8SaturationError) as e:
        mz.runtime.load(vnni)
    msg = str(e.value)
    assert "\n" not in msg and "int8 weights up to |127| saturate on this CPU" in msg and "--target portable" in msg
    assert mz.runtime.load(portable).precision == "int8"
    assert main(["predict", str(MINI / "test"), "--artifact", str(vnni)]) != 0  # the CLI: one line, no traceback
    err = capsys.readouterr().err
    assert "saturate on this CPU" in err and "Traceback" not in err
    monkeypatch.setenv("MOBILEZOO_INT8_ALLOW_SATURATION", "1")  # asked for explicitly: runs
    assert mz.runtime.load(vnni).precision == "int8"
    monkeypatch.delenv("MOBILEZOO_INT8_ALLOW_SATURATION")
    monkeypatch.setattr(machine, "int8_dot_saturates", lambda: False)  # VNNI/AMX or ARM: both run
    assert mz.runtime.load(vnni).precision == "int8"
    with pytest.raises(ValueError, match="unknown int8 target 'avx2'"):
        quantize_ptq(model, calib, tmp_path / "x", target="avx2")


def test_cpu_saturation_rule(monkeypatch):
    import mobilezoo.measure.machine as machine

    monkeypatch.setattr(machine.platform, "machine", lambda: "x86_64")
    for flags, saturates in (
        (["avx2"], True),
        (["avx2", "avx512f"], True),  # AVX-512 without VNNI (Skylake-SP) uses vpmaddubsw too
        (["avx2", "avx512f", "avx512_vnni"], False),
        (["avx2", "avx_vnni"], False),
        (["avx2", "amx_int8"], False),
    ):
        monkeypatch.setattr(machine, "cpu_features", lambda f=flags: f)
        assert machine.int8_dot_saturates() is saturates, flags
    monkeypatch.setattr(machine.platform, "machine", lambda: "aarch64")
    monkeypatch.setattr(machine, "cpu_features", lambda: ["asimd"])
    assert machine.int8_dot_saturates() is False
