"""Argument types shared by the entry points, so a bad value fails in argparse with its flag named."""

from __future__ import annotations

import argparse


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def tile_size(text: str) -> int | None:
    """Tile size for tiled inference; 0 means whole images. Tiles overlap by 32 pixels, so at least 96."""
    value = int(text)
    if value == 0:
        return None
    if value < 96:
        raise argparse.ArgumentTypeError(f"must be 0 (whole images) or at least 96, got {value}")
    return value
