"""The model contract, parametrised over every registered architecture."""

import pytest
import torch

import mobilezoo as mz
from mobilezoo.models import list_models
from mobilezoo.models.features import FeatureNet

ARCHS = list_models(archs_only=True)


@pytest.fixture(scope="module", params=ARCHS)
def model(request):
    torch.manual_seed(0)
    return mz.create_model(request.param, weights="random").eval()


def _halved(n: int, times: int) -> int:
    """Every stride-2 conv/pool pads (k-1)//2, so each halving rounds up."""
    for _ in range(times):
        n = -(-n // 2)
    return n


def test_forward_224_and_small_resolutions(model):
    """Logits, and the feature map of every ``feature_info`` level (strides 2-32), at 224 and at a non-square input
    that is no multiple of 32."""
    assert [f["reduction"] for f in model.feature_info] == [2, 4, 8, 16, 32]
    with torch.no_grad():
        for size in (224, 96, 32):  # the MobileNet resolution multiplier: any input >= 32
            final, maps = model.forward_intermediates(torch.randn(2, 3, size, size))
            y = model.forward_head(final)
            assert y.shape == (2, 1000) and torch.isfinite(y).all(), size
            if size == 224:
                want = [(2, f["num_chs"], 224 // f["reduction"], 224 // f["reduction"]) for f in model.feature_info]
                assert [tuple(m.shape) for m in maps] == want
        final, maps = model.forward_intermediates(torch.randn(1, 3, 150, 120))  # non-square
        assert model.forward_head(final).shape == (1, 1000)
        want = [(1, f["num_chs"], _halved(150, k), _halved(120, k)) for k, f in enumerate(model.feature_info, 1)]
        assert [tuple(m.shape) for m in maps] == want


def test_features_only_form(model):
    net = FeatureNet(model)  # what create_model(name, features_only=True) returns (tests/test_backbones.py)
    assert net.feature_info.reduction() == [4, 8, 16, 32] and net.feature_info.out_indices == (1, 2, 3, 4)
    assert net.feature_info.channels() == [f["num_chs"] for f in model.feature_info[1:]]
    full, own = set(model.state_dict()), set(net.state_dict())
    assert own <= full and {k.split(".")[0] for k in full - own} == {"final_conv", "head"} & {
        k.split(".")[0] for k in full
    }


def test_contract(model):
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        feats = model.forward_features(x)
        assert feats.ndim == 4 and feats.shape[1] == model.num_features
        pre = model.forward_head(feats, pre_logits=True)
        assert pre.shape == (2, model.head_hidden_size)
        assert torch.equal(model.forward_head(feats), model(x))
    cfg = model.default_cfg
    assert cfg["input_size"] == (3, 224, 224) and cfg["interpolation"] == "bilinear"
    assert cfg["resize_short"] == 256 and cfg["crop_size"] == 224
    assert len(cfg["mean"]) == 3 and len(cfg["std"]) == 3
    assert model.get_submodule(cfg["first_conv"]).in_channels == 3
    assert model.get_submodule(cfg["classifier"]).out_features == 1000


def test_eval_is_deterministic(model):
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(model(x), model(x))


def test_backward_reaches_every_parameter(model):
    import copy

    m = copy.deepcopy(model).train()
    m(torch.randn(2, 3, 64, 64)).logsumexp(1).sum().backward()
    missing = [n for n, p in m.named_parameters() if p.grad is None]
    assert not missing


def test_script_trace_export(model):
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        ref = model(x)
        scripted = torch.jit.script(model)
        torch.testing.assert_close(scripted(x), ref, rtol=1e-5, atol=1e-5)
        traced = torch.jit.trace(model, x)
        torch.testing.assert_close(traced(x), ref, rtol=1e-5, atol=1e-5)
    ep = torch.export.export(model, (x,))
    with torch.no_grad():
        torch.testing.assert_close(ep.module()(x), ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "name", ["MobileNetV3_small_x1_0", "ShuffleNetV2_x0_5", "GhostNet_x0_5", "ShuffleNetV1_g3_x0_5"]
)
def test_num_classes_in_chans_and_reset(name):
    m = mz.create_model(name, weights="random", num_classes=10, in_chans=1).eval()
    with torch.no_grad():
        assert m(torch.randn(2, 1, 64, 64)).shape == (2, 10)
        m.reset_classifier(5)
        assert m(torch.randn(2, 1, 64, 64)).shape == (2, 5)
        assert m.default_cfg["num_classes"] == 5
        m.reset_classifier(0)
        assert m(torch.randn(2, 1, 64, 64)).shape == (2, m.head_hidden_size)


def test_small_input_option_keeps_resolution():
    m = mz.create_model("MobileNetV2_x1_0", weights="random", num_classes=10, small_input=True).eval()
    with torch.no_grad():
        assert m.forward_features(torch.randn(1, 3, 32, 32)).shape[-1] == 2  # stride 16 instead of 32


@pytest.mark.parametrize(
    "name, final",  # final map side on 32x32 at small_input 1 -> 2
    [("MobileNetV1_x0_25", (2, 4)), ("MobileNetV2_x0_5", (2, 4)), ("MobileNetV3_small_x0_35", (2, 4)),
     ("MobileNetV3_large_x0_35", (2, 4)), ("GhostNet_x0_5", (2, 4)), ("ShuffleNetV1_g3_x0_5", (4, 8)),
     ("ShuffleNetV2_x0_5", (4, 8))],
)  # fmt: skip
def test_small_input_2_also_runs_the_first_downsampling_block_at_stride_1(name, final):
    one = mz.create_model(name, weights="random", num_classes=10, small_input=1).eval()
    two = mz.create_model(name, weights="random", num_classes=10, small_input=2).eval()
    sd1, sd2 = one.state_dict(), two.state_dict()
    assert {k: v.shape for k, v in sd1.items()} == {k: v.shape for k, v in sd2.items()}  # a checkpoint loads in both
    two.load_state_dict(sd1)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        f1, f2 = one.forward_features(x), two.forward_features(x)
    assert (f1.shape[-1], f2.shape[-1]) == final
    assert [f["reduction"] for f in two.feature_info][-1] * 2 == [f["reduction"] for f in one.feature_info][-1]
    assert two.feature_info[-1]["reduction"] == 32 // final[1]
    assert sum(isinstance(m, torch.nn.Conv2d) and m.stride == (2, 2) for m in one.modules()) > sum(
        isinstance(m, torch.nn.Conv2d) and m.stride == (2, 2) for m in two.modules()
    )
    assert two(x).shape == (2, 10)


def test_mobilenetv3_dropout_is_paddles_downscale_in_infer():
    from mobilezoo.models.layers import DownscaleDropout

    d = DownscaleDropout(0.2)
    x = torch.ones(10000)
    d.eval()
    assert torch.equal(d(x), x * 0.8)  # inference scales by (1 - p)
    d.train()
    y = d(x)
    assert set(y.unique().tolist()) <= {0.0, 1.0}  # training drops without rescaling
    assert 0.75 < y.mean() < 0.85


def test_fuse_bn_keeps_outputs(model):
    import copy

    from mobilezoo.models.fuse import fuse_bn

    model = copy.deepcopy(model)
    g = torch.Generator().manual_seed(0)
    for m in model.modules():  # non-trivial statistics, or a wrong formula would pass
        if isinstance(m, torch.nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(n, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(n, generator=g) * 0.1)
    x = torch.randn(2, 3, 64, 64)
    fused = fuse_bn(model)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fused.modules())
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())  # the original is untouched
    with torch.no_grad():
        ref = model(x)
        torch.testing.assert_close(fused(x), ref, rtol=1e-4, atol=1e-4 * ref.abs().max().item())
