"""Haze by the atmospheric scattering model: ``I = J t + A (1 - t)``, ``t = exp(-beta d)``.

``d`` is a relative depth in [0, 1] (0 near, 1 far), capped at ``max_depth``. It comes from a
per-image depth map when one is given, otherwise from a proxy that needs no network:

- ``cap``: the colour-attenuation prior (Zhu, Mai, Shao, TIP'15),
  ``d = 0.121779 + 0.959710 V - 0.780245 S``, computed on a 64-px thumbnail, smoothed and
  normalised to [0, 1]. Cheap; reads bright, unsaturated objects as far.
- ``position``: far above a random horizon row, nearing linearly towards the bottom edge, with
  low-frequency variation. Content-independent; suits outdoor scenes.

``max_depth`` reproduces CDD-11's cap of 0.7. Defaults follow RESIDE's ITS-to-OTS density range.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from ..image import expand
from ..seeding import draw_seed
from ..spec import Fixed, Spec, Uniform, check_option, param

_THUMB = 64


@dataclass(frozen=True)
class HazeSpec(Spec):
    kind = "haze"
    beta: object = param(Uniform(0.6, 1.8), low=0.0, high=10.0)
    airlight: object = param(Uniform(0.7, 1.0), low=0.0, high=1.0)
    tint: object = param(Uniform(-0.03, 0.03), low=-0.2, high=0.2)  # per-channel airlight offset
    depth: object = param(Fixed("cap"), options=("cap", "position"))
    max_depth: object = param(Fixed(1.0), low=0.0, high=1.0)
    horizon: object = param(Uniform(0.2, 0.6), low=0.0, high=1.0)  # position prior: row, as a fraction


@dataclass(frozen=True)
class HazeParams:
    beta: float
    airlight: tuple[float, float, float]
    depth: str  # proxy used when no depth map is given
    max_depth: float
    horizon: float
    seed: int

    def __post_init__(self) -> None:
        check_option(self.depth, HazeSpec, "depth")


def sample_haze(rng: np.random.Generator, spec: HazeSpec = HazeSpec()) -> HazeParams:
    beta, level = spec.draw("beta", rng), spec.draw("airlight", rng)
    airlight = tuple(min(max(level + spec.draw("tint", rng), 0.0), 1.0) for _ in range(3))
    return HazeParams(
        beta=beta, airlight=airlight, depth=spec.draw("depth", rng), max_depth=spec.draw("max_depth", rng),
        horizon=spec.draw("horizon", rng), seed=draw_seed(rng),
    )


def _normalise(depth: np.ndarray) -> np.ndarray:
    low, high = float(depth.min()), float(depth.max())
    if high - low < 1e-6:
        return np.full_like(depth, 0.5)
    return (depth - low) * np.float32(1.0 / (high - low))


def _thumbnail_size(height: int, width: int) -> tuple[int, int]:
    scale = _THUMB / max(height, width)
    return max(1, round(width * scale)), max(1, round(height * scale))


def cap_depth(image: np.ndarray) -> np.ndarray:
    """Colour-attenuation-prior depth of a float RGB image, (H, W) float32 in [0, 1]."""
    height, width = image.shape[:2]
    thumb = cv2.resize(image, _thumbnail_size(height, width), interpolation=cv2.INTER_AREA)
    hsv = cv2.cvtColor(thumb, cv2.COLOR_RGB2HSV)
    depth = 0.121779 + 0.959710 * hsv[:, :, 2] - 0.780245 * hsv[:, :, 1]
    # A min filter then a blur, as CAP refines its raw estimate: object edges stay coherent.
    depth = cv2.GaussianBlur(cv2.erode(depth, np.ones((3, 3), np.uint8)), (0, 0), 2.0)
    return _normalise(cv2.resize(depth, (width, height), interpolation=cv2.INTER_LINEAR))


def position_depth(height: int, width: int, horizon: float, seed: int) -> np.ndarray:
    """Position-prior depth, (H, W) float32 in [0, 1]: 1 above the horizon row, 0 at the bottom."""
    rows = np.linspace(0.0, 1.0, height, dtype=np.float32)
    ramp = np.clip((1.0 - rows) / max(1.0 - horizon, 1e-3), 0.0, 1.0)
    wobble = np.random.default_rng(seed).normal(0.0, 0.08, (8, 8)).astype(np.float32)
    wobble = cv2.resize(wobble, (width, height), interpolation=cv2.INTER_CUBIC)
    return np.clip(ramp[:, None] + wobble, 0.0, 1.0)


def check_depth(depth: object, shape: tuple[int, ...]) -> np.ndarray:
    """Validate a caller's depth map (H, W) in [0, 1], larger = farther; return it as float32."""
    if not isinstance(depth, np.ndarray) or depth.shape != shape[:2]:
        got = depth.shape if isinstance(depth, np.ndarray) else type(depth).__name__
        raise ValueError(f"depth must be a (H, W) = {shape[:2]} array, got {got}")
    if depth.dtype == np.uint8:
        return depth.astype(np.float32) / 255.0
    depth = depth.astype(np.float32)
    if not np.isfinite(depth).all() or depth.min() < 0.0 or depth.max() > 1.0:
        raise ValueError("depth must be finite and in [0, 1] (0 near, 1 far)")
    return depth


def apply_haze(image: np.ndarray, params: HazeParams, depth: np.ndarray | None = None) -> np.ndarray:
    height, width = image.shape[:2]
    if depth is not None:
        distance = check_depth(depth, image.shape)
    elif params.depth == "cap":
        distance = cap_depth(image)
    else:
        distance = position_depth(height, width, params.horizon, params.seed)
    transmission = cv2.exp(cv2.min(distance, params.max_depth) * np.float32(-params.beta))
    airlight = (*params.airlight, 0.0)  # an OpenCV scalar: one value per channel
    # J t + A (1 - t) = A + (J - A) t; the result stays in [0, 1] as a convex combination.
    return cv2.add(cv2.subtract(image, airlight) * expand(transmission), airlight)
