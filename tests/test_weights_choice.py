"""One weights vocabulary (``mobilezoo.weights.choice``) across ``create_model``, ``runtime.load`` and the commands:
the published weights by default, ``weights="random"`` / ``--random-weights`` only when asked, a checkpoint path of
every kind everywhere, a name without published weights refused, and the same one-line checkpoint errors from every
entry point.

"Published" weights here are a stand-in for a finished download: a converted file pinned in the cache index, exactly
what ``fetch_pretrained`` leaves behind (the download itself is ``tests/test_download.py``'s).
"""

from __future__ import annotations

import json
import pickle
import socket
from pathlib import Path

import pytest
import torch

import mobilezoo as mz
from mobilezoo import runtime
from mobilezoo.cli import main

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
PHOTO = DATA / "images" / "cat.jpg"
MINI = DATA / "cifar10-mini"
NAME = "ShuffleNetV2_x0_25"
NO_WEIGHTS = "ShuffleNetV1_g1_x0_5"
CLASSES = ["apple", "banana", "cherry"]


@pytest.fixture(autouse=True)
def home(tmp_path, monkeypatch) -> Path:
    """An empty cache, and a weights host that refuses at once: nothing here may reach the network."""
    from mobilezoo.weights import catalog

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("MOBILEZOO_WEIGHTS_HOST", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("MOBILEZOO_HOME", str(tmp_path / "home"))
    catalog._catalog.cache_clear()
    yield tmp_path / "home"
    catalog._catalog.cache_clear()


def publish(name: str = NAME) -> torch.nn.Module:
    """Put seeded weights where a finished download of ``name``'s published checkpoint leaves them."""
    from safetensors.torch import save_file

    from mobilezoo.weights import hub
    from mobilezoo.weights.catalog import weights_info

    torch.manual_seed(1)
    model = mz.create_model(name, weights="random").eval()
    path = hub.cache_dir() / "converted" / f"{name}.safetensors"
    path.parent.mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path), metadata={"model_name": name})
    hub._pin(weights_info(name).url, {"safetensors_sha256": hub._sha256(path)})
    return model


def cli(capsys, *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    rc = main(list(argv))
    out = capsys.readouterr()
    return rc, out.out, out.err


def same_state(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


X = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))


# ---------------------------------------------------------------------------------------- the default is published


def test_published_weights_are_the_default_everywhere(capsys, tmp_path):
    pub = publish()
    with torch.no_grad():
        ref = pub(X)
    for kw in ({}, {"weights": "published"}, {"pretrained": True}):
        assert same_state(mz.create_model(NAME, **kw), pub), kw
    # runtime.load by name: the published weights, so two loads give the same answer (they were random before)
    a, b = runtime.load(NAME, backend="torch"), runtime.load(NAME, backend="torch")
    torch.testing.assert_close(a(X), ref, rtol=1e-4, atol=1e-5)  # BN folded: equal to rounding
    assert torch.equal(a(X), b(X))
    want = a.predict([PHOTO], topk=3)[0].indices
    rc, out, _ = cli(capsys, "predict", str(PHOTO), "--model", NAME, "--backend", "torch", "--topk", "3", "--json")
    assert rc == 0 and [t["index"] for t in json.loads(out)["predictions"][0]["topk"]] == want
    from mobilezoo.bench.grid import prepare_model

    assert same_state(prepare_model(NAME), pub)  # bench
    rc, out, _ = cli(capsys, "export", NAME, "-o", str(tmp_path / "x"))
    x224 = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(0))  # the artifact's input size
    with torch.no_grad():
        ref224 = pub(x224)
    assert rc == 0
    torch.testing.assert_close(runtime.load(tmp_path / "x" / f"{NAME}.onnx")(x224), ref224, rtol=1e-4, atol=1e-5)


