"""The metadata table `mobilezoo list` and `info` read without torch (resources/model_table.json), rebuilt here from
the registry, the weights catalog and the networks themselves, and compared with the shipped file exactly. On a
difference: `python scripts/make_model_table.py` (and review the diff)."""

import pytest

from mobilezoo import metadata
from mobilezoo.factory import create_model
from mobilezoo.models import UnknownModelError, get_entry, list_families, list_models
from mobilezoo.peers import DifferentNetworkError
from mobilezoo.profile.table import arch_row, build_table

SHIPPED = metadata.load_table()


def test_every_name_row_is_the_registry_and_catalog():
    fresh = build_table(archs=False)
    assert [r["name"] for r in SHIPPED["models"]] == list_models()
    for new, old in zip(fresh["models"], SHIPPED["models"], strict=True):
        assert new == old, new["name"]
    for key in ("generated_by", "input_size", "weights_host"):
        assert fresh[key] == SHIPPED[key]
    assert list(SHIPPED["archs"]) == list_models(archs_only=True)


@pytest.mark.parametrize("arch", list_models(archs_only=True))
def test_arch_counts_are_the_built_network(arch):
    # params, MACs, FLOPs, memory access, peak activations, file sizes, num_features, default_cfg, per-block table
    assert arch_row(create_model(arch, weights="random")) == SHIPPED["archs"][arch]


def test_names_aliases_and_globs_resolve_as_the_registry_does():
    for name in list_models():
        e = get_entry(name)
        for key in (name, *e.aliases, name.lower(), name.replace("_", "-").upper()):
            assert metadata.resolve(key)["name"] == get_entry(key).name, key
    for pattern in (None, "*ssld*", "mobilenetv3_*", "GhostNet*", "*x1_0", "shufflenet*"):
        assert metadata.select(pattern) == list_models(pattern)
        assert metadata.select(pattern, archs_only=True) == list_models(pattern, archs_only=True)
    assert metadata.families() == list_families()
    for fam in list_families():
        assert metadata.select(family=fam) == list_models(family=fam)
        assert metadata.select(family=fam.lower()) == list_models(family=fam)


@pytest.mark.parametrize("bad", ["ShuffleNetV3_x1_0", "resnet50", "mobilenet_v2", "mobilenetv3_large_100"])
def test_unknown_or_other_network_names_fail_as_in_the_registry(bad):
    # an unknown name (did-you-mean), or a torchvision/timm name of a different network (mobilezoo.peers)
    with pytest.raises((UnknownModelError, DifferentNetworkError)) as from_table:
        metadata.resolve(bad)
    with pytest.raises((UnknownModelError, DifferentNetworkError)) as from_registry:
        get_entry(bad)
    assert type(from_table.value) is type(from_registry.value)
    assert str(from_table.value) == str(from_registry.value)


def test_family_prefix_and_unknown_family():
    assert metadata.select(family="Ghost") == list_models(family="GhostNet")
    shufflenets = [n for n in list_models() if get_entry(n).family in ("ShuffleNetV1", "ShuffleNetV2")]
    assert metadata.select(family="shufflenet") == shufflenets and len(shufflenets) == 27
    assert metadata.select(family="MobileNetV3") == list_models(family="MobileNetV3")  # exact beats prefix
    with pytest.raises(ValueError) as e:
        metadata.select(family="ResNet")
    assert str(e.value) == (
        "unknown family 'ResNet'; choose from MobileNetV1, MobileNetV2, MobileNetV3, ShuffleNetV1, ShuffleNetV2, "
        "GhostNet (or the start of one)"
    )


def test_weights_url_follows_the_mirror_variable(monkeypatch):
    row = metadata.resolve("MobileNetV3_large_x1_0_ssld")
    from mobilezoo.weights.hub import paddle_url

    monkeypatch.setenv("MOBILEZOO_WEIGHTS_HOST", "http://mirror.example/paddle/")
    assert metadata.weights_url(row["pretrained_url"]) == paddle_url(get_entry(row["name"]))
    assert metadata.weights_url(row["weights"]["url"]).startswith("http://mirror.example/paddle/dygraph/")
