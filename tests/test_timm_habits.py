"""timm / torchvision habits: list_models(pretrained=True), list_pretrained, is_model, resolve_data_config +
create_transform, set_grad_checkpointing, group_matcher, no_weight_decay, torch.hub from a clone, and the rule for
torchvision / timm model names (they resolve only where the network is the same)."""

import copy
import json
import subprocess
import sys

import pytest
import torch
import torchvision
from PIL import Image
from torch import nn

import mobilezoo as mz
from mobilezoo.data.transforms import EvalPreprocess, TrainAugment, eval_preprocess
from mobilezoo.models import list_models
from mobilezoo.peers import DifferentNetworkError, peer_notes
from mobilezoo.weights.catalog import list_weights

from .conftest import DATA, REPO

SAME = {"shufflenet_v2_x0_5", "shufflenet_v2_x1_0", "shufflenet_v2_x1_5", "shufflenet_v2_x2_0"}


def _model(name: str, **kwargs) -> nn.Module:
    torch.manual_seed(0)
    return mz.create_model(name, weights="random", **kwargs)


# --- names ---------------------------------------------------------------------------------------------------------


def test_list_pretrained_is_the_weights_catalog():
    published = [w.name for w in list_weights()]
    assert mz.list_pretrained() == mz.list_models(pretrained=True) == [n for n in list_models() if n in published]
    assert len(published) == 36 and set(mz.list_pretrained()) == set(published)
    assert set(mz.list_models("*ssld*", pretrained=True)) == {n for n in published if "ssld" in n}
    assert not {"MobileNetV2_x0_35", "MobileNetV2_x1_4", "MobileNetV3_large_x1_0_ssld_int8"} & set(published)
    assert not mz.list_pretrained("ShuffleNetV1*") and len(mz.list_models("ShuffleNetV1*")) == 20


def test_is_model():
    for name in ("MobileNetV3_large_x1_0", "MobileNetV2", "mobilenetv3_large_x1_0", "SHUFFLENETV1_G3_X1_0"):
        assert mz.is_model(name), name
    for name in ("MobileNetV3_lage_x1_0", "resnet50", "mobilenet_v2", "mobilenetv3_large_100"):
        assert not mz.is_model(name), name


def _peer_names() -> set[str]:
    timm = pytest.importorskip("timm")
    return set(torchvision.models.list_models()) | set(timm.list_models())


def test_only_the_same_networks_resolve_under_a_peer_name():
    names = _peer_names()
    assert SAME <= names
    assert {n for n in names if mz.is_model(n)} == SAME
    for n in SAME:
        entry = mz.get_entry(n)
        assert peer_notes(entry)[0] == f"torchvision {n}: same network (load_weights(..., source='torchvision'))"


# their name prefix -> the zoo architecture whose `mobilezoo info` explains the difference
FAMILY_OF = {
    "mobilenet_v2": "MobileNetV2_x1_0",
    "mobilenet_v3": "MobileNetV3_large_x1_0",
    "mobilenetv1": "MobileNetV1_x1_0",
    "mobilenetv2": "MobileNetV2_x1_0",
    "mobilenetv3": "MobileNetV3_large_x1_0",
    "tf_mobilenetv3": "MobileNetV3_large_x1_0",
    "ghostnet_": "GhostNet_x1_0",
}


def test_peer_names_of_zoo_families_fail_with_infos_explanation():
    tv = set(torchvision.models.list_models())
    theirs = sorted(n for n in _peer_names() if n.startswith(tuple(FAMILY_OF)))
    assert {"mobilenet_v2", "mobilenet_v3_small", "mobilenet_v3_large", "mobilenetv3_large_100"} <= set(theirs)
    assert len(theirs) > 25
    for name in theirs:
        with pytest.raises(DifferentNetworkError) as ei:
            mz.create_model(name, weights="random")
        msg = str(ei.value)
        assert isinstance(ei.value, ValueError) and "\n" not in msg
        zoo = FAMILY_OF[next(p for p in sorted(FAMILY_OF, key=len, reverse=True) if name.startswith(p))]
        note = peer_notes(mz.get_entry(zoo))[0 if name in tv else 1]  # `mobilezoo info`'s line for that library
        assert note.split(": differs: ")[1] in msg, name


