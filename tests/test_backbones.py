"""Backbones: ``create_model(name, features_only=True)`` returns the stride-4/8/16/32 feature maps (timm's
``features_only``), with ``feature_info`` and ``forward_intermediates``, and loads the full network's weights."""

import hashlib
import subprocess
from collections import OrderedDict

import numpy as np
import pytest
import torch
from torch import nn

import mobilezoo as mz
from mobilezoo.models.features import FeatureNet

from .conftest import PADDLE_REF_SCRIPT, REPO


def _model(name: str, **kwargs) -> nn.Module:
    torch.manual_seed(0)
    return mz.create_model(name, weights="random", **kwargs).eval()


def _halved(n: int, times: int) -> int:
    """Every stride-2 conv/pool here pads (k-1)//2, so each halving rounds up."""
    for _ in range(times):
        n = -(-n // 2)
    return n


# one of each family (the smallest width)
FAMILIES = [
    "MobileNetV1_x0_25",
    "MobileNetV2_x0_25",
    "MobileNetV3_small_x0_35",
    "ShuffleNetV2_x0_25",
    "ShuffleNetV1_g1_x0_5",
    "GhostNet_x0_5",
]


@pytest.mark.parametrize("name", FAMILIES)
def test_feature_maps_at_224_and_non_square(name):
    # every architecture's maps, at 224 and non-square: tests/test_models.py (forward_intermediates, the same
    # traversal, and the features-only view of each)
    net = _model(name, features_only=True)
    assert net.feature_info.reduction() == [4, 8, 16, 32] and net.feature_info.out_indices == (1, 2, 3, 4)
    assert not hasattr(net, "head") and not hasattr(net, "final_conv")
    with torch.no_grad():
        for h, w in ((224, 224), (150, 200)):  # 200 x 150: not square, not a multiple of 32
            maps = net(torch.randn(1, 3, h, w))
            want = [(1, c, _halved(h, k), _halved(w, k)) for c, k in zip(net.feature_info.channels(), (2, 3, 4, 5))]
            assert [tuple(m.shape) for m in maps] == want, (h, w)


def test_levels_come_from_the_family_tables():
    # the channels PaddleDetection's backbones take at strides 8/16/32, and timm's for the same tables
    def levels(name):
        return [(f["num_chs"], f["reduction"], f["module"]) for f in _model(name).feature_info]

    assert levels("MobileNetV3_large_x1_0") == [
        (16, 2, "blocks.0"),
        (24, 4, "blocks.2"),
        (40, 8, "blocks.5"),
        (112, 16, "blocks.11"),
        (160, 32, "blocks.14"),
    ]
    assert [c for c, _, _ in levels("MobileNetV3_small_x1_0")] == [16, 16, 24, 48, 96]
    assert [c for c, _, _ in levels("MobileNetV2_x1_0")] == [16, 24, 32, 96, 320]
    assert [c for c, _, _ in levels("ShuffleNetV2_x1_0")] == [24, 24, 116, 232, 464]
    assert [m for _, _, m in levels("ShuffleNetV2_x1_0")][:2] == ["stem.conv", "stem"]
    assert [c for c, _, _ in levels("GhostNet_x1_3")] == [20, 32, 52, 144, 208]
    assert [(c, r) for c, r, _ in levels("MobileNetV1_x0_25")] == [(16, 2), (32, 4), (64, 8), (128, 16), (256, 32)]
    # small_input (stride-1 stem): the same tables, every reduction halved
    small = _model("MobileNetV3_small_x1_0", small_input=True)
    assert [f["reduction"] for f in small.feature_info] == [1, 2, 4, 8, 16]


@pytest.mark.parametrize("name", ["MobileNetV3_small_x0_35", "ShuffleNetV2_x0_25", "GhostNet_x0_5"])
def test_feature_maps_are_the_named_modules_outputs(name):
    full = _model(name)
    net = _model(name, features_only=True, out_indices=(0, 1, 2, 3, 4))
    seen = {}
    for f in full.feature_info:
        full.get_submodule(f["module"]).register_forward_hook(lambda m, i, o, k=f["module"]: seen.setdefault(k, o))
    x = torch.randn(1, 3, 96, 128)
    with torch.no_grad():
        full(x)
        maps = net(x)
        final, inter = full.forward_intermediates(x)
        only = full.forward_intermediates(x, indices=2, stop_early=True, intermediates_only=True)
        torch.testing.assert_close(final, full.forward_features(x), rtol=0, atol=0)
    for m, f in zip(maps, full.feature_info):
        torch.testing.assert_close(m, seen[f["module"]], rtol=0, atol=0)
    for a, b in zip(inter, maps):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert [o.shape for o in only] == [m.shape for m in maps[-2:]]
    with pytest.raises(ValueError, match="stop_early needs intermediates_only"):
        full.forward_intermediates(x, stop_early=True)


def test_out_indices_prune_and_errors():
    net = _model("MobileNetV2_x0_5", features_only=True, out_indices=(0, 2))
    assert net.feature_info.reduction() == [2, 8] and len(net.blocks) == 3  # the blocks after stride 8 are gone
    assert _model("MobileNetV2_x0_5", features_only=True, out_indices=2).feature_info.reduction() == [16, 32]
    with pytest.raises(ValueError, match=r"out_indices \(5,\): MobileNetV2_x0_5 has 5 feature levels \(0: stride 2"):
        mz.create_model("MobileNetV2_x0_5", weights="random", features_only=True, out_indices=(5,))
    with pytest.raises(ValueError, match="pass it with features_only=True"):
        mz.create_model("MobileNetV2_x0_5", weights="random", out_indices=(1, 2))


def test_full_state_dict_minus_head_loads_strictly(tmp_path):
    full = _model("MobileNetV3_large_x0_5")
    net = _model("MobileNetV3_large_x0_5", features_only=True)
    sd = full.state_dict()
    dropped = {k.split(".")[0] for k in set(sd) - set(net.state_dict())}
    assert dropped == {"final_conv", "head"}
    net.load_state_dict({k: v for k, v in sd.items() if k.split(".")[0] not in dropped}, strict=True)
    # a save_pretrained folder of the full (fine-tuned) network loads into the backbone through create_model
    mz.save_pretrained(full, tmp_path / "ft")
    loaded = mz.create_model("MobileNetV3_large_x0_5", weights=tmp_path / "ft", features_only=True)
    for k, v in loaded.state_dict().items():
        assert torch.equal(v, sd[k]), k


def _paddle_ref(paddle_python, name: str):
    """One PaddleClas reference (random weights, real paddle.save file) in the cache the parity tests share."""
    key = hashlib.sha256(PADDLE_REF_SCRIPT.read_bytes()).hexdigest()[:12]
    out = REPO / ".cache" / "paddle_ref" / key / name
    if not (out / "io.npz").is_file():
        cmd = [str(paddle_python), str(PADDLE_REF_SCRIPT), name, str(out)]
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        assert res.returncode == 0, res.stderr[-3000:]
    return out


@pytest.mark.parametrize("name", ["MobileNetV3_small_x0_35", "ShuffleNetV2_x0_25"])
def test_paddleclas_weights_load_into_the_backbone(paddle_python, name):
    ref = _paddle_ref(paddle_python, name)
    io = np.load(ref / "io.npz")
    net = mz.create_model(name, weights=ref / "model.pdparams", num_classes=1000, features_only=True).eval()
    full = mz.create_model(name, weights=ref / "model.pdparams", num_classes=1000).eval()
    x = torch.from_numpy(io["x"])
    with torch.no_grad():
        stride32 = net(x)[-1]
        logits = full.forward_head(full.final_conv(stride32))  # the rest of PaddleClas's network on the backbone
    assert float(np.linalg.norm(logits.numpy() - io["logits"]) / np.linalg.norm(io["logits"])) < 1e-4


def test_feature_pyramid_network_on_the_maps():
    from torchvision.ops import FeaturePyramidNetwork

    net = _model("MobileNetV3_large_x0_75", features_only=True, out_indices=(2, 3, 4))
    fpn = FeaturePyramidNetwork(net.feature_info.channels(), out_channels=64).eval()
    with torch.no_grad():
        maps = net(torch.randn(1, 3, 320, 320))
        pyramid = fpn(OrderedDict((f"p{r}", m) for r, m in zip(net.feature_info.reduction(), maps)))
    assert {k: tuple(v.shape) for k, v in pyramid.items()} == {
        "p8": (1, 64, 40, 40),
        "p16": (1, 64, 20, 20),
        "p32": (1, 64, 10, 10),
    }


@pytest.mark.parametrize("name", ["ShuffleNetV2_x0_25", "MobileNetV3_small_x0_35"])
def test_backbone_scripts_traces_and_exports(name):
    net = _model(name, features_only=True, out_indices=(0, 1, 2, 3, 4))  # ShuffleNet: the conv + pool stem split
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        ref = net(x)
        runs = [torch.jit.script(net)(x)]
        if name.startswith("ShuffleNet"):  # tracing and torch.export of every classifier: tests/test_models.py
            runs.append(torch.export.export(net, (x,)).module()(x))
    for out in runs:
        for a, b in zip(out, ref, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    assert isinstance(net, FeatureNet)


def test_readme_backbones_example_runs(monkeypatch, capsys):
    text = (REPO / "README.md").read_text()
    section = text[text.index("### Backbones and timm habits") :]
    block = section[section.index("```python\n") + len("```python\n") : section.index("\n```\n")]
    monkeypatch.chdir(REPO)  # "from the repository root": torch.hub.load(".", ...)
    exec(compile(block, "README.md", "exec"), {"__name__": "readme"})
    printed = capsys.readouterr().out.splitlines()
    assert printed[0] == "[24, 40, 112, 160] [4, 8, 16, 32]" and printed[1] == "[116, 232, 464]"
    assert printed[3] == "True False"
