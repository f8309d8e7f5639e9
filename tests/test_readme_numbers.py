"""Every measured number the README quotes is the number in its results file (issue 19, point 4).

Each claim is a piece of README text with ``{}`` where the number goes, the results file under
``benchmarks/results/`` and how to read the number from it, formatted as the README prints it. A re-run that changes
a figure fails this test until the README is regenerated from the file; a README edit that misquotes a file fails it
too. (The text around the numbers is matched with whitespace normalised, so line breaks do not matter.)"""

from __future__ import annotations

import csv
import json
import re
from functools import cache
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"


@cache
def readme() -> str:
    return re.sub(r"\s+", " ", (REPO / "README.md").read_text())


@cache
def doc(name: str):
    path = RESULTS / name
    if path.suffix == ".csv":
        with path.open() as f:
            return list(csv.DictReader(f))
    return json.loads(path.read_text())


def cli(command: str) -> float:
    return next(r for r in doc("cli_startup.json")["results"] if r["command"] == command)["median_s"]


def drop(model: str, engine: str) -> float:
    """quant_cifar10: fp32 PyTorch top-1 - this engine's, in points, as the README signs it (a loss is negative)."""
    row = next(r for r in doc("quant_cifar10.json")["rows"] if r["model"] == model and r["engine"] == engine)
    return -row["top1_drop"]


def top1(model: str, engine: str) -> float:
    return next(r for r in doc("quant_cifar10.json")["rows"] if r["model"] == model and r["engine"] == engine)["top1"]


def int8_speedup(model: str) -> float:
    """quant_cifar10_latency: fastest fp32 median / fastest int8 median at 224x224."""
    rows = [r for r in doc("quant_cifar10_latency.csv") if r["model"] == model and r["input"] == "224"]
    rows = [r for r in rows if r.get("status", "ok") == "ok"]  # a wrong answer has no time
    fastest = {p: min(float(r["median_ms"]) for r in rows if r["precision"] == p) for p in ("fp32", "int8")}
    return fastest["fp32"] / fastest["int8"]


def worst_named(engine: str, models: tuple[str, ...]) -> str:
    """The largest loss of ``engine`` over ``models``, as the README prints it: ``0.37 (MobileNetV3_large_x1_0)``."""
    m = min(models, key=lambda m: drop(m, engine))
    return f"{-drop(m, engine):.2f} ({m})"


def _span(*engines: str) -> str:
    a, b = sorted((drop(SN1, e) for e in engines), reverse=True)
    return f"{a:.2f} to {b:.2f}"


def sn1_case() -> str:
    ort = _span("ptq-minmax-onnxruntime", "ptq-percentile-onnxruntime")
    ov = _span("ptq-minmax-openvino", "ptq-percentile-openvino")
    return (f"nncf {drop(SN1, 'ptq-nncf-openvino'):.2f}; ONNX Runtime PTQ {ort}, the same QDQ graphs on OpenVINO {ov}; "
            f"QAT {drop(SN1, 'qat-onnxruntime'):.2f} on ONNX Runtime")  # fmt: skip


def ghost_qat() -> str:
    g = "GhostNet_x1_0"
    return (f"{top1(g, 'qat-onnxruntime'):.2f}% on ONNX Runtime but {top1(g, 'qat-openvino'):.2f}% "
            f"({drop(g, 'qat-openvino'):.2f})")  # fmt: skip


def speedup_range() -> str:
    """The README's int8 speed-up range: its ends are the slowest and fastest model of the file, none left out."""
    speedups = {m: int8_speedup(m) for m in dict.fromkeys(r["model"] for r in doc("quant_cifar10_latency.csv"))}
    lo, hi = min(speedups, key=speedups.get), max(speedups, key=speedups.get)
    return f"{speedups[lo]:.2f}x ({lo}) to {speedups[hi]:.2f}x ({hi})"


GOAL_V3S = "study_goal_MobileNetV3_small_x1_0/results.json"


def goal(field: str, model: str = "MobileNetV3_small_x1_0", tag: str = ""):
    """A 40-minute goal run's row of ``model`` (`mobilezoo study` results in study_goal_<model>[_<tag>]/)."""
    name = f"study_goal_{model}{'_' + tag if tag else ''}/results.json"
    return next(r for r in doc(name)["models"] if r["model"] == model)[field]


