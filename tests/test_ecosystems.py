"""torchvision / timm peers: same-network loading to 1e-4, and proof that the peers called different really differ."""

import urllib.error

import pytest
import torch
import torchvision
from torch import nn

import mobilezoo as mz
from mobilezoo.weights import CheckpointError, CheckpointMismatchError, hub, load_weights
from mobilezoo.weights.ecosystems import (
    PEERS,
    SOURCES,
    Peer,
    convert_foreign,
    fetch_foreign,
    find_peer,
    peer_notes,
    peer_url,
)

TOL = 1e-4


def _randomise(model: nn.Module, seed: int = 0) -> nn.Module:
    """Random BN affine and biases; BN running statistics measured on a random batch, then jittered.

    Measured statistics keep every layer at unit scale, so the logits depend on the input and a misnamed tensor
    moves them; uniformly drawn statistics (mean ~U(-0.2, 0.2), var ~U(0.5, 1.5)) leave these networks' logits
    nearly constant in the input (relative spread 1e-5 or less), which a 1e-4 comparison cannot tell apart.
    """
    g = torch.Generator().manual_seed(seed)
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in bns]
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if not t.is_floating_point() or t.ndim != 1 or name.endswith(("running_mean", "running_var")):
                continue
            if name.endswith("bias"):
                t.copy_(torch.randn(t.shape, generator=g) * 0.2)
            else:  # BN weight
                t.copy_(torch.rand(t.shape, generator=g) + 0.5)
        for m in bns:
            m.reset_running_stats()
            m.momentum = None  # cumulative average: one batch gives its exact statistics
        model.train()(torch.randn(4, 3, 224, 224, generator=g))
        for m, momentum in zip(bns, momenta):
            m.momentum = momentum
            m.running_mean.add_(torch.randn(m.running_mean.shape, generator=g) * 0.1 * m.running_var.sqrt())
            m.running_var.mul_(torch.rand(m.running_var.shape, generator=g) * 0.5 + 0.75)
    return model.eval()


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / b.norm()).item()


def _peer_model(source: str, name: str, **kwargs) -> nn.Module:
    torch.manual_seed(0)  # conv / linear init
    if source == "torchvision":
        return torchvision.models.get_model(name, weights=None, **kwargs)
    timm = pytest.importorskip("timm")
    return timm.create_model(name, pretrained=False, **kwargs)


def _x() -> torch.Tensor:
    return torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(1))


SAME = [p for p in PEERS if p.same]


def test_same_network_table():
    assert {(p.source, p.peer, p.arch) for p in SAME} == {
        ("torchvision", f"shufflenet_v2_{w}", f"ShuffleNetV2_{w}") for w in ("x0_5", "x1_0", "x1_5", "x2_0")
    }


@pytest.mark.parametrize("peer", SAME, ids=lambda p: f"{p.source}-{p.peer}")
def test_peer_weights_give_peer_logits(peer: Peer, tmp_path):
    theirs = _randomise(_peer_model(peer.source, peer.peer))
    path = tmp_path / "peer.pth"
    torch.save(theirs.state_dict(), path)
    ours = mz.create_model(peer.arch, weights="random").eval()
    report = load_weights(ours, mz.get_entry(peer.arch), path, source=peer.source)
    assert report.ok
    x = _x()
    with torch.no_grad():
        want = theirs(x)
        assert _rel(ours(x), want) < TOL
        assert _rel(want[0], want[1]) > 0.05  # the logits depend on the input


def test_misnamed_tensor_is_detected(tmp_path):
    """The parity check above has teeth: swapping two same-shaped tensors in the checkpoint moves the logits."""
    theirs = _randomise(_peer_model("torchvision", "shufflenet_v2_x0_5"))
    entry = mz.get_entry("ShuffleNetV2_x0_5")
    ours = mz.create_model(entry.name, weights="random").eval()
    sd = dict(theirs.state_dict())
    a, b = "stage3.3.branch2.1.running_var", "stage3.3.branch2.6.running_var"
    sd[a], sd[b] = sd[b], sd[a]
    mapped, report = convert_foreign(ours, entry, sd, "torchvision")
    assert report.ok
    ours.load_state_dict(mapped, strict=False)
    x = _x()
    with torch.no_grad():
        assert _rel(ours(x), theirs(x)) > 1e-2


