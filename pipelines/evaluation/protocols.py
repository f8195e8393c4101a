"""How the literature scores a benchmark: the image geometry around the network and the metric the paper reports.

- ``promptir`` (PromptIR, AdaIR and CPL's three- and five-task and CDD-11 tables): degraded and clean
  images centre-cropped to a multiple of 16 (PromptIR's ``crop_img``), restored whole; PSNR and SSIM on RGB,
  scikit-image's SSIM (7x7 uniform window).
- ``basicsr`` (CPLIR's WeatherBench config, BasicSR's validation): the input reflect-padded at the bottom and
  right to a multiple of 16 and the output cropped back; the restoration rounded to 8 bits, as BasicSR's
  ``tensor2img``; PSNR and SSIM on the BT.601 luma, BasicSR's SSIM (11x11 Gaussian, sigma 1.5); no border crop.

Every report carries all four metrics (``cpl_model.METRICS``); the protocol decides the geometry and which
pair of them a paper table shows. A named benchmark brings its paper's protocol; other data is scored as
``promptir``, where a crop to 16 leaves synthesized crops untouched.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

import cpl_model
from cpl_model.network import pad_to_multiple

from .benchmarks import Case

MULTIPLE = 16


@dataclass(frozen=True)
class Protocol:
    name: str
    fit: str  # "crop": both images centre-cropped to MULTIPLE; "pad": the input padded, the output cropped back
    headline: tuple[str, str]  # the (PSNR, SSIM) metrics a paper table reports
    quantize: bool  # the restoration is rounded to 8 bits before it is scored

    def describe(self, tile: int | None) -> dict[str, object]:
        """What report.json and report.md say of how the numbers were made."""
        geometry = ("degraded and clean centre-cropped to a multiple of 16" if self.fit == "crop" else
                    "input reflect-padded (bottom, right) to a multiple of 16, output cropped back")
        return {
            "name": self.name,
            "geometry": geometry,
            "inference": f"overlapping tiles of {tile} px" if tile else "whole images",
            "psnr/ssim": "RGB in [0, 1], scikit-image SSIM (7x7 uniform window, sample covariance)",
            "psnr_y/ssim_y": "BT.601 luma (16-235), BasicSR SSIM (11x11 Gaussian, sigma 1.5)",
            "headline": list(self.headline),
            "output": "rounded to 8 bits before scoring" if self.quantize else "float, clipped to [0, 1]",
            "psnr_cap_db": cpl_model.PSNR_CAP,
            "tile": tile,
        }


PROTOCOLS = {
    "promptir": Protocol("promptir", "crop", ("psnr", "ssim"), quantize=False),
    "basicsr": Protocol("basicsr", "pad", ("psnr_y", "ssim_y"), quantize=True),
}
# The protocol of each paper table a published benchmark appears in; the rest use ``promptir``.
BENCHMARK_PROTOCOLS = {"weatherbench": "basicsr"}


def for_benchmark(layout: str | None) -> str:
    """The protocol name a benchmark (a layout name, or None for other data) is scored with by default."""
    return BENCHMARK_PROTOCOLS.get(layout or "", "promptir")


def fit(case: Case, protocol: Protocol) -> Case:
    """``case`` as the protocol feeds it to the network and the metrics."""
    if protocol.fit != "crop":
        return case
    height, width = case.degraded.shape[:2]
    top, left = height % MULTIPLE // 2, width % MULTIPLE // 2
    rows, columns = slice(top, top + height - height % MULTIPLE), slice(left, left + width - width % MULTIPLE)
    return replace(case, degraded=case.degraded[rows, columns], clean=case.clean[rows, columns])


def restore(model: torch.nn.Module, degraded: torch.Tensor, protocol: Protocol, tile: int | None) -> torch.Tensor:
    """(B, 3, H, W) in [0, 1] restored as the protocol does: padded or not, tiled above ``tile``, quantized or not."""
    height, width = degraded.shape[-2:]
    if protocol.fit == "pad":
        degraded = pad_to_multiple(degraded, MULTIPLE)
    restored = cpl_model.restore(model, degraded, tile=tile)[..., :height, :width]
    return (restored * 255).round() / 255 if protocol.quantize else restored