AMX = "study_goal_MobileNetV3_small_x1_0_amx"
SI2 = "study_goal_MobileNetV3_small_x1_0_amx_si2"
SI2R = "study_goal_MobileNetV3_small_x1_0_amx_si2_rerun"
V2 = "study_goal_MobileNetV2_x1_0_amx"
V2AMD = "study_goal_MobileNetV2_x1_0_amd"
STUDY = "study_cifar10/results.json"


def studied(model: str, field: str):
    """The committed study's row of ``model``."""
    return next(r for r in doc(STUDY)["models"] if r["model"] == model)[field]


STEP = "cpu_step_profile_amx.csv"
EPOCHS40 = "epochs in 40 min (50000 images each)"


def step(model: str, small_input: int, field: str) -> float:
    """cpu_step_profile: one field of ``model``'s row at ``small_input``."""
    return float(next(r for r in doc(STEP) if r["model"] == model and r["small_input"] == str(small_input))[field])


def memory_bound_share(model: str) -> float:
    """cpu_step_profile, small_input 1: the % of the step in batch norm and activations, forward and backward."""
    kinds = ("batch norm forward", "batch norm backward", "activation forward", "activation backward")
    return sum(step(model, 1, f"{k} %") for k in kinds)


def goal_v3s(field: str):
    """The first 40-minute goal run's MobileNetV3_small row."""
    return goal(field)


def speed_verdicts() -> str:
    """quant_cifar10_latency: the int8 >= 1.5x fp32 (same runtime) verdicts over every int8 row, each judged only
    beyond the two timings' run-to-run spreads combined (mobilezoo.measure.stats.verdict), wrong answers counted."""
    import math

    from mobilezoo.measure.stats import verdict

    rows = doc("quant_cifar10_latency.csv")
    keys = ("model", "network", "input", "runtime")
    counts = {"reached": 0, "missed": 0, "tie": 0, "wrong": 0}
    for r in (r for r in rows if r["precision"] == "int8"):
        if r["status"] != "ok":
            counts["wrong"] += 1
            continue
        f = next(f for f in rows if f["precision"] == "fp32" and all(f[k] == r[k] for k in keys))
        v = verdict(float(r["speedup_vs_fp32"]), 1.5, math.hypot(float(r["run_to_run"]), float(f["run_to_run"])))
        counts[v.split()[0]] += 1
    n = sum(counts.values())
    return (f"reached in {counts['reached']} of {n} int8 rows, missed in {counts['missed']}, a tie in {counts['tie']}, "
            f"a wrong answer (not timed) in {counts['wrong']}")  # fmt: skip


def worst(engines: tuple[str, ...], models: tuple[str, ...]) -> float:
    return min(drop(m, e) for m in models for e in engines)


NETS = ("MobileNetV1_x1_0", "MobileNetV2_x1_0", "MobileNetV3_large_x1_0", "MobileNetV3_small_x1_0")
NETS += ("ShuffleNetV2_x1_0", "GhostNet_x1_0")
SN1 = "ShuffleNetV1_g3_x0_5"


def target(toolchain: str, tgt: str, field: str) -> float:
    """int8_targets: one field of the MobileNetV3_small row of ``toolchain`` and ``tgt`` (portable / vnni)."""
    rows = doc("int8_targets.json")["rows"]
    return next(r for r in rows if r["toolchain"] == toolchain and r["target"] == tgt)[field]


def portable_cost(toolchain: str) -> float:
    """int8_targets: portable - vnni int8 top-1 on the whole test split, in points."""
    return target(toolchain, "portable", "int8_top1_here") - target(toolchain, "vnni", "int8_top1_here")


def avx2_target(toolchain: str, tgt: str, field: str) -> float:
    """int8_targets_avx2 (a real AVX2-only CPU): one field of the ShuffleNetV2_x1_0 row of ``toolchain``, ``tgt``."""
    rows = doc("int8_targets_avx2.json")["rows"]
    return next(r for r in rows if r["toolchain"] == toolchain and r["target"] == tgt)[field]