def test_create_model_pretrained_torchvision_downloads_the_enum_url(tmp_path, monkeypatch):
    theirs = _randomise(_peer_model("torchvision", "shufflenet_v2_x0_5"))
    path = tmp_path / "shufflenetv2_x0.5.pth"
    torch.save(theirs.state_dict(), path)
    urls = []
    monkeypatch.setattr(hub, "download", lambda url, sha256=None: urls.append((url, sha256)) or path)
    ours = mz.create_model("ShuffleNetV2_x0_5", pretrained="torchvision").eval()
    url = torchvision.models.ShuffleNet_V2_X0_5_Weights.IMAGENET1K_V1.url
    assert urls == [(url, "f707e7126e")]  # verified against the digest prefix in torchvision's file name
    assert url.endswith("-f707e7126e.pth")
    x = _x()
    with torch.no_grad():
        assert _rel(ours(x), theirs(x)) < TOL


def test_other_class_count_keeps_backbone(tmp_path):
    theirs = _randomise(_peer_model("torchvision", "shufflenet_v2_x1_0"))
    path = tmp_path / "p.pth"
    torch.save(theirs.state_dict(), path)
    ours = mz.create_model("ShuffleNetV2_x1_0", weights="random", num_classes=10).eval()
    load_weights(ours, mz.get_entry("ShuffleNetV2_x1_0"), path, source="torchvision")
    x = _x()
    with torch.no_grad():
        t = theirs.conv5(theirs.stage4(theirs.stage3(theirs.stage2(theirs.maxpool(theirs.conv1(x))))))
        assert _rel(ours.forward_head(ours.forward_features(x), pre_logits=True), t.mean((2, 3))) < TOL
        assert ours(x).shape == (2, 10)


def test_one_channel_input_adapts_stem(tmp_path):
    theirs = _randomise(_peer_model("torchvision", "shufflenet_v2_x0_5"))
    path = tmp_path / "p.pth"
    torch.save(theirs.state_dict(), path)
    ours = mz.create_model("ShuffleNetV2_x0_5", weights="random", in_chans=1)
    load_weights(ours, mz.get_entry("ShuffleNetV2_x0_5"), path, source="torchvision")
    assert torch.equal(ours.stem.conv.conv.weight, theirs.conv1[0].weight.sum(1, keepdim=True))


def test_wrong_width_checkpoint_raises_mismatch(tmp_path):
    path = tmp_path / "x1_0.pth"
    torch.save(_peer_model("torchvision", "shufflenet_v2_x1_0").state_dict(), path)
    ours = mz.create_model("ShuffleNetV2_x0_5", weights="random")
    with pytest.raises(
        CheckpointMismatchError, match=r"ShuffleNetV2_x0_5.*wrong shape: .*stage2\.0\.branch1\.2\.weight"
    ):
        load_weights(ours, mz.get_entry("ShuffleNetV2_x0_5"), path, source="torchvision")


def test_incomplete_checkpoint_reports_missing_and_unexpected():
    entry = mz.get_entry("ShuffleNetV2_x0_5")
    sd = dict(_peer_model("torchvision", "shufflenet_v2_x0_5").state_dict())
    del sd["conv5.1.running_var"]
    sd["extra.weight"] = torch.zeros(1)
    _, report = convert_foreign(mz.create_model(entry.name, weights="random"), entry, sd, "torchvision")
    assert report.missing == ["conv5.1.running_var"]
    assert report.unexpected == ["extra.weight"]
    assert not report.mismatched


@pytest.mark.parametrize(
    ("name", "source", "says"),
    [
        ("MobileNetV2_x1_0", "torchvision", "omits the expand 1x1 conv when t=1"),
        ("MobileNetV3_large_x1_0", "torchvision", r"hardsigmoid relu6\(x\+3\)/6"),
        ("MobileNetV3_small_x1_0_ssld", "timm", "no 0.8 eval-dropout scale"),
        ("MobileNetV1_x1_0", "timm", "ReLU6"),
        ("GhostNet_x1_3", "timm", "no BN"),
        ("ShuffleNetV2_x0_25", "torchvision", "only at widths x0_5/x1_0/x1_5/x2_0"),
        ("ShuffleNetV2_swish", "torchvision", "swish"),
        ("ShuffleNetV2_x1_0", "timm", "timm has no ShuffleNet"),
        ("ShuffleNetV1_g3_x1_0", "torchvision", "no ShuffleNetV1"),
        ("GhostNet_x1_0", "torchvision", "no GhostNet"),
    ],
)
def test_non_equivalent_raises_with_reason(name, source, says, monkeypatch):
    entry = mz.get_entry(name)
    with pytest.raises(CheckpointError, match=f"{name} has no {source} equivalent.*{says}"):
        convert_foreign(mz.create_model(name, weights="random"), entry, {}, source)
    monkeypatch.setattr(hub, "download", lambda url, sha256=None: pytest.fail(f"downloaded {url}"))
    with pytest.raises(CheckpointError, match=says):
        fetch_foreign(entry, source)


