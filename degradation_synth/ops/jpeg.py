"""JPEG compression artefacts (OpenCV's libjpeg, 4:2:0 chroma subsampling).

JPEG is a codec on 8-bit data, so this step quantises the image; every other step stays in float.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from ..image import to_float, to_uint8
from ..spec import Spec, Uniform, param


@dataclass(frozen=True)
class JpegSpec(Spec):
    kind = "jpeg"
    quality: object = param(Uniform(30, 95), low=1, high=100, integer=True)  # Real-ESRGAN's range


@dataclass(frozen=True)
class JpegParams:
    quality: int


def sample_jpeg(rng: np.random.Generator, spec: JpegSpec = JpegSpec()) -> JpegParams:
    return JpegParams(quality=spec.draw("quality", rng))


def apply_jpeg(image: np.ndarray, params: JpegParams) -> np.ndarray:
    # OpenCV encodes BGR; swapping first keeps chroma subsampling on the real chroma channels.
    bgr = cv2.cvtColor(to_uint8(image), cv2.COLOR_RGB2BGR)
    ok, encoded = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, int(params.quality)])
    if not ok:
        raise RuntimeError("OpenCV failed to encode JPEG")
    decoded = cv2.imdecode(encoded, cv2.IMREAD_COLOR)
    return to_float(cv2.cvtColor(decoded, cv2.COLOR_BGR2RGB))
