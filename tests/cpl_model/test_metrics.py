"""PSNR and SSIM (RGB and luma) agree with scikit-image on real degraded/clean photo pairs."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
import torch
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from cpl_model import METRICS, PSNR_CAP, image_metrics, psnr, restoration_metrics, rgb_to_y, ssim

PAIRS = [f"{photo}-{recipe}" for photo in ("astronaut", "coffee", "chelsea") for recipe in ("noise25", "haze", "blur")]
PSNR_TOLERANCE = 1e-4  # dB
SSIM_TOLERANCE = 1e-5


def as_float(image: np.ndarray) -> np.ndarray:
    return image.astype(np.float64) / 255.0


def to_tensor(image: np.ndarray, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """(H, W, 3) uint8 -> (1, 3, H, W) in [0, 1]."""
    return torch.from_numpy(as_float(image)).permute(2, 0, 1)[None].to(dtype)


def luma(image: np.ndarray) -> np.ndarray:
    """BT.601 luma (BasicSR's ``rgb2ycbcr(..., y_only=True)``) of float RGB in [0, 1], computed in numpy."""
    return (16.0 + 65.481 * image[..., 0] + 128.553 * image[..., 1] + 24.966 * image[..., 2]) / 255.0


def reference(degraded: np.ndarray, clean: np.ndarray) -> dict[str, float]:
    d, c = as_float(degraded), as_float(clean)
    return {
        "psnr": peak_signal_noise_ratio(c, d, data_range=1),
        "ssim": structural_similarity(c, d, data_range=1, channel_axis=2),
        "psnr_y": peak_signal_noise_ratio(luma(c), luma(d), data_range=1),
        # BasicSR's SSIM: 11x11 Gaussian window (sigma 1.5, radius 3.5 sigma), population covariance
        "ssim_y": structural_similarity(luma(c), luma(d), data_range=1, gaussian_weights=True, sigma=1.5,
                                        use_sample_covariance=False),
    }


@pytest.mark.parametrize("pair", PAIRS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
def test_image_metrics_match_scikit_image_on_real_pairs(real_pairs, pair, dtype):
    degraded, clean = real_pairs[pair]
    ours = image_metrics(to_tensor(degraded, dtype), to_tensor(clean, dtype))
    expected = reference(degraded, clean)
    assert set(ours) == set(expected)
    for name, value in ours.items():
        assert value.shape == (1,)
        tolerance = PSNR_TOLERANCE if name.startswith("psnr") else SSIM_TOLERANCE
        assert value.item() == pytest.approx(expected[name], abs=tolerance), name


def test_real_pairs_span_a_range_of_quality(real_pairs):
    """The comparison above is only meaningful if the pairs are genuinely degraded, differently."""
    values = [reference(*real_pairs[pair])["psnr"] for pair in PAIRS]
    assert all(math.isfinite(v) for v in values)
    assert max(values) - min(values) > 5


def test_batched_metrics_equal_per_image_metrics(real_pairs):
    degraded = torch.cat([to_tensor(real_pairs[p][0]) for p in PAIRS[:4]])
    clean = torch.cat([to_tensor(real_pairs[p][1]) for p in PAIRS[:4]])
    batched = image_metrics(degraded, clean)
    for i in range(len(degraded)):
        single = image_metrics(degraded[i:i + 1], clean[i:i + 1])
        for name in batched:
            assert batched[name][i].item() == pytest.approx(single[name].item(), abs=1e-6)


def test_rgb_psnr_and_ssim_functions_match_scikit_image(real_pairs):
    degraded, clean = real_pairs["coffee-noise25"]
    d, c = to_tensor(degraded), to_tensor(clean)
    expected = reference(degraded, clean)
    assert psnr(d, c).item() == pytest.approx(expected["psnr"], abs=PSNR_TOLERANCE)
    assert ssim(d, c).item() == pytest.approx(expected["ssim"], abs=SSIM_TOLERANCE)


def test_luma_matches_the_bt601_formula(real_pairs):
    _, clean = real_pairs["astronaut-haze"]
    y = rgb_to_y(to_tensor(clean, torch.float64))
    assert y.shape == (1, 1, *clean.shape[:2])
    np.testing.assert_allclose(y[0, 0].numpy(), luma(as_float(clean)), atol=1e-12)


def test_luma_spans_the_studio_range():
    black, white = torch.zeros(1, 3, 2, 2), torch.ones(1, 3, 2, 2)
    assert rgb_to_y(black).unique().item() == pytest.approx(16 / 255)
    assert rgb_to_y(white).unique().item() == pytest.approx(235 / 255, abs=1e-6)


def test_identical_images_have_infinite_psnr_and_unit_ssim(real_pairs):
    _, clean = real_pairs["chelsea-blur"]
    image = to_tensor(clean)
    for name, value in image_metrics(image, image.clone()).items():
        if name.startswith("psnr"):
            assert value.item() == math.inf
        else:
            assert value.item() == pytest.approx(1.0, abs=1e-12)


def test_metrics_clip_their_inputs_to_the_unit_range(real_pairs):
    degraded, clean = real_pairs["astronaut-noise25"]
    d, c = to_tensor(degraded), to_tensor(clean)
    overshoot = d + 0.5 * (d > 0.5) - 0.5 * (d <= 0.5)  # pushes values beyond 0 and 1
    clipped = image_metrics(overshoot, c)
    expected = image_metrics(overshoot.clamp(0, 1), c)
    for name in clipped:
        assert clipped[name].item() == pytest.approx(expected[name].item(), abs=1e-6)


def test_metrics_rank_a_milder_degradation_higher(real_pairs):
    degraded, clean = real_pairs["coffee-noise25"]
    d, c = to_tensor(degraded), to_tensor(clean)
    milder = c + 0.5 * (d - c)
    worse, better = image_metrics(d, c), image_metrics(milder, c)
    for name in worse:
        assert better[name].item() > worse[name].item(), name


def test_restoration_metrics_score_the_restoration_and_its_degraded_input(real_pairs):
    degraded = torch.cat([to_tensor(real_pairs[p][0]) for p in PAIRS[:3]])
    clean = torch.cat([to_tensor(real_pairs[p][1]) for p in PAIRS[:3]])
    restored = (clean + 0.5 * (degraded - clean)).clamp(0, 1)
    metrics = restoration_metrics(restored, degraded, clean)
    assert list(metrics) == list(METRICS) + [f"input_{name}" for name in METRICS]
    ours, baseline = image_metrics(restored, clean), image_metrics(degraded, clean)
    for name in METRICS:
        assert metrics[name].shape == (3,) and metrics[name].dtype == torch.float32
        assert metrics[name].tolist() == ours[name].tolist()
        assert metrics[f"input_{name}"].tolist() == baseline[name].tolist()


def test_restoration_metrics_cap_the_psnr_of_identical_images_and_nothing_else(real_pairs):
    degraded, clean = real_pairs["chelsea-blur"]
    d, c = to_tensor(degraded), to_tensor(clean)
    metrics = restoration_metrics(c.clone(), d, c)
    assert metrics["psnr"].item() == metrics["psnr_y"].item() == PSNR_CAP
    assert metrics["ssim"].item() == pytest.approx(1.0, abs=1e-6)
    assert metrics["input_psnr"].item() == pytest.approx(reference(degraded, clean)["psnr"], abs=PSNR_TOLERANCE)
    assert all(math.isfinite(value) for values in metrics.values() for value in values.tolist())


def basicsr_ssim(a: np.ndarray, b: np.ndarray) -> float:
    """SSIM as BasicSR computes it on one 0-255 channel: OpenCV's 11x11 Gaussian (sigma 1.5) over valid windows."""
    kernel = cv2.getGaussianKernel(11, 1.5)
    window = kernel @ kernel.T
    mean = lambda image: cv2.filter2D(image, -1, window)[5:-5, 5:-5]  # noqa: E731
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    mu_a, mu_b = mean(a), mean(b)
    var_a, var_b, cov = mean(a * a) - mu_a**2, mean(b * b) - mu_b**2, mean(a * b) - mu_a * mu_b
    return float((((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))).mean())


@pytest.mark.parametrize("pair", PAIRS[:3])
def test_luma_ssim_is_basicsrs_gaussian_ssim(real_pairs, pair):
    degraded, clean = real_pairs[pair]
    expected = basicsr_ssim(luma(as_float(degraded)) * 255, luma(as_float(clean)) * 255)
    ours = image_metrics(to_tensor(degraded), to_tensor(clean))["ssim_y"].item()
    assert ours == pytest.approx(expected, abs=SSIM_TOLERANCE)
    assert ssim(rgb_to_y(to_tensor(degraded)), rgb_to_y(to_tensor(clean))).item() != pytest.approx(expected, abs=1e-3)


def test_gaussian_ssim_needs_an_11_pixel_side():
    image = torch.rand(1, 1, 10, 40, generator=torch.Generator().manual_seed(0))
    assert ssim(image, image).item() == pytest.approx(1.0)
    with pytest.raises(ValueError, match="11x11"):
        ssim(image, image, window="gaussian")
