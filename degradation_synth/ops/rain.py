"""Rain streaks.

Streaks are drawn directly as anti-aliased line segments in one ``cv2.polylines`` call, slightly
blurred, and blended onto the image. This replaces the field's usual "threshold noise, then
convolve with a rotated line kernel" (the Photoshop recipe behind Rain100L/H), which draws the same
kind of layer far slower because large kernels send ``cv2.filter2D`` down its DFT path
(docs/benchmarks.md).

- Geometry: ``density`` streaks per 1000 pixels, ``length`` and ``width`` in pixels of the image
  being degraded, one ``angle`` (degrees from vertical) per image with ~2 deg jitter per streak.
- Blend: ``screen`` (``1 - (1 - x)(1 - a S)``, the Photoshop recipe) or ``add`` (``x + a S``, as
  CDD-11 adds its rain masks).
- ``veil``: rain accumulation / mist, ``x (1 - v) + v L`` with light level ``veil_light`` (JORDER).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from ..image import expand
from ..seeding import draw_seed
from ..spec import Choice, Fixed, Spec, Uniform, check_option, param

_SUBPIXEL_BITS = 4


@dataclass(frozen=True)
class RainSpec(Spec):
    kind = "rain"
    density: object = param(Uniform(1.0, 5.0), low=0.0, high=50.0)
    length: object = param(Uniform(15.0, 40.0), low=1.0, high=500.0)
    width: object = param(Choice((1, 1, 1, 2)), low=1, high=9, integer=True)
    angle: object = param(Uniform(-25.0, 25.0), low=-90.0, high=90.0)
    intensity: object = param(Uniform(0.25, 0.65), low=0.0, high=1.0)
    blur: object = param(Uniform(0.5, 1.0), low=0.0, high=5.0)
    blend: object = param(Fixed("screen"), options=("screen", "add"))
    veil: object = param(Uniform(0.0, 0.15), low=0.0, high=1.0)
    veil_light: object = param(Uniform(0.8, 1.0), low=0.0, high=1.0)


@dataclass(frozen=True)
class RainParams:
    density: float
    length: float
    width: int
    angle: float
    intensity: float
    blur: float
    blend: str
    veil: float
    veil_light: float
    seed: int

    def __post_init__(self) -> None:
        check_option(self.blend, RainSpec, "blend")


def sample_rain(rng: np.random.Generator, spec: RainSpec = RainSpec()) -> RainParams:
    return RainParams(**spec.draw_all(rng), seed=draw_seed(rng))


def streak_layer(height: int, width: int, density: float, length: float, line_width: int,
                 angle: float, blur: float, seed: int) -> np.ndarray:
    """The streak mask, (H, W) float32 in [0, 1], quantised to 8 bits."""
    rng = np.random.default_rng(seed)
    count = int(round(density * height * width / 1000.0))
    layer = np.zeros((height, width), np.uint8)
    if count:
        # Centres cover a margin around the image so that streaks enter across the borders.
        margin = length / 2
        uniform = rng.random((count, 3))
        centre_x = uniform[:, 0] * (width + length) - margin
        centre_y = uniform[:, 1] * (height + length) - margin
        half = length * (0.35 + 0.15 * uniform[:, 2])
        theta = np.deg2rad(angle + rng.normal(0.0, 2.0, count))
        dx, dy = np.sin(theta) * half, np.cos(theta) * half
        ends = np.stack([centre_x - dx, centre_y - dy, centre_x + dx, centre_y + dy], axis=1).reshape(count, 2, 2)
        ends = np.round(ends * (1 << _SUBPIXEL_BITS)).astype(np.int32)
        cv2.polylines(layer, ends, False, 255, thickness=line_width, lineType=cv2.LINE_AA, shift=_SUBPIXEL_BITS)
    if blur > 0:
        layer = cv2.GaussianBlur(layer, (0, 0), blur)  # on 8 bits, like the field's rain masks, and faster
    return np.multiply(layer, np.float32(1.0 / 255.0), dtype=np.float32)


def apply_rain(image: np.ndarray, params: RainParams) -> np.ndarray:
    height, width = image.shape[:2]
    streaks = streak_layer(height, width, params.density, params.length, params.width, params.angle,
                           params.blur, params.seed)
    streaks = expand(streaks * np.float32(params.intensity))
    if params.blend == "screen":
        rainy = image + streaks * (1.0 - image)  # = 1 - (1 - x)(1 - s)
    else:
        rainy = np.minimum(image + streaks, 1.0)
    if params.veil > 0:
        rainy = rainy * np.float32(1.0 - params.veil) + np.float32(params.veil * params.veil_light)
    return rainy
