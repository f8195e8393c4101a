"""The synthesis config and the per-batch transform, called directly (no Ray).

These are the pieces whose purity makes the job deterministic: a sample's pair depends only on the
seed, its content and its crop index, never on which batch or worker it lands in; its split only on
its content.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections import Counter, defaultdict

import cv2
import numpy as np
import pytest
from numpy.lib.stride_tricks import sliding_window_view

from degradation_synth import RECIPE_SETS, RECIPES, replay
from pipelines.core.config import ConfigError, load_config
from pipelines.data import sources, synthesis
from pipelines.data.job import SynthesizeConfig
from pipelines.data.synthesis import PAIR_COLUMNS, SynthesisConfig, Synthesize, split_of

from ..conftest import TRANSFORM_PATCH, photo_halves, source_batch, synthesis_config, transform_config


def rows_of(out: dict[str, list]) -> list[dict]:
    return [dict(zip(out, values)) for values in zip(*out.values())]


def by_sample(out: dict[str, list]) -> dict[str, dict]:
    return {row["sample_id"]: row for row in rows_of(out)}


def as_image(data: bytes, side: int = TRANSFORM_PATCH) -> np.ndarray:
    return np.frombuffer(data, np.uint8).reshape(side, side, 3)


def test_every_source_gives_one_row_per_crop_with_every_column(files):
    out = Synthesize(transform_config(crops_per_image=3))(source_batch(files))
    assert list(out) == list(PAIR_COLUMNS)
    assert sorted(out["sample_id"]) == sorted(f"{i}#{crop}" for i in files for crop in range(3))
    assert set(out["skip_reason"]) == {""}
    assert set(out["height"]) == set(out["width"]) == {TRANSFORM_PATCH}


def test_the_clean_patch_is_an_exact_crop_of_the_decoded_source(files):
    out = Synthesize(transform_config())(source_batch(files))
    for row in rows_of(out):
        source = sources.decode(files[row["source_id"]], max_pixels=10**8, min_side=TRANSFORM_PATCH).image
        windows = sliding_window_view(source, (TRANSFORM_PATCH, TRANSFORM_PATCH, 3))[:, :, 0]
        clean = as_image(row["clean"])
        assert (windows == clean).all(axis=(2, 3, 4)).any(), row["sample_id"]


def test_the_record_replays_to_the_degraded_patch_and_names_the_recipe(files):
    for row in rows_of(Synthesize(transform_config())(source_batch(files))):
        record = json.loads(row["record"])
        np.testing.assert_array_equal(replay(as_image(row["clean"]), record), as_image(row["degraded"]))
        assert record["recipe"] == row["recipe"] and record["task"] == row["task"]
        assert row["recipe"] in ("noise25", "haze")
        assert not np.array_equal(as_image(row["clean"]), as_image(row["degraded"]))


def test_crops_of_one_source_differ(files):
    out = by_sample(Synthesize(transform_config(crops_per_image=2))(source_batch(files)))
    for identifier in files:
        assert out[f"{identifier}#0"]["clean"] != out[f"{identifier}#1"]["clean"]


def test_a_sample_does_not_depend_on_its_batch_or_its_position_in_it(files):
    together = by_sample(Synthesize(transform_config())(source_batch(files)))
    reversed_batch = by_sample(Synthesize(transform_config())(source_batch(dict(reversed(files.items())))))
    alone = {}
    for identifier, data in files.items():
        alone.update(by_sample(Synthesize(transform_config())(source_batch({identifier: data}))))
    assert together == reversed_batch == alone


def test_a_renamed_copy_gets_the_same_split_and_pair_because_both_come_from_the_content(files):
    identifier, data = next(iter(files.items()))
    out = by_sample(Synthesize(transform_config())(source_batch({identifier: data, "elsewhere/copy.bin": data})))
    original, copy = out[f"{identifier}#0"], out["elsewhere/copy.bin#0"]
    assert (copy["split"], copy["degraded"], copy["clean"]) == (original["split"], original["degraded"],
                                                               original["clean"])


def test_the_seed_changes_every_pair(files):
    first = by_sample(Synthesize(transform_config(seed=1))(source_batch(files)))
    second = by_sample(Synthesize(transform_config(seed=2))(source_batch(files)))
    assert first.keys() == second.keys()
    assert all(first[s]["degraded"] != second[s]["degraded"] for s in first)


def test_the_split_column_follows_the_content_hash(files):
    for row in rows_of(Synthesize(transform_config())(source_batch(files))):
        assert row["split"] == split_of(row["content_sha256"], 0.3, 0.3)
        assert row["content_sha256"] == hashlib.sha256(files[row["source_id"]]).hexdigest()


@pytest.mark.parametrize("split", ["train", "val", "test"])
def test_a_transform_for_one_split_makes_exactly_that_split_s_rows_and_skips_the_rest_unread(files, split):
    batch = source_batch({**files, "notes.jpg": b"plain text " * 40})
    everything = by_sample(Synthesize(transform_config())(batch))
    notes_split = split_of(hashlib.sha256(b"plain text " * 40).hexdigest(), 0.3, 0.3)
    only = by_sample(Synthesize(transform_config(), split)(batch))
    assert only == {sample: row for sample, row in everything.items() if row["split"] == split}
    assert ("notes.jpg#-1" in only) == (notes_split == split)  # nor is a bad source of another split reported
    assert {row["split"] for row in everything.values()} == {"train", "val", "test"}  # the four photos span them


def test_recipe_weights_steer_the_mixture(files):
    many = transform_config(crops_per_image=8)
    even = Counter(Synthesize(many)(source_batch(files))["recipe"])
    rare_haze = transform_config(crops_per_image=8, recipe_weights={"haze": 1e-6})
    skewed = Counter(Synthesize(rare_haze)(source_batch(files))["recipe"])
    assert set(even) == {"noise25", "haze"}
    assert skewed == {"noise25": 8 * len(files)}


def test_a_bad_source_yields_one_row_with_its_reason_and_no_images(files):
    batch = source_batch({**files, "empty.jpg": b"", "notes.jpg": b"plain text " * 40})
    out = rows_of(Synthesize(transform_config())(batch))
    bad = {row["source_id"]: row for row in out if row["skip_reason"]}
    assert {k: v["skip_reason"] for k, v in bad.items()} == {"empty.jpg": sources.EMPTY,
                                                             "notes.jpg": sources.UNDECODABLE}
    for row in bad.values():
        assert (row["crop"], row["degraded"], row["clean"], row["record"], row["recipe"]) == (-1, b"", b"", "", "")
    assert len(out) == 2 * len(files) + 2


def test_a_converted_source_is_marked_on_its_rows(files):
    gray = cv2.cvtColor(next(iter(photo_halves(1).values())), cv2.COLOR_BGR2GRAY)
    out = rows_of(Synthesize(transform_config())(source_batch({"gray.png": cv2.imencode(".png", gray)[1].tobytes()})))
    assert [row["converted_from"] for row in out] == ["grayscale", "grayscale"]
    assert all(row["skip_reason"] == "" for row in out)


def test_split_of_is_a_deterministic_function_of_the_hash():
    hashes = [hashlib.sha256(str(i).encode()).hexdigest() for i in range(200)]
    assert [split_of(h, 0.2, 0.1) for h in hashes] == [split_of(h, 0.2, 0.1) for h in hashes]


def test_split_of_cuts_the_hash_range_test_then_val_then_train():
    assert split_of("0" * 64, 0.1, 0.1) == "test"
    assert split_of("1a" + "0" * 62, 0.1, 0.1) == "val"  # 0x1a/0x100 = 0.10 .. 0.11
    assert split_of("f" * 64, 0.1, 0.1) == "train"
    assert split_of("0" * 64, 0.0, 0.0) == "train"


def test_split_of_follows_the_fractions_over_many_sources():
    rng = random.Random(0)
    hashes = [f"{rng.getrandbits(256):064x}" for _ in range(20_000)]
    counts = Counter(split_of(h, 0.2, 0.1) for h in hashes)
    assert abs(counts["val"] / len(hashes) - 0.2) < 0.015
    assert abs(counts["test"] / len(hashes) - 0.1) < 0.015


def test_val_and_test_fractions_that_leave_no_training_split_are_rejected():
    """val_fraction and test_fraction are each below 1, but together they must leave room for train."""
    with pytest.raises((ConfigError, ValueError), match="fraction"):
        load_config(SynthesizeConfig, None, ["source=/a", "synthesis.val_fraction=0.6",
                                             "synthesis.test_fraction=0.6"])


def test_recipe_and_set_names_resolve_in_order():
    recipes = SynthesisConfig(recipes="haze, three_task").resolved_recipes()
    assert [r.name for r in recipes] == ["haze", *RECIPE_SETS["three_task"]]


def test_an_unknown_recipe_name_fails_with_the_config_listing_the_known_names():
    with pytest.raises(ConfigError, match=r"config error: synthesis: recipes: .*'hazy'") as caught:
        load_config(SynthesizeConfig, None, ["source=/a", "synthesis.recipes=noise25,hazy"])
    message = str(caught.value)
    assert all(name in message for name in RECIPES)
    assert all(name in message for name in RECIPE_SETS)


def test_an_unknown_recipe_in_the_training_config_fails_before_ray_starts():
    """Training resolves recipes only on its workers; the config check must find a misspelt one first."""
    from pipelines.training.config import TrainConfig

    with pytest.raises(ConfigError, match=r"config error: data\.synthesis: recipes: .*'hazy'"):
        load_config(TrainConfig, None, ["data.synthesis.recipes=hazy"])


def test_recipes_naming_nothing_is_an_error():
    with pytest.raises(ValueError, match="names no recipe"):
        SynthesisConfig(recipes=" , ").resolved_recipes()


def test_weights_of_an_unknown_recipe_are_an_error_and_of_one_not_mixed_in_ignored():
    with pytest.raises(ValueError, match="recipe_weights names 'rian', which is not a recipe"):
        SynthesisConfig(recipes="haze,noise25", recipe_weights={"rian": 2.0}).resolved_recipes()
    # A known recipe that is not mixed in: its weight is ignored, so narrowing `recipes` keeps the defaults valid.
    narrowed = SynthesisConfig(recipes="haze", recipe_weights={"rain": 2.0})
    assert [r.name for r in narrowed.resolved_recipes()] == ["haze"]


def test_recipe_files_add_named_recipes_usable_beside_built_in_ones(tmp_path):
    path = tmp_path / "extra.yaml"
    path.write_text("name: foggy\nsteps:\n  - kind: haze\n    beta: [1.0, 2.0]\n")
    recipes = SynthesisConfig(recipes="foggy,noise25", recipe_files=[str(path)]).resolved_recipes()
    assert [r.name for r in recipes] == ["foggy", "noise25"]
    assert [step.kind.value for step in recipes[0].steps] == ["haze"]


def test_validation_pairs_apply_every_recipe_to_crops_of_each_val_source_only(photo_folder):
    config = synthesis_config(val_fraction=0.3, test_fraction=0.3, patch=48)
    pairs = synthesis.validation_pairs(str(photo_folder), config, crops_per_recipe=2)
    contents = {path.name: hashlib.sha256(path.read_bytes()).hexdigest() for path in photo_folder.iterdir()}
    val_sources = sorted(name for name, content in contents.items()
                         if synthesis.split_of(content, config.val_fraction, config.test_fraction) == "val")
    assert val_sources and len(val_sources) < len(contents)  # the check below means something
    recipes = [recipe.name for recipe in config.resolved_recipes()]
    assert sorted(pairs["sample_id"]) == sorted(f"{source}#{crop}/{recipe}" for source in val_sources
                                                for crop in range(2) for recipe in recipes)
    count = len(val_sources) * 2 * len(recipes)
    assert pairs["degraded"].shape == pairs["clean"].shape == (count, 48, 48, 3)
    assert pairs["degraded"].dtype == pairs["clean"].dtype == np.uint8
    assert Counter(pairs["recipe"]) == {recipe: len(val_sources) * 2 for recipe in recipes}
    tasks = {recipe.name: recipe.task for recipe in config.resolved_recipes()}
    assert pairs["task"] == [tasks[recipe] for recipe in pairs["recipe"]]
    # Every recipe degrades the same clean crop: the clean patch depends on source and crop only.
    by_crop = defaultdict(set)
    for sample_id, clean in zip(pairs["sample_id"], pairs["clean"], strict=True):
        by_crop[sample_id.split("/")[0]].add(clean.tobytes())
    assert all(len(cleans) == 1 for cleans in by_crop.values())
    assert len({next(iter(c)) for c in by_crop.values()}) == len(by_crop)

    again = synthesis.validation_pairs(str(photo_folder), config, crops_per_recipe=2)
    assert again["sample_id"] == pairs["sample_id"] and again["task"] == pairs["task"]
    np.testing.assert_array_equal(again["degraded"], pairs["degraded"])
    np.testing.assert_array_equal(again["clean"], pairs["clean"])


def test_validation_pairs_from_an_empty_val_split_fail_naming_the_split(few_photos):
    config = synthesis_config(val_fraction=0.0, test_fraction=0.3)
    with pytest.raises(ValueError, match="val split"):
        synthesis.validation_pairs(str(few_photos), config)
