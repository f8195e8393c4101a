"""Checking and converting the images that enter and leave the degradation chain.

Inside the chain images are float32 RGB in [0, 1]; they enter and leave as (H, W, 3) uint8 RGB.
"""

from __future__ import annotations

import cv2
import numpy as np

MIN_SIDE = 32
"""Smallest supported height and width, in pixels."""


def check_rgb_uint8(image: object, name: str = "image") -> np.ndarray:
    """Return ``image`` if it is a C-contiguous (H, W, 3) uint8 array of at least MIN_SIDE², else raise.

    Raises:
        ValueError: naming what is wrong (type, dtype, shape, channels, layout or size).
    """
    if not isinstance(image, np.ndarray):
        raise ValueError(f"{name} must be a numpy array, got {type(image).__name__}")
    if image.dtype != np.uint8:
        raise ValueError(
            f"{name} must have dtype uint8, got {image.dtype}; convert with degradation_synth.as_rgb_uint8"
        )
    if image.ndim != 3 or image.shape[2] != 3:
        channels = image.shape[2] if image.ndim == 3 else "no channel axis"
        raise ValueError(
            f"{name} must be (H, W, 3) RGB, got shape {image.shape} ({channels} channels); "
            "convert grayscale or RGBA with degradation_synth.as_rgb_uint8"
        )
    if not image.flags.c_contiguous:
        raise ValueError(f"{name} must be C-contiguous; pass np.ascontiguousarray({name})")
    height, width = image.shape[:2]
    if min(height, width) < MIN_SIDE:
        raise ValueError(f"{name} is {height}x{width}; the smallest supported size is {MIN_SIDE}x{MIN_SIDE}")
    return image


def as_rgb_uint8(image: np.ndarray, background: int = 255) -> np.ndarray:
    """Convert a grayscale, RGBA, 16-bit or float [0, 1] image to contiguous (H, W, 3) uint8 RGB.

    Grayscale is repeated on three channels; RGBA is composited over a uniform ``background``
    grey level; uint16 is scaled by 255/65535; floats are clipped to [0, 1] and scaled by 255.

    Raises:
        ValueError: for shapes or dtypes that are not an image.
    """
    image = np.asarray(image)
    if image.dtype == np.uint16:
        image = (image.astype(np.float32) * (255.0 / 65535.0)).round().astype(np.uint8)
    elif image.dtype.kind == "f":
        image = (np.clip(image, 0.0, 1.0) * 255.0).round().astype(np.uint8)
    elif image.dtype != np.uint8:
        raise ValueError(f"cannot convert dtype {image.dtype} to uint8 RGB; expected uint8, uint16 or float")
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    elif image.ndim == 3 and image.shape[2] == 4:
        alpha = image[:, :, 3:4].astype(np.float32) / 255.0
        image = (image[:, :, :3] * alpha + background * (1.0 - alpha)).round().astype(np.uint8)
    elif not (image.ndim == 3 and image.shape[2] == 3):
        raise ValueError(f"cannot convert shape {image.shape} to RGB; expected (H, W), (H, W, 1), (H, W, 3) or (H, W, 4)")
    return np.ascontiguousarray(image)


def to_float(image: np.ndarray) -> np.ndarray:
    """uint8 [0, 255] -> float32 [0, 1]."""
    return np.multiply(image, np.float32(1.0 / 255.0), dtype=np.float32)


def to_uint8(image: np.ndarray) -> np.ndarray:
    """float32 [0, 1] -> uint8, clipped and rounded to nearest (the chain's single quantisation)."""
    scaled = np.multiply(image, np.float32(255.0))  # one temporary, updated in place
    scaled += np.float32(0.5)
    np.clip(scaled, 0.0, 255.0, out=scaled)
    return scaled.astype(np.uint8)


def expand(plane: np.ndarray) -> np.ndarray:
    """(H, W) -> (H, W, 3) by repeating the plane.

    Multiplying by the expanded plane is much faster than numpy's ``image * plane[:, :, None]``
    broadcast over a 3-long last axis (docs/benchmarks.md), which matters on every hot blend.
    """
    return cv2.merge((plane, plane, plane))


_POW_EPSILON = np.float32(1e-12)


def power(image: np.ndarray, exponent: float) -> np.ndarray:
    """``image ** exponent`` for non-negative float32 images, as ``exp(exponent * log(image + 1e-12))``.

    OpenCV's vectorised exp/log are faster than ``cv2.pow`` and ``np.power`` on photos, whose zeros
    send both down slow paths (docs/benchmarks.md). The epsilon moves results by < 1e-5.
    """
    return cv2.exp(cv2.log(image + _POW_EPSILON) * np.float32(exponent))
