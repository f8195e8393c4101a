"""The pictures logged for people (pipelines/core/grid.py) and the validation grid a training run registers."""

from __future__ import annotations

import numpy as np
import pytest

import cpl_model
from pipelines.core import grid
from pipelines.training.validation import grid_pairs, image_grid

TASKS = ("blur", "haze", "low_light", "noise", "rain")


def noise_image(height: int, width: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def validation_set(photos: int, crops: int = 1, side: int = 48) -> dict:
    """Every task on every crop of every photo, ids as online validation names them (``photo#crop/recipe``)."""
    pairs = {"degraded": [], "clean": [], "task": [], "recipe": [], "sample_id": []}
    for photo in range(photos):
        for crop in range(crops):
            clean = noise_image(side, side, seed=photo * 100 + crop)
            for task in TASKS:
                pairs["degraded"].append((clean // 2).astype(np.uint8))
                pairs["clean"].append(clean)
                pairs["task"].append(task)
                pairs["recipe"].append(task)
                pairs["sample_id"].append(f"photo{photo}.png#{crop}/{task}")
    return {**pairs, "degraded": np.stack(pairs["degraded"]), "clean": np.stack(pairs["clean"])}


@pytest.mark.parametrize(("side", "factor"), [(48, 4), (64, 3), (100, 2), (192, 1)])
def test_small_images_are_enlarged_by_a_whole_factor_keeping_every_pixel_value(side, factor):
    image = noise_image(side, side // 2 + 1)
    enlarged = grid.fit(image)
    assert enlarged.shape == (side * factor, (side // 2 + 1) * factor, 3)
    assert max(enlarged.shape[:2]) >= grid.PANEL
    # Nearest neighbour: each source pixel becomes a factor x factor block of exactly its value.
    assert np.array_equal(enlarged, np.kron(image, np.ones((factor, factor, 1), np.uint8)))


def test_large_images_are_shrunk_to_fit_the_largest_panel():
    assert grid.fit(noise_image(1000, 500)).shape == (grid.MAX_PANEL, grid.MAX_PANEL // 2, 3)
    assert grid.fit(noise_image(300, 200)).shape == (300, 200, 3)  # between the bounds: untouched


def test_a_contact_sheet_has_a_header_then_a_label_strip_above_each_row_of_untouched_panels():
    images = [(noise_image(48, 48, 1), noise_image(48, 48, 2), noise_image(48, 48, 3)),
              (noise_image(48, 48, 4), noise_image(48, 48, 5), noise_image(48, 48, 6))]
    rows = [grid.restoration_row(f"task{index}", *row, input_psnr=20.0, psnr=25.5) for index, row in enumerate(images)]
    assert rows[0].label == "task0   input 20.00 dB   restored 25.50 dB (+5.50)"
    sheet = grid.contact_sheet(rows, grid.RESTORATION_COLUMNS)

    cell = 48 * 4
    assert sheet.shape == (grid.STRIP + 2 * (grid.STRIP + cell), 3 * cell + 2 * grid.GAP, 3)
    for index, row in enumerate(images):
        strip_top = grid.STRIP + index * (grid.STRIP + cell)
        strip = sheet[strip_top:strip_top + grid.STRIP]
        assert (strip > 200).any(), "the label strip holds text"
        assert (strip == grid.BACKGROUND).all(axis=2).mean() > 0.5, "on the strip's own background"
        for column, image in enumerate(row):
            left = column * (cell + grid.GAP)
            panel = sheet[strip_top + grid.STRIP:strip_top + grid.STRIP + cell, left:left + cell]
            assert np.array_equal(panel, grid.fit(image)), "no text or border drawn over a picture"
    header = sheet[:grid.STRIP]
    assert (header > 200).any() and not np.array_equal(header, sheet[grid.STRIP:2 * grid.STRIP])


def test_a_label_too_long_for_its_strip_is_cut_short_inside_it():
    sheet = grid.contact_sheet([grid.Row("x" * 500, (noise_image(48, 48),))])
    assert sheet.shape == (grid.STRIP + 192, 192, 3)


def test_grid_pairs_take_one_pair_per_task_from_different_photos_where_there_are_enough():
    pairs = validation_set(photos=5)
    chosen = grid_pairs(pairs, rows=8)
    assert [pairs["task"][i] for i in chosen] == list(TASKS)
    assert len({pairs["sample_id"][i].split("#")[0] for i in chosen}) == 5


def test_grid_pairs_spread_rows_over_photos_then_crops_when_photos_are_few():
    pairs = validation_set(photos=2, crops=2)
    chosen = [pairs["sample_id"][i] for i in grid_pairs(pairs, rows=8)]
    photos = [sample.split("#")[0] for sample in chosen]
    assert sorted(photos.count(photo) for photo in set(photos)) == [2, 3]
    assert len({sample.split("/")[0] for sample in chosen}) == 4  # every (photo, crop) before any repeats
    assert len(grid_pairs(pairs, rows=3)) == 3


def test_the_validation_grid_has_a_row_per_task_with_enlarged_panels():
    pairs = validation_set(photos=3)
    model = cpl_model.build_model("tiny", seed=0).eval()
    sheet = image_grid(model, pairs, rows=8)
    cell = 48 * 4
    assert sheet.shape == (grid.STRIP + len(TASKS) * (grid.STRIP + cell), 3 * cell + 2 * grid.GAP, 3)
    first = grid_pairs(pairs, rows=8)[0]
    top = 2 * grid.STRIP  # the header, then the first row's label strip
    assert np.array_equal(sheet[top:top + cell, :cell], grid.fit(pairs["degraded"][first]))
    assert np.array_equal(sheet[top:top + cell, 2 * (cell + grid.GAP):], grid.fit(pairs["clean"][first]))
