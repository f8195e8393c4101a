"""Degraded/clean pairs from clean images: the synthesis config and the transform that offline shards,
online streams and validation sets all share.

Every sample's randomness comes from ``rng_for(seed, content_hash, crop, purpose)`` and its split from the
content hash, so a pair's bytes depend only on the source, the config and the code, never on scheduling,
retries or worker count.
"""

from __future__ import annotations

import json
from typing import Any

import cv2
import numpy as np
from pydantic import Field, field_validator, model_validator

import degradation_synth as ds
from degradation_synth import Recipe, degrade, load_recipes, resolve_recipes, rng_for

from ..core.config import ConfigError, Frozen
from ..core.errors import DataError
from . import sources

SPLITS = ("train", "val", "test")


def check_train_split_left(val_fraction: float, test_fraction: float) -> None:
    """A config's split fractions must leave sources for training (``ValueError`` otherwise)."""
    if val_fraction + test_fraction >= 1:
        raise ValueError("val_fraction + test_fraction must leave a train split (sum < 1)")


class SynthesisConfig(Frozen):
    seed: int = Field(0, ge=0)
    recipes: str = "five_task"  # comma-separated recipe and set names
    recipe_weights: dict[str, float] = {}  # per recipe name; default 1 each; recipes not mixed in are ignored
    recipe_files: list[str] = []  # YAML files of extra recipes, usable by name in `recipes`
    patch: int = Field(128, ge=ds.MIN_SIDE)
    crops_per_image: int = Field(4, ge=1)
    val_fraction: float = Field(0.05, ge=0.0, lt=1.0)
    test_fraction: float = Field(0.05, ge=0.0, lt=1.0)
    max_pixels: int = Field(100_000_000, ge=1)  # decompression-bomb guard
    max_skipped_fraction: float = Field(0.5, ge=0.0, le=1.0)  # above it the job fails instead of publishing

    @model_validator(mode="after")
    def _train_split_left(self) -> "SynthesisConfig":
        check_train_split_left(self.val_fraction, self.test_fraction)
        return self

    @model_validator(mode="after")
    def _recipes_resolve(self) -> "SynthesisConfig":
        self.resolved_recipes()  # a misspelt recipe fails with the config, before any worker starts
        return self

    @field_validator("recipe_weights")
    @classmethod
    def _positive(cls, weights: dict[str, float]) -> dict[str, float]:
        bad = [name for name, weight in weights.items() if weight <= 0]
        if bad:
            raise ValueError(f"weights must be positive: {bad[0]}")
        return weights

    def resolved_recipes(self) -> list[Recipe]:
        """The recipe mixture, in order.

        Raises:
            ConfigError: for an unknown name (in ``recipes`` or ``recipe_weights``) or an unreadable recipe file.
            Weights of known recipes that are not mixed in are ignored, so that a narrower ``recipes``
            keeps working with the default weights.
        """
        extra: dict[str, Recipe] = {}
        for path in self.recipe_files:
            try:
                extra.update(load_recipes(path))
            except (OSError, ValueError) as err:
                raise ConfigError(f"recipe_files: {err}") from None
        recipes: list[Recipe] = []
        for name in (n.strip() for n in self.recipes.split(",") if n.strip()):
            try:
                recipes += [extra[name]] if name in extra else resolve_recipes(name)
            except ValueError as err:
                raise ConfigError(f"recipes: {err}") from None
        if not recipes:
            raise ConfigError("recipes names no recipe")
        unknown = sorted(set(self.recipe_weights) - set(ds.RECIPES) - set(extra))
        if unknown:
            raise ConfigError(f"recipe_weights names {unknown[0]!r}, which is not a recipe")
        return recipes


# The embedded default's (quickstart's) online synthesis: small patches for many steps per minute. The three
# noise levels share one task's weight, and blur, the task a short run damages most, gets ten
# (docs/training.md). With the nine sample photos, a 0.35 validation fraction holds out two of them (split
# by content hash), which the ``samples`` benchmark evaluates on.
QUICKSTART = SynthesisConfig(patch=48, crops_per_image=16, val_fraction=0.35, test_fraction=0.0,
                             recipe_weights={"noise15": 1 / 3, "noise25": 1 / 3, "noise50": 1 / 3, "blur": 10.0})


PAIR_COLUMNS = ("sample_id", "source_id", "content_sha256", "crop", "split", "recipe", "task",
                "degraded", "clean", "height", "width", "record", "skip_reason", "converted_from")


def split_of(content_sha256: str, val_fraction: float, test_fraction: float) -> str:
    """Deterministic split by content: a source (and any byte-identical copy) lands in one split."""
    position = int(content_sha256[:12], 16) / 16**12
    if position < test_fraction:
        return "test"
    if position < test_fraction + val_fraction:
        return "val"
    return "train"


