"""A labelled contact sheet of every recipe on the sample photos: the first check of the synthesis."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

from .chain import degrade
from .recipes import Recipe
from .samples import load_sample_photos
from .seeding import rng_for

_LABEL_HEIGHT = 20
_BACKGROUND = 32


def square_tile(photo: np.ndarray, size: int) -> np.ndarray:
    """Resize ``photo`` so its short side is ``4/3 * size``, then take the centre ``size``² crop."""
    height, width = photo.shape[:2]
    scale = (4 * size / 3) / min(height, width)
    resized = cv2.resize(photo, (max(size, round(width * scale)), max(size, round(height * scale))),
                         interpolation=cv2.INTER_AREA)
    top, left = (resized.shape[0] - size) // 2, (resized.shape[1] - size) // 2
    return np.ascontiguousarray(resized[top:top + size, left:left + size])


def _label(text: str, width: int) -> np.ndarray:
    strip = np.full((_LABEL_HEIGHT, width, 3), _BACKGROUND, np.uint8)
    cv2.putText(strip, text, (4, _LABEL_HEIGHT - 6), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (235, 235, 235), 1, cv2.LINE_AA)
    return strip


def contact_sheet(recipes: Sequence[Recipe], photos: Sequence[np.ndarray], size: int = 192, seed: int = 0) -> np.ndarray:
    """Rows: the clean tiles, then one row per recipe; each row under its label. uint8 RGB."""
    tiles = [square_tile(photo, size) for photo in photos]
    width = size * len(tiles)
    rows = [_label("clean", width), np.hstack(tiles)]
    for recipe in recipes:
        degraded = [degrade(tile, recipe, rng_for(seed, "preview", index, recipe.name))[0] for index, tile in enumerate(tiles)]
        rows += [_label(f"{recipe.name}   [{recipe.task}]", width), np.hstack(degraded)]
    return np.vstack(rows)


def write_preview(out: str | Path, recipes: Sequence[Recipe], photos: int = 4, size: int = 192, seed: int = 0) -> Path:
    """Render the sheet for the first ``photos`` sample photos and write it as PNG to ``out``."""
    available = list(load_sample_photos().values())[:photos]
    sheet = contact_sheet(recipes, available, size=size, seed=seed)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(out), cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR)):
        raise OSError(f"could not write {out}")
    return out