def test_random_weights_only_when_asked(capsys):
    from mobilezoo.weights.hub import DownloadError

    with pytest.raises(DownloadError, match="could not download"):  # no cache, no network: never silently random
        runtime.load(NAME, backend="torch")
    pub = publish()
    for kw in ({"weights": "random"}, {"pretrained": False}):
        assert not same_state(mz.create_model(NAME, **kw), pub)
    rc, out, err = cli(capsys, "predict", str(PHOTO), "--model", NAME, "--random-weights", "--backend", "torch")
    assert rc == 0 and out.startswith(f"{PHOTO}: ")
    with pytest.raises(ValueError, match=r"^weights='random' and pretrained=True disagree: give one of them$"):
        mz.create_model(NAME, weights="random", pretrained=True)
    with pytest.raises(ValueError, match=r"^unknown weights 'rnadom': use 'published' \(the default\), 'random'"):
        mz.create_model(NAME, weights="rnadom")
    rc, _, err = cli(capsys, "predict", str(PHOTO), "--model", NAME, "--random-weights", "--ckpt", "x.pth")
    assert rc == 2 and err == "mobilezoo: error: --random-weights and --ckpt exclude each other: give one\n"


def test_a_name_without_published_weights_is_an_error_everywhere(capsys, tmp_path):
    from mobilezoo.weights import NoPublishedWeightsError

    msg = (
        f"{NO_WEIGHTS} has no published weights (PaddleClas has no ShuffleNetV1): pass weights='random' (CLI: "
        "--random-weights) for an untrained network, or a checkpoint path (--ckpt PATH: .pdparams, .pt/.pth, "
        ".safetensors, a save_pretrained folder or a training .ckpt)"
    )
    for call in (lambda: mz.create_model(NO_WEIGHTS), lambda: runtime.load(NO_WEIGHTS, backend="torch")):
        with pytest.raises(NoPublishedWeightsError) as e:
            call()
        assert str(e.value) == msg
    photos, out = str(DATA / "images"), str(tmp_path / "o")
    for argv in (
        ["predict", photos, "--model", NO_WEIGHTS],
        ["export", NO_WEIGHTS, "-o", out],
        ["quantize", "--model", NO_WEIGHTS, "--calib", photos, "-o", out],
        ["serve", "--model", NO_WEIGHTS],
        ["bench", "--models", NO_WEIGHTS, "-o", out],
    ):
        rc, _, err = cli(capsys, *argv)
        assert (rc, err) == (2, f"mobilezoo: error: {msg}\n"), argv[0]
    assert mz.create_model(NO_WEIGHTS, weights="random").model_name == NO_WEIGHTS


# ---------------------------------------------------------------------------------- every checkpoint kind, everywhere


def _paddle_state(model: torch.nn.Module) -> dict:
    """``model``'s tensors under PaddleClas's names and layouts (Linear weights stored [in, out])."""
    from mobilezoo.weights.convert import _expand

    entry = mz.get_entry(model.model_name)
    own = model.state_dict()
    out = {}
    for ours, (theirs, kind) in _expand(model, entry.paddle_keymap(model), {}).items():
        t = own[ours]
        out[theirs] = (t.t() if kind == "linear" else t).contiguous().numpy()
    return out


def write_checkpoint(kind: str, model: torch.nn.Module, where: Path) -> Path:
    from safetensors.torch import save_file

    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    if kind == "pdparams":
        p = where / "m.pdparams"
        p.write_bytes(pickle.dumps(_paddle_state(model), protocol=4))
    elif kind == "pth":
        torch.save(state, p := where / "m.pth")
    elif kind == "safetensors":
        save_file(state, str(p := where / "m.safetensors"), metadata={"model_name": NAME})
    elif kind == "folder":
        p = mz.save_pretrained(model, where / "m", class_names=CLASSES)
    else:  # what the trainer writes, with the fields a consumer reads
        from mobilezoo.train import Recipe, save_checkpoint

        p = save_checkpoint(
            {"model_name": NAME, "num_classes": 3, "class_names": CLASSES, "model_kwargs": {},
             "default_cfg": {}, "recipe": Recipe().to_dict(), "model": state},
            where / "m.ckpt",
        )  # fmt: skip
    return p