def avx2_change(engine: str) -> str:
    """quant_cifar10_avx2: this engine's top-1 - fp32 PyTorch's, signed as the README prints it."""
    row = next(r for r in doc("quant_cifar10_avx2.json")["rows"] if r["engine"] == engine)
    return f"{0.0 - row['top1_drop']:+.2f}"


def kind_share(model: str, kind: str, field: str) -> float:
    rows = doc(f"per_layer_cpu/per_layer_{model}.json")["by_kind"]
    return next(r for r in rows if r["kind"] == kind)[field]


def recipe(kind: str, variant: str, field: str):
    """cifar10_recipe: one field of one variant's row."""
    return next(r for r in doc("cifar10_recipe.json")["rows"] if r["kind"] == kind and r["variant"] == variant)[field]


def recipe_speed(variant: str) -> float:
    return recipe("speed", variant, "img_per_s") / recipe("speed", "base", "img_per_s")


CLAIMS: list[tuple[str, str, object]] = [
    # README text with {} for the number, the results file, the number as the README prints it
    ("`--help` {} s", "cli_startup.json", lambda: f"{cli('mobilezoo --help'):.2f}"),
    ("`list` {} s", "cli_startup.json", lambda: f"{cli('mobilezoo list'):.2f}"),
    ("`info` {} s (no torch)", "cli_startup.json", lambda: f"{cli('mobilezoo info'):.2f}"),
    ("start in about {} s", "cli_startup.json", lambda: f"{cli('mobilezoo predict --backend torch'):.1f}"),
    (
        "MobileNetV3_small_x1_0 took {} s the first time",
        "cli_startup.json",
        lambda: f"{cli('mobilezoo predict --backend auto (first: measures)'):.0f}",
    ),
    (
        "artifact, {} s there against",
        "cli_startup.json",
        lambda: f"{cli('mobilezoo predict --backend auto (cached)'):.1f}",
    ),
    (
        "nncf PTQ loses at most {} top-1 points",
        "quant_cifar10.json",
        lambda: f"{-worst(('ptq-nncf-openvino',), NETS):.2f}",
    ),
    ("QAT on ONNX Runtime at most {};", "quant_cifar10.json", lambda: worst_named("qat-onnxruntime", NETS)),
    ("ShuffleNetV1 g3 x0.5 is the hard case ({})", "quant_cifar10.json", lambda: sn1_case()),
    ("GhostNet's QAT artifact scores {} on OpenVINO", "quant_cifar10.json", lambda: ghost_qat()),
    (
        "checkpoint at {}% top-1; this Xeon",
        "int8_targets.json",
        lambda: f"{target('onnxruntime', 'vnni', 'fp32_top1'):.2f}",
    ),
    (
        "artifact scores {}% here",
        "int8_targets.json",
        lambda: f"{target('onnxruntime', 'vnni', 'int8_top1_here_subset'):.2f}",
    ),
    (
        "here and {}% on the AVX2 CPU",
        "int8_targets.json",
        lambda: f"{target('onnxruntime', 'vnni', 'int8_top1_avx2_subset'):.2f}",
    ),
    (
        "({}% top-1 agreement)",
        "int8_targets.json",
        lambda: f"{100 * target('onnxruntime', 'vnni', 'avx2_vs_here_agree'):.1f}",
    ),
    ("NNCF IR {}% and", "int8_targets.json", lambda: f"{target('nncf', 'vnni', 'int8_top1_here_subset'):.2f}"),
    (
        "% and {}%; the `portable`",
        "int8_targets.json",
        lambda: f"{target('nncf', 'vnni', 'int8_top1_avx2_subset'):.2f}",
    ),
    (
        "on both CPUs ({}%,",
        "int8_targets.json",
        lambda: f"{target('onnxruntime', 'portable', 'int8_top1_avx2_subset'):.2f}",
    ),
    (
        "%, {}%; 100% agreement)",
        "int8_targets.json",
        lambda: f"{target('nncf', 'portable', 'int8_top1_avx2_subset'):.2f}",
    ),
    ("images: {} points (ONNX Runtime", "int8_targets.json", lambda: f"{portable_cost('onnxruntime'):+.2f}"),
    (
        "(ONNX Runtime, {}% vs",
        "int8_targets.json",
        lambda: f"{target('onnxruntime', 'portable', 'int8_top1_here'):.2f}",
    ),
    ("% vs {}%) and", "int8_targets.json", lambda: f"{target('onnxruntime', 'vnni', 'int8_top1_here'):.2f}"),
    ("and {} (NNCF,", "int8_targets.json", lambda: f"{portable_cost('nncf'):+.2f}"),
    ("(NNCF, {}% vs", "int8_targets.json", lambda: f"{target('nncf', 'portable', 'int8_top1_here'):.2f}"),
    ("% vs {}%): within noise", "int8_targets.json", lambda: f"{target('nncf', 'vnni', 'int8_top1_here'):.2f}"),
    (
        "has the 8-bit `vnni` artifacts at {}% (ONNX Runtime)",
        "int8_targets_avx2.json",
        lambda: f"{avx2_target('onnxruntime', 'vnni', 'int8_top1_here'):.2f}",
    ),
    (
        "(ONNX Runtime) and {}% (NNCF) against",
        "int8_targets_avx2.json",
        lambda: f"{avx2_target('nncf', 'vnni', 'int8_top1_here'):.2f}",
    ),
    (
        "(NNCF) against fp32 {}%, the",
        "int8_targets_avx2.json",
        lambda: f"{avx2_target('onnxruntime', 'vnni', 'fp32_top1'):.2f}",
    ),
    (
        "the `portable` ones at {}% and",
        "int8_targets_avx2.json",
        lambda: f"{avx2_target('onnxruntime', 'portable', 'int8_top1_here'):.2f}",
    ),
    (
        "% and {}%, so on such a CPU",
        "int8_targets_avx2.json",
        lambda: f"{avx2_target('nncf', 'portable', 'int8_top1_here'):.2f}",
    ),
    ("change min-max PTQ {} (ONNX Runtime)", "quant_cifar10_avx2.json", lambda: avx2_change("ptq-minmax-onnxruntime")),
    ("(ONNX Runtime) and {} (OpenVINO), nncf", "quant_cifar10_avx2.json", lambda: avx2_change("ptq-minmax-openvino")),
    ("(OpenVINO), nncf {}, ExecuTorch", "quant_cifar10_avx2.json", lambda: avx2_change("ptq-nncf-openvino")),
    ("ExecuTorch {}, LiteRT", "quant_cifar10_avx2.json", lambda: avx2_change("ptq-executorch")),
    ("LiteRT {}, MNN", "quant_cifar10_avx2.json", lambda: avx2_change("ptq-litert")),
    ("MNN {}, QAT", "quant_cifar10_avx2.json", lambda: avx2_change("ptq-mnn")),
    ("QAT {} (ONNX Runtime) and", "quant_cifar10_avx2.json", lambda: avx2_change("qat-onnxruntime")),
    (
        "(ONNX Runtime) and {} (OpenVINO): the same picture",
        "quant_cifar10_avx2.json",
        lambda: avx2_change("qat-openvino"),
    ),
    (
        "of the same recipe, fp32 {}%), so these",
        "quant_cifar10.json",
        lambda: f"{top1('ShuffleNetV2_x1_0', 'pytorch'):.2f}",
    ),
    (
        "1x1 convolutions hold {}% of the MACs",
        "per_layer_cpu/per_layer_ShuffleNetV2_x1_0.json",
        lambda: f"{kind_share('ShuffleNetV2_x1_0', 'conv 1x1', 'MACs_%'):.0f}",
    ),
    (
        "of the MACs but {}% of the time",
        "per_layer_cpu/per_layer_ShuffleNetV2_x1_0.json",
        lambda: f"{kind_share('ShuffleNetV2_x1_0', 'conv 1x1', 'time_%'):.0f}",
    ),
    ("against the recipe's {} img/s", "cifar10_recipe.json", lambda: f"{recipe('speed', 'base', 'img_per_s'):.0f}"),
    ("channels_last off {}x", "cifar10_recipe.json", lambda: f"{recipe_speed('channels_last=false'):.2f}"),
    ("bf16 autocast {}x", "cifar10_recipe.json", lambda: f"{recipe_speed('amp=bf16'):.2f}"),
    ("batch 256 {}x", "cifar10_recipe.json", lambda: f"{recipe_speed('batch_size=256'):.2f}"),
    ("`torch.compile` {}x (probed", "cifar10_recipe.json", lambda: f"{recipe_speed('compile=true'):.2f}"),
    ("the recipe {}% after", "cifar10_recipe.json", lambda: f"{recipe('accuracy', 'base', 'val_top1'):.2f}"),
    (
        "`label_smoothing=0.1` {}%",
        "cifar10_recipe.json",
        lambda: f"{recipe('accuracy', 'label_smoothing=0.1', 'val_top1'):.2f}",
    ),
    ("`lr=0.2` {}%", "cifar10_recipe.json", lambda: f"{recipe('accuracy', 'lr=0.2', 'val_top1'):.2f}"),
    ("(4x4 final map) {}%", "cifar10_recipe.json", lambda: f"{recipe('accuracy', 'small_input=2', 'val_top1'):.2f}"),
    ("one thread, median of all calls) runs {} faster", "quant_cifar10_latency.csv", lambda: speedup_range()),
    ("the run-to-run spread of both timings): {}.", "quant_cifar10_latency.csv", lambda: speed_verdicts()),
    ("MobileNetV3_small_x1_0 reaches {}% top-1", GOAL_V3S, lambda: f"{goal_v3s('CIFAR-10 top-1 %')}"),
    ("after {} epochs in", GOAL_V3S, lambda: f"{goal_v3s('epochs')}"),
    ("in {} minutes of training", GOAL_V3S, lambda: f"{goal_v3s('train time (min)')}"),
    ("84.29% after {} epochs", AMX, lambda: f"{goal('epochs', tag='amx'):.1f}"),
    (
        "40.7 minutes at {} img/s",
        "study_goal_MobileNetV3_small_x1_0_amx",
        lambda: f"{goal('train img/s', tag='amx'):.0f}",
    ),
    ("MobileNetV3_small_x1_0 at {}% top-1", SI2, lambda: f"{goal('CIFAR-10 top-1 %', tag='amx_si2')}"),
    ("top-1 after {} epochs in 37", SI2, lambda: f"{goal('epochs', tag='amx_si2')}"),
    ("in {} minutes of training (280", SI2, lambda: f"{goal('train time (min)', tag='amx_si2')}"),
    ("of training ({} img/s): a 4x4", SI2, lambda: f"{goal('train img/s', tag='amx_si2'):.0f}"),
    ("an {}-minute budget per model on a 2-core AMD EPYC", STUDY, lambda: f"{doc(STUDY)['settings']['budget_min']:g}"),
    ("all eleven, {} minutes of training each", STUDY, lambda: f"{doc(STUDY)['settings']['budget_min']:g}"),
    ("family/model {}, AVX-512", STUDY, lambda: doc(STUDY)["machine"]["cpu_family_model"]),
    ("most accurate at {}% top-1", STUDY, lambda: f"{studied('MobileNetV3_small_x1_0', 'CIFAR-10 top-1 %')}"),
    ("top-1 ({} epochs), then", STUDY, lambda: f"{studied('MobileNetV3_small_x1_0', 'epochs')}"),
    ("then MobileNetV2_x0_5 {}% and", STUDY, lambda: f"{studied('MobileNetV2_x0_5', 'CIFAR-10 top-1 %')}"),
    ("and ShuffleNetV2_x0_5 {}%;", STUDY, lambda: f"{studied('ShuffleNetV2_x0_5', 'CIFAR-10 top-1 %')}"),
    ("(MobileNetV2_x1_4 {}% after", STUDY, lambda: f"{studied('MobileNetV2_x1_4', 'CIFAR-10 top-1 %')}"),
    ("% after {} epochs, ShuffleNetV2_x1_5", STUDY, lambda: f"{studied('MobileNetV2_x1_4', 'epochs')}"),
    ("ShuffleNetV2_x1_5 {}% after", STUDY, lambda: f"{studied('ShuffleNetV2_x1_5', 'CIFAR-10 top-1 %')}"),
    ("46.31% after {}).", STUDY, lambda: f"{studied('ShuffleNetV2_x1_5', 'epochs')}"),
    ("(MobileNetV2_x1_0 {} min)", STUDY, lambda: f"{studied('MobileNetV2_x1_0', 'train time (min)')}"),
    ("reproduces it: {}% top-1 after", SI2R, lambda: f"{goal('CIFAR-10 top-1 %', tag='amx_si2_rerun')}"),
    ("top-1 after {} epochs in 39", SI2R, lambda: f"{goal('epochs', tag='amx_si2_rerun')}"),
    ("epochs in {} minutes (374", SI2R, lambda: f"{goal('train time (min)', tag='amx_si2_rerun')}"),
    ("minutes ({} img/s; the VM", SI2R, lambda: f"{goal('train img/s', tag='amx_si2_rerun'):.0f}"),
    ("is missed: {}% after", V2, lambda: f"{goal('CIFAR-10 top-1 %', 'MobileNetV2_x1_0', 'amx')}"),
    ("after {} epochs in 36", V2, lambda: f"{goal('epochs', 'MobileNetV2_x1_0', 'amx')}"),
    ("in {} minutes (`--tag amx`", V2, lambda: f"{goal('train time (min)', 'MobileNetV2_x1_0', 'amx')}"),
    ("still short: {}% after", V2AMD, lambda: f"{goal('CIFAR-10 top-1 %', 'MobileNetV2_x1_0', 'amd')}"),
    ("after {} epochs in 37", V2AMD, lambda: f"{goal('epochs', 'MobileNetV2_x1_0', 'amd')}"),
    ("epochs in {} minutes (324", V2AMD, lambda: f"{goal('train time (min)', 'MobileNetV2_x1_0', 'amd')}"),
    ("minutes ({} img/s; the warm-up", V2AMD, lambda: f"{goal('train img/s', 'MobileNetV2_x1_0', 'amd'):.0f}"),
    ("step runs {} img/s at small_input 1", STEP, lambda: f"{step('MobileNetV2_x1_0', 1, 'images/s'):.0f}"),
    ("small_input 1 ({} epochs in 40", STEP, lambda: f"{step('MobileNetV2_x1_0', 1, EPOCHS40):.2f}"),
    ("and {} img/s at small_input 2", STEP, lambda: f"{step('MobileNetV2_x1_0', 2, 'images/s'):.0f}"),
    ("at small_input 2 ({} epochs)", STEP, lambda: f"{step('MobileNetV2_x1_0', 2, EPOCHS40):.2f}"),
    ("and spends {}% of its time in batch norm", STEP, lambda: f"{memory_bound_share('MobileNetV2_x1_0'):.0f}"),
    ("against {}% for MobileNetV3_small", STEP, lambda: f"{memory_bound_share('MobileNetV3_small_x1_0'):.0f}"),
]


