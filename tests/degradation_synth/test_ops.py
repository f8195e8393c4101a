"""Each kind moves the image the way its model says, through ``degrade`` with one-step recipes,
and the ops keep their float contract (float32 RGB in [0, 1], same shape)."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest

from degradation_synth import DegradationKind, Recipe, Step, degrade, rng_for
from degradation_synth.image import to_float
from degradation_synth.ops import OPS
from degradation_synth.ops.blur import (
    BlurParams,
    BlurSpec,
    blur_kernel,
    defocus_kernel,
    gaussian_kernel,
    motion_kernel,
    shake_trajectory,
)
from degradation_synth.ops.haze import HazeSpec
from degradation_synth.ops.jpeg import JpegSpec
from degradation_synth.ops.low_light import LowLightSpec
from degradation_synth.ops.noise import GAMMA, NoiseSpec
from degradation_synth.ops.rain import RainSpec
from degradation_synth.ops.snow import SnowSpec


def one_step(spec) -> Recipe:
    return Recipe(f"test-{spec.kind}", (Step.of(spec),))


def grey(value: int, size: int = 256) -> np.ndarray:
    return np.full((size, size, 3), value, np.uint8)


def as_float(image: np.ndarray) -> np.ndarray:
    return image.astype(np.float64) / 255.0


def laplacian_variance(image: np.ndarray) -> float:
    grey_image = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY).astype(np.float32)
    return float(cv2.Laplacian(grey_image, cv2.CV_32F).var())


PHOTO_NAMES = ("astronaut", "chelsea", "coffee", "china")


# --- every kind: dtype, shape, float contract ------------------------------------------------------

DEFAULT_SPECS = [NoiseSpec(), NoiseSpec(model="poisson_gaussian"), HazeSpec(), HazeSpec(depth="position"), RainSpec(),
                 RainSpec(blend="add"), BlurSpec(), BlurSpec(kernel="gaussian"), BlurSpec(kernel="defocus"),
                 LowLightSpec(), LowLightSpec(model="retinex"), SnowSpec(), JpegSpec()]
SPEC_IDS = [f"{s.kind}-{i}" for i, s in enumerate(DEFAULT_SPECS)]


@pytest.mark.parametrize("spec", DEFAULT_SPECS, ids=SPEC_IDS)
def test_every_kind_keeps_dtype_and_shape(odd_photo, spec):
    out, record = degrade(odd_photo, one_step(spec), rng_for(0, spec.kind))
    assert out.dtype == np.uint8 and out.shape == odd_photo.shape
    assert not np.array_equal(out, odd_photo)  # and does something
    assert [s["kind"] for s in record["steps"]] == [spec.kind]


@pytest.mark.parametrize("spec", DEFAULT_SPECS, ids=SPEC_IDS)
def test_ops_map_float_rgb_in_unit_range_to_the_same(tiles, spec):
    """The chain quantises once at the end, so each op must itself stay float32 in [0, 1]."""
    op = OPS[DegradationKind(spec.kind)]
    for name in PHOTO_NAMES:
        image = to_float(tiles[name])
        for seed in range(3):
            params = op.sample(rng_for(seed, name), spec)
            out = op.apply(image, params)
            assert out.dtype == np.float32 and out.shape == image.shape
            assert out.min() >= 0.0 and out.max() <= 1.0 + 1e-6, (name, params)
            assert np.isfinite(out).all()


# --- noise -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("sigma", [15.0, 25.0])
def test_gaussian_noise_has_the_configured_std_and_no_bias(sigma):
    clean = grey(128)
    out, record = degrade(clean, one_step(NoiseSpec(sigma=sigma)), rng_for(0, int(sigma)))
    residual = as_float(out) - as_float(clean)
    assert residual.std() == pytest.approx(sigma / 255.0, rel=0.03)
    assert abs(residual.mean()) < 0.002
    assert record["steps"][0]["params"]["sigma"] == sigma


def test_gaussian_noise_is_independent_across_channels_and_pixels():
    out, _ = degrade(grey(128), one_step(NoiseSpec(sigma=25.0)), rng_for(1))
    residual = out.astype(np.float64) - 128
    red, green = residual[:, :, 0].ravel(), residual[:, :, 1].ravel()
    assert abs(np.corrcoef(red, green)[0, 1]) < 0.03
    assert abs(np.corrcoef(residual[:, :-1, 0].ravel(), residual[:, 1:, 0].ravel())[0, 1]) < 0.03


def test_zero_noise_is_lossless():
    """The float round trip and the single final quantisation lose nothing on their own."""
    ramp = np.ascontiguousarray(np.broadcast_to(np.arange(256, dtype=np.uint8)[None, :, None], (40, 256, 3)))
    out, _ = degrade(ramp, one_step(NoiseSpec(sigma=0.0)), rng_for(0))
    np.testing.assert_array_equal(out, ramp)


def linear_residual_std(value: int, shot: float) -> tuple[float, float]:
    """(measured, modelled) std in linear light of poisson_gaussian noise on a uniform grey."""
    out, record = degrade(grey(value), one_step(NoiseSpec(model="poisson_gaussian", shot=shot)), rng_for(0, value))
    params = record["steps"][0]["params"]
    clean_linear = (value / 255.0) ** GAMMA
    measured = float(np.std(as_float(out) ** GAMMA - clean_linear))
    return measured, math.sqrt(params["shot"] * clean_linear + params["read"])


def test_poisson_gaussian_noise_is_heteroscedastic_in_linear_light():
    """Brighter signal, more noise: variance shot * x + read on the linear-light value x.

    (In display space the sRGB curve compresses bright values, so there the dark grey can show the
    larger std; the model is defined, and checked, in linear light.)
    """
    dark_measured, dark_model = linear_residual_std(90, shot=0.01)
    bright_measured, bright_model = linear_residual_std(200, shot=0.01)
    assert bright_measured > 1.5 * dark_measured
    assert dark_measured == pytest.approx(dark_model, rel=0.05)
    assert bright_measured == pytest.approx(bright_model, rel=0.05)


def test_poisson_gaussian_noise_grows_with_shot_gain():
    low, _ = linear_residual_std(150, shot=1e-3)
    high, _ = linear_residual_std(150, shot=1e-2)
    assert high > 2 * low


# --- haze ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", PHOTO_NAMES)
def test_haze_moves_every_pixel_towards_the_airlight_and_lowers_local_contrast(tiles, name):
    clean = tiles[name]
    out, record = degrade(clean, one_step(HazeSpec()), rng_for(0, name))
    airlight = np.array(record["steps"][0]["params"]["airlight"]) * 255.0
    before = np.abs(clean.astype(np.float64) - airlight)
    after = np.abs(out.astype(np.float64) - airlight)
    assert (after <= before + 1.0).all()
    assert after.mean() < 0.9 * before.mean()
    assert laplacian_variance(out) < 0.8 * laplacian_variance(clean)


def test_haze_with_uniform_depth_lowers_contrast_and_raises_a_dark_mean_towards_the_airlight(tiles):
    clean = (tiles["coffee"] // 4).astype(np.uint8)  # a dark, textured photo
    spec = HazeSpec(beta=1.5, airlight=0.9, tint=0.0)
    out, _ = degrade(clean, one_step(spec), rng_for(0), depth=np.full(clean.shape[:2], 0.8, np.float32))
    transmission = math.exp(-1.5 * 0.8)
    assert out.std() == pytest.approx(clean.std() * transmission, rel=0.05)
    assert out.mean() == pytest.approx(clean.mean() * transmission + 0.9 * 255 * (1 - transmission), abs=1.0)
    assert abs(out.mean() - 0.9 * 255) < abs(clean.mean() - 0.9 * 255)


def test_haze_of_a_dark_image_rises_towards_the_airlight_with_the_depth_proxy(tiles):
    clean = (tiles["china"] // 4).astype(np.uint8)
    out, _ = degrade(clean, one_step(HazeSpec(beta=1.5, airlight=0.9, tint=0.0)), rng_for(0))
    assert clean.mean() + 20 < out.mean() < 0.9 * 255


def test_haze_with_a_near_depth_map_leaves_the_image_unchanged(photo):
    out, _ = degrade(photo, one_step(HazeSpec(beta=2.0)), rng_for(0), depth=np.zeros(photo.shape[:2], np.float32))
    assert np.abs(out.astype(int) - photo).max() <= 1


def test_haze_with_a_far_depth_map_hazes_strongly(photo):
    spec = HazeSpec(beta=2.0, airlight=0.8, tint=0.0)
    out, _ = degrade(photo, one_step(spec), rng_for(0), depth=np.ones(photo.shape[:2], np.float32))
    expected = photo * math.exp(-2.0) + 0.8 * 255 * (1 - math.exp(-2.0))
    assert np.abs(out - expected).max() <= 1.0
    assert out.std() < 0.2 * photo.std()


def test_haze_accepts_an_8_bit_depth_map(photo):
    far_float = np.ones(photo.shape[:2], np.float32)
    far_uint8 = np.full(photo.shape[:2], 255, np.uint8)
    a, _ = degrade(photo, one_step(HazeSpec()), rng_for(2), depth=far_float)
    b, _ = degrade(photo, one_step(HazeSpec()), rng_for(2), depth=far_uint8)
    np.testing.assert_array_equal(a, b)


def test_haze_respects_the_depth_cap(photo):
    capped = HazeSpec(beta=2.0, airlight=0.8, tint=0.0, max_depth=0.5)
    far, _ = degrade(photo, one_step(capped), rng_for(0), depth=np.ones(photo.shape[:2], np.float32))
    half, _ = degrade(photo, one_step(capped), rng_for(0), depth=np.full(photo.shape[:2], 0.5, np.float32))
    np.testing.assert_array_equal(far, half)


def test_position_depth_hazes_the_top_more_than_the_bottom():
    clean = grey(30, 128)
    out, _ = degrade(clean, one_step(HazeSpec(depth="position", airlight=0.9, tint=0.0)), rng_for(0))
    assert out[:16].mean() > out[-16:].mean() + 30


# --- low light -------------------------------------------------------------------------------------

@pytest.mark.parametrize("model", ["lv", "retinex"])
def test_low_light_darkens(tiles, model):
    for name in PHOTO_NAMES:
        clean = tiles[name]
        out, record = degrade(clean, one_step(LowLightSpec(model=model)), rng_for(0, name))
        assert record["steps"][0]["params"]["model"] == model
        assert out.mean() < 0.9 * clean.mean(), name
    out, _ = degrade(grey(128), one_step(LowLightSpec(model=model)), rng_for(1))
    assert out.mean() < 0.75 * 128


def test_stronger_gamma_darkens_more(photo):
    mild, _ = degrade(photo, one_step(LowLightSpec(gamma=1.5)), rng_for(0))
    strong, _ = degrade(photo, one_step(LowLightSpec(gamma=3.5)), rng_for(0))
    assert strong.mean() < mild.mean()


# --- blur ------------------------------------------------------------------------------------------

@pytest.mark.parametrize(
    "spec",
    [BlurSpec(kernel="motion", length=15.0), BlurSpec(kernel="gaussian", sigma=2.0),
     BlurSpec(kernel="defocus", radius=3.0)],
    ids=["motion", "gaussian", "defocus"],
)
def test_blur_removes_high_frequencies_and_keeps_brightness(tiles, spec):
    for name in PHOTO_NAMES:
        clean = tiles[name]
        out, _ = degrade(clean, one_step(spec), rng_for(0, name))
        assert laplacian_variance(out) < 0.5 * laplacian_variance(clean), name
        assert abs(out.mean() - clean.mean()) < 3.0, name
    flat, _ = degrade(grey(77, 64), one_step(spec), rng_for(0))
    np.testing.assert_array_equal(flat, grey(77, 64))


@pytest.mark.parametrize(
    "spec",
    [BlurSpec(kernel="motion", length=12.0), BlurSpec(kernel="gaussian", sigma=[0.8, 2.5]),
     BlurSpec(kernel="defocus", radius=2.5)],
    ids=["motion", "gaussian", "defocus"],
)
@pytest.mark.parametrize("seed", [0, 1])
def test_blur_turns_a_point_into_the_recorded_kernel(spec, seed):
    """Blur is a convolution with the kernel its parameters describe (not a correlation: no mirroring)."""
    image = np.zeros((65, 65, 3), np.uint8)
    image[32, 32] = 255
    out, record = degrade(image, one_step(spec), rng_for(seed))
    kernel = blur_kernel(BlurParams(**record["steps"][0]["params"]))
    half = kernel.shape[0] // 2
    patch = out[32 - half:32 + half + 1, 32 - half:32 + half + 1, 0].astype(float)
    assert np.abs(patch - kernel * 255).max() <= 1.0
    assert out[:, :, 0].sum() == pytest.approx(patch.sum())  # nothing lands outside the kernel's support


def kernel_centroid(kernel: np.ndarray) -> tuple[float, float]:
    rows, cols = np.indices(kernel.shape)
    return float((rows * kernel).sum()), float((cols * kernel).sum())


def check_normalised(kernel: np.ndarray) -> None:
    assert kernel.ndim == 2 and kernel.shape[0] == kernel.shape[1] and kernel.shape[0] % 2 == 1
    assert kernel.min() >= 0.0
    assert float(kernel.sum(dtype=np.float64)) == pytest.approx(1.0, abs=1e-5)


@pytest.mark.parametrize("length", [1.0, 5.0, 17.5, 61.0])
@pytest.mark.parametrize("seed", [0, 1, 12345])
def test_motion_kernel_is_normalised_and_centred(length, seed):
    kernel = motion_kernel(length, seed)
    check_normalised(kernel)
    centre = (kernel.shape[0] - 1) / 2
    row, col = kernel_centroid(kernel)
    assert abs(row - centre) <= 0.5 and abs(col - centre) <= 0.5
    assert kernel.shape[0] <= 2 * math.ceil(length) + 3


def test_motion_kernel_is_a_pure_function_of_its_seed():
    np.testing.assert_array_equal(motion_kernel(15.0, 3), motion_kernel(15.0, 3))
    assert not np.array_equal(motion_kernel(15.0, 3), motion_kernel(15.0, 4))


@pytest.mark.parametrize("length", [3.0, 25.0])
def test_shake_trajectory_has_the_requested_arc_length(length):
    path = shake_trajectory(length, seed=7)
    assert float(np.abs(np.diff(path)).sum()) == pytest.approx(length, rel=1e-6)


@pytest.mark.parametrize(
    ("sigma_x", "sigma_y", "theta"), [(0.5, 0.5, 0.0), (3.0, 1.0, 0.0), (1.0, 3.0, 45.0), (10.0, 0.1, 170.0)]
)
def test_gaussian_kernel_is_normalised_and_centred(sigma_x, sigma_y, theta):
    kernel = gaussian_kernel(sigma_x, sigma_y, theta)
    check_normalised(kernel)
    centre = (kernel.shape[0] - 1) / 2
    assert kernel_centroid(kernel) == pytest.approx((centre, centre), abs=1e-3)
    np.testing.assert_allclose(kernel, kernel[::-1, ::-1], atol=1e-7)  # point-symmetric


def test_gaussian_kernel_spreads_along_its_rotated_major_axis():
    def spread(kernel):
        rows, cols = np.indices(kernel.shape) - (kernel.shape[0] - 1) / 2
        return float((cols**2 * kernel).sum()), float((rows**2 * kernel).sum())

    along_x = spread(gaussian_kernel(3.0, 1.0, 0.0))
    assert along_x[0] == pytest.approx(9.0, rel=0.05) and along_x[1] == pytest.approx(1.0, rel=0.05)
    along_y = spread(gaussian_kernel(3.0, 1.0, 90.0))
    assert along_y[1] == pytest.approx(9.0, rel=0.05) and along_y[0] == pytest.approx(1.0, rel=0.05)


@pytest.mark.parametrize("radius", [0.5, 1.0, 2.7, 5.0, 30.0])
def test_defocus_kernel_is_a_normalised_centred_disk(radius):
    kernel = defocus_kernel(radius)
    check_normalised(kernel)
    np.testing.assert_allclose(kernel, kernel.T, atol=1e-7)
    np.testing.assert_allclose(kernel, kernel[::-1, ::-1], atol=1e-7)
    rows, cols = np.indices(kernel.shape) - (kernel.shape[0] - 1) / 2
    assert (kernel[np.hypot(rows, cols) > radius + 0.5] == 0).all()
    assert (kernel[np.hypot(rows, cols) < radius - 0.5] == kernel.max()).all()


def test_blur_kernel_follows_the_sampled_kernel_type():
    for kernel_type in ("motion", "gaussian", "defocus"):
        spec = BlurSpec(kernel=kernel_type)
        params = OPS[DegradationKind.BLUR].sample(rng_for(0, kernel_type), spec)
        assert isinstance(params, BlurParams) and params.kernel == kernel_type
        check_normalised(blur_kernel(params))


# --- rain and snow ---------------------------------------------------------------------------------

def bright_structures(spec_or_name, seed: int) -> tuple[float, float]:
    """(fraction of pixels much brighter than the background, how far the maximum rises above it)."""
    clean = grey(20, 128)
    recipe = one_step(spec_or_name) if not isinstance(spec_or_name, str) else spec_or_name
    out, _ = degrade(clean, recipe, rng_for(seed))
    darkest_channel = out.astype(int).min(axis=2)  # rain and snow are white-ish: all channels rise
    background = float(np.median(darkest_channel))
    return float((darkest_channel > background + 20).mean()), float(darkest_channel.max() - background)


@pytest.mark.parametrize("recipe", ["rain", "snow", "cdd11/rain", "cdd11/snow"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_rain_and_snow_add_sparse_bright_structures(recipe, seed):
    fraction, rise = bright_structures(recipe, seed)
    assert 0.001 <= fraction <= 0.6
    assert rise >= 25


def test_denser_rain_covers_more_pixels():
    sparse, _ = bright_structures(RainSpec(density=1.0, veil=0.0, intensity=0.6), 0)
    dense, _ = bright_structures(RainSpec(density=8.0, veil=0.0, intensity=0.6), 0)
    assert dense > 2 * sparse


def test_rain_streaks_follow_the_angle():
    """Vertical streaks vary along rows far less than along columns; horizontal ones the reverse."""
    def directional_energy(angle):
        out, _ = degrade(grey(20, 128), one_step(RainSpec(angle=angle, veil=0.0, density=3.0)), rng_for(0))
        channel = out[:, :, 0].astype(float)
        return np.abs(np.diff(channel, axis=0)).mean(), np.abs(np.diff(channel, axis=1)).mean()

    down_vertical, across_vertical = directional_energy(0.0)
    down_horizontal, across_horizontal = directional_energy(90.0)
    assert down_vertical < 0.5 * across_vertical
    assert across_horizontal < 0.5 * down_horizontal


def test_zero_density_snow_without_veil_changes_nothing(photo):
    out, _ = degrade(photo, one_step(SnowSpec(density=0.0, veil=0.0)), rng_for(0))
    np.testing.assert_array_equal(out, photo)


# --- jpeg ------------------------------------------------------------------------------------------

def jpeg_error(image: np.ndarray, quality: int) -> float:
    out, record = degrade(image, one_step(JpegSpec(quality=quality)), rng_for(0))
    assert record["steps"][0]["params"]["quality"] == quality
    return float(np.abs(out.astype(int) - image).mean())


@pytest.mark.parametrize("name", PHOTO_NAMES)
def test_low_jpeg_quality_gives_larger_errors(tiles, name):
    assert jpeg_error(tiles[name], 10) > 2 * jpeg_error(tiles[name], 95)
    assert jpeg_error(tiles[name], 95) > 0


def test_jpeg_shows_blocking_at_low_quality(photo):
    """Errors concentrate on the 8x8 block grid: steps across block edges exceed steps inside blocks."""
    out, _ = degrade(photo, one_step(JpegSpec(quality=5)), rng_for(0))
    steps = np.abs(np.diff(out.astype(float), axis=1)).mean(axis=(0, 2))
    at_edges = steps[7::8].mean()
    inside = np.delete(steps, np.arange(7, steps.size, 8)).mean()
    assert at_edges > 1.3 * inside
