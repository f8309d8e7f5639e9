"""Profiler conventions checked on layers whose costs can be written down by hand."""

import json

from torch import nn

import mobilezoo as mz
from mobilezoo.profile import file_sizes, profile_model


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


def test_peak_is_between_largest_tensor_and_sum():
    m = mz.create_model("MobileNetV2_x1_0")
    p = profile_model(m)
    largest = 96 * 112 * 112 * 4  # the 96-channel expansion at 112x112 (block 2's expand conv)
    assert largest < p.peak_activation_bytes < 5 * largest


def test_file_sizes():
    m = mz.create_model("ShuffleNetV2_x0_5")
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
