"""Seeded randomness: per-sample generators and fast Gaussian fields.

Every random draw in the package comes from a ``np.random.Generator`` the caller injects, or from
an integer seed that was itself drawn from one and stored in the parameters (so ``replay`` can
redraw it). Nothing reads global numpy or Python random state.
"""

from __future__ import annotations

import hashlib

import cv2
import numpy as np

SeedId = int | str | bytes


def _encode(value: SeedId) -> bytes:
    """A type-tagged, length-prefixed encoding, so that distinct argument lists never coincide."""
    if isinstance(value, np.integer):
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, (int, str, bytes)):
        raise ValueError(f"seed and ids must be int, str or bytes, got {type(value).__name__}")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"seed and ids must be non-negative, got {value}")
        tag, data = b"i", value.to_bytes((value.bit_length() + 7) // 8, "little")
    else:
        tag, data = (b"s", value.encode()) if isinstance(value, str) else (b"b", value)
    return tag + len(data).to_bytes(8, "little") + data


def rng_for(seed: int, *ids: SeedId) -> np.random.Generator:
    """A generator that is a pure function of ``seed`` and ``ids`` (ints >= 0, str or bytes).

    ``rng_for(7, "photo-3", 2, "haze")`` gives the same stream in any process, on any worker; any two
    different argument lists give different streams (``(s, 5)``, ``(s, "5")`` and ``(s, 5, 0)`` differ).
    Raises ``ValueError`` for negative numbers or other types.
    """
    # Hash a canonical encoding rather than handing the ints to SeedSequence directly: it splits
    # ints into a variable number of 32-bit words and zero-pads, so (2**32 + s,) == (s, 0) there.
    digest = hashlib.blake2b(b"".join(_encode(value) for value in (seed, *ids)), digest_size=16).digest()
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(int.from_bytes(digest, "little"))))


def draw_seed(rng: np.random.Generator) -> int:
    """A seed for an op's own spatial randomness, stored in its parameters."""
    return int(rng.integers(0, 2**31 - 1))


def gaussian_field(shape: tuple[int, ...], seed: int) -> np.ndarray:
    """float32 N(0, 1) samples of ``shape``, a pure function of ``seed``.

    OpenCV's generator is faster than numpy's for large fields (docs/benchmarks.md).
    It is thread-local and re-seeded here on every call, so no state carries between calls.
    """
    out = np.empty(shape, np.float32)
    cv2.setRNGSeed(seed)
    cv2.randn(out.reshape(-1), 0.0, 1.0)
    return out
