"""Snow: two layers of soft flakes (small and far, large and near), optionally smeared along the
fall direction, composited over the image as white-ish alpha (Snow100K's ``x = a z + y (1 - z)``),
plus a light veil. Procedural, so it needs none of the Snow100K masks CDD-11 pastes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from ..image import expand
from ..seeding import draw_seed
from ..spec import Spec, Uniform, param

_LAYERS = ((0.5, 0.7), (1.0, 0.3))  # (flake size factor, share of flakes): far, near


@dataclass(frozen=True)
class SnowSpec(Spec):
    kind = "snow"
    density: object = param(Uniform(0.5, 3.0), low=0.0, high=50.0)  # flakes per 1000 px
    size: object = param(Uniform(0.8, 2.0), low=0.2, high=10.0)  # near-flake std, px
    angle: object = param(Uniform(-30.0, 30.0), low=-90.0, high=90.0)  # fall direction, deg from vertical
    streak: object = param(Uniform(0.0, 5.0), low=0.0, high=30.0)  # smear length, px
    brightness: object = param(Uniform(0.85, 1.0), low=0.0, high=1.0)
    veil: object = param(Uniform(0.0, 0.15), low=0.0, high=1.0)


@dataclass(frozen=True)
class SnowParams:
    density: float
    size: float
    angle: float
    streak: float
    brightness: float
    veil: float
    seed: int


def sample_snow(rng: np.random.Generator, spec: SnowSpec = SnowSpec()) -> SnowParams:
    return SnowParams(**spec.draw_all(rng), seed=draw_seed(rng))


def _line_kernel(length: float, angle: float) -> np.ndarray:
    half = int(math.ceil(length / 2))
    kernel = np.zeros((2 * half + 1, 2 * half + 1), np.float32)
    dx, dy = math.sin(math.radians(angle)) * length / 2, math.cos(math.radians(angle)) * length / 2
    cv2.line(kernel, (round(half - dx), round(half - dy)), (round(half + dx), round(half + dy)), 1.0)
    return kernel / kernel.sum()


def flake_alpha(height: int, width: int, params: SnowParams) -> np.ndarray:
    """Snow opacity, (H, W) float32 in [0, 1]."""
    rng = np.random.default_rng(params.seed)
    alpha = np.zeros((height, width), np.float32)
    for scale, share in _LAYERS:
        count = int(round(params.density * height * width / 1000.0 * share))
        sigma = params.size * scale
        layer = np.zeros((height, width), np.float32)
        layer[rng.integers(0, height, count), rng.integers(0, width, count)] = rng.uniform(0.6, 1.0, count)
        # Scale so that a lone flake peaks at its opacity: divide by the blur kernel's centre tap.
        taps = cv2.getGaussianKernel(2 * int(math.ceil(3 * sigma)) + 1, sigma)
        layer = cv2.GaussianBlur(layer, (taps.size, taps.size), sigma) / float(taps.max()) ** 2
        np.maximum(alpha, layer, out=alpha)
    if params.streak >= 1.5:
        kernel = _line_kernel(params.streak, params.angle)
        # Smearing spreads each flake over the streak; the gain keeps streaks visible but below 1.
        alpha = cv2.filter2D(alpha, -1, kernel, borderType=cv2.BORDER_REFLECT) * np.float32(
            min(kernel.shape[0], 1.0 + 0.5 * params.streak))
    return np.clip(alpha, 0.0, 1.0, out=alpha)


def apply_snow(image: np.ndarray, params: SnowParams) -> np.ndarray:
    alpha = expand(flake_alpha(image.shape[0], image.shape[1], params))
    white = np.float32(params.brightness)
    snowy = image + (white - image) * alpha
    if params.veil > 0:
        snowy = snowy * np.float32(1.0 - params.veil) + np.float32(params.veil) * white
    return snowy
