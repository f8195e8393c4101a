"""load_config: YAML file, then ``--set a.b=c`` overrides, validated into frozen models; errors name the key."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from pipelines.core.config import ConfigError, Frozen, Tile, load_config, parse_override
from pipelines.core.errors import PipelineError
from pipelines.data.job import SynthesizeConfig
from pipelines.data.synthesis import SynthesisConfig

YAML = """\
source: /data/clean
output:
  uri: s3://bucket/datasets
  name: cdd11
synthesis:
  seed: 5
  patch: 96
  recipes: noise25,haze
"""


@pytest.fixture
def config_file(tmp_path):
    path = tmp_path / "synthesize.yaml"
    path.write_text(YAML)
    return path


def test_yaml_file_values_reach_the_model_and_unset_keys_keep_their_defaults(config_file):
    config = load_config(SynthesizeConfig, config_file)
    assert config.source == "/data/clean"
    assert (config.output.uri, config.output.name) == ("s3://bucket/datasets", "cdd11")
    assert (config.synthesis.seed, config.synthesis.patch, config.synthesis.recipes) == (5, 96, "noise25,haze")
    assert config.synthesis.crops_per_image == SynthesisConfig().crops_per_image
    assert config.output.rows_per_shard == 512


def test_overrides_win_over_the_file_and_leave_sibling_keys_alone(config_file):
    config = load_config(SynthesizeConfig, config_file, ["synthesis.seed=7", "output.rows_per_shard=16",
                                                         "synthesis.recipe_weights={haze: 3}"])
    assert config.synthesis.seed == 7
    assert config.synthesis.patch == 96  # same section, not overridden
    assert config.output.rows_per_shard == 16 and config.output.name == "cdd11"
    assert config.synthesis.recipe_weights == {"haze": 3.0}


def test_override_values_are_read_as_yaml():
    assert parse_override("synthesis.val_fraction=0.25") == (["synthesis", "val_fraction"], 0.25)
    assert parse_override("synthesis.recipe_files=[a.yaml, b.yaml]") == (["synthesis", "recipe_files"],
                                                                          ["a.yaml", "b.yaml"])
    assert parse_override("ray.address=null") == (["ray", "address"], None)
    assert parse_override("output.uri=s3://bucket/x") == (["output", "uri"], "s3://bucket/x")


def test_later_overrides_of_the_same_key_win():
    config = load_config(SynthesizeConfig, None, ["source=/a", "synthesis.seed=1", "synthesis.seed=2"])
    assert config.synthesis.seed == 2


@pytest.mark.parametrize("where", ["file", "override"])
def test_an_unknown_key_is_a_config_error_naming_the_dotted_key(tmp_path, where):
    path = tmp_path / "c.yaml"
    path.write_text(YAML + ("  crops_per_imag: 3\n" if where == "file" else ""))
    overrides = ["synthesis.crops_per_imag=3"] if where == "override" else []
    with pytest.raises(ConfigError, match=r"synthesis\.crops_per_imag: unknown key"):
        load_config(SynthesizeConfig, path, overrides)


def test_an_unknown_section_is_named():
    with pytest.raises(ConfigError, match=r"\btraining: unknown key"):
        load_config(SynthesizeConfig, None, ["source=/a", "training.epochs=3"])


@pytest.mark.parametrize("override, key", [
    ("synthesis.patch=8", "synthesis.patch"),
    ("synthesis.seed=-1", "synthesis.seed"),
    ("synthesis.val_fraction=1.5", "synthesis.val_fraction"),
    ("synthesis.crops_per_image=many", "synthesis.crops_per_image"),
    ("output.name=a/b", "output.name"),
    ("synthesis.recipe_weights={haze: 0}", "synthesis.recipe_weights"),
])
def test_a_bad_value_is_a_one_line_config_error_naming_the_key_and_the_value(override, key):
    with pytest.raises(ConfigError) as caught:
        load_config(SynthesizeConfig, None, ["source=/a", override])
    message = str(caught.value)
    assert message.startswith(f"config error: {key}: ")
    assert "\n" not in message


def test_a_bad_value_error_shows_what_was_given():
    with pytest.raises(ConfigError, match=r"synthesis\.patch: .*32.*\(got 8\)"):
        load_config(SynthesizeConfig, None, ["source=/a", "synthesis.patch=8"])


def test_a_missing_required_key_is_named():
    class Needs(Frozen):
        inner: dict[str, int]
        name: str

    with pytest.raises(ConfigError, match=r"config error: name: Field required"):
        load_config(Needs, None, ["inner.a=1"])


@pytest.mark.parametrize("item", ["synthesis.seed", "=3", "  =3", ""])
def test_a_malformed_override_is_rejected_quoting_it(item):
    with pytest.raises(ConfigError, match="--set expects key=value") as caught:
        load_config(SynthesizeConfig, None, ["source=/a", item])
    assert repr(item) in str(caught.value)


def test_an_override_below_a_plain_value_is_rejected():
    with pytest.raises(ConfigError, match=r"synthesis\.seed\.x: seed is not a section"):
        load_config(SynthesizeConfig, None, ["source=/a", "synthesis.seed=1", "synthesis.seed.x=2"])


def test_an_unreadable_or_malformed_file_is_named(tmp_path):
    missing = tmp_path / "missing.yaml"
    with pytest.raises(ConfigError, match="cannot read config .*missing.yaml"):
        load_config(SynthesizeConfig, missing)
    broken = tmp_path / "broken.yaml"
    broken.write_text("synthesis: [unclosed\n")
    with pytest.raises(ConfigError, match="cannot read config .*broken.yaml"):
        load_config(SynthesizeConfig, broken)
    listing = tmp_path / "list.yaml"
    listing.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="list.yaml must be a mapping"):
        load_config(SynthesizeConfig, listing)


def test_loaded_configs_are_frozen(config_file):
    config = load_config(SynthesizeConfig, config_file)
    with pytest.raises(ValidationError):
        config.synthesis.seed = 9


def test_an_error_about_a_key_names_the_flag_that_sets_it():
    with pytest.raises(ConfigError, match=r"^config error: synthesis\.patch \(--patch\): .*\(got 8\)$"):
        load_config(SynthesizeConfig, None, ["source=/a", "synthesis.patch=8"], flags={"synthesis.patch": "--patch"})


def test_config_errors_are_pipeline_errors_and_still_value_errors():
    assert issubclass(ConfigError, PipelineError) and issubclass(ConfigError, ValueError)


@pytest.mark.parametrize(("tile", "expected"), [(0, None), (None, None), (96, 96), (512, 512)])
def test_a_tile_of_0_or_null_means_whole_images(tile, expected):
    class Tiled(Frozen):
        tile: Tile = 512

    assert load_config(Tiled, None, [f"tile={'null' if tile is None else tile}"]).tile == expected


def test_a_tile_too_small_for_its_overlap_is_named():
    class Tiled(Frozen):
        tile: Tile = 512

    with pytest.raises(ConfigError, match=r"config error: tile: must be 0 \(whole images\) or at least 96"):
        load_config(Tiled, None, ["tile=64"])
