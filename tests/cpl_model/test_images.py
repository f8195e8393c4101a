"""``to_tensor`` and ``to_uint8``: the one conversion between uint8 RGB arrays and the network's tensors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cpl_model import to_tensor, to_uint8


def every_level() -> np.ndarray:
    """(2, 16, 24, 3) uint8 holding each of the 256 levels on every channel, in shuffled places."""
    levels = np.arange(256, dtype=np.uint8).repeat(9)[:2 * 16 * 24 * 3]
    return np.random.default_rng(0).permutation(levels).reshape(2, 16, 24, 3)


def test_a_batch_becomes_channels_first_floats_in_the_unit_range():
    images = every_level()
    tensor = to_tensor(images)
    assert tensor.shape == (2, 3, 16, 24) and tensor.dtype == torch.float32
    expected = torch.from_numpy(images.astype(np.float32) / np.float32(255)).permute(0, 3, 1, 2)
    assert torch.equal(tensor, expected)
    assert tensor.min().item() == 0.0 and tensor.max().item() == 1.0


@pytest.mark.parametrize("form", ["batch", "image", "list"])
def test_round_trip_gives_every_level_back_exactly(form):
    images = every_level()
    given = {"batch": images, "image": images[0], "list": list(images)}[form]
    back = to_uint8(to_tensor(given))  # always a batch: one image comes back as a batch of one
    assert back.dtype == np.uint8 and back.flags.c_contiguous
    np.testing.assert_array_equal(back, images[:1] if form == "image" else images)


def test_to_uint8_rounds_to_nearest_and_clips():
    values = torch.tensor([-0.2, 0.0, 0.4 / 255, 0.6 / 255, 127.4 / 255, 127.6 / 255, 1.0, 1.3])
    tensor = values.view(1, 1, 1, -1).expand(1, 3, 1, -1)
    assert to_uint8(tensor)[0, 0, :, 0].tolist() == [0, 0, 0, 1, 127, 128, 255, 255]
    assert to_uint8(tensor[0]).shape == (1, 8, 3)


@pytest.mark.parametrize("bad", [np.zeros((4, 4, 3), np.float32), np.zeros((4, 4), np.uint8),
                                 np.zeros((2, 4, 4, 4), np.uint8)], ids=["float", "gray", "rgba"])
def test_to_tensor_refuses_what_is_not_uint8_rgb(bad):
    with pytest.raises(ValueError, match="uint8"):
        to_tensor(bad)


def test_to_uint8_refuses_channels_last():
    with pytest.raises(ValueError, match="3, H, W"):
        to_uint8(torch.zeros(1, 4, 4, 3))
