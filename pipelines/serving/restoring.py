"""Restoring photos with a model: a file, a folder or an ``s3://`` prefix in, the same tree out.

    summary = restore_images(ref, "photos/", "restored/", RestoreSettings(), tracking_uri)

Each image is decoded to 8-bit RGB (grayscale expanded, alpha dropped, 16-bit scaled), restored
with ``cpl_model.restore`` (tiled above ``tile`` pixels, so memory stays bounded), encoded and written
atomically. A corrupt or unreadable input is reported and skipped; it never stops a folder. Outputs
that already exist are kept unless ``overwrite``, so a killed run picks up where it stopped. With
``workers`` > 0, files are spread over Ray actors that each load the model once.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import PurePosixPath

import cv2
import numpy as np
import torch

import cpl_model

from ..core import console, references, storage
from ..core.runtime import map_with_actors
from ..data import sources
from .config import RestoreSettings

FORMATS = {"png": [cv2.IMWRITE_PNG_COMPRESSION, 3], "jpg": [cv2.IMWRITE_JPEG_QUALITY, 95],
           "webp": [cv2.IMWRITE_WEBP_QUALITY, 100], "tif": []}
MAX_PIXELS = 400_000_000  # tiled inference makes size a matter of time, not memory; this guards bombs
MIN_SIDE = 8

# Outcomes, per input file.
RESTORED, EXISTING = "restored", "already_restored"
SAME_OUTPUT = "output_name_taken_by_another_input"


@dataclass
class RestoreSummary:
    output: str
    outcomes: dict[str, list[str]] = field(default_factory=dict)  # outcome or skip reason -> input names
    seconds: float = 0.0

    @property
    def skipped(self) -> dict[str, list[str]]:
        return {reason: names for reason, names in self.outcomes.items() if reason not in (RESTORED, EXISTING)}

    def lines(self) -> list[str]:
        done, kept = len(self.outcomes.get(RESTORED, [])), len(self.outcomes.get(EXISTING, []))
        lines = [f"restored {done} image(s) into {self.output} in {self.seconds:.1f} s"
                 + (f"; {kept} already there (--overwrite to redo)" if kept else "")]
        lines += [f"skipped {name}: {reason}" for reason, names in self.skipped.items() for name in names]
        return lines


def plan(input_uri: str, output_uri: str, image_format: str) -> tuple[list[tuple[str, str]], list[str]]:
    """``(input file, output file)`` pairs, and the inputs left out because another input already maps to
    their output (``a.jpg`` and ``a.png`` both become ``a.png``).

    A file maps to ``output_uri`` when that names an image file (its suffix chooses the encoding), else
    into the folder ``output_uri``; a folder or prefix maps its images' relative paths under ``output_uri``
    with the suffix of ``image_format``. Local paths are made absolute: Ray actors have other working
    directories.

    Raises:
        StorageError: ``input_uri`` does not exist or holds no images.
    """
    input_uri, output_uri = storage.absolute(input_uri), storage.absolute(output_uri)
    storage.check_readable(input_uri)
    suffix = "." + image_format
    if storage.is_file(input_uri):
        name = PurePosixPath(input_uri.replace("\\", "/")).name
        target = output_uri if output_uri.lower().endswith(sources.IMAGE_SUFFIXES) else \
            storage.join(output_uri, str(PurePosixPath(name).with_suffix(suffix)))
        return [(input_uri, target)], []
    pairs, taken, clashes = [], set(), []
    for info in sources.list_sources(input_uri):
        target = storage.join(output_uri, str(PurePosixPath(storage.relative(info.uri, input_uri)).with_suffix(suffix)))
        if target in taken:
            clashes.append(info.uri)
        else:
            taken.add(target)
            pairs.append((info.uri, target))
    return pairs, clashes


def restore_file(model: torch.nn.Module, source: str, target: str, settings: RestoreSettings,
                 device: str = "cpu") -> str:
    """Restore one file; returns ``RESTORED``, ``EXISTING`` or the skip reason (never raises for bad input)."""
    if not settings.overwrite and storage.exists(target):
        return EXISTING
    try:
        data = storage.read_bytes(source)
    except storage.StorageError as err:
        return f"unreadable ({err})"
    decoded = sources.decode(data, max_pixels=MAX_PIXELS, min_side=MIN_SIDE)
    if decoded.image is None:
        return decoded.skip_reason
    with torch.inference_mode():
        restored = cpl_model.restore(model, cpl_model.to_tensor(decoded.image, device), tile=settings.tile)
    image = cpl_model.to_uint8(restored[0])
    suffix = PurePosixPath(target).suffix.lower()
    image_format = {".jpeg": "jpg", ".tiff": "tif"}.get(suffix, suffix.lstrip("."))
    ok, encoded = cv2.imencode(suffix, cv2.cvtColor(image, cv2.COLOR_RGB2BGR), FORMATS.get(image_format, []))
    if not ok:
        return f"cannot encode as {suffix}"
    storage.write_bytes(target, encoded.tobytes())
    return RESTORED


class _RayRestorer(references.ModelActor):
    """A Ray actor: holds the model, restores the files it is given."""

    def __init__(self, ref: dict, tracking_uri: str, settings: RestoreSettings) -> None:
        super().__init__(ref, tracking_uri, settings.use_gpu)
        self.settings = settings

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, list[str]]:
        outcomes = [restore_file(self.model, str(source), str(target), self.settings, self.device)
                    for source, target in zip(batch["source"], batch["target"], strict=True)]
        return {"source": list(batch["source"]), "outcome": outcomes}


def restore_images(ref: references.ModelRef, input_uri: str, output_uri: str, settings: RestoreSettings,
                   tracking_uri: str) -> RestoreSummary:
    """Restore every image ``input_uri`` names into ``output_uri``; see the module docstring."""
    started = time.monotonic()
    pairs, clashes = plan(input_uri, output_uri, settings.format)
    root = storage.absolute(input_uri)
    name_of = (lambda uri: uri) if storage.is_file(root) else (lambda uri: storage.relative(uri, root))
    summary = RestoreSummary(output_uri)
    if clashes:
        summary.outcomes[SAME_OUTPUT] = [name_of(uri) for uri in clashes]
    if settings.workers > 0:
        results = _restore_with_ray(ref, pairs, settings, tracking_uri, input_uri, output_uri)
    else:
        device = "cuda" if settings.use_gpu else "cpu"
        model = references.load(ref, tracking_uri, device)
        results = [(source, restore_file(model, source, target, settings, device))
                   for source, target in console.progress_bar(pairs, desc="restoring", unit="image",
                                                              enabled=settings.progress and len(pairs) > 1)]
    for source, outcome in results:
        summary.outcomes.setdefault(outcome, []).append(name_of(source))
    summary.seconds = time.monotonic() - started
    return summary


def _restore_with_ray(ref, pairs, settings: RestoreSettings, tracking_uri: str, input_uri: str,
                      output_uri: str) -> list[tuple[str, str]]:
    done = map_with_actors([{"source": source, "target": target} for source, target in pairs], _RayRestorer,
                           {"ref": ref.as_dict(), "tracking_uri": tracking_uri, "settings": settings},
                           workers=settings.workers, use_gpu=settings.use_gpu, progress=settings.progress,
                           locations={"input": input_uri, "output": output_uri,
                                      **references.read_by_actors(ref, tracking_uri)})
    return sorted((row["source"], row["outcome"]) for row in done)
