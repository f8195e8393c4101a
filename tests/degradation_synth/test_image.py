"""Image checking and conversion: what enters the chain, and how other inputs are converted."""

from __future__ import annotations

import numpy as np
import pytest

from degradation_synth import MIN_SIDE, as_rgb_uint8, degrade, rng_for
from degradation_synth.image import check_rgb_uint8, to_float, to_uint8


def test_check_returns_a_valid_image_unchanged(photo):
    assert check_rgb_uint8(photo) is photo


@pytest.mark.parametrize(
    ("image", "fragment"),
    [
        (np.zeros((40, 40, 3), np.float32), "dtype uint8"),
        (np.zeros((40, 40), np.uint8), "no channel axis"),
        (np.zeros((40, 40, 2), np.uint8), "2 channels"),
        (np.zeros((40, 80, 3), np.uint8)[:, ::2], "C-contiguous"),
        (np.zeros((MIN_SIDE - 1, MIN_SIDE - 1, 3), np.uint8), "smallest supported size"),
        ("image.png", "numpy array"),
    ],
    ids=["float", "2d", "2-channels", "strided", "tiny", "path"],
)
def test_check_names_the_argument_and_the_problem(image, fragment):
    with pytest.raises(ValueError) as err:
        check_rgb_uint8(image, "frame")
    assert fragment in str(err.value) and str(err.value).startswith("frame ")


def test_wrong_dtype_message_points_to_the_converter():
    with pytest.raises(ValueError, match="as_rgb_uint8"):
        check_rgb_uint8(np.zeros((40, 40, 3), np.uint16))


# --- as_rgb_uint8 ----------------------------------------------------------------------------------

@pytest.fixture
def gray_plane() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (40, 50), dtype=np.uint8)


def test_grayscale_is_repeated_on_three_channels(gray_plane):
    rgb = as_rgb_uint8(gray_plane)
    assert rgb.shape == (40, 50, 3) and rgb.dtype == np.uint8 and rgb.flags.c_contiguous
    for channel in range(3):
        np.testing.assert_array_equal(rgb[:, :, channel], gray_plane)


def test_single_channel_grayscale_is_repeated_on_three_channels(gray_plane):
    np.testing.assert_array_equal(as_rgb_uint8(gray_plane[:, :, None]), as_rgb_uint8(gray_plane))


def test_rgba_is_composited_over_the_background():
    rgba = np.zeros((40, 40, 4), np.uint8)
    rgba[..., :3] = (200, 100, 0)
    rgba[:, :10, 3] = 255  # opaque
    rgba[:, 10:20, 3] = 0  # transparent
    rgba[:, 20:, 3] = 128  # half
    white = as_rgb_uint8(rgba)
    assert white.shape == (40, 40, 3)
    assert (white[:, :10] == (200, 100, 0)).all()
    assert (white[:, 10:20] == 255).all()
    half = 128 / 255
    expected = np.round(np.array([200, 100, 0]) * half + 255 * (1 - half))
    assert (np.abs(white[:, 20:].astype(int) - expected) <= 1).all()
    black = as_rgb_uint8(rgba, background=0)
    assert (black[:, 10:20] == 0).all()
    assert (black[:, :10] == (200, 100, 0)).all()


def test_uint16_is_scaled_to_8_bits():
    image = np.zeros((40, 40, 3), np.uint16)
    image[0, 0] = (0, 32768, 65535)
    rgb = as_rgb_uint8(image)
    assert rgb.dtype == np.uint8
    assert tuple(rgb[0, 0]) == (0, 128, 255)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_float_is_clipped_and_scaled(dtype):
    image = np.zeros((40, 40, 3), dtype)
    image[0, 0] = (-0.5, 0.5, 1.0)
    image[0, 1] = (2.0, 0.0, 0.25)
    rgb = as_rgb_uint8(image)
    assert tuple(rgb[0, 0]) == (0, 128, 255)
    assert tuple(rgb[0, 1]) == (255, 0, 64)


def test_uint16_grayscale_and_float_rgba_convert_in_one_call():
    gray16 = np.full((40, 40), 65535, np.uint16)
    assert (as_rgb_uint8(gray16) == 255).all()
    rgba = np.zeros((40, 40, 4), np.float32)
    rgba[..., 3] = 0.0
    assert (as_rgb_uint8(rgba, background=10) == 10).all()


def test_rgb_uint8_is_returned_contiguous_and_equal(photo):
    strided = np.zeros((40, 80, 3), np.uint8)
    strided[:, ::2] = 7
    converted = as_rgb_uint8(strided[:, ::2])
    assert converted.flags.c_contiguous and (converted == 7).all()
    np.testing.assert_array_equal(as_rgb_uint8(photo), photo)


@pytest.mark.parametrize(
    "image",
    [np.zeros((40, 40, 2), np.uint8), np.zeros((40, 40, 5), np.uint8), np.zeros(40, np.uint8),
     np.zeros((2, 40, 40, 3), np.uint8)],
    ids=["2-channels", "5-channels", "1d", "4d"],
)
def test_other_shapes_are_rejected(image):
    with pytest.raises(ValueError, match="cannot convert shape"):
        as_rgb_uint8(image)


@pytest.mark.parametrize("dtype", [np.int32, np.int8, np.bool_, np.complex64])
def test_other_dtypes_are_rejected(dtype):
    with pytest.raises(ValueError, match="cannot convert dtype"):
        as_rgb_uint8(np.zeros((40, 40, 3), dtype))


@pytest.mark.parametrize(
    "image",
    [np.full((40, 40), 0.5, np.float32), np.full((40, 40, 4), 30000, np.uint16), np.zeros((40, 40, 1), np.uint8)],
    ids=["float-gray", "uint16-rgba", "gray-1"],
)
def test_converted_images_are_accepted_by_degrade(image):
    out, _ = degrade(as_rgb_uint8(image), "noise15", rng_for(0))
    assert out.shape == (40, 40, 3)


# --- float <-> uint8 -------------------------------------------------------------------------------

def test_uint8_float_round_trip_is_exact_for_every_level():
    levels = np.arange(256, dtype=np.uint8).reshape(16, 16, 1).repeat(3, axis=2)
    as_float = to_float(levels)
    assert as_float.dtype == np.float32 and as_float.min() == 0.0 and as_float.max() == 1.0
    np.testing.assert_array_equal(to_uint8(as_float), levels)


def test_to_uint8_rounds_to_nearest_and_clips():
    values = np.array([-0.2, 0.0, 0.4 / 255, 0.6 / 255, 0.5, 1.0, 1.3], np.float32)
    np.testing.assert_array_equal(to_uint8(values), [0, 0, 0, 1, 128, 255, 255])
