import csv
import io
import json

from mobilezoo.cli import main


def test_list(capsys):
    assert main(["list", "--format", "csv"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    by = {r["name"]: r for r in rows}
    assert len(rows) == 59
    assert by["MobileNetV3_large_x1_0"]["ref_top1"] == "0.753"
    assert abs(float(by["MobileNetV3_large_x1_0"]["params_M"]) - 5.480206) < 1e-3
    assert by["MobileNetV3_large_x1_0_ssld"]["arch"] == "MobileNetV3_large_x1_0"


def test_list_pretrained_shows_urls(capsys):
    assert main(["list", "--pretrained", "--format", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    urls = {r["name"]: r["url"] for r in rows}
    assert urls["MobileNetV3_large_x1_0_ssld"].endswith(
        "/legendary_models/MobileNetV3_large_x1_0_ssld_pretrained.pdparams"
    )
    assert urls["MobileNetV2_x1_0"].endswith("/dygraph/MobileNetV2_pretrained.pdparams")
    assert not any(n.startswith("ShuffleNetV1") for n in urls)


def test_info_json(capsys):
    assert main(["info", "GhostNet_x1_3", "--format", "json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["params (trainable)"] == 7352622
    assert info["blocks"][0]["block"] == "stem" and info["blocks"][-1]["block"] == "head"
    assert sum(b["macs"] for b in info["blocks"]) == info["MACs (conv+linear)"]
    assert sum(b["params"] for b in info["blocks"]) == info["params (trainable)"]


def test_profile_md_and_per_layer(capsys):
    assert main(["profile", "MobileNetV3_large_x1_0", "ShuffleNetV2_x0_5", "--format", "md"]) == 0
    out = capsys.readouterr().out
    assert "| MobileNetV3_large_x1_0 | 5.48 | 219.8 |" in out
    assert main(["profile", "ShuffleNetV2_x0_5", "--per-layer", "--format", "json"]) == 0
    out = capsys.readouterr().out
    assert "blocks.0.0.branch1_dw.conv" in out


def test_unknown_model_exit_code(capsys):
    assert main(["info", "GhostNet_x9"]) == 2
    err = capsys.readouterr().err
    assert "unknown model 'GhostNet_x9'" in err and "GhostNet_x1_0" in err