def test_real_mobilenet_v2_checkpoint_is_refused(tmp_path):
    path = tmp_path / "mbv2.pth"
    torch.save(_peer_model("torchvision", "mobilenet_v2").state_dict(), path)
    with pytest.raises(CheckpointError, match="expand 1x1"):
        load_weights(
            mz.create_model("MobileNetV2_x1_0", weights="random"),
            mz.get_entry("MobileNetV2_x1_0"),
            path,
            source="torchvision",
        )


def test_unknown_source():
    entry = mz.get_entry("ShuffleNetV2_x1_0")
    with pytest.raises(ValueError, match="unknown checkpoint source 'keras'"):
        convert_foreign(mz.create_model(entry.name, weights="random"), entry, {}, "keras")


def test_fetch_failure_names_url_and_place(tmp_path, monkeypatch):
    monkeypatch.setenv("MOBILEZOO_HOME", str(tmp_path))

    def refuse(url, part, **kw):
        raise urllib.error.HTTPError(url, 404, "Not Found", {}, None)

    monkeypatch.setattr(hub, "_fetch", refuse)
    url = torchvision.models.ShuffleNet_V2_X2_0_Weights.IMAGENET1K_V1.url
    with pytest.raises(hub.DownloadError) as err:
        fetch_foreign(mz.get_entry("ShuffleNetV2_x2_0"), "torchvision")
    assert url in str(err.value)
    assert str(tmp_path / "checkpoints" / url.rsplit("/", 1)[-1]) in str(err.value)


def test_timm_hub_only_weights_ask_for_a_local_file():
    pytest.importorskip("timm")
    with pytest.raises(CheckpointError, match=r"timm/ghostnet_100\.in1k.*pass the local file"):
        peer_url(Peer("timm", "GhostNet", "ghostnet_100", "GhostNet_x1_0"))


def test_peer_notes_cover_every_model():
    for name in mz.list_models():
        notes = peer_notes(mz.get_entry(name))
        assert [n.split()[0].rstrip(":") for n in notes] == list(SOURCES), name
    assert peer_notes(mz.get_entry("ShuffleNetV2_x1_0"))[0].startswith("torchvision shufflenet_v2_x1_0: same network")


# --- the peers called different: checked, not assumed ------------------------------------------------------------


def _positional_rel_err(ours: nn.Module, theirs: nn.Module) -> float | None:
    """Copy the peer's tensors into ours in order; None if count or shapes disagree, else the logits' rel. error."""
    a = [k for k in ours.state_dict() if not k.endswith("num_batches_tracked")]
    b = [v for k, v in theirs.state_dict().items() if not k.endswith("num_batches_tracked")]
    if len(a) != len(b) or any(ours.state_dict()[k].shape != v.shape for k, v in zip(a, b)):
        return None
    ours.load_state_dict(dict(zip(a, b)), strict=False)
    x = _x()
    with torch.no_grad():
        return _rel(ours.eval()(x), theirs.eval()(x))


@pytest.mark.parametrize(
    ("name", "source", "peer"),
    [
        ("MobileNetV1_x1_0", "timm", "mobilenetv1_100"),
        ("MobileNetV2_x1_0", "torchvision", "mobilenet_v2"),
        ("MobileNetV2_x1_0", "timm", "mobilenetv2_100"),
        ("MobileNetV2_x1_4", "timm", "mobilenetv2_140"),
        ("MobileNetV3_large_x1_0", "torchvision", "mobilenet_v3_large"),
        ("MobileNetV3_small_x1_0", "torchvision", "mobilenet_v3_small"),
        ("MobileNetV3_large_x1_0", "timm", "mobilenetv3_large_100"),
        ("MobileNetV3_small_x1_0", "timm", "mobilenetv3_small_100"),
        ("GhostNet_x1_0", "timm", "ghostnet_100"),
        ("GhostNet_x0_5", "timm", "ghostnet_050"),
    ],
)
def test_different_peers_really_differ(name, source, peer):
    err = _positional_rel_err(mz.create_model(name, weights="random"), _randomise(_peer_model(source, peer)))
    assert err is None or err > 1e-3
    assert not find_peer(mz.get_entry(name), source).same


