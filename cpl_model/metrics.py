"""PSNR and SSIM per image, on RGB or on the luma (Y) channel, the field's protocols:

- RGB (PromptIR / AdaIR): images clipped to [0, 1], ``data_range=1``, scikit-image's
  ``peak_signal_noise_ratio`` and ``structural_similarity`` defaults (7x7 uniform window, sample
  covariance, K1 = 0.01, K2 = 0.03, channels averaged, borders of half a window excluded).
- Y (BasicSR, as CPLIR and WeatherBench report): ITU-R BT.601 luma ``16 + 65.481 R + 128.553 G + 24.966 B``
  (on 0-255), and BasicSR's SSIM: an 11x11 Gaussian window (sigma 1.5), population covariance, valid
  windows only.

Both agree with scikit-image to float precision (tests/cpl_model/test_metrics.py; BasicSR's SSIM is
scikit-image's with ``gaussian_weights=True, use_sample_covariance=False``). ``psnr`` is infinite
for identical images, as scikit-image's; ``restoration_metrics``, which validation and evaluation
report, caps it at ``PSNR_CAP``.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

PSNR_CAP = 100.0  # dB; identical images have infinite PSNR, and means over a set must stay finite
METRICS = ("psnr", "ssim", "psnr_y", "ssim_y")

_WINDOW = 7
_GAUSSIAN_WINDOW, _GAUSSIAN_SIGMA = 11, 1.5
_K1, _K2 = 0.01, 0.03
Window = Literal["uniform", "gaussian"]
_BT601 = (65.481 / 255.0, 128.553 / 255.0, 24.966 / 255.0)


def rgb_to_y(image: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) RGB in [0, 1] -> (B, 1, H, W) BT.601 luma in [16/255, 235/255]."""
    weights = image.new_tensor(_BT601).view(1, 3, 1, 1)
    return (image * weights).sum(dim=1, keepdim=True) + 16.0 / 255.0


def psnr(restored: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """(B,) PSNR in dB of images in [0, 1] (inputs are clipped first)."""
    mse = (restored.clamp(0, 1).double() - target.clamp(0, 1).double()).pow(2).flatten(1).mean(dim=1)
    return (10.0 * torch.log10(1.0 / mse)).float()  # inf for identical images, as scikit-image


def _uniform_mean(image: torch.Tensor) -> torch.Tensor:
    # The uniform filter over valid windows only equals scikit-image's reflect-filtered map with
    # its (window - 1) / 2 border cropped away.
    return F.avg_pool2d(image, _WINDOW, stride=1)


def _gaussian_mean(image: torch.Tensor) -> torch.Tensor:
    """The Gaussian-weighted mean over valid 11x11 windows, per channel (separable)."""
    offsets = torch.arange(_GAUSSIAN_WINDOW, dtype=image.dtype, device=image.device) - _GAUSSIAN_WINDOW // 2
    taps = torch.exp(-offsets**2 / (2 * _GAUSSIAN_SIGMA**2))
    taps = taps / taps.sum()
    channels = image.shape[1]
    rows = F.conv2d(image, taps.view(1, 1, -1, 1).expand(channels, 1, -1, 1), groups=channels)
    return F.conv2d(rows, taps.view(1, 1, 1, -1).expand(channels, 1, 1, -1), groups=channels)


def ssim(restored: torch.Tensor, target: torch.Tensor, window: Window = "uniform") -> torch.Tensor:
    """(B,) mean SSIM over channels and valid windows, of images in [0, 1] (clipped first).

    ``window``: ``uniform``, scikit-image's default (7x7, sample covariance), or ``gaussian``, BasicSR's
    (11x11, sigma 1.5, population covariance).

    Raises:
        ValueError: for images smaller than the window, as scikit-image does.
    """
    side = _WINDOW if window == "uniform" else _GAUSSIAN_WINDOW
    if min(restored.shape[-2:]) < side:
        raise ValueError(f"SSIM needs images of at least {side}x{side}, got {tuple(restored.shape[-2:])}")
    x, y = restored.clamp(0, 1).double(), target.clamp(0, 1).double()
    channels = x.shape[1]
    _window_mean = _uniform_mean if window == "uniform" else _gaussian_mean
    mu_x, mu_y = _window_mean(x), _window_mean(y)
    cov_norm = _WINDOW**2 / (_WINDOW**2 - 1) if window == "uniform" else 1.0  # sample or population covariance
    var_x = cov_norm * (_window_mean(x * x) - mu_x * mu_x)
    var_y = cov_norm * (_window_mean(y * y) - mu_y * mu_y)
    cov_xy = cov_norm * (_window_mean(x * y) - mu_x * mu_y)
    c1, c2 = _K1**2, _K2**2
    ssim_map = ((2 * mu_x * mu_y + c1) * (2 * cov_xy + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    return ssim_map.reshape(len(x), channels, -1).mean(dim=2).mean(dim=1).float()


def image_metrics(restored: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-image ``psnr``, ``ssim`` (RGB, scikit-image's SSIM) and ``psnr_y``, ``ssim_y`` (luma, BasicSR's
    SSIM), each (B,)."""
    restored, target = restored.detach(), target.detach()
    y_restored, y_target = rgb_to_y(restored.clamp(0, 1)), rgb_to_y(target.clamp(0, 1))
    return {
        "psnr": psnr(restored, target),
        "ssim": ssim(restored, target),
        "psnr_y": psnr(y_restored, y_target),
        "ssim_y": ssim(y_restored, y_target, window="gaussian"),
    }


def restoration_metrics(restored: torch.Tensor, degraded: torch.Tensor, clean: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-image metrics of a restoration and, as its baseline, of the degraded input it came from.

    Args:
        restored, degraded, clean: (B, 3, H, W) in [0, 1], on one device.

    Returns:
        ``METRICS`` of ``restored`` against ``clean``, and the same prefixed ``input_`` for ``degraded``;
        each (B,) float32 on the CPU, PSNR capped at ``PSNR_CAP``.
    """
    metrics = {}
    for prefix, image in (("", restored), ("input_", degraded)):
        for name, values in image_metrics(image.float(), clean.float()).items():
            metrics[prefix + name] = (values.clamp_max(PSNR_CAP) if name.startswith("psnr") else values).cpu()
    return metrics