def test_refusal_names_paddleclas_network_of_that_width():
    cases = {
        "mobilenetv3_large_100": "MobileNetV3_large_x1_0",
        "mobilenet_v3_small": "MobileNetV3_small_x1_0",
        "mobilenet_v2": "MobileNetV2_x1_0",
        "mobilenetv2_140": "MobileNetV2_x1_4",
        "ghostnet_130": "GhostNet_x1_3",
        "tf_mobilenetv3_small_075.in1k": "MobileNetV3_small_x0_75",
    }
    for theirs, ours in cases.items():
        with pytest.raises(ValueError, match=f"PaddleClas's network of that width is '{ours}'"):
            mz.get_entry(theirs)
    with pytest.raises(ValueError, match="timm's MobileNetV3") as ei:
        mz.get_entry("mobilenetv3_rw")
    assert "width is" not in str(ei.value)  # no zoo counterpart: none named
    # the PaddleClas names and their own spellings are unaffected
    assert mz.get_entry("MobileNetV2").name == "MobileNetV2_x1_0"
    assert mz.get_entry("mobilenetv2_x1_0").name == "MobileNetV2_x1_0"
    assert mz.get_entry("shufflenet_v2_x0_25").name == "ShuffleNetV2_x0_25"  # torchvision has no such width


# --- data config and transforms ------------------------------------------------------------------------------------


def test_resolve_data_config_and_create_transform():
    cfg = mz.resolve_data_config(_model("MobileNetV3_large_x0_5"))
    assert cfg == mz.resolve_data_config("MobileNetV3_large_x0_5")
    assert (cfg["input_size"], cfg["interpolation"], cfg["crop_pct"]) == ((3, 224, 224), "bilinear", 0.875)
    ev = mz.create_transform(cfg)
    assert isinstance(ev, EvalPreprocess) and ev == eval_preprocess(_model("MobileNetV3_large_x0_5"))
    img = Image.open(DATA / "images" / "cat.jpg").convert("RGB")
    assert torch.equal(ev(img), eval_preprocess()(img))  # the one eval preprocessing
    # PaddleClas's recipes: MobileNetV3_large trains with AutoAugment, MobileNetV3_small without
    train = mz.create_transform(cfg, is_training=True)
    assert isinstance(train, TrainAugment) and (train.policy, train.autoaugment, train.crop_size) == (
        "imagenet",
        True,
        224,
    )
    assert not mz.create_transform(mz.resolve_data_config("MobileNetV3_small_x1_0"), is_training=True).autoaugment
    torch.manual_seed(0)
    a, b = train(img), train(img)
    assert a.shape == b.shape == (3, 224, 224) and not torch.equal(a, b)  # random crops, normalised like eval
    cifar = mz.create_transform(mz.resolve_data_config("ShuffleNetV2_x0_25", "cifar10"), is_training=True)
    assert (cifar.policy, cifar(img.resize((32, 32))).shape) == ("cifar", (3, 32, 32))


# --- training hooks ------------------------------------------------------------------------------------------------


def test_grad_checkpointing_recomputes_with_the_same_gradients_and_statistics():
    plain = _model("MobileNetV3_small_x0_35").train()
    ckpt = copy.deepcopy(plain)
    ckpt.set_grad_checkpointing()
    calls = {"plain": 0, "ckpt": 0}
    for key, m in (("plain", plain), ("ckpt", ckpt)):
        m.blocks[3].conv_pw.register_forward_pre_hook(lambda *_, k=key: calls.__setitem__(k, calls[k] + 1))
        torch.manual_seed(1)  # the same head dropout
        m(torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(2))).logsumexp(1).sum().backward()
    assert calls == {"plain": 1, "ckpt": 2}  # the block ran again in the backward pass
    for (n, p), q in zip(plain.named_parameters(), ckpt.parameters()):
        assert torch.equal(p.grad, q.grad), n
    for (n, b), c in zip(plain.named_buffers(), ckpt.buffers()):
        assert torch.equal(b, c), n  # BatchNorm counted the batch once