def test_timm_mobilenetv1_differs_only_by_relu6():
    ours = mz.create_model("MobileNetV1_x1_0", weights="random")
    assert _positional_rel_err(ours, _randomise(_peer_model("timm", "mobilenetv1_100", act_layer=nn.ReLU))) < 1e-6
    assert _positional_rel_err(ours, _randomise(_peer_model("timm", "mobilenetv1_100"))) > 1e-3


@pytest.mark.parametrize(("source", "peer"), [("torchvision", "mobilenet_v2"), ("timm", "mobilenetv2_100")])
def test_mobilenet_v2_peers_lack_the_t1_expand_conv(source, peer):
    def first_block_convs(m: nn.Module) -> list[tuple[int, int]]:
        block = m.features[1] if source == "torchvision" else m.blocks[0][0]
        return [(c.in_channels, c.out_channels) for c in block.modules() if isinstance(c, nn.Conv2d)]

    ours = mz.create_model("MobileNetV2_x1_0", weights="random")
    assert [(c.in_channels, c.out_channels) for c in ours.blocks[0][0].modules() if isinstance(c, nn.Conv2d)] == [
        (32, 32),
        (32, 32),
        (32, 16),
    ]
    assert first_block_convs(_peer_model(source, peer)) == [(32, 32), (32, 16)]


@pytest.mark.parametrize(
    ("source", "peer", "rd"),
    [("torchvision", "mobilenet_v3_large", 24), ("timm", "mobilenetv3_large_100", 24), ("timm", "ghostnet_100", 20)],
)
def test_se_width_gate_and_head_differ(source, peer, rd):
    m = _peer_model(source, peer)
    ses = [s for s in m.modules() if type(s).__name__ in ("SqueezeExcitation", "SqueezeExcite")]
    convs = [c for c in ses[0].children() if isinstance(c, nn.Conv2d)]
    assert (convs[0].in_channels, convs[0].out_channels) == (72, rd)  # ours: 72 -> 18 (C // 4)
    assert any(isinstance(g, nn.Hardsigmoid) for g in ses[0].modules())
    head = m.classifier[0] if source == "torchvision" else m.conv_head  # ours: 1x1 conv without bias
    assert (head.out_features if source == "torchvision" else head.out_channels) == 1280
    assert head.bias is not None
    if source == "torchvision":
        assert {b.eps for b in m.modules() if isinstance(b, nn.BatchNorm2d)} == {1e-3}


def test_our_se_width_is_a_quarter():
    assert mz.create_model("MobileNetV3_large_x1_0", weights="random").blocks[3].se.conv_reduce.out_channels == 18
    assert mz.create_model("GhostNet_x1_0", weights="random").blocks[3].se.conv_reduce.out_channels == 18
    assert mz.create_model("MobileNetV3_large_x1_0", weights="random").head.hidden[0].bias is None


def test_absent_families():
    tv = set(torchvision.models.list_models())
    assert not {n for n in tv if "mobilenet_v1" in n or "ghost" in n or "shufflenet_v1" in n}
    assert {n for n in tv if n.startswith("shufflenet_v2")} == {
        f"shufflenet_v2_{w}" for w in ("x0_5", "x1_0", "x1_5", "x2_0")
    }


def test_timm_has_no_shufflenet():
    timm = pytest.importorskip("timm")
    assert timm.list_models("*shuffle*") == []


def test_torchvision_file_is_recognised_without_naming_the_source(tmp_path):
    theirs = _randomise(_peer_model("torchvision", "shufflenet_v2_x1_5"))
    path = tmp_path / "shufflenetv2_x1_5.pth"
    torch.save(theirs.state_dict(), path)
    ours = mz.create_model("ShuffleNetV2_x1_5", pretrained=path).eval()
    x = _x()
    with torch.no_grad():
        assert _rel(ours(x), theirs(x)) < TOL
