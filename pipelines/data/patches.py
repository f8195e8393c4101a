"""Training patches from published datasets: a mix of datasets, each repeated per pass, with fresh random crops,
flips and 90° rotations every pass, and Gaussian noise added online to clean-image datasets (PromptIR's protocol).

A *pass* is one epoch of the mix: every train pair of each dataset ``repeat`` times, and a clean image once more
per noise level. Copy ``c`` of pair ``p`` in pass ``e`` (at noise level ``s``) is cut, turned and noised by
``rng_for(seed, "patch", p, e, c, s)``, so the same seed reads the same patches whatever the scheduling, the
number of workers or a restart. Within a pass, the order of the work (a shard's pairs, a few copies each) is a
seeded permutation, and training's local shuffle mixes the rest.

Any published dataset mixes: an ingested one (``ingest.py``: whole images) or a synthesized one (its pairs
already are patches of ``synthesis.patch``; cropping them to a smaller ``data.patch`` still works).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from pydantic import Field, field_validator

from degradation_synth import rng_for

from ..core import storage
from ..core.config import ConfigError, Frozen
from ..core.errors import DataError
from . import versions
from .layouts import gaussian_noise

PATCHES_PER_TASK = 512  # as online synthesis: enough work per Ray task that its fixed cost stays small
MAX_BLOCKS = 1024  # Ray Data blocks of a stream: enough to keep every CPU busy, few enough for the driver
PATCH_COLUMNS = ["sample_id", "task", "recipe", "height", "width", "degraded", "clean"]


class MixEntry(Frozen):
    """One dataset of ``data.datasets``."""

    uri: str = Field(min_length=1)  # <out>/<name> of a published dataset
    version: str = "LATEST"
    repeat: int = Field(1, ge=1)  # copies of each pair per pass: PromptIR balances Rain100L's 200 images with 120
    sigmas: tuple[int, ...] = (15, 25, 50)  # clean-image datasets: a patch at each noise level per copy

    @field_validator("sigmas")
    @classmethod
    def _levels(cls, sigmas: tuple[int, ...]) -> tuple[int, ...]:
        if not sigmas or any(not 0 < sigma <= 255 for sigma in sigmas):
            raise ValueError("sigmas must be noise levels in (0, 255], at least one")
        return sigmas


@dataclass(frozen=True)
class MixPart:
    """A ``MixEntry`` resolved to its published version."""

    uri: str
    version: str
    manifest: dict[str, Any]
    repeat: int
    sigmas: tuple[int, ...]

    @property
    def clean_only(self) -> bool:
        return self.manifest.get("layout") == "clean"

    @property
    def label(self) -> str:
        return f"{self.uri}@{self.version} (x{self.repeat})"

    @property
    def smallest_side(self) -> int:
        """The least side of its images: ingested ones record it, synthesized ones are all patches."""
        if "min_side" in self.manifest:
            return int(self.manifest["min_side"])
        return int(self.manifest["config"]["synthesis"]["patch"])

    def shards(self, split: str) -> list[tuple[str, int]]:
        version_uri = storage.join(self.uri, f"v={self.version}")
        return [(storage.join(version_uri, shard["path"]), int(shard["rows"])) for shard in self.manifest["shards"]
                if shard["split"] == split]

    def patches_per_copy(self) -> int:
        return len(self.sigmas) if self.clean_only else 1

    def pass_counts(self) -> dict[str, int]:
        """Patches per task in one pass."""
        task_of = self.manifest.get("tasks", {})
        counts: dict[str, int] = {}
        for recipe, pairs in self.manifest["counts"].get("train", {}).items():
            task = task_of.get(recipe, recipe)
            counts[task] = counts.get(task, 0) + pairs * self.repeat * self.patches_per_copy()
        return counts


def open_mix(entries: list[MixEntry], pinned: list[str | None] | None = None,
             patch: int | None = None) -> list[MixPart]:
    """Resolve every entry to a published version (``pinned``: a version per entry or None, e.g. a resumed
    run's) and check
    that its images give patches of side ``patch``.

    Raises:
        StorageError: an entry is not a published dataset.
        ConfigError: ``patch`` exceeds an entry's smallest images, or an entry has no train pairs.
    """
    parts = []
    for index, entry in enumerate(entries):
        version = (pinned or [None] * len(entries))[index] or entry.version
        manifest = versions.read_manifest(entry.uri, version, verify=False)
        part = MixPart(storage.absolute(entry.uri), manifest["version"], manifest, entry.repeat, tuple(entry.sigmas))
        if not part.shards("train"):
            raise ConfigError(f"config error: data.datasets.{index}: {part.label} has no train pairs")
        if patch is not None and patch > part.smallest_side:
            raise ConfigError(f"config error: data.patch: {patch} exceeds the {part.smallest_side}-pixel images of "
                              f"data.datasets.{index} ({part.label})")
        parts.append(part)
    return parts


def pass_counts(parts: list[MixPart]) -> dict[str, int]:
    """Patches per task in one pass of the mix."""
    counts: dict[str, int] = {}
    for part in parts:
        for task, n in part.pass_counts().items():
            counts[task] = counts.get(task, 0) + n
    return dict(sorted(counts.items()))


def pass_work(parts: list[MixPart]) -> list[tuple[int, str, int, int]]:
    """The work of one pass before its shuffle: (part, shard, first copy, copies), each about
    ``PATCHES_PER_TASK`` patches."""
    work = []
    for index, part in enumerate(parts):
        for shard, rows in part.shards("train"):
            step = max(1, PATCHES_PER_TASK // (rows * part.patches_per_copy()))
            work += [(index, shard, first, min(step, part.repeat - first)) for first in range(0, part.repeat, step)]
    return work


def training_patches(parts: list[MixPart], patch: int, seed: int, passes: int, first_pass: int = 0):
    """``passes`` passes of the mix from pass ``first_pass`` on, as a Ray Dataset of pair rows of ``patch``²
    patches (the columns ``to_tensors`` reads)."""
    import ray.data

    work = pass_work(parts)
    total = len(work) * passes
    specs = [{"clean_only": part.clean_only, "sigmas": list(part.sigmas)} for part in parts]
    return ray.data.range(total, override_num_blocks=min(total, MAX_BLOCKS)).map_batches(
        _patches_of, batch_size=1, batch_format="numpy", num_cpus=1,
        fn_kwargs={"work": work, "specs": specs, "patch": patch, "seed": seed, "first_pass": first_pass})


def _patches_of(batch: dict[str, np.ndarray], work: list, specs: list[dict], patch: int, seed: int,
                first_pass: int) -> dict[str, Any]:
    """One work item of the stream, found from its index: pass ``index // len(work)``, and that pass's
    permutation of the work."""
    index = int(batch["id"][0])
    pass_ = first_pass + index // len(work)
    part, shard, first, copies = work[int(rng_for(seed, "mix", pass_).permutation(len(work))[index % len(work)])]
    spec = specs[part]
    rows = read_rows(shard)
    out: dict[str, list] = {column: [] for column in PATCH_COLUMNS}
    for copy in range(first, first + copies):
        for i, sample_id in enumerate(rows["sample_id"]):
            clean = row_image(rows, i, "clean", shard)
            degraded = None if spec["clean_only"] else row_image(rows, i, "degraded", shard)
            for sigma in spec["sigmas"] if spec["clean_only"] else (0,):
                rng = rng_for(seed, "patch", sample_id, pass_, copy, sigma)
                cut_clean, cut_degraded = random_patch(clean, degraded, patch, rng, sample_id, shard)
                if sigma:
                    cut_degraded = gaussian_noise(cut_clean, sigma, rng)
                out["sample_id"].append(f"{sample_id}@{pass_}.{copy}" + (f"/noise{sigma}" if sigma else ""))
                out["task"].append(rows["task"][i])
                out["recipe"].append(f"noise{sigma}" if sigma else rows["recipe"][i])
                out["degraded"].append(cut_degraded.tobytes())
                out["clean"].append(cut_clean.tobytes())
    out["height"] = out["width"] = np.full(len(out["sample_id"]), patch, np.int32)
    return out


def read_rows(shard: str, columns: list[str] = PATCH_COLUMNS) -> dict[str, list]:
    import pyarrow.parquet as pq

    with storage.open_input_file(shard) as stream:
        return pq.read_table(stream, columns=columns).to_pydict()


def row_image(rows: dict[str, list], index: int, column: str, shard: str) -> np.ndarray:
    """One image of a row (raw uint8 bytes, see ``shards.SHARD_SCHEMA``) as (H, W, 3) uint8."""
    height, width = int(rows["height"][index]), int(rows["width"][index])
    data = rows[column][index]
    if len(data) != height * width * 3:
        raise DataError(f"{shard}: row {rows['sample_id'][index]} has no {column} image "
                        f"({len(data)} bytes for {height}x{width})")
    return np.frombuffer(data, np.uint8).reshape(height, width, 3)


def random_patch(clean: np.ndarray, degraded: np.ndarray | None, patch: int, rng: np.random.Generator,
                 sample_id: str, shard: str) -> tuple[np.ndarray, np.ndarray | None]:
    """The same random ``patch``² window of both images, under the same one of the 8 flips and rotations."""
    height, width = clean.shape[:2]
    if min(height, width) < patch:
        raise DataError(f"{shard}: {sample_id} is {height}x{width}, smaller than data.patch={patch}")
    top, left = int(rng.integers(0, height - patch + 1)), int(rng.integers(0, width - patch + 1))
    turn = int(rng.integers(8))

    def cut(image: np.ndarray) -> np.ndarray:
        window = np.rot90(image[top:top + patch, left:left + patch], turn % 4)
        return np.ascontiguousarray(window[:, ::-1] if turn >= 4 else window)

    return cut(clean), None if degraded is None else cut(degraded)


def validation_patches(parts: list[MixPart], patch: int, seed: int, max_pairs: int) -> dict[str, Any]:
    """A frozen validation set from the val splits of the mix: the first pairs of each dataset (in shard order,
    an equal share of ``max_pairs``), one seeded ``patch``² window each, without flips; a clean image once per
    noise level. The shape of ``synthesis.validation_pairs``.

    Raises:
        DataError: no dataset of the mix has val pairs.
    """
    with_val = [part for part in parts if part.shards("val")]
    if not with_val:
        raise DataError("no dataset of data.datasets has val pairs; ingest with ingest.val_fraction > 0")
    share = math.ceil(max_pairs / len(with_val))
    out: dict[str, list] = {"degraded": [], "clean": [], "task": [], "recipe": [], "sample_id": []}
    for part in with_val:
        taken = 0
        for shard, _ in part.shards("val"):
            rows = read_rows(shard)
            for i, sample_id in enumerate(rows["sample_id"]):
                if taken >= share:
                    break
                clean = row_image(rows, i, "clean", shard)
                degraded = None if part.clean_only else row_image(rows, i, "degraded", shard)
                rng = rng_for(seed, "val", sample_id)
                top = int(rng.integers(0, clean.shape[0] - patch + 1))
                left = int(rng.integers(0, clean.shape[1] - patch + 1))
                window = (slice(top, top + patch), slice(left, left + patch))
                for sigma in part.sigmas if part.clean_only else (0,):
                    cut_clean = np.ascontiguousarray(clean[window])
                    out["clean"].append(cut_clean)
                    out["degraded"].append(gaussian_noise(cut_clean, sigma, rng_for(seed, "val", sample_id, sigma))
                                           if sigma else np.ascontiguousarray(degraded[window]))
                    out["task"].append(rows["task"][i])
                    out["recipe"].append(f"noise{sigma}" if sigma else rows["recipe"][i])
                    out["sample_id"].append(f"{sample_id}" + (f"/noise{sigma}" if sigma else ""))
                taken += 1
            if taken >= share:
                break
    return {**out, "degraded": np.stack(out["degraded"]), "clean": np.stack(out["clean"])}