@pytest.mark.parametrize("name", ["MobileNetV3_small_x0_35", "ShuffleNetV2_x0_25", "GhostNet_x0_5"])
def test_group_matcher_drives_timms_layer_decay(name):
    pytest.importorskip("timm")
    from timm.models import group_parameters
    from timm.optim import param_groups_layer_decay

    m = _model(name)
    staged = isinstance(m.blocks[0], nn.Sequential)
    blocks = (
        [f"blocks.{i}.{j}." for i, s in enumerate(m.blocks) for j in range(len(s))]
        if staged
        else [f"blocks.{i}." for i in range(len(m.blocks))]
    )
    groups = list(group_parameters(m, m.group_matcher()).values())
    assert len(groups) == 1 + len(blocks) + 1
    assert all(p.startswith("stem.") for p in groups[0])
    for g, block in zip(groups[1:-1], blocks):  # one group per block, in depth order
        assert {p for p in g if not p.startswith("final_conv.")} == {p for p in g if p.startswith(block)}, block
    assert any(p.startswith("final_conv.") for p in groups[-2])  # timm's rule: the head conv joins the last block
    assert all(p.startswith("head.") for p in groups[-1])
    assert sum(map(len, groups)) == len(list(m.parameters()))
    coarse = list(group_parameters(m, m.group_matcher(coarse=True)).values())
    assert len(coarse) == 2 + len(m.blocks)
    pg = param_groups_layer_decay(m, weight_decay=1e-4, layer_decay=0.5)
    assert sorted({g["lr_scale"] for g in pg}) == [0.5**k for k in range(len(groups) - 1, -1, -1)]


def test_no_weight_decay_follows_paddleclas_and_the_recipes():
    from mobilezoo.train import load_recipe

    for name in list_models(archs_only=True):
        m = _model(name)
        bn = {f"{n}.{p}" for n, mod in m.named_modules() if isinstance(mod, nn.BatchNorm2d) for p in ("weight", "bias")}
        exempt = m.no_weight_decay()
        assert exempt in (set(), bn), name
        assert bool(exempt) == load_recipe("imagenet", name).no_bn_decay, name
    assert _model("GhostNet_x0_5").no_weight_decay() and not _model("MobileNetV2_x0_25").no_weight_decay()


# --- torch.hub -----------------------------------------------------------------------------------------------------


def _checkout(dst):
    """The files a clone of this working tree has (tracked and not ignored), those torch.hub needs."""
    out = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "--", "hubconf.py", "src"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    for rel in out:
        src = REPO / rel
        if src.is_file():
            (dst / rel).parent.mkdir(parents=True, exist_ok=True)
            (dst / rel).write_bytes(src.read_bytes())
    return dst


_HUB_SCRIPT = """
import importlib.util, json, sys
import torch

clone = sys.argv[1]
m = torch.hub.load(clone, "ShuffleNetV2_x0_5", source="local", weights="random", num_classes=10).eval()
f = torch.hub.load(clone, "MobileNetV3_small_x0_35", source="local", pretrained=False, features_only=True)
import mobilezoo

spec = importlib.util.spec_from_file_location("hubconf", clone + "/hubconf.py")
hub = importlib.util.module_from_spec(spec)
spec.loader.exec_module(hub)  # as torch.hub reads it: the public callables are the entry points
with torch.no_grad():
    shape = list(m(torch.randn(1, 3, 64, 64)).shape)
print(json.dumps({
    "names": [n for n in dir(hub) if callable(getattr(hub, n)) and not n.startswith("_")],
    "code": mobilezoo.__file__,
    "shape": shape,
    "reductions": f.feature_info.reduction(),
    "name": m.model_name,
}))
"""


def test_torch_hub_load_from_a_clone(tmp_path):
    clone = _checkout(tmp_path / "mobilezoo")
    cmd = [sys.executable, "-c", _HUB_SCRIPT, str(clone)]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out["names"] == sorted(list_models())  # every registered name is an entry point, nothing else
    assert out["code"].startswith(str(clone))  # the clone's own code, not the installed package
    assert out["shape"] == [1, 10] and out["reductions"] == [4, 8, 16, 32] and out["name"] == "ShuffleNetV2_x0_5"
