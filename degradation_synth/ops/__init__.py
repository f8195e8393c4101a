"""One module per degradation kind; ``OPS`` maps each kind to its spec, parameters and functions.

Every op splits into ``sample_<kind>(rng, spec) -> params`` (the only place randomness is drawn)
and ``apply_<kind>(image, params) -> image`` (deterministic; float32 RGB in [0, 1] in and out).
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

from ..kinds import DegradationKind
from ..spec import Spec
from .blur import BlurParams, BlurSpec, apply_blur, sample_blur
from .haze import HazeParams, HazeSpec, apply_haze, sample_haze
from .jpeg import JpegParams, JpegSpec, apply_jpeg, sample_jpeg
from .low_light import LowLightParams, LowLightSpec, apply_low_light, sample_low_light
from .noise import NoiseParams, NoiseSpec, apply_noise, sample_noise
from .rain import RainParams, RainSpec, apply_rain, sample_rain
from .snow import SnowParams, SnowSpec, apply_snow, sample_snow


class Op(NamedTuple):
    spec: type[Spec]
    params: type
    sample: Callable[..., Any]
    apply: Callable[..., Any]


OPS: dict[DegradationKind, Op] = {
    DegradationKind.NOISE: Op(NoiseSpec, NoiseParams, sample_noise, apply_noise),
    DegradationKind.HAZE: Op(HazeSpec, HazeParams, sample_haze, apply_haze),
    DegradationKind.RAIN: Op(RainSpec, RainParams, sample_rain, apply_rain),
    DegradationKind.BLUR: Op(BlurSpec, BlurParams, sample_blur, apply_blur),
    DegradationKind.LOW_LIGHT: Op(LowLightSpec, LowLightParams, sample_low_light, apply_low_light),
    DegradationKind.SNOW: Op(SnowSpec, SnowParams, sample_snow, apply_snow),
    DegradationKind.JPEG: Op(JpegSpec, JpegParams, sample_jpeg, apply_jpeg),
}
