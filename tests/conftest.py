"""Shared fixtures: the bundled data in ../shared, and the PaddleClas reference environment."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
SPEC = SHARED / "spec"
DATA = SHARED / "data"
PADDLE_REF_SCRIPT = Path(__file__).parent / "paddle_ref" / "make_reference.py"
CIFAR = DATA / "cifar10"
CIFAR_TRAINED = REPO / "tests" / "assets" / "ShuffleNetV2_x1_0_cifar10.ckpt"
"""ShuffleNetV2 x1.0 trained 2 epochs on all of CIFAR-10 (``benchmarks/train/cifar10_study.py``, the run behind
``benchmarks/results/cifar10_training``: 64.15% top-1), weights stored as fp16, optimizer state left out."""


def _paddle_python() -> Path | None:
    env = os.environ.get("MOBILEZOO_PADDLE_PYTHON")
    candidates = [Path(env)] if env else []
    candidates.append(REPO / ".cache" / "paddle-env" / "bin" / "python")
    return next((p for p in candidates if p.is_file()), None)


@pytest.fixture(scope="session")
def paddle_python() -> Path:
    py = _paddle_python()
    if py is None:
        msg = "PaddlePaddle reference environment missing: run `bash scripts/paddle_env.sh`"
        if os.environ.get("CI") or os.environ.get("MOBILEZOO_TESTS_STRICT"):
            pytest.fail(msg)  # the README's test command builds it; missing there is a failure, not a skip
        pytest.skip(msg)
    return py


@pytest.fixture(scope="session")
def paddle_refs(paddle_python: Path):
    """Build every PaddleClas constructor once (random weights), cached by the generator script's hash.

    Returns a function: constructor name -> folder with ``model.pdparams`` and ``io.npz``.
    """
    from mobilezoo.models import get_entry, list_models

    names = sorted({get_entry(n).paddle_arch for n in list_models() if get_entry(n).paddle_arch})
    key = hashlib.sha256(PADDLE_REF_SCRIPT.read_bytes()).hexdigest()[:12]
    root = REPO / ".cache" / "paddle_ref" / key
    todo = [n for n in names if not (root / n / "io.npz").is_file()]

    def build(name: str) -> tuple[str, subprocess.CompletedProcess]:
        cmd = [str(paddle_python), str(PADDLE_REF_SCRIPT), name, str(root / name)]
        return name, subprocess.run(cmd, capture_output=True, text=True, timeout=600)

    with ThreadPoolExecutor(max_workers=2) as pool:
        for name, res in pool.map(build, todo):
            if res.returncode != 0:
                pytest.fail(f"PaddleClas reference for {name} failed:\n{res.stderr[-3000:]}")
    return lambda name: root / name


@pytest.fixture(scope="session")
def reference_csv() -> dict:
    from mobilezoo.reference import reference_table

    return reference_table()


@pytest.fixture(scope="session")
def trained(tmp_path_factory):
    """A ShuffleNetV2 trained briefly on real CIFAR images (cifar10-mini), so int8 has real activations to keep:
    ``(data root, best checkpoint)``, made once per session (tests/test_quant.py, tests/test_executorch_litert.py)."""
    import torch

    from mobilezoo.train import TrainConfig, fit, load_recipe

    root = tmp_path_factory.mktemp("q")
    data = root / "data"
    mini = DATA / "cifar10-mini"
    for split, n in (("train", 40), ("test", 10)):
        for cls in sorted(p.name for p in (mini / split).iterdir()):
            (data / split / cls).mkdir(parents=True)
            for f in sorted((mini / split / cls).iterdir())[:n]:
                shutil.copy(f, data / split / cls / f.name)
    model = "ShuffleNetV2_x0_5"
    rec = load_recipe("cifar10", model, ["epochs=3", "batch_size=32", "warmup_epochs=0.5", "lr=0.2"])
    # the same model whatever ran before in this one process: a different intra-op thread count (an engine opened
    # with threads=1 sets torch's) changes the float summation order, hence this near-chance model's int8 agreement
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("MOBILEZOO_HOME", str(root / "home"))  # the decoded-dataset cache stays in the test's folder
            res = fit(TrainConfig(model, data, root / "run", rec, progress=False, tensorboard=False))
    finally:
        torch.set_num_threads(threads)
    return data, res.best


@pytest.fixture(scope="session")
def cifar_net(tmp_path_factory):
    """:data:`CIFAR_TRAINED` with the 10,000 CIFAR-10 test images, their labels and its fp32 logits on them: a network
    whose logits mean something, so an engine's agreement with fp32 (int8, fp16) is a property of the engine and the
    quantization, not of a near-chance network's near-flat logits (which move with the CPU that trained them)."""
    from types import SimpleNamespace

    import torch

    import mobilezoo as mz
    from mobilezoo.train import build_eval_loader, model_from_checkpoint

    model = model_from_checkpoint(CIFAR_TRAINED)
    pre = mz.data.eval_preprocess(model)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MOBILEZOO_HOME", str(tmp_path_factory.mktemp("home")))
        split = mz.data.datasets.open_split(CIFAR, "eval")
        xs, ys = zip(*[(b[0], b[1]) for b in build_eval_loader(split, pre, "memory", torch.device("cpu"), False)])
    x, y = torch.cat(xs), torch.cat(ys)
    with torch.no_grad():
        ref = torch.cat([model(x[i : i + 500]) for i in range(0, len(x), 500)])
    return SimpleNamespace(model=model, pre=pre, x=x, y=y, ref=ref)


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mobilezoo", *args], capture_output=True, text=True, timeout=600)


def pytest_report_header(config):
    from mobilezoo.measure.machine import machine_key

    return f"machine: {machine_key()}"


def pytest_unconfigure(config):
    """The CPU the suite ran on, printed again after the final counts, even with -q (int8 and engine results depend
    on its ISA: the last lines of a CI log say which machine it was)."""
    from mobilezoo.measure.machine import machine_key

    reporter = config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line(f"machine: {machine_key()}")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Under the README's test command (``MOBILEZOO_TESTS_STRICT=1``, set by scripts/test.sh) a skipped test is a
    failure: a missing dependency must not pass silently. Platform skips (``skipif``) stay skips."""
    outcome = yield
    rep = outcome.get_result()
    strict = os.environ.get("MOBILEZOO_TESTS_STRICT") == "1"
    if strict and rep.skipped and not hasattr(rep, "wasxfail") and item.get_closest_marker("skipif") is None:
        rep.outcome = "failed"
        rep.longrepr = f"skipped under MOBILEZOO_TESTS_STRICT=1 (a missing dependency fails the suite): {rep.longrepr}"


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector):
    """The same for a whole test file skipped at import (``pytest.importorskip`` at module level)."""
    outcome = yield
    rep = outcome.get_result()
    if os.environ.get("MOBILEZOO_TESTS_STRICT") == "1" and rep.skipped:
        rep.outcome = "failed"
        rep.longrepr = f"skipped under MOBILEZOO_TESTS_STRICT=1 (a missing dependency fails the suite): {rep.longrepr}"
