"""Low light: darkening plus the noise that comes with high sensor gain.

- ``lv`` (default; Lv et al., IJCV'21): ``y = beta (alpha x)^gamma`` in display space, then
  signal-dependent Poisson-Gaussian noise in linear light (see ``noise.py``), whose ``shot`` level
  is drawn higher than for daylight noise. Ranges follow the derived code of Lv et al.
  (gamma up to 3.5 rather than their unverified 5, which leaves almost no signal).
- ``retinex`` (CDD-11 / OneRestore): ``y = x L^(gamma - 1) + N(0, sigma)`` with illumination ``L``
  the smoothed max-RGB (LIME's initial estimate; OneRestore refines LIME's map with a guided filter)
  and signal-independent noise ``sigma`` in DN; CDD-11 uses gamma in [2, 3], sigma in [0.03, 0.08]*255.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from ..image import expand, power
from ..seeding import draw_seed, gaussian_field
from ..spec import Fixed, LogUniform, Spec, Uniform, check_option, param
from .noise import GAMMA, add_linear_noise, sample_read_variance


@dataclass(frozen=True)
class LowLightSpec(Spec):
    kind = "low_light"
    model: object = param(Fixed("lv"), options=("lv", "retinex"))
    alpha: object = param(Uniform(0.9, 1.0), low=0.0, high=1.0)
    beta: object = param(Uniform(0.5, 1.0), low=0.0, high=1.0)
    gamma: object = param(Uniform(1.5, 3.5), low=1.0, high=10.0)
    shot: object = param(LogUniform(1e-3, 1.2e-2), low=0.0, high=1.0)  # lv noise
    sigma: object = param(Uniform(7.65, 20.4), low=0.0, high=255.0)  # retinex noise, DN


@dataclass(frozen=True)
class LowLightParams:
    model: str
    alpha: float
    beta: float
    gamma: float
    shot: float
    read: float
    sigma: float
    seed: int

    def __post_init__(self) -> None:
        check_option(self.model, LowLightSpec, "model")


def sample_low_light(rng: np.random.Generator, spec: LowLightSpec = LowLightSpec()) -> LowLightParams:
    model, gamma = spec.draw("model", rng), spec.draw("gamma", rng)
    if model == "lv":
        alpha, beta, shot = spec.draw("alpha", rng), spec.draw("beta", rng), spec.draw("shot", rng)
        read, sigma = sample_read_variance(rng, shot), 0.0
    else:
        alpha = beta = shot = read = 0.0
        sigma = spec.draw("sigma", rng)
    return LowLightParams(model=model, alpha=alpha, beta=beta, gamma=gamma, shot=shot, read=read,
                          sigma=sigma, seed=draw_seed(rng))


def illumination(image: np.ndarray) -> np.ndarray:
    """Smoothed max-RGB illumination, (H, W) float32 in [0, 1]."""
    brightest = np.maximum(image[:, :, 0], image[:, :, 1])  # no cv2.split copies
    np.maximum(brightest, image[:, :, 2], out=brightest)
    return cv2.GaussianBlur(brightest, (0, 0), 3.0)


def apply_low_light(image: np.ndarray, params: LowLightParams) -> np.ndarray:
    if params.model == "lv":
        dark = np.float32(params.beta) * power(image * np.float32(params.alpha), params.gamma)
        linear = power(dark, GAMMA)
        noisy = np.clip(add_linear_noise(linear, params.shot, params.read, params.seed), 0.0, 1.0)
        return power(noisy, 1.0 / GAMMA)
    gain = power(illumination(image), params.gamma - 1.0)
    noisy = cv2.scaleAdd(gaussian_field(image.shape, params.seed), params.sigma / 255.0, image * expand(gain))
    return np.clip(noisy, 0.0, 1.0, out=noisy)
