"""``restore``: whole-image and tiled inference, blending, and the overlap rule."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from cpl_model import build_model, restore


def images(batch: int, height: int, width: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(batch, 3, height, width, generator=torch.Generator().manual_seed(seed))


def pointwise_model(seed: int = 0) -> nn.Module:
    """A per-pixel colour transform: exactly translation-equivariant, so tiling must not change its output."""
    conv = nn.Conv2d(3, 3, 1)
    with torch.no_grad():
        generator = torch.Generator().manual_seed(seed)
        conv.weight.copy_(torch.eye(3)[:, :, None, None] * 0.8 + 0.1 * torch.rand(3, 3, 1, 1, generator=generator))
        conv.bias.copy_(0.05 * torch.rand(3, generator=generator))
    return conv


class TileMean(nn.Module):
    """Replaces each tile by its mean colour: a model whose output depends on where the tile is."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(2, 3), keepdim=True).expand_as(x)


class CountingModel(nn.Module):
    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.batch_sizes: list[int] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.batch_sizes.append(len(x))
        return self.inner(x)


@pytest.mark.parametrize(("batch", "height", "width", "tile", "overlap"), [
    (1, 80, 100, 48, 8),
    (2, 80, 100, 48, 8),
    (2, 97, 61, 32, 0),
    (1, 100, 40, 48, 12),  # taller than a tile, narrower than one
    (3, 33, 130, 32, 15),
])
@pytest.mark.parametrize("tiles_per_batch", [1, 3, 64])
def test_tiling_a_pointwise_model_equals_the_whole_image(batch, height, width, tile, overlap, tiles_per_batch):
    model = pointwise_model()
    x = images(batch, height, width)
    whole = restore(model, x, tile=None)
    tiled = restore(model, x, tile=tile, overlap=overlap, tiles_per_batch=tiles_per_batch)
    assert tiled.shape == x.shape
    torch.testing.assert_close(tiled, whole, rtol=0, atol=1e-5)


def test_tiles_of_each_image_in_a_batch_stay_with_that_image():
    x = torch.stack([torch.zeros(3, 70, 90), torch.ones(3, 70, 90), torch.full((3, 70, 90), 0.5)])
    tiled = restore(nn.Identity(), x, tile=32, overlap=4, tiles_per_batch=5)
    torch.testing.assert_close(tiled, x, rtol=0, atol=1e-6)


def test_tiled_cpl_model_keeps_the_shape_and_the_unit_range():
    model = build_model("tiny", "sparse").eval()
    x = images(1, 80, 100)
    out = restore(model, x, tile=48, overlap=8)
    assert out.shape == x.shape
    assert torch.isfinite(out).all() and out.min() >= 0 and out.max() <= 1


def test_tiled_cpl_model_is_close_to_whole_image_inference_away_from_seams():
    """Not exact (attention is global within a tile), but tiling must not wreck the restoration."""
    model = build_model("tiny", "sparse").eval()
    x = images(1, 80, 100)
    tiled, whole = restore(model, x, tile=48, overlap=8), restore(model, x, tile=None)
    assert (tiled - whole).abs().mean() < 0.5 * (whole - x).abs().mean()


def test_blending_ramps_hide_the_seams():
    """Each tile outputs one colour; blended, neighbouring pixels never jump by more than a ramp step allows."""
    x = torch.zeros(1, 3, 64, 64)
    x[..., :, 32:] = 1.0  # the tiles' means differ strongly from left to right
    overlap = 8
    out = restore(TileMean(), x, tile=32, overlap=overlap)
    tile_means = [restore(TileMean(), x[..., :, s:s + 32], tile=None).max() for s in (0, 16, 32)]
    spread = max(tile_means) - min(tile_means)
    jump = (out[..., :, 1:] - out[..., :, :-1]).abs().max()
    assert spread > 0.5
    assert jump < spread / 4  # unblended, the seams jump by half the spread here


@pytest.mark.parametrize("tiles_per_batch", [1, 2, 4])
def test_tiles_per_batch_bounds_each_model_call(tiles_per_batch):
    model = CountingModel(pointwise_model())
    restore(model, images(2, 80, 100), tile=48, overlap=8, tiles_per_batch=tiles_per_batch)
    sizes = model.batch_sizes
    assert all(size % 2 == 0 for size in sizes)  # B images per tile
    assert all(size == 2 * tiles_per_batch for size in sizes[:-1]) and sizes[-1] <= 2 * tiles_per_batch
    assert sum(sizes) // 2 >= 6  # 80x100 needs at least 2 x 3 tiles of 48 with overlap 8


def test_images_within_a_tile_run_whole_and_are_clipped():
    model = CountingModel(nn.Identity())
    x = images(2, 40, 48) * 2 - 0.5
    out = restore(model, x, tile=48, overlap=8)
    assert model.batch_sizes == [2]
    torch.testing.assert_close(out, x.clamp(0, 1))


def test_restore_runs_without_autograd():
    model = build_model("tiny", "sparse")
    assert not restore(model, images(1, 40, 40), tile=32, overlap=4).requires_grad


@pytest.mark.parametrize(("tile", "overlap"), [(48, 24), (48, 30), (48, -1), (32, 16)])
def test_overlap_of_half_a_tile_or_more_raises(tile, overlap):
    with pytest.raises(ValueError, match="overlap"):
        restore(nn.Identity(), images(1, 80, 100), tile=tile, overlap=overlap)


def test_overlap_just_under_half_a_tile_is_accepted():
    x = images(1, 80, 100)
    torch.testing.assert_close(restore(nn.Identity(), x, tile=48, overlap=23), x, rtol=0, atol=1e-6)


def test_overlap_just_under_half_an_odd_tile_is_accepted():
    """The rule is overlap < tile / 2 (the error message says so): 24 < 49 / 2 must be allowed."""
    x = images(1, 80, 100)
    torch.testing.assert_close(restore(nn.Identity(), x, tile=49, overlap=24), x, rtol=0, atol=1e-6)


def test_a_bad_overlap_raises_whatever_the_image_size():
    """The documented ValueError must not depend on whether this particular image fits in one tile."""
    with pytest.raises(ValueError, match="overlap"):
        restore(nn.Identity(), images(1, 40, 40), tile=48, overlap=30)
