import pytest

import mobilezoo as mz
from mobilezoo.models import UnknownModelError, get_entry, list_models
from mobilezoo.models.registry import _REGISTRY


def test_every_published_name_resolves(reference_csv):
    assert len(reference_csv) == 37
    for name in reference_csv:
        entry = get_entry(name)
        assert entry.arch in _REGISTRY
        assert mz.create_model(name, weights="random").model_name == entry.name


def test_ssld_and_int8_names_are_their_base_architecture():
    for name, base in [
        ("MobileNetV3_large_x1_0_ssld", "MobileNetV3_large_x1_0"),
        ("MobileNetV3_large_x1_0_ssld_int8", "MobileNetV3_large_x1_0"),
        ("MobileNetV1_ssld", "MobileNetV1_x1_0"),
        ("GhostNet_x1_3_ssld", "GhostNet_x1_3"),
    ]:
        e = get_entry(name)
        assert e.arch == base and e.weights_tag is not None
        a, b = (
            mz.create_model(name, weights="random").state_dict(),
            mz.create_model(base, weights="random").state_dict(),
        )
        assert {k: v.shape for k, v in a.items()} == {k: v.shape for k, v in b.items()}


@pytest.mark.parametrize(
    "alias, canonical",
    [
        ("shufflenet_v2_x0_5", "ShuffleNetV2_x0_5"),  # torchvision's name: the same network
        ("shufflenet_v2_x2_0", "ShuffleNetV2_x2_0"),
        ("MobileNetV3-Large-x1.0", "MobileNetV3_large_x1_0"),
        ("mobilenetv3_large_x1.0", "MobileNetV3_large_x1_0"),
        ("MobileNetV2", "MobileNetV2_x1_0"),
        ("ShuffleNetV2", "ShuffleNetV2_x1_0"),
        ("mobilenetv3_large_x1_0", "MobileNetV3_large_x1_0"),
        ("SHUFFLENETV1_G3_X1_0", "ShuffleNetV1_g3_x1_0"),
    ],
)
def test_aliases(alias, canonical):
    assert get_entry(alias).name == canonical
    # timm's / torchvision's names of other networks are refused: tests/test_timm_habits.py


def test_unknown_name_suggests_closest():
    with pytest.raises(UnknownModelError) as ei:
        mz.create_model("MobileNetV3_lage_x1_0", weights="random")
    msg = str(ei.value)
    assert "MobileNetV3_lage_x1_0" in msg and "MobileNetV3_large_x1_0" in msg


def test_list_models_pattern_and_family():
    assert list_models("*ssld*") == [n for n in list_models() if "ssld" in n]
    assert set(list_models(family="GhostNet")) == {
        "GhostNet_x0_5",
        "GhostNet_x1_0",
        "GhostNet_x1_3",
        "GhostNet_x1_3_ssld",
    }
    assert len(list_models(family="ShuffleNetV1")) == 20
    assert all(get_entry(n).is_arch for n in list_models(archs_only=True))


def test_issue_variant_lists_are_complete():
    want = (
        [f"MobileNetV1_{s}" for s in ("x0_25", "x0_5", "x0_75", "x1_0")]
        + [f"MobileNetV2_{s}" for s in ("x0_25", "x0_35", "x0_5", "x0_75", "x1_0", "x1_4", "x1_5", "x2_0")]
        + [f"MobileNetV3_{m}_{s}" for m in ("large", "small") for s in ("x0_35", "x0_5", "x0_75", "x1_0", "x1_25")]
        + [f"ShuffleNetV2_{s}" for s in ("x0_25", "x0_33", "x0_5", "x1_0", "x1_5", "x2_0", "swish")]
        + [f"GhostNet_{s}" for s in ("x0_5", "x1_0", "x1_3")]
        + [f"ShuffleNetV1_g{g}_{s}" for g in (1, 2, 3, 4, 8) for s in ("x0_5", "x1_0", "x1_5", "x2_0")]
    )
    assert sorted(want) == sorted(list_models(archs_only=True))
