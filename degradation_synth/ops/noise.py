"""Sensor noise.

Two models:

- ``gaussian``: the PromptIR/AirNet benchmark protocol: i.i.d. per-pixel, per-channel Gaussian noise
  of standard deviation ``sigma`` on the 0-255 scale, then clipping. (The reference code truncates
  to uint8, which biases the mean by -0.5 DN; we round at the chain's single quantisation.)
- ``poisson_gaussian``: heteroscedastic noise in linear light after Brooks et al. (CVPR'19,
  "Unprocessing"): ``y = x + N(0, sqrt(shot * x + read))`` with ``x`` the linearised image
  (``srgb ** 2.2``); ``read`` follows ``shot`` through their log-linear fit, so only ``shot``
  is configured. The Gaussian approximation of the Poisson term is what they use, and it is
  much cheaper than Poisson sampling.

"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from ..image import power
from ..seeding import draw_seed, gaussian_field
from ..spec import Choice, Fixed, LogUniform, Spec, check_option, param

GAMMA = 2.2


@dataclass(frozen=True)
class NoiseSpec(Spec):
    kind = "noise"
    model: object = param(Fixed("gaussian"), options=("gaussian", "poisson_gaussian"))
    sigma: object = param(Choice((15.0, 25.0, 50.0)), low=0.0, high=255.0)
    shot: object = param(LogUniform(1e-4, 1.2e-2), low=0.0, high=1.0)


@dataclass(frozen=True)
class NoiseParams:
    model: str
    sigma: float  # DN on the 0-255 scale (gaussian model)
    shot: float  # shot-noise gain in linear light (poisson_gaussian model)
    read: float  # read-noise variance in linear light (poisson_gaussian model)
    seed: int

    def __post_init__(self) -> None:
        check_option(self.model, NoiseSpec, "model")


def sample_read_variance(rng: np.random.Generator, shot: float) -> float:
    """Brooks et al.'s fit: log(read) = 2.18 log(shot) + 1.20 + N(0, 0.26)."""
    return float(math.exp(2.18 * math.log(shot) + 1.20 + rng.normal(0.0, 0.26)))


def sample_noise(rng: np.random.Generator, spec: NoiseSpec = NoiseSpec()) -> NoiseParams:
    model = spec.draw("model", rng)
    if model == "gaussian":
        sigma, shot, read = spec.draw("sigma", rng), 0.0, 0.0
    else:
        sigma, shot = 0.0, spec.draw("shot", rng)
        read = sample_read_variance(rng, shot)
    return NoiseParams(model=model, sigma=sigma, shot=shot, read=read, seed=draw_seed(rng))


def add_linear_noise(linear: np.ndarray, shot: float, read: float, seed: int) -> np.ndarray:
    """Add heteroscedastic Gaussian noise to a linear-light image (values may leave [0, 1])."""
    std = cv2.sqrt(linear * np.float32(shot) + np.float32(read))  # linear >= 0, so the variance is > 0
    return cv2.add(linear, std * gaussian_field(linear.shape, seed))


def apply_noise(image: np.ndarray, params: NoiseParams) -> np.ndarray:
    if params.model == "gaussian":
        noisy = cv2.scaleAdd(gaussian_field(image.shape, params.seed), params.sigma / 255.0, image)
        return np.clip(noisy, 0.0, 1.0, out=noisy)
    linear = power(image, GAMMA)
    noisy = np.clip(add_linear_noise(linear, params.shot, params.read, params.seed), 0.0, 1.0)
    return power(noisy, 1.0 / GAMMA)
