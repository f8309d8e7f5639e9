"""``backend="auto"``: picks the faster of two (fake) backends, never a wrong one, caches the choice, and measures
again when the key changes or when asked."""

import json
import time
from typing import ClassVar

import pytest
import torch

import mobilezoo.measure.machine as machine
from mobilezoo import runtime
from mobilezoo.bench.grid import prepare_model
from mobilezoo.runtime import auto

TINY = "MobileNetV3_small_x0_35"


@pytest.fixture(autouse=True)
def _cache_home(tmp_path, monkeypatch):
    monkeypatch.setenv("MOBILEZOO_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("MOBILEZOO_AUTO_REMEASURE", raising=False)


@pytest.fixture(scope="module")
def model():
    return prepare_model(TINY, "random", input_size=64)


class Fake:
    """A fake backend: computes the model (or garbage), sleeping ``delay`` seconds per call; counts builds."""

    builds: ClassVar[dict] = {}

    def __init__(self, name, model, delay=0.0, wrong=False):
        self.name, self.model, self.delay, self.wrong = name, model, delay, wrong

    def factory(self):
        def make():
            Fake.builds[self.name] = Fake.builds.get(self.name, 0) + 1
            return self

        return make

    def __call__(self, x):
        if self.delay:
            time.sleep(self.delay)
        if self.wrong:
            return torch.zeros(x.shape[0], 1000)
        if getattr(self, "out", None) is None:  # choose() always passes the same input: compute it once
            with torch.inference_mode():
                self.out = self.model(x)
        return self.out


def _builders(model, **delays):
    return {n: Fake(n, model, d).factory() for n, d in delays.items()}


def test_picks_the_faster_backend_and_caches_it(model):
    Fake.builds = {}
    builders = _builders(model, slow=0.02, fast=0.0)
    choice, rt = auto.choose(model, threads=1, builders=builders, budget_s=0.3)
    assert choice.backend == "fast" and choice.measured and rt.name == "fast"
    assert set(choice.timings_ms) == {"slow", "fast"} and choice.timings_ms["slow"] > choice.timings_ms["fast"]
    doc = json.loads(auto.cache_path().read_text())
    (entry,) = doc.values()
    assert entry["backend"] == "fast" and entry["key"]["model"] == TINY and entry["key"]["threads"] == 1
    assert entry["key"]["machine"] == machine.machine_key() and "onnxruntime" in entry["key"]["versions"]
    # second time: from the cache, nothing built or measured
    again, rt2 = auto.choose(model, threads=1, builders=_builders(model, slow=0.02, fast=0.0))
    assert again.backend == "fast" and not again.measured and rt2 is None
    assert Fake.builds == {"slow": 1, "fast": 1}


def test_never_picks_a_wrong_backend(model):
    builders = _builders(model, correct=0.005)
    builders["wrong_but_instant"] = Fake("wrong_but_instant", model, wrong=True).factory()

    def broken():
        raise RuntimeError("cannot load")

    builders["broken"] = broken
    choice, _ = auto.choose(model, threads=1, builders=builders, budget_s=0.1)
    assert choice.backend == "correct"
    assert "wrong answer" in choice.rejected["wrong_but_instant"]
    assert "cannot load" in choice.rejected["broken"]


def test_cache_is_keyed_and_can_be_invalidated(model, monkeypatch):
    def run(**kw):
        return auto.choose(model, builders=_builders(model, a=0.0, b=0.01), budget_s=0.1, **kw)[0]

    assert run(threads=1).measured
    assert not run(threads=1).measured
    assert run(threads=2).measured  # other thread count: another key
    assert run(threads=1, batch_size=2).measured  # other batch size
    assert run(threads=1, remeasure=True).measured  # asked to
    monkeypatch.setenv("MOBILEZOO_AUTO_REMEASURE", "1")
    assert run(threads=1).measured
    monkeypatch.delenv("MOBILEZOO_AUTO_REMEASURE")
    assert not run(threads=1).measured
    real_versions = machine.versions
    monkeypatch.setattr(machine, "versions", lambda: {**real_versions(), "openvino": "0.0.1"})
    assert run(threads=1).measured  # a new library version measures again
    monkeypatch.setattr(machine, "machine_key", lambda: "another CPU")
    assert run(threads=1).measured  # so does another machine
    auto.clear_cache()
    assert not auto.cache_path().exists()


def test_key_ignores_weight_values_but_not_architecture(model):
    other = prepare_model(TINY, "random", input_size=64, seed=1)  # same architecture, other weights
    assert auto.architecture_fingerprint(model) == auto.architecture_fingerprint(other)
    bigger = prepare_model("MobileNetV3_small_x0_5", "random", input_size=64)
    assert auto.architecture_fingerprint(model) != auto.architecture_fingerprint(bigger)


def test_candidates(monkeypatch):
    from mobilezoo import backends

    assert auto.candidates_for("fp32", "cpu")[-1] == "torch"
    assert "onnxruntime" not in auto.candidates_for("bf16", "cpu")
    with pytest.raises(ValueError, match="quantize"):
        auto.candidates_for("int8", "cpu")
    monkeypatch.setattr(backends.get("openvino"), "available", lambda: "openvino is not installed")
    assert "openvino" not in auto.candidates_for("fp32", "cpu")  # missing packages are skipped


def test_load_auto_end_to_end(model):
    """The real candidates on a tiny model: the chosen runtime agrees with PyTorch on any batch size."""
    rt = runtime.load(model, backend="auto", threads=1)
    assert rt.auto.backend in auto.candidates_for("fp32", "cpu") and rt.auto.measured
    assert set(rt.auto.timings_ms) | set(rt.auto.rejected) == set(auto.candidates_for("fp32", "cpu"))
    ref = runtime.load(model, backend="torch")
    for n in (1, 3):  # the measured batch size (static fast path) and another one
        x = torch.randn(n, 3, 224, 224)
        assert torch.allclose(rt(x), ref(x), rtol=1e-3, atol=1e-3 * float(ref(x).abs().max()))
    cached = runtime.load(model, backend="auto", threads=1)
    assert not cached.auto.measured and cached.backend == rt.backend


def test_a_measurement_says_so_on_stderr_and_a_cached_choice_is_silent(model, capsys):
    auto.choose(model, threads=1, builders=_builders(model, slow=0.01, fast=0.0), budget_s=0.1)
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith(f"mobilezoo: measuring backends for auto (slow, fast; {TINY}, batch 1, fp32, cpu)")
    assert err[0].endswith(f"cached in {auto.cache_path()} ...") and err[1].startswith("mobilezoo: auto chose fast (")
    auto.choose(model, threads=1, builders=_builders(model, slow=0.01, fast=0.0))
    assert capsys.readouterr().err == ""


def test_auto_measures_a_cifar_checkpoint_at_the_size_its_candidates_are_exported_at(trained, tmp_path, monkeypatch):
    """A CIFAR-10 checkpoint's default_cfg keeps input_size 224 but its eval crop is 32: auto measured the candidates
    on 224x224 inputs while exporting them at 32x32, so every engine with a fixed input size was rejected and eager
    torch won (seen in the peers run: ShuffleNetV2 at 32x32, auto 8.9 ms against LiteRT's 1.7 ms)."""
    monkeypatch.setenv("MOBILEZOO_HOME", str(tmp_path / "home"))
    from mobilezoo.data import eval_preprocess
    from mobilezoo.train import model_from_checkpoint

    _, ckpt = trained
    model = model_from_checkpoint(ckpt)
    assert eval_preprocess(model).crop_size == 32 and model.default_cfg["input_size"][-1] == 224
    monkeypatch.setattr(auto, "candidates_for", lambda precision, device: ["onnxruntime", "torch"])
    rt = runtime.load(model, backend="auto", threads=1, remeasure=True)
    assert "onnxruntime" in rt.auto.timings_ms and "onnxruntime" not in rt.auto.rejected, rt.auto.rejected
