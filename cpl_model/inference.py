"""Inference on images of any size: whole, or in overlapping tiles blended with linear ramps."""

from __future__ import annotations

import torch
from torch import nn


def _starts(length: int, tile: int, stride: int) -> list[int]:
    if length <= tile:
        return [0]
    starts = list(range(0, length - tile, stride))
    return starts + [length - tile]


def _ramp(length: int, overlap: int, device: torch.device) -> torch.Tensor:
    """1-D blending weights: rising over ``overlap`` pixels at each end, 1 in the middle, never 0."""
    weights = torch.ones(length, device=device)
    if overlap > 0:
        edge = torch.arange(1, overlap + 1, device=device, dtype=torch.float32) / (overlap + 1)
        weights[:overlap] = torch.minimum(weights[:overlap], edge)
        weights[-overlap:] = torch.minimum(weights[-overlap:], edge.flip(0))
    return weights


@torch.no_grad()
def restore(model: nn.Module, image: torch.Tensor, *, tile: int | None = 512, overlap: int = 32,
            tiles_per_batch: int = 4) -> torch.Tensor:
    """Restore (B, 3, H, W) in [0, 1]; images larger than ``tile`` go through overlapping tiles.

    Tiles are blended with weights that ramp down over the ``overlap`` border, so seams do not show;
    memory stays bounded by ``tiles_per_batch`` tiles whatever the image size. ``tile=None`` runs the
    whole image at once.

    Raises:
        ValueError: if ``overlap`` is not smaller than half a tile.
    """
    if tile is not None and not 0 <= 2 * overlap < tile:
        raise ValueError(f"overlap must be in [0, tile/2), got overlap={overlap}, tile={tile}")
    height, width = image.shape[-2:]
    if tile is None or (height <= tile and width <= tile):
        return model(image).clamp(0, 1)
    stride = tile - overlap
    out = torch.zeros_like(image)
    norm = torch.zeros((1, 1, height, width), device=image.device, dtype=image.dtype)
    boxes = [(y, x) for y in _starts(height, tile, stride) for x in _starts(width, tile, stride)]
    th, tw = min(tile, height), min(tile, width)
    window = (_ramp(th, overlap if height > tile else 0, image.device)[:, None]
              * _ramp(tw, overlap if width > tile else 0, image.device)[None, :]).to(image.dtype)
    for first in range(0, len(boxes), tiles_per_batch):
        chunk = boxes[first:first + tiles_per_batch]
        crops = torch.cat([image[..., y:y + th, x:x + tw] for y, x in chunk])  # (len(chunk) * B, 3, th, tw)
        restored = model(crops).reshape(len(chunk), *image.shape[:2], th, tw)
        for (y, x), piece in zip(chunk, restored):
            out[..., y:y + th, x:x + tw] += piece * window
            norm[..., y:y + th, x:x + tw] += window
    return (out / norm).clamp(0, 1)
