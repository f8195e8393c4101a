"""Model, loss and CPR configuration: presets, overrides, round trips, and ValueErrors that name the field."""

from __future__ import annotations

import dataclasses
import json

import pytest

from cpl_model import PRESETS, PROMPT_VARIANTS, CPRConfig, LossConfig, ModelConfig, build_model, preset

# --- presets and round trips ----------------------------------------------------------------------

def test_presets_and_variants_are_the_documented_ones():
    assert set(PRESETS) == {"tiny", "small", "full"}
    assert set(PROMPT_VARIANTS) == {"none", "dense", "sparse"}


@pytest.mark.parametrize("name", ["tiny", "small", "full"])
@pytest.mark.parametrize("prompt", PROMPT_VARIANTS)
def test_preset_round_trips_through_json(name, prompt):
    config = preset(name, prompt=prompt)
    assert config.prompt == prompt
    restored = ModelConfig.from_dict(json.loads(json.dumps(config.to_dict())))  # tuples become lists in JSON
    assert restored == config
    assert isinstance(restored.blocks, tuple) and isinstance(restored.prompt_dims, tuple)


def test_preset_overrides_replace_only_the_named_fields():
    base = preset("tiny")
    changed = preset("tiny", top_k=2, refinement_blocks=3)
    assert (changed.top_k, changed.refinement_blocks) == (2, 3)
    untouched = {f.name for f in dataclasses.fields(ModelConfig)} - {"top_k", "refinement_blocks"}
    assert all(getattr(changed, name) == getattr(base, name) for name in untouched)
    assert PRESETS["tiny"] == base  # the registry itself is not modified


def test_model_config_is_immutable():
    with pytest.raises(dataclasses.FrozenInstanceError):
        preset("tiny").dim = 8


def test_full_preset_is_the_paper_model():
    """PromptIR's backbone: dim 48, blocks (4, 6, 6, 8), 4 refinement blocks, heads (1, 2, 4, 8)."""
    full = preset("full")
    assert (full.dim, full.blocks, full.refinement_blocks, full.heads) == (48, (4, 6, 6, 8), 4, (1, 2, 4, 8))
    assert full.prompt_dims == (64, 128, 320) and full.prompt_components == 5 and full.top_k == 1


def test_loss_config_round_trips_through_a_dict():
    config = LossConfig(l1_weight=0.5, cpr=CPRConfig(form="infonce", tau=0.2, negatives=2, start_step=10))
    restored = LossConfig.from_dict(json.loads(json.dumps(config.to_dict())))
    assert restored == config
    assert isinstance(restored.cpr, CPRConfig)


def test_loss_config_accepts_a_nested_cpr_dict():
    assert LossConfig(cpr={"weight": 0.2}).cpr == CPRConfig(weight=0.2)


# --- bad values raise ValueError naming the field -------------------------------------------------

@pytest.mark.parametrize(("overrides", "field"), [
    ({"top_k": 6}, "top_k"),  # > prompt_components (5)
    ({"top_k": 0}, "top_k"),
    ({"prompt_components": 2, "top_k": 3}, "top_k"),
    ({"heads": (3, 2, 2, 4)}, "heads"),  # 16 channels, 3 heads
    ({"heads": (1, 2, 2, 5)}, "heads"),  # latent: 128 channels, 5 heads
    ({"heads": (1, 2)}, "heads"),
    ({"blocks": (1, 1, 1)}, "blocks"),
    ({"blocks": (1, 0, 1, 1)}, "blocks"),
    ({"dim": 0}, "dim"),
    ({"refinement_blocks": -1}, "refinement_blocks"),
    ({"ffn_expansion": 0.0}, "ffn_expansion"),
    ({"prompt": "mixture"}, "prompt"),
    ({"prompt_dims": (15, 32, 64)}, "prompt_dims"),  # level 2 fuses 32 + 15 channels, heads[2] = 2
    ({"prompt_sizes": (16, 0, 4)}, "prompt_sizes"),
    ({"prompt_components": 0}, "prompt_components"),
])
def test_bad_model_config_values_name_the_field(overrides, field):
    with pytest.raises(ValueError, match=field):
        preset("tiny", **overrides)


def test_prompt_width_rule_does_not_apply_without_prompts():
    assert preset("tiny", prompt="none", prompt_dims=(15, 32, 64)).prompt == "none"


def test_unknown_model_config_key_is_named():
    with pytest.raises(ValueError, match="bogus"):
        ModelConfig.from_dict({**preset("tiny").to_dict(), "bogus": 1})
    with pytest.raises(ValueError, match="bogus"):
        preset("tiny", bogus=1)


@pytest.mark.parametrize(("args", "kwargs", "needle"), [
    (("huge",), {}, "huge"),
    (("tiny",), {"prompt": "mixture"}, "prompt"),
    (("tiny",), {"bogus": 1}, "bogus"),
    (("tiny",), {"top_k": 9}, "top_k"),
])
def test_build_model_rejects_bad_arguments(args, kwargs, needle):
    with pytest.raises(ValueError, match=needle):
        build_model(*args, **kwargs)


def test_unknown_preset_lists_the_known_ones():
    with pytest.raises(ValueError, match="huge") as info:
        preset("huge")
    assert all(name in str(info.value) for name in PRESETS)


@pytest.mark.parametrize(("kwargs", "field"), [
    ({"weight": -1}, "weight"),
    ({"form": "hinge"}, "form"),
    ({"negatives": 0}, "negatives"),
    ({"negative_weight": "uniform"}, "negative_weight"),
    ({"tau": 0.0}, "tau"),
    ({"start_step": -1}, "start_step"),
    ({"features": "lpips"}, "features"),
    ({"features": "vgg19"}, "vgg_weights"),
])
def test_bad_cpr_config_values_name_the_field(kwargs, field):
    with pytest.raises(ValueError, match=field):
        CPRConfig(**kwargs)


def test_vgg_features_with_a_weights_path_is_a_valid_config():
    assert CPRConfig(features="vgg19", vgg_weights="/nowhere/vgg19.pth").features == "vgg19"  # loaded lazily


@pytest.mark.parametrize(("values", "needle"), [
    ({"bogus": 1}, "bogus"),
    ({"cpr": {"bogus": 1}}, "bogus"),
    ({"cpr": {"form": "hinge"}}, "form"),
    ({"l1_weight": -0.5}, "l1_weight"),
])
def test_bad_loss_config_dicts_are_rejected(values, needle):
    with pytest.raises(ValueError, match=needle):
        LossConfig.from_dict(values)