@pytest.mark.parametrize("text, source, number", CLAIMS, ids=[c[0] for c in CLAIMS])
def test_the_readme_quotes_the_results_file(text, source, number):
    want = text.format(number())
    assert want in readme(), f"README should say {want!r} (from benchmarks/results/{source})"


def _short(model: str) -> str:
    return model.replace("_x1_0", "")


def peers_figures() -> list[str]:
    """What the README's peers paragraph quotes from peers_cpu.json: auto against the fastest fp32 peer, against
    eager, the best reduced-precision artifact, and the phone engines' int8 top-1 change."""
    d = doc("peers_cpu.json")
    out = []
    for g in d["goals"]:
        if g.get("fp32_speedup_vs_fastest_peer"):
            out.append(f"{_short(g['model'])} {g['fp32_speedup_vs_fastest_peer']:.2f}x {g['fastest_peer']}")
        if g.get("speedup_vs_pytorch_eager"):
            out.append(f"{_short(g['model'])} {g['speedup_vs_pytorch_eager']:.2f}x")
        if g.get("best_reduced"):
            out.append(f"{g['reduced_speedup_vs_best_fp32_peer']:.2f}x")
    for a in (d["accuracy"] if isinstance(d["accuracy"], dict) else {}).values():
        for eng in ("executorch", "litert", "mnn"):
            if f"mobilezoo-int8-{eng}" in a:
                out.append(f"{eng} {a[f'mobilezoo-int8-{eng}'] - a['fp32']:+.2f}")
    return out


def test_the_readme_quotes_the_peers_run():
    para = readme()[readme().index("**Against the peers**") :][:4000]
    missing = [f for f in peers_figures() if f not in para]
    assert not missing, f"README's peers paragraph lacks {missing} (from benchmarks/results/peers_cpu.json)"
