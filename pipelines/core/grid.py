"""Contact sheets for people: rows of images, each row under a label strip, every panel big enough to see.

    sheet = contact_sheet([restoration_row("noise", degraded, restored, clean, 20.1, 27.4)],
                          columns=RESTORATION_COLUMNS)          # RGB uint8 (H, W, 3)

Small images (training crops) are enlarged by a whole factor with nearest-neighbour sampling, so every
source pixel becomes a sharp block and no smoothing hides what the model did; large ones (benchmark
photos) are shrunk to fit. Text is drawn in strips of its own, never over a picture. The validation grid
of a training run and the worst/best grid of an evaluation are both built here.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

PANEL = 192  # pixels: the longer side an image is enlarged to, at least
MAX_PANEL = 384  # pixels: the longer side an image is shrunk to, at most
STRIP = 26  # pixels: the height of a label strip
GAP = 4  # pixels between panels
BACKGROUND = (24, 24, 24)
TEXT = (235, 235, 235)
FONT = cv2.FONT_HERSHEY_SIMPLEX
RESTORATION_COLUMNS = ("degraded input", "restored", "clean")


@dataclass(frozen=True)
class Row:
    """One row of a sheet: its label and its images (RGB uint8 (H, W, 3), any sizes)."""

    label: str
    images: tuple[np.ndarray, ...]


def restoration_row(name: str, degraded: np.ndarray, restored: np.ndarray, clean: np.ndarray, input_psnr: float,
                    psnr: float) -> Row:
    """degraded | restored | clean, labelled with ``name`` and the PSNR of the input and of the output."""
    label = f"{name}   input {input_psnr:.2f} dB   restored {psnr:.2f} dB ({psnr - input_psnr:+.2f})"
    return Row(label, (degraded, restored, clean))


def fit(image: np.ndarray, smallest: int = PANEL, largest: int = MAX_PANEL) -> np.ndarray:
    """``image`` resized so that its longer side lies in [``smallest``, ``largest``] where a whole factor allows.

    Enlarging repeats each pixel k x k times (k the smallest whole factor that reaches ``smallest``, kept
    within ``largest``), so the values are the source's own; shrinking averages areas.
    """
    longest = max(image.shape[:2])
    if longest > largest:
        scale = largest / longest
        size = (max(1, round(image.shape[1] * scale)), max(1, round(image.shape[0] * scale)))
        return cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    factor = max(1, min(math.ceil(smallest / longest), largest // longest))
    return np.repeat(np.repeat(image, factor, axis=0), factor, axis=1) if factor > 1 else image


def contact_sheet(rows: Sequence[Row], columns: Sequence[str] = (), smallest: int = PANEL,
                  largest: int = MAX_PANEL) -> np.ndarray:
    """The sheet (RGB uint8): an optional strip naming ``columns``, then per row a label strip and its panels.

    Every panel is a cell of one size (the largest fitted image), its image centred on the background.
    An empty ``rows`` gives a single label strip saying so.
    """
    fitted = [[fit(np.asarray(image, np.uint8), smallest, largest) for image in row.images] for row in rows]
    count = max((len(images) for images in fitted), default=0)
    if count == 0:
        return _strip("no images", 3 * smallest)
    cell_h = max(image.shape[0] for images in fitted for image in images)
    cell_w = max(image.shape[1] for images in fitted for image in images)
    width = count * cell_w + (count - 1) * GAP
    parts = []
    if columns:
        header = np.full((STRIP, width, 3), BACKGROUND, np.uint8)
        for index, name in enumerate(list(columns)[:count]):
            left = index * (cell_w + GAP)
            header[:, left:left + cell_w] = _strip(name, cell_w, centred=True)
        parts.append(header)
    for row, images in zip(rows, fitted, strict=True):
        parts.append(_strip(row.label, width))
        band = np.full((cell_h, width, 3), BACKGROUND, np.uint8)
        for index, image in enumerate(images):
            top = (cell_h - image.shape[0]) // 2
            left = index * (cell_w + GAP) + (cell_w - image.shape[1]) // 2
            band[top:top + image.shape[0], left:left + image.shape[1]] = image
        parts.append(band)
    return np.concatenate(parts, axis=0)


def _strip(text: str, width: int, centred: bool = False) -> np.ndarray:
    """A ``STRIP``-high band holding ``text``, shrunk (then cut short) to fit ``width``."""
    strip = np.full((STRIP, width, 3), BACKGROUND, np.uint8)
    margin, scale = 6, 0.5
    while scale > 0.35 and cv2.getTextSize(text, FONT, scale, 1)[0][0] > width - 2 * margin:
        scale -= 0.05
    while len(text) > 4 and cv2.getTextSize(text, FONT, scale, 1)[0][0] > width - 2 * margin:
        text = text[:-4] + "..."
    (text_w, text_h), _ = cv2.getTextSize(text, FONT, scale, 1)
    left = max(margin, (width - text_w) // 2) if centred else margin
    cv2.putText(strip, text, (left, (STRIP + text_h) // 2), FONT, scale, TEXT, 1, cv2.LINE_AA)
    return strip
