"""Degradation kinds and the task labels built from them.

Task labels are shared by synthesis records, dataset rows, metrics and router-usage logs.
A composite's label lists its kinds in the CDD-11 naming order (``low_light+haze+rain``),
whatever order the recipe applies them in, so both orders of a class share one label.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Iterable


class DegradationKind(StrEnum):
    NOISE = "noise"
    HAZE = "haze"
    RAIN = "rain"
    BLUR = "blur"
    LOW_LIGHT = "low_light"
    SNOW = "snow"
    JPEG = "jpeg"


_LABEL_ORDER = (
    DegradationKind.LOW_LIGHT,
    DegradationKind.HAZE,
    DegradationKind.RAIN,
    DegradationKind.SNOW,
    DegradationKind.BLUR,
    DegradationKind.NOISE,
    DegradationKind.JPEG,
)


def task_label(kinds: Iterable[DegradationKind]) -> str:
    """The task label of a chain of kinds, e.g. ``[rain, low_light, haze] -> "low_light+haze+rain"``."""
    present = set(kinds)
    return "+".join(kind.value for kind in _LABEL_ORDER if kind in present)