def random_crop(image: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    top = int(rng.integers(0, image.shape[0] - size + 1))
    left = int(rng.integers(0, image.shape[1] - size + 1))
    return np.ascontiguousarray(image[top:top + size, left:left + size])


class Synthesize:
    """The synthesis transform: a batch of source rows (id, sha256, bytes) -> pair rows.

    A skipped source yields one row with ``skip_reason`` set and empty images, so that the job can
    count it; readers never see those rows.
    """

    def __init__(self, config: SynthesisConfig, split: str | None = None) -> None:
        """``split``: synthesize the sources of that split only (an online stream of one split); the
        others are neither decoded nor given rows."""
        # Parallelism comes from running one task per CPU: OpenCV's own thread pool (a thread per core
        # in every worker) would only oversubscribe the CPUs on 128² images.
        cv2.setNumThreads(1)
        self.config = config
        self.split = split
        self.recipes = config.resolved_recipes()
        weights = np.array([config.recipe_weights.get(r.name, 1.0) for r in self.recipes])
        self.cumulative = np.cumsum(weights / weights.sum())

    def __call__(self, batch: dict[str, Any]) -> dict[str, list]:
        """``batch`` may carry a ``pass`` column (online streams): pass p makes crops p * crops_per_image
        onwards, so every pass over the sources yields fresh, still deterministic pairs."""
        out: dict[str, list] = {column: [] for column in PAIR_COLUMNS}
        passes = batch.get("pass", np.zeros(len(batch["id"]), np.int64))
        for identifier, content, data, pass_ in zip(batch["id"], batch["sha256"], batch["bytes"], passes, strict=True):
            split = split_of(content, self.config.val_fraction, self.config.test_fraction)
            if self.split is not None and split != self.split:
                continue
            decoded = sources.decode(bytes(data), max_pixels=self.config.max_pixels, min_side=self.config.patch)
            if decoded.image is None:
                self._append(out, identifier, content, -1, split, None, None, None, decoded)
                continue
            first = int(pass_) * self.config.crops_per_image
            for crop in range(first, first + self.config.crops_per_image):
                # One generator places the crop and picks the recipe (building one is not free); the
                # degradation draws from its own, keyed by the recipe.
                layout = rng_for(self.config.seed, content, crop, "layout")
                clean = random_crop(decoded.image, self.config.patch, layout)
                recipe = self.recipes[min(int(np.searchsorted(self.cumulative, layout.random(), side="right")),
                                          len(self.recipes) - 1)]
                degraded, record = degrade(clean, recipe, rng_for(self.config.seed, content, crop, recipe.name))
                self._append(out, identifier, content, crop, split, recipe, (degraded, clean), record, decoded)
        for column in ("crop", "height", "width"):  # the shard schema's types, for online rows too
            out[column] = np.asarray(out[column], np.int32)
        return out

    def _append(self, out, identifier, content, crop, split, recipe, images, record, decoded) -> None:
        out["sample_id"].append(f"{identifier}#{crop}")
        out["source_id"].append(str(identifier))
        out["content_sha256"].append(str(content))
        out["crop"].append(crop)
        out["split"].append(split)
        out["recipe"].append(recipe.name if recipe else "")
        out["task"].append(recipe.task if recipe else "")
        out["degraded"].append(images[0].tobytes() if images else b"")
        out["clean"].append(images[1].tobytes() if images else b"")
        out["height"].append(self.config.patch if images else 0)
        out["width"].append(self.config.patch if images else 0)
        out["record"].append(json.dumps(record) if record else "")
        out["skip_reason"].append(decoded.skip_reason or "")
        out["converted_from"].append(decoded.converted_from or "")


def read_slices(source_uri: str, slices: list[list]) -> dict[str, list]:
    """Source rows ``{"id", "sha256", "bytes"}`` of ``[unit, start, stop]`` slices, in order."""
    rows: dict[str, list] = {"id": [], "sha256": [], "bytes": []}
    for unit, start, stop in slices:
        read = sources.read_unit(source_uri, unit, start, stop)
        for key in rows:
            rows[key] += read[key]
    return rows

def validation_pairs(source_uri: str, config: SynthesisConfig, crops_per_recipe: int = 1,
                     split: str = "val") -> dict[str, Any]:
    """A frozen evaluation set from a split's sources: every recipe on ``crops_per_recipe`` crops of each.

    Small by design (it is built in one process): sources x recipes x crops pairs, with numpy
    ``degraded``/``clean`` (N, patch, patch, 3) uint8 and lists ``task``, ``recipe``, ``sample_id``.
    Raises ``ValueError`` when the split has no usable source.
    """
    recipes = config.resolved_recipes()
    out: dict[str, list] = {"degraded": [], "clean": [], "task": [], "recipe": [], "sample_id": []}
    for unit in sources.source_units(source_uri):
        read = sources.read_unit(source_uri, unit)
        for identifier, content, data in zip(read["id"], read["sha256"], read["bytes"], strict=True):
            if split_of(content, config.val_fraction, config.test_fraction) != split:
                continue
            image = sources.decode(data, max_pixels=config.max_pixels, min_side=config.patch).image
            if image is None:
                continue
            for crop in range(crops_per_recipe):
                clean = random_crop(image, config.patch, rng_for(config.seed, content, crop, split, "crop"))
                for recipe in recipes:
                    degraded, _ = degrade(clean, recipe, rng_for(config.seed, content, crop, split, recipe.name))
                    out["degraded"].append(degraded)
                    out["clean"].append(clean)
                    out["task"].append(recipe.task)
                    out["recipe"].append(recipe.name)
                    out["sample_id"].append(f"{identifier}#{crop}/{recipe.name}")
    if not out["task"]:
        raise DataError(f"{source_uri}: no usable source image falls in the {split} split "
                         f"(val_fraction={config.val_fraction}, test_fraction={config.test_fraction})")
    return {**out, "degraded": np.stack(out["degraded"]), "clean": np.stack(out["clean"])}
