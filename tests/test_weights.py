"""Safe loading of untrusted files, format detection and save_pretrained round trips (no paddle needed)."""

import os
import pickle

import numpy as np
import pytest
import torch

import mobilezoo as mz
from mobilezoo.weights import (
    CheckpointError,
    CheckpointMismatchError,
    UnsafeCheckpointError,
    load_model,
    read_pdparams,
    save_pretrained,
)


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


def test_pdparams_asking_for_os_system_is_refused(tmp_path):
    f = tmp_path / "evil.pdparams"
    f.write_bytes(pickle.dumps({"conv.conv.weight": np.zeros((1,), "float32"), "x": _Evil()}, protocol=4))
    with pytest.raises(UnsafeCheckpointError, match=r"posix\.system|os\.system"):
        read_pdparams(f)
    with pytest.raises(UnsafeCheckpointError):
        mz.create_model("MobileNetV1_x0_25", pretrained=f)


def test_pdparams_plain_dict_and_tuple_entries(tmp_path):
    f = tmp_path / "ok.pdparams"
    arr = np.arange(6, dtype="float32").reshape(2, 3)
    state = {"a": arr, "b": ("linear_0.w_0", arr), "StructuredToParameterName@@": {"a": "x"}}
    f.write_bytes(pickle.dumps(state, protocol=4))
    out = read_pdparams(f)
    assert set(out) == {"a", "b"}
    assert torch.equal(out["b"], torch.from_numpy(arr))


def test_truncated_and_garbage_files_fail_clearly(tmp_path):
    m = tmp_path / "m.pdparams"
    m.write_bytes(pickle.dumps({"a": np.zeros((100,), "float32")}, protocol=4)[:50])
    with pytest.raises(CheckpointError, match=r"corrupt or truncated \.pdparams file"):
        read_pdparams(m)
    g = tmp_path / "g.safetensors"
    g.write_bytes(b"\x00" * 10)
    with pytest.raises(CheckpointError, match="safetensors"):
        mz.create_model("MobileNetV1_x0_25", pretrained=g)
    with pytest.raises(FileNotFoundError):
        mz.create_model("MobileNetV1_x0_25", pretrained=tmp_path / "absent.pth")


def test_pth_with_arbitrary_object_is_refused(tmp_path):
    f = tmp_path / "evil.pth"
    torch.save({"model": {"w": torch.zeros(1)}, "obj": _Evil()}, f)
    with pytest.raises(UnsafeCheckpointError, match="weights_only"):
        mz.create_model("MobileNetV1_x0_25", pretrained=f)


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_own_state_dict_round_trip(tmp_path, suffix):
    from safetensors.torch import save_file

    m = mz.create_model("GhostNet_x0_5", weights="random", num_classes=7).eval()
    f = tmp_path / f"w{suffix}"
    sd = m.state_dict()
    torch.save({"model": sd, "epoch": 3}, f) if suffix == ".pth" else save_file(sd, str(f))
    m2 = mz.create_model("GhostNet_x0_5", num_classes=7, pretrained=f).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(m(x), m2(x))


def test_mismatched_own_checkpoint(tmp_path):
    f = tmp_path / "w.pth"
    torch.save(mz.create_model("MobileNetV2_x0_5", weights="random").state_dict(), f)
    with pytest.raises(CheckpointMismatchError, match="wrong shape"):
        mz.create_model("MobileNetV2_x1_0", pretrained=f)


def test_save_pretrained_round_trip(tmp_path):
    m = mz.create_model("MobileNetV3_small_x0_5", weights="random", num_classes=3).eval()
    save_pretrained(m, tmp_path / "ft", class_names=["a", "b", "c"])
    assert {p.name for p in (tmp_path / "ft").iterdir()} == {"model.safetensors", "config.json"}
    m2 = mz.create_model("MobileNetV3_small_x0_5", num_classes=3, pretrained=tmp_path / "ft").eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(m(x), m2(x))
    assert m2.class_names == ["a", "b", "c"]
    with pytest.raises(CheckpointMismatchError, match="holds a MobileNetV3_small_x0_5"):
        mz.create_model("GhostNet_x1_0", pretrained=tmp_path / "ft")