KINDS = ("pdparams", "pth", "safetensors", "folder", "ckpt")
RECORDS_ITS_MODEL = {"safetensors", "folder", "ckpt"}


@pytest.fixture(scope="module")
def trained() -> torch.nn.Module:
    torch.manual_seed(3)
    return mz.create_model(NAME, weights="random", num_classes=3).eval()


@pytest.mark.parametrize("kind", KINDS)
def test_every_checkpoint_kind_loads_everywhere(kind, trained, tmp_path, capsys):
    p = write_checkpoint(kind, trained, tmp_path)
    m = mz.create_model(NAME, weights=p)
    assert m.num_classes == 3 and same_state(m, trained)  # the class count comes from the checkpoint
    with torch.no_grad():
        ref = trained(X)
    torch.testing.assert_close(runtime.load(NAME, weights=p, backend="torch")(X), ref, rtol=1e-4, atol=1e-5)
    want = runtime.load(trained, backend="torch").predict([PHOTO], topk=3)[0].indices
    args = ["predict", str(PHOTO), "--ckpt", str(p), "--backend", "torch", "--topk", "3", "--json"]
    rc, out, _ = cli(capsys, *args, "--model", NAME)
    assert rc == 0 and [t["index"] for t in json.loads(out)["predictions"][0]["topk"]] == want
    rc, out, err = cli(capsys, *args)  # no --model: the checkpoint says which model it holds, or the error says so
    if kind in RECORDS_ITS_MODEL:
        assert rc == 0 and [t["index"] for t in json.loads(out)["predictions"][0]["topk"]] == want
        torch.testing.assert_close(runtime.load(p, backend="torch")(X), ref, rtol=1e-4, atol=1e-5)  # the path alone
    else:
        assert (rc, err) == (2, f"mobilezoo: error: {p} does not say which model it holds: give the model name "
                                "(--model NAME)\n")  # fmt: skip
    from mobilezoo.bench.grid import prepare_model

    assert same_state(prepare_model(NAME, str(p)), trained)  # bench --ckpt


@pytest.mark.parametrize(
    "name", ["MobileNetV1_x0_25", "MobileNetV2_x0_25", "MobileNetV3_small_x0_35", "ShuffleNetV2_x0_25", "GhostNet_x0_5"]
)
def test_a_paddle_checkpoints_class_count_is_read_from_its_classifier(name, tmp_path):
    model = mz.create_model(name, weights="random", num_classes=7).eval()
    p = tmp_path / "m.pdparams"
    p.write_bytes(pickle.dumps(_paddle_state(model), protocol=4))
    loaded = mz.create_model(name, weights=p)
    assert loaded.num_classes == 7 and same_state(loaded, model)


def test_export_quantize_serve_and_bench_take_a_checkpoint(trained, tmp_path, capsys, monkeypatch):
    p = write_checkpoint("ckpt", trained, tmp_path)
    rc, out, _ = cli(capsys, "export", "--ckpt", str(p), "-o", str(tmp_path / "x"))  # the model from the .ckpt
    assert rc == 0 and f"{NAME}.onnx" in out
    assert runtime.load(tmp_path / "x" / f"{NAME}.onnx").class_names == CLASSES
    folder = write_checkpoint("folder", trained, tmp_path)
    args = ["quantize", "--ckpt", str(folder), "--calib", str(DATA / "images"), "-n", "4", "-o", str(tmp_path / "q")]
    rc, out, err = cli(capsys, *args, "--json")
    report = json.loads(out)
    assert rc == 0 and report["model"] == NAME and report["calibration"]["images"] == 4
    import uvicorn

    apps = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: apps.append(app))
    rc, _, _ = cli(capsys, "serve", "--ckpt", str(p), "--backend", "torch", "--threads", "1")
    from fastapi.testclient import TestClient

    with TestClient(apps[0]) as client:
        info = client.get("/v1/models").json()["models"][0]
    assert rc == 0 and info["name"] == NAME and info["num_classes"] == 3
    rc, _, err = cli(capsys, "bench", "--models", f"{NAME},GhostNet_x0_5", "--ckpt", str(p), "-o", str(tmp_path))
    assert (rc, err) == (2, f"mobilezoo: error: a checkpoint ({p}) is for one model, not 2\n")


