"""Training patches from a mix of published datasets: seeded crops, flips and rotations that are the same for
the same seed, each dataset repeated per pass, online noise on clean images, resuming mid-stream, and the frozen
validation patches."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from degradation_synth import rng_for
from pipelines.core.config import ConfigError
from pipelines.data import ingestion, patches
from pipelines.data.ingestion import IngestConfig
from pipelines.data.patches import MixEntry

from ..conftest import photo_halves

PATCH = 48
REPEAT = 3
SIGMAS = (15, 50)


def ingest(root: Path, out: Path, layout: str, name: str) -> str:
    config = IngestConfig(source=str(root), output={"uri": str(out), "name": name, "rows_per_shard": 2},
                          ingest={"layout": layout, "min_side": 64, "val_fraction": 0.3})
    ingestion.ingest(str(root), config.output, config.ingest, config.model_dump(mode="json"))
    return str(out / name)


@pytest.fixture(scope="module")
def mix(ray_cluster, tmp_path_factory) -> list[patches.MixPart]:
    """Rain pairs (repeated) and clean images (noised at two levels), ingested from real photos."""
    base = tmp_path_factory.mktemp("mix")
    photos = list(photo_halves(10, 96).values())
    for folder in ("rain/gt", "rain/rainy", "clean"):
        (base / folder).mkdir(parents=True)
    for n, photo in enumerate(photos[:6]):
        cv2.imwrite(str(base / "rain" / "gt" / f"norain-{n}.png"), photo)
        cv2.imwrite(str(base / "rain" / "rainy" / f"rain-{n}.png"), (photo * 0.7).astype(np.uint8))
    for n, photo in enumerate(photos[6:]):
        cv2.imwrite(str(base / "clean" / f"{n}.png"), photo)
    entries = [MixEntry(uri=ingest(base / "rain", base / "out", "rain100l", "rain"), repeat=REPEAT),
               MixEntry(uri=ingest(base / "clean", base / "out", "clean", "clean"), sigmas=SIGMAS)]
    return patches.open_mix(entries, patch=PATCH)


def rows_of(stream) -> dict[str, tuple]:
    return {row["sample_id"]: (row["task"], row["recipe"], bytes(row["degraded"]), bytes(row["clean"]))
            for row in stream.take_all()}


def test_a_pass_holds_each_pair_repeat_times_and_each_clean_image_once_per_noise_level(mix):
    rows = rows_of(patches.training_patches(mix, PATCH, seed=0, passes=1))
    rain = [part for part in mix if not part.clean_only][0].manifest["counts"]["train"]["rain100l"]
    clean = [part for part in mix if part.clean_only][0].manifest["counts"]["train"]["clean"]
    assert patches.pass_counts(mix) == {"noise": clean * len(SIGMAS), "rain": rain * REPEAT}
    tasks = [task for task, _, _, _ in rows.values()]
    assert (tasks.count("rain"), tasks.count("noise")) == (rain * REPEAT, clean * len(SIGMAS))
    assert {recipe for _, recipe, _, _ in rows.values()} == {"rain100l", "noise15", "noise50"}
    assert all(len(data) == PATCH * PATCH * 3 for _, _, degraded, clean in rows.values() for data in (degraded, clean))


def test_the_same_seed_reads_the_same_patches_and_another_seed_other_ones(mix):
    first = rows_of(patches.training_patches(mix, PATCH, seed=5, passes=2))
    assert rows_of(patches.training_patches(mix, PATCH, seed=5, passes=2)) == first
    other = rows_of(patches.training_patches(mix, PATCH, seed=6, passes=2))
    assert other.keys() == first.keys()
    assert sum(other[key] == first[key] for key in first) == 0


def test_every_copy_and_pass_is_a_fresh_window(mix):
    rows = rows_of(patches.training_patches(mix, PATCH, seed=0, passes=2))
    rain = {key: value for key, value in rows.items() if value[0] == "rain"}
    sample = next(iter(rain)).split("@")[0]
    windows = [rain[f"{sample}@{p}.{c}"][3] for p in range(2) for c in range(REPEAT)]
    assert len(set(windows)) == len(windows)


def test_a_stream_that_starts_at_a_later_pass_continues_the_same_stream(mix):
    whole = rows_of(patches.training_patches(mix, PATCH, seed=2, passes=2))
    later = rows_of(patches.training_patches(mix, PATCH, seed=2, passes=1, first_pass=1))
    assert later == {key: value for key, value in whole.items() if "@1." in key}


def test_clean_images_get_gaussian_noise_of_each_level(mix):
    rows = rows_of(patches.training_patches(mix, PATCH, seed=0, passes=1))
    reference = np.random.default_rng(0)
    for sigma in SIGMAS:
        noisy = [(np.frombuffer(d, np.uint8).astype(float), np.frombuffer(c, np.uint8).astype(float))
                 for _, recipe, d, c in rows.values() if recipe == f"noise{sigma}"]
        residual, clean = np.concatenate([d - c for d, c in noisy]), np.concatenate([c for _, c in noisy])
        # PromptIR's noise on the same pixels, clipping and truncation included, from an independent generator.
        expected = np.clip(clean + reference.standard_normal(clean.shape) * sigma, 0, 255).astype(np.uint8) - clean
        assert abs(residual.std() - expected.std()) < 0.04 * sigma
        assert abs(residual.mean() - expected.mean()) < 0.04 * sigma


def test_a_patch_is_one_window_of_both_images_under_one_of_the_eight_flips_and_rotations():
    image = np.arange(10 * 12 * 3, dtype=np.uint32).reshape(10, 12, 3).astype(np.uint8)
    seen = set()
    for index in range(64):
        rng = rng_for(0, "test", index)
        clean, degraded = patches.random_patch(image, 255 - image, 4, rng, "x", "shard")
        np.testing.assert_array_equal(degraded, 255 - clean)
        rng = rng_for(0, "test", index)
        top, left, turn = int(rng.integers(0, 7)), int(rng.integers(0, 9)), int(rng.integers(8))
        window = np.rot90(image[top:top + 4, left:left + 4], turn % 4)
        np.testing.assert_array_equal(clean, window[:, ::-1] if turn >= 4 else window)
        seen.add(turn)
    assert seen == set(range(8))


def test_validation_patches_are_frozen_and_noise_clean_images_at_every_level(mix):
    first = patches.validation_patches(mix, PATCH, seed=0, max_pairs=64)
    again = patches.validation_patches(mix, PATCH, seed=0, max_pairs=64)
    np.testing.assert_array_equal(first["degraded"], again["degraded"])
    assert first["degraded"].shape[1:] == (PATCH, PATCH, 3)
    val = {part.clean_only: sum(part.manifest["counts"]["val"].values()) for part in mix}
    assert first["recipe"].count("rain100l") == val[False]
    assert (first["recipe"].count("noise15"), first["recipe"].count("noise50")) == (val[True], val[True])
    capped = patches.validation_patches(mix, PATCH, seed=0, max_pairs=2)
    assert capped["recipe"] == ["rain100l", "noise15", "noise50"]  # a pair from each dataset, each level


def test_a_patch_larger_than_a_datasets_images_is_refused_naming_data_patch(mix):
    entries = [MixEntry(uri=part.uri) for part in mix]
    with pytest.raises(ConfigError, match=r"data.patch: 65 exceeds the 64-pixel images of data.datasets.0"):
        patches.open_mix(entries, patch=65)