@pytest.mark.parametrize("level", [1, 2])
def test_save_pretrained_keeps_the_small_input_layout(tmp_path, level):
    """A CIFAR-trained network (stride-1 stem, level 2 also its first downsampling block) comes back with its layout:
    same feature-map sizes and the same logits, from the folder alone."""
    m = mz.create_model("ShuffleNetV2_x0_5", weights="random", num_classes=10, small_input=level).train()
    with torch.no_grad():  # running statistics that are not the initial ones, so a stride change shows in the logits
        m(torch.randn(8, 3, 32, 32))
    m.eval()
    save_pretrained(m, tmp_path / "ft")
    back = load_model(None, tmp_path / "ft")
    assert back.small_input == level
    assert [f["reduction"] for f in back.feature_info] == [f["reduction"] for f in m.feature_info]
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(m(x), back(x))
    plain = mz.create_model("ShuffleNetV2_x0_5", num_classes=10, pretrained=tmp_path / "ft", small_input=0).eval()
    assert plain.small_input == 0  # a layout asked for by name wins over the saved one


def test_in_chans_adapted_from_rgb_checkpoint(tmp_path):
    f = tmp_path / "w.pth"
    rgb = mz.create_model("MobileNetV1_x0_25", weights="random")
    torch.save(rgb.state_dict(), f)
    gray = mz.create_model("MobileNetV1_x0_25", in_chans=1, pretrained=f)
    torch.testing.assert_close(gray.stem.conv.weight, rgb.stem.conv.weight.sum(1, keepdim=True))


def test_weight_catalog_counts_match_the_networks(reference_csv):
    from mobilezoo.profile import count_macs, count_params
    from mobilezoo.weights.catalog import list_weights, weights_info

    entries = list_weights()
    assert len(entries) == 36  # the 37 published names less the int8 inference model
    assert {w.name for w in entries} | {"MobileNetV3_large_x1_0_ssld_int8"} == {
        mz.get_entry(n).name for n in reference_csv
    }
    for w in entries:
        m = mz.create_model(w.name, weights="random")
        assert count_params(m) == w.params, w.name
        assert count_macs(m) == w.macs, w.name
        assert w.top1 == reference_csv[next(n for n in reference_csv if mz.get_entry(n).name == w.name)]["top1"]
        assert w.transforms.resize_short == 256 and w.transforms.crop_size == 224
        assert w.transforms.interpolation == "bilinear" and w.file_name == w.url.rsplit("/", 1)[-1]
        assert m.default_cfg["resize_short"] == w.transforms.resize_short
    assert weights_info("MobileNetV3_large_x1_0_ssld").url.endswith("MobileNetV3_large_x1_0_ssld_pretrained.pdparams")
    assert weights_info("ShuffleNetV1_g3_x1_0") is None


def test_convert_cli_keeps_a_training_checkpoints_classes_and_layout(tmp_path):
    """A CIFAR-trained ``.ckpt`` (10 classes, stride-1 stem) -> a save_pretrained folder that rebuilds that network."""
    from mobilezoo.cli import main
    from mobilezoo.weights.checkpoint import FORMAT

    m = mz.create_model("MobileNetV1_x0_25", weights="random", num_classes=10, small_input=1).train()
    with torch.no_grad():
        m(torch.randn(8, 3, 32, 32))
    m.eval()
    ck = {"format": FORMAT, "model_name": "MobileNetV1_x0_25", "num_classes": 10, "model_kwargs": {"small_input": 1},
          "model": m.state_dict(), "class_names": [f"c{i}" for i in range(10)]}  # fmt: skip
    torch.save(ck, tmp_path / "best.ckpt")
    assert (
        main(["convert", str(tmp_path / "best.ckpt"), "--model", "MobileNetV1_x0_25", "-o", str(tmp_path / "w")]) == 0
    )
    back = load_model(None, tmp_path / "w")
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(m(x), back(x))
    assert back.small_input == 1 and back.class_names == ck["class_names"]


def test_convert_cli_round_trip(tmp_path):
    from mobilezoo.cli import main

    src = tmp_path / "ft.pth"
    m = mz.create_model("MobileNetV2_x0_5", weights="random", num_classes=4).eval()
    torch.save({"state_dict": m.state_dict()}, src)
    out = tmp_path / "ft.safetensors"
    assert main(["convert", str(src), "--model", "MobileNetV2_x0_5", "--num-classes", "4", "-o", str(out)]) == 0
    m2 = mz.create_model("MobileNetV2_x0_5", num_classes=4, pretrained=out).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(m(x), m2(x))
    assert main(["convert", str(src), "--model", "MobileNetV2_x1_0", "--num-classes", "4", "-o", str(out)]) == 2
