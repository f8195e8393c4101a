"""Shared fixtures for the degradation_synth tests: real sample photos and a repository root."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from degradation_synth.preview import square_tile
from degradation_synth.samples import load_sample_photos

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def repo_root() -> Path:
    """The repository root (where ``python -m degradation_synth`` must run from)."""
    return REPO_ROOT


@pytest.fixture(scope="session")
def sample_photos() -> dict[str, np.ndarray]:
    """The full-size sample photos shipped in scikit-image / matplotlib / scikit-learn, decoded once."""
    photos = load_sample_photos()
    for image in photos.values():
        image.setflags(write=False)  # no test (and no library call) may modify a shared photo
    return photos


@pytest.fixture(scope="session")
def tiles(sample_photos) -> dict[str, np.ndarray]:
    """128x128 centre crops of every sample photo (small enough to keep the suite fast)."""
    crops = {name: square_tile(photo, 128) for name, photo in sample_photos.items()}
    for image in crops.values():
        image.setflags(write=False)
    return crops


@pytest.fixture(scope="session")
def photo(tiles) -> np.ndarray:
    """One textured, colourful real photo tile."""
    return tiles["astronaut"]


@pytest.fixture(scope="session")
def odd_photo(sample_photos) -> np.ndarray:
    """A real photo crop of odd, non-square size (97x131)."""
    crop = np.ascontiguousarray(sample_photos["coffee"][100:197, 200:331])
    crop.setflags(write=False)
    return crop
