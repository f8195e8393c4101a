"""Shared fixtures for the cpl_model tests: small synthetic batches and real degraded/clean photo pairs.

Models are cheap to build at the ``tiny`` preset (a few tens of milliseconds), so tests build their
own instead of sharing a mutable one.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from degradation_synth import degrade, rng_for
from degradation_synth.samples import load_sample_photos

REAL_RECIPES = ("noise25", "haze", "blur")
CROP = (96, 128)  # height, width of the real photo crops


def smooth_batch(batch: int, height: int, width: int, seed: int = 0, noise: float = 0.1) -> dict[str, torch.Tensor]:
    """A reproducible toy pair: a smooth clean image in [0, 1] and a noisy degraded copy."""
    generator = torch.Generator().manual_seed(seed)
    coarse = torch.rand(batch, 3, max(2, height // 4), max(2, width // 4), generator=generator)
    clean = F.interpolate(coarse, size=(height, width), mode="bilinear", align_corners=False).clamp(0, 1)
    degraded = (clean + noise * torch.randn(clean.shape, generator=generator)).clamp(0, 1)
    return {"degraded": degraded, "clean": clean}


@pytest.fixture
def make_batch():
    """``make_batch(batch, height, width, seed=0)``: see ``smooth_batch``."""
    return smooth_batch


@pytest.fixture(scope="session")
def real_pairs() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Real ``(degraded, clean)`` uint8 RGB crops (96x128) of sample photos, one per recipe and photo."""
    photos = load_sample_photos()
    pairs = {}
    for name, top, left in (("astronaut", 100, 150), ("coffee", 120, 200), ("chelsea", 60, 180)):
        clean = np.ascontiguousarray(photos[name][top:top + CROP[0], left:left + CROP[1]])
        for recipe in REAL_RECIPES:
            degraded, _ = degrade(clean, recipe, rng_for(0, name, recipe))
            pairs[f"{name}-{recipe}"] = (degraded, clean)
    for degraded, clean in pairs.values():
        degraded.setflags(write=False)
        clean.setflags(write=False)
    return pairs

