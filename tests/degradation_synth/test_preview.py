"""Sample photos, square tiles and the contact sheet."""

from __future__ import annotations

import numpy as np
import pytest

from degradation_synth import BUILTIN_RECIPES
from degradation_synth.preview import contact_sheet, square_tile
from degradation_synth.samples import sample_photo_paths


def test_sample_photos_are_rgb_uint8(sample_photos):
    assert len(sample_photos) >= 2
    assert set(sample_photos) == set(sample_photo_paths())
    for name, image in sample_photos.items():
        assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3, name
        assert image.flags.c_contiguous and min(image.shape[:2]) >= 256, name


def test_sample_photos_are_in_rgb_channel_order(sample_photos):
    """Compare with scikit-image's own (RGB) loader of the same PNG."""
    skimage_data = pytest.importorskip("skimage.data")
    np.testing.assert_array_equal(sample_photos["chelsea"], skimage_data.chelsea())


@pytest.mark.parametrize("shape", [(300, 451), (600, 512), (97, 131), (64, 64)])
@pytest.mark.parametrize("size", [32, 64])
def test_square_tile_is_a_contiguous_square_of_the_requested_size(shape, size):
    photo = np.random.default_rng(0).integers(0, 256, (*shape, 3), dtype=np.uint8)
    tile = square_tile(photo, size)
    assert tile.shape == (size, size, 3) and tile.dtype == np.uint8 and tile.flags.c_contiguous


def test_contact_sheet_stacks_labelled_rows(tiles):
    photos = [tiles["astronaut"], tiles["coffee"], tiles["china"]]
    recipes = [BUILTIN_RECIPES["noise25"], BUILTIN_RECIPES["cdd11/low_haze_rain"]]
    sheet = contact_sheet(recipes, photos, size=48, seed=3)
    assert sheet.dtype == np.uint8 and sheet.shape[1] == 3 * 48
    label = (sheet.shape[0] - 3 * 48) // 3
    assert label > 0 and sheet.shape[0] == 3 * (48 + label)
    clean_row = sheet[label:label + 48]
    np.testing.assert_array_equal(clean_row, np.hstack([square_tile(p, 48) for p in photos]))
    # The sheet is reproducible: the same seed draws the same degradations.
    np.testing.assert_array_equal(sheet, contact_sheet(recipes, photos, size=48, seed=3))
    assert not np.array_equal(sheet, contact_sheet(recipes, photos, size=48, seed=4))
