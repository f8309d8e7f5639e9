import argparse
import csv
import io
import json
import os
import subprocess
import sys

import pytest

from mobilezoo.cli import COMMANDS, build_parser, main


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


LIGHT = [
    ["--help"],
    ["--version"],
    ["list"],
    ["list", "--pretrained"],
    ["list", "--family", "Ghost"],
    ["info", "GhostNet_x1_0"],
]


@pytest.mark.parametrize("argv", LIGHT, ids=" ".join)
def test_help_list_and_info_do_not_import_torch(argv):
    code = (
        "import sys, contextlib, io\n"
        "from mobilezoo.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()) as out:\n"
        "    try:\n"
        f"        rc = main({argv!r})\n"
        "    except SystemExit as e:\n"
        "        rc = e.code\n"
        "assert rc == 0 and out.getvalue(), rc\n"
        "print(sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.')))\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"


def test_a_command_imports_only_its_own_module():
    code = (
        "import sys\n"
        "from mobilezoo.cli import build_parser\n"
        "build_parser('recipe').parse_args(['recipe', 'list'])\n"
        "print(sorted(m for m in sys.modules if m.endswith('.cli') and m.startswith('mobilezoo.')))\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "['mobilezoo.cli', 'mobilezoo.train.cli']"


def test_help_lists_every_command_on_one_line():
    env = {**os.environ, "COLUMNS": "80"}
    r = subprocess.run([sys.executable, "-m", "mobilezoo", "--help"], capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    listed = [ln.split()[0] for ln in lines[lines.index("  COMMAND") + 1 :] if ln.startswith("    ")]
    assert listed == list(COMMANDS)
    for name, (_, line) in COMMANDS.items():
        assert f"    {name:<10}{line}" in lines, name


@pytest.mark.parametrize("command", list(COMMANDS))
def test_every_command_is_registered_in_full_by_its_module(command):
    ap = build_parser(command)
    sub = next(a for a in ap._actions if isinstance(a, argparse._SubParsersAction))
    full = {n for n, p in sub.choices.items() if "-h" in p._option_string_actions}
    owner = COMMANDS[command][0]
    assert full == ({command} if owner is None else {n for n, (o, _) in COMMANDS.items() if o == owner})
    assert set(sub.choices) == set(COMMANDS)


def test_export_help_names_every_format():
    from mobilezoo import backends

    assert all(f.lower() in COMMANDS["export"][1].lower() for f in backends.formats())


def test_list_family_prefix_unknown_family_and_no_match(capsys):
    assert main(["list", "--family", "Ghost", "--format", "csv"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert [r["name"] for r in rows] == ["GhostNet_x0_5", "GhostNet_x1_0", "GhostNet_x1_3", "GhostNet_x1_3_ssld"]
    assert main(["list", "--family", "ResNet"]) == 2
    err = capsys.readouterr().err
    assert err == (
        "mobilezoo: error: unknown family 'ResNet'; choose from MobileNetV1, MobileNetV2, MobileNetV3, ShuffleNetV1, "
        "ShuffleNetV2, GhostNet (or the start of one)\n"
    )
    assert main(["list", "*x9*", "--family", "ghostnet"]) == 1
    assert capsys.readouterr().err == "mobilezoo: no model matches '*x9*' in family 'ghostnet'\n"


def test_info_at_another_input_size_measures_the_network(capsys):
    from mobilezoo.factory import create_model
    from mobilezoo.profile import count_macs

    assert main(["info", "ShuffleNetV2_x0_25", "--input-size", "128", "--format", "json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["MACs (conv+linear)"] == count_macs(
        create_model("ShuffleNetV2_x0_25", weights="random"), input_size=128
    )
    assert info["blocks"][0]["out_shape"] == [1, 24, 32, 32]  # stem: stride-2 conv + stride-2 max pool