# ------------------------------------------------------------------------- the same one-line errors from everywhere


class _Evil:
    def __reduce__(self):
        return (eval, ("1",))


def bad_checkpoint(case: str, trained: torch.nn.Module, where: Path) -> tuple[Path, str]:
    """A checkpoint that cannot be used, and the exact error every entry point must give for it."""
    if case == "missing":
        return where / "gone.pth", f"checkpoint not found: {where / 'gone.pth'}"
    if case == "unknown":
        p = where / "model.onnx"
        p.write_bytes(b"\x08\x07" + b"not a checkpoint" * 8)
        return p, (f"{p}: unknown checkpoint format (expected .pdparams, .pt/.pth, .safetensors, a save_pretrained "
                   "folder or a training .ckpt)")  # fmt: skip
    if case == "unsafe":
        torch.save({"model": trained.state_dict(), "x": _Evil()}, p := where / "evil.pth")
        return p, (f"{p}: refused: the pickle asks for the Python object eval, and only tensors and plain "
                   "data are loaded (weights_only)")  # fmt: skip
    if case == "truncated":
        full = write_checkpoint("ckpt", trained, where).read_bytes()
        (p := where / "cut.ckpt").write_bytes(full[: len(full) // 2])
        return p, (f"{p}: corrupt or truncated PyTorch checkpoint (PytorchStreamReader failed reading zip archive: "
                   "failed finding central directory)")  # fmt: skip
    p = write_checkpoint("ckpt", trained, where)  # another model's
    return p, f"{p} holds a {NAME}, not a GhostNet_x0_5"


@pytest.mark.parametrize("case", ["missing", "unknown", "unsafe", "truncated", "wrong_model"])
def test_checkpoint_errors_are_the_same_one_line_everywhere(case, trained, tmp_path, capsys):
    from mobilezoo.train import evaluate_checkpoint

    model = "GhostNet_x0_5"
    p, msg = bad_checkpoint(case, trained, tmp_path)
    for call in (
        lambda: mz.create_model(model, weights=p),
        lambda: runtime.load(model, weights=p, backend="torch"),
        lambda: evaluate_checkpoint(p, MINI, model=model),
    ):
        with pytest.raises((ValueError, FileNotFoundError)) as e:
            call()
        assert str(e.value) == msg
    photos, out = str(DATA / "images"), str(tmp_path / "o")
    for argv in (
        ["predict", photos, "--model", model, "--ckpt", str(p)],
        ["export", model, "--ckpt", str(p), "-o", out],
        ["quantize", "--model", model, "--ckpt", str(p), "--calib", photos, "-o", out],
        ["serve", "--model", model, "--ckpt", str(p)],
        ["bench", "--models", model, "--ckpt", str(p), "-o", out, "--backends", "torch", "--no-progress"],
        ["eval", "--model", model, "--ckpt", str(p), "--data", str(MINI)],
    ):
        rc, _, err = cli(capsys, *argv)
        assert (rc, err) == (2, f"mobilezoo: error: {msg}\n"), argv[0]


def test_a_state_dict_of_another_model_names_its_mismatches(trained, tmp_path):
    p = write_checkpoint("pth", trained, tmp_path)
    with pytest.raises(ValueError) as e:
        mz.create_model("GhostNet_x0_5", weights=p)
    msg = str(e.value)
    assert msg.startswith(f"{p} does not fit GhostNet_x0_5 (torch, read as mobilezoo names): ") and "\n" not in msg
    assert " missing: stem.conv.weight, " in msg and " unexpected: stem.conv.conv.weight, " in msg
