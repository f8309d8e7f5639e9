"""Profiler conventions checked on layers whose costs can be written down by hand."""

import json

import pytest
import torch
from torch import nn

import mobilezoo as mz
from mobilezoo.profile import file_sizes, profile_model
from mobilezoo.profile.counter import block_paths, block_table


class OneConv(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, stride=1, padding=1, bias=False)

    def forward(self, x):
        return self.conv(x)


def test_single_conv_costs_by_hand():
    p = profile_model(OneConv(), input_size=16)
    assert p.macs == 8 * 16 * 16 * 3 * 3 * 3
    in_b, w_b, out_b = 3 * 16 * 16 * 4, 8 * 3 * 3 * 3 * 4, 8 * 16 * 16 * 4
    assert p.mem_access_bytes == in_b + w_b + out_b  # read input + weights, write output
    assert p.peak_activation_bytes == in_b + out_b  # input and output alive together
    assert p.params == 8 * 27


def test_views_move_no_bytes_and_residual_add_is_counted():
    class Res(nn.Module):
        def forward(self, x):
            return (x + x).view(-1)

    p = profile_model(nn.Sequential(OneConv(), Res()), input_size=8)
    act = 8 * 8 * 8 * 4
    conv = 3 * 8 * 8 * 4 + 8 * 27 * 4 + act
    assert p.mem_access_bytes == conv + 3 * act  # add reads two, writes one; view is free


class Branchy(nn.Module):
    """Stem, then an inverted-residual-like branch whose output is concatenated with a residual add; every tensor's
    lifetime is spelled out so that the live set at each op can be written down by hand."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.expand = nn.Conv2d(8, 32, 1, bias=False)
        self.act = nn.ReLU()  # not in place: a new tensor
        self.dw = nn.Conv2d(32, 32, 3, padding=1, groups=32, bias=False)
        self.project = nn.Conv2d(32, 8, 1, bias=False)

    def forward(self, x):
        t = self.stem(x)
        y = self.act(self.expand(t))
        y = self.dw(y)
        y = self.project(y)
        y = torch.cat([t + y, y], dim=1)
        del t
        return y.flatten(1)


def test_peak_activation_bytes_by_hand():
    """Peak = the most bytes of live activations (input included, weights excluded) at any moment of the pass.

    Live sets, in channels of 8x8 fp32 maps, right after each op (x: the input, held by the caller all pass):
    stem t; expand e; relu r (e still referenced by the expression); e freed; dw d (r still bound to y); r freed;
    project p; d freed; add s = t + p; cat o (s, p still referenced); s and p freed, t deleted; flatten is a view.
    """
    ch = {"x": 3, "t": 8, "e": 32, "r": 32, "d": 32, "p": 8, "s": 8, "o": 16}
    moments = [
        "x t",  # stem
        "x t e",  # expand
        "x t e r",  # relu, before the expand output is dropped
        "x t r d",  # dw, the relu output still bound to y
        "x t d p",  # project, the dw output still bound to y
        "x t p s",  # t + y
        "x t p s o",  # cat
        "x o",  # flatten: a view of o, no new bytes
    ]
    per_channel = 8 * 8 * 4
    expected = max(sum(ch[k] for k in m.split()) for m in moments) * per_channel
    assert expected == (3 + 8 + 32 + 32) * 8 * 8 * 4  # 19_200 bytes: at relu and again at dw
    p = profile_model(Branchy(), input_size=8)
    assert p.peak_activation_bytes == expected


def test_peak_activation_excludes_linear_weights():
    """F.linear's aten.t(weight) is a view of the weight: it must not count as a live activation."""
    m = nn.Sequential(nn.Conv2d(3, 4, 1, bias=False), nn.Flatten(), nn.Linear(4 * 8 * 8, 10))
    x, c, out = 3 * 8 * 8 * 4, 4 * 8 * 8 * 4, 10 * 4  # input, conv output (flatten is a view of it), logits
    assert profile_model(m, input_size=8).peak_activation_bytes == x + c + out


def test_file_sizes():
    m = mz.create_model("ShuffleNetV2_x0_5", weights="random")
    fp32, fp16, int8 = file_sizes(m)
    numel = sum(v.numel() for k, v in m.state_dict().items() if not k.endswith("num_batches_tracked"))
    assert 4 * numel < fp32 < 4 * numel + 100_000  # safetensors header is small
    assert 2 * numel < fp16 < 2 * numel + 100_000
    assert numel < int8 < fp16


def test_profile_by_name_and_json_summary():
    p = mz.profile("MobileNetV3_small_x1_0", input_size=160)
    s = p.summary()
    assert s["input_size"] == [1, 3, 160, 160]
    assert s["flops"] == 2 * s["macs"]
    json.dumps(s)


# one network of five families: units ending in a concat or shuffle after their last leaf (ShuffleNet), SE, residual
BLOCK_ARCHS = [
    "ShuffleNetV1_g3_x1_0",
    "ShuffleNetV2_x1_0",
    "MobileNetV3_small_x1_0",
    "GhostNet_x1_0",
    "MobileNetV2_x1_0",
]


@pytest.mark.parametrize("arch", BLOCK_ARCHS)
def test_block_table_shapes_are_what_each_block_returns(arch):
    # the reference: forward hooks on the block modules themselves (a concat or shuffle after the last leaf counts)
    model = mz.create_model(arch, weights="random").eval()
    paths = block_paths(model)
    mods = dict(model.named_modules())
    seen = {}
    hooks = [mods[p].register_forward_hook(lambda _m, _i, o, p=p: seen.__setitem__(p, list(o.shape))) for p in paths]
    with torch.no_grad():
        model(torch.randn(1, 3, 224, 224))
    for h in hooks:
        h.remove()
    rows = block_table(model, profile_model(model))
    assert {r["block"]: list(r["out_shape"]) for r in rows} == seen
