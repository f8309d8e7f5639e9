"""Layer-for-layer parity with the real paddleclas package.

PaddleClas builds each network with random weights (BN statistics and biases randomised too) in its own process,
saves it with ``paddle.save(model.state_dict(), f)`` and records its eval logits; here, with no paddle imported, the
``.pdparams`` loads through ``create_model(name, pretrained=f)`` and must give the same logits.
"""

import pickle
import sys

import numpy as np
import pytest
import torch

import mobilezoo as mz
from mobilezoo.models import get_entry, list_models
from mobilezoo.weights import CheckpointMismatchError

pytestmark = pytest.mark.paddle

NAMES = sorted({get_entry(n).paddle_arch for n in list_models() if get_entry(n).paddle_arch})


def _rel_err(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


@pytest.mark.parametrize("paddle_name", NAMES)
def test_same_logits_as_paddleclas(paddle_refs, paddle_name):
    assert "paddle" not in sys.modules  # the .pdparams is read without paddle in this process
    ref = paddle_refs(paddle_name)
    io = np.load(ref / "io.npz")
    model = mz.create_model(paddle_name, pretrained=ref / "model.pdparams").eval()
    assert sum(p.numel() for p in model.parameters()) == int(io["trainable"])
    with torch.no_grad():
        out = model(torch.from_numpy(io["x"])).numpy()
    assert _rel_err(out, io["logits"]) < 1e-4
    assert "paddle" not in sys.modules
    # the comparison must be able to fail: the reference depends on its input, and swapping two same-shaped BN
    # running variances (what a misnamed tensor would do) moves the logits far beyond the tolerance
    assert _rel_err(io["logits"][0], io["logits"][1]) > 0.05
    sd = model.state_dict()
    by_shape: dict = {}
    for k in (k for k in sd if k.endswith("running_var")):
        by_shape.setdefault(tuple(sd[k].shape), []).append(k)
    a, b = next(v for v in by_shape.values() if len(v) > 1)[:2]
    sd[a], sd[b] = sd[b].clone(), sd[a].clone()
    model.load_state_dict(sd)
    with torch.no_grad():
        assert _rel_err(model(torch.from_numpy(io["x"])).numpy(), io["logits"]) > 1e-3


def _rewrite(src, dst, edit):
    with open(src, "rb") as f:
        state = pickle.load(f)  # our own test file, written by paddle.save moments ago
    edit(state)
    with open(dst, "wb") as f:
        pickle.dump(state, f, protocol=4)


def test_misnamed_tensor_is_reported(paddle_refs, tmp_path):
    ref = paddle_refs("MobileNetV3_large_x1_0")
    bad = tmp_path / "renamed.pdparams"
    _rewrite(
        ref / "model.pdparams",
        bad,
        lambda s: s.__setitem__("blocks.3.mid_se.conv1.weigth", s.pop("blocks.3.mid_se.conv1.weight")),
    )
    with pytest.raises(CheckpointMismatchError) as ei:
        mz.create_model("MobileNetV3_large_x1_0", pretrained=bad)
    msg = str(ei.value)
    assert "1 missing: blocks.3.mid_se.conv1.weight" in msg and "1 unexpected: blocks.3.mid_se.conv1.weigth" in msg


def test_wrong_model_lists_shapes(paddle_refs):
    with pytest.raises(CheckpointMismatchError) as ei:
        mz.create_model("MobileNetV3_large_x0_5", pretrained=paddle_refs("MobileNetV3_large_x1_0") / "model.pdparams")
    assert "wrong shape" in str(ei.value) and "conv.conv.weight [16, 3, 3, 3]" in str(ei.value)
    with pytest.raises(CheckpointMismatchError) as ei:
        mz.create_model("GhostNet_x1_0", pretrained=paddle_refs("MobileNetV2") / "model.pdparams")
    assert "missing" in str(ei.value) and "unexpected" in str(ei.value)


def test_other_class_count_keeps_backbone_and_says_so(paddle_refs, caplog):
    ref = paddle_refs("ShuffleNetV2_x0_5")
    full = mz.create_model("ShuffleNetV2_x0_5", pretrained=ref / "model.pdparams")
    with caplog.at_level("WARNING"):
        ten = mz.create_model("ShuffleNetV2_x0_5", num_classes=10, pretrained=ref / "model.pdparams")
    assert "re-initialised" in caplog.text
    assert ten.head.fc.out_features == 10
    for k, v in full.state_dict().items():
        if not k.startswith("head.fc"):
            assert torch.equal(v, ten.state_dict()[k]), k


def test_convert_cli_from_pdparams(paddle_refs, tmp_path):
    from mobilezoo.cli import main

    ref = paddle_refs("GhostNet_x0_5")
    out = tmp_path / "ghost"
    assert main(["convert", str(ref / "model.pdparams"), "--model", "GhostNet_x0_5", "-o", str(out)]) == 0
    io = np.load(ref / "io.npz")
    m = mz.create_model("GhostNet_x0_5", pretrained=out).eval()
    with torch.no_grad():
        assert _rel_err(m(torch.from_numpy(io["x"])).numpy(), io["logits"]) < 1e-4
