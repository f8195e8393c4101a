"""Versioned degraded/clean datasets: synthesis with Ray Data, atomic publishing, reading back.

Layout of a dataset ``<out>/<name>/``::

    v=<version>/part-<split>-<NNNNN>.parquet   one row per pair, rows sorted by sample id
    v=<version>/manifest.json                  written last, create-only: the version exists from then on
    LATEST                                     the newest published version, moved by compare-and-swap

The driver cuts the source listing into runs of consecutive sources, one per synthesis task; task N
reads its sources, synthesizes every crop and writes ``part-<split>-N`` for each split its sources fall
in (sized so that its train shard holds about ``rows_per_shard`` pairs; its val and test shards are
correspondingly smaller). Every sample's randomness comes from ``rng_for(seed, content_hash, crop,
purpose)`` and splits from the content hash, so the bytes of every shard depend only on the sources,
the config and the code, never on scheduling, retries or worker count.
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from collections import Counter, defaultdict
from typing import Any

import cv2
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import Field, field_validator, model_validator

import degradation_synth as ds
from degradation_synth import Recipe, degrade, load_recipes, resolve_recipes, rng_for

from . import provenance, sources, storage
from .config import Frozen

MANIFEST, LATEST, MANIFEST_FORMAT = "manifest.json", "LATEST", 1
SPLITS = ("train", "val", "test")


# --- config ------------------------------------------------------------------------------------

class SynthesisConfig(Frozen):
    seed: int = Field(0, ge=0)
    recipes: str = "five_task"  # comma-separated recipe and set names
    recipe_weights: dict[str, float] = {}  # per recipe name; default 1 each
    recipe_files: list[str] = []  # YAML files of extra recipes, usable by name in `recipes`
    patch: int = Field(128, ge=ds.MIN_SIDE)
    crops_per_image: int = Field(4, ge=1)
    val_fraction: float = Field(0.05, ge=0.0, lt=1.0)
    test_fraction: float = Field(0.05, ge=0.0, lt=1.0)
    max_pixels: int = Field(100_000_000, ge=1)  # decompression-bomb guard
    max_skipped_fraction: float = Field(0.5, ge=0.0, le=1.0)  # above it the job fails instead of publishing

    @model_validator(mode="after")
    def _train_split_left(self) -> "SynthesisConfig":
        if self.val_fraction + self.test_fraction >= 1:
            raise ValueError("val_fraction + test_fraction must leave a train split (sum < 1)")
        return self

    @field_validator("recipe_weights")
    @classmethod
    def _positive(cls, weights: dict[str, float]) -> dict[str, float]:
        bad = [name for name, weight in weights.items() if weight <= 0]
        if bad:
            raise ValueError(f"weights must be positive: {bad[0]}")
        return weights

    def resolved_recipes(self) -> list[Recipe]:
        """The recipe mixture, in order. Raises ``ValueError`` for unknown names."""
        extra: dict[str, Recipe] = {}
        for path in self.recipe_files:
            extra.update(load_recipes(path))
        recipes: list[Recipe] = []
        for name in (n.strip() for n in self.recipes.split(",") if n.strip()):
            recipes += [extra[name]] if name in extra else resolve_recipes(name)
        if not recipes:
            raise ValueError("synthesis.recipes names no recipe")
        unknown = sorted(set(self.recipe_weights) - {r.name for r in recipes})
        if unknown:
            raise ValueError(f"synthesis.recipe_weights names {unknown[0]!r}, which is not in synthesis.recipes")
        return recipes


class OutputConfig(Frozen):
    uri: str = "outputs/datasets"
    name: str = Field("pairs", pattern=r"^[A-Za-z0-9_.-]+$")
    rows_per_shard: int = Field(512, ge=1)


# --- the synthesis transform (shared by offline shards and online streaming) --------------------

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
                # One generator places the crop and picks the recipe (building one costs ~0.1 ms); the
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


# --- shards ------------------------------------------------------------------------------------

SHARD_SCHEMA = pa.schema([
    ("sample_id", pa.string()), ("source_id", pa.string()), ("content_sha256", pa.string()), ("crop", pa.int32()),
    ("split", pa.string()), ("recipe", pa.string()), ("task", pa.string()),
    ("degraded", pa.binary()), ("clean", pa.binary()), ("height", pa.int32()), ("width", pa.int32()),
    ("record", pa.string()),
])


# Dictionary-encode the repetitive columns only: for the images, Parquet would hash every 48 KiB value
# before giving up on the dictionary (15 % of the write time).
DICTIONARY_COLUMNS = [name for name in SHARD_SCHEMA.names if name not in ("degraded", "clean", "record")]


def pair_images(rows: Any, column: str) -> np.ndarray:
    """One image column of pair rows (raw uint8 bytes, see ``SHARD_SCHEMA``) as (N, H, W, 3) uint8.

    ``rows`` maps column names to sequences (a numpy batch or ``to_pydict()``); all rows share one size.
    """
    height, width = int(rows["height"][0]), int(rows["width"][0])
    return np.stack([np.frombuffer(data, np.uint8) for data in rows[column]]).reshape(-1, height, width, 3)


def shard_plan(units: list[tuple[str, int]], sources_per_shard: int) -> list[list[list]]:
    """The sources of every synthesis task, as ``[unit, start, stop]`` slices: consecutive runs of
    ``sources_per_shard`` sources in listing order. A plan depends only on the listing, so the shards
    do not depend on the number of workers."""
    tasks: list[list[list]] = [[]]
    room = sources_per_shard
    for unit, count in units:
        start = 0
        while start < count:
            if room == 0:
                tasks.append([])
                room = sources_per_shard
            stop = min(count, start + room)
            tasks[-1].append([unit, start, stop])
            room -= stop - start
            start = stop
    return [task for task in tasks if task]


def write_shards(pairs: dict[str, list], version_uri: str, task: int) -> list[dict[str, Any]]:
    """One synthesis task's pairs -> a Parquet file per split (``part-<split>-<task>.parquet``), and the
    stats of each for the manifest.

    Rows are grouped by split and ordered by sample id on the small columns first, so the image columns
    are copied into Arrow once, already in shard order.
    """
    rows_by_split: dict[str, list[int]] = defaultdict(list)
    for row, split in enumerate(pairs["split"]):
        rows_by_split[split].append(row)
    stats = []
    for split, rows in sorted(rows_by_split.items()):
        kept = sorted((row for row in rows if not pairs["skip_reason"][row]), key=pairs["sample_id"].__getitem__)
        shard = {"path": "", "rows": 0, "sha256": "", "split": split, "counts": {},
                 "skipped": _sources_by(pairs, rows, "skip_reason"),
                 "converted": _sources_by(pairs, kept, "converted_from")}
        if kept:
            table = pa.table([pa.array(_take(pairs[field.name], kept), field.type) for field in SHARD_SCHEMA],
                             schema=SHARD_SCHEMA)
            buffer = pa.BufferOutputStream()
            pq.write_table(table, buffer, compression="zstd", use_dictionary=DICTIONARY_COLUMNS)
            data = memoryview(buffer.getvalue())
            shard.update(path=f"part-{split}-{task:05d}.parquet", rows=len(kept),
                         sha256=hashlib.sha256(data).hexdigest(), counts=Counter(pairs["recipe"][row] for row in kept))
            storage.write_bytes(storage.join(version_uri, shard["path"]), data)
        stats.append(shard)
    return stats


def _take(column: Any, rows: list[int]) -> Any:
    return column[rows] if isinstance(column, np.ndarray) else [column[row] for row in rows]


def _sources_by(pairs: dict[str, list], rows: list[int], reason: str) -> list[tuple[str, str]]:
    """Sorted distinct (reason, source id) of the rows where the ``reason`` column is set."""
    return sorted({(pairs[reason][row], pairs["source_id"][row]) for row in rows if pairs[reason][row]})


# --- the job -------------------------------------------------------------------------------------

def new_version() -> str:
    """A fresh, time-ordered version name."""
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + uuid.uuid4().hex[:6]


def plan(source_uri: str, config: SynthesisConfig) -> dict[str, Any]:
    """What a run would do, without decoding anything: sources found, recipes, expected pairs."""
    return _plan(source_uri, config)[0]


def _plan(source_uri: str, config: SynthesisConfig) -> tuple[dict[str, Any], list[tuple[str, int]]]:
    """The plan, and the source's units with their image counts (listed once: S3 listings are slow)."""
    units = sources.unit_sizes(source_uri)
    count = sum(n for _, n in units)
    recipes = config.resolved_recipes()
    summary = {"source": source_uri, "packed": sources.is_packed(source_uri), "sources": count,
               "recipes": [r.name for r in recipes], "expected_pairs": count * config.crops_per_image}
    return summary, units


def synthesize_shards(plan_rows: dict[str, np.ndarray], source_uri: str, version_uri: str,
                      config: SynthesisConfig) -> dict[str, list]:
    """Ray Data ``map_batches`` function: synthesis tasks of the plan -> their shards, written; returns
    one stats row per shard.

    Each task reads its own sources and writes its own shards, so image bytes never cross Ray's object
    store (a shuffle would move every pair through it twice).
    """
    stats = []
    for task, slices in zip(plan_rows["task"], plan_rows["slices"], strict=True):
        pairs = Synthesize(config)(read_slices(source_uri, json.loads(slices)))
        stats += write_shards(pairs, version_uri, int(task))
    return {key: [json.dumps(row[key]) if key in ("counts", "skipped", "converted") else row[key] for row in stats]
            for key in ("path", "rows", "sha256", "split", "counts", "skipped", "converted")}


def synthesize(source_uri: str, output: OutputConfig, config: SynthesisConfig,
               resolved_config: dict[str, Any]) -> dict[str, Any]:
    """Synthesize, write and publish a new version; return its manifest.

    Raises:
        StorageError: unreadable source, missing bucket or unwritable output (before any work).
        RuntimeError: when more than ``max_skipped_fraction`` of the sources were skipped
            (nothing is published then).
    """
    import ray.data

    expected, units = _plan(source_uri, config)
    dataset_uri = storage.join(output.uri, output.name)
    storage.check_writable(dataset_uri)
    version = new_version()
    version_uri = storage.join(dataset_uri, f"v={version}")
    started = time.perf_counter()

    tasks = shard_plan(units, sources_per_shard(output, config))
    # One block per task, so that Ray Data schedules tasks, not runs of them, on free CPUs. Tasks, not an
    # actor pool: an actor holds its CPU for the whole job, which on one or two cores starves the rest.
    plan_rows = ray.data.from_items([{"task": index, "slices": json.dumps(slices)}
                                     for index, slices in enumerate(tasks)], override_num_blocks=len(tasks))
    stats = plan_rows.map_batches(synthesize_shards, batch_size=1, batch_format="numpy", num_cpus=1,
                                  fn_kwargs={"source_uri": source_uri, "version_uri": version_uri,
                                             "config": config}).take_all()

    manifest = build_manifest(version, stats, expected, config, resolved_config)
    total = manifest["sources"]["total"]
    skipped_sources = sum(len(ids) for ids in manifest["skipped"].values())
    if total and skipped_sources / total > config.max_skipped_fraction:
        raise RuntimeError(f"{skipped_sources} of {total} sources were skipped "
                           f"({', '.join(f'{r}: {len(i)}' for r, i in manifest['skipped'].items())}), "
                           f"above synthesis.max_skipped_fraction={config.max_skipped_fraction}; nothing published")
    if not any(manifest["counts"].values()):
        raise RuntimeError(f"{source_uri}: no pairs were produced; nothing published")
    manifest["seconds"] = round(time.perf_counter() - started, 2)
    publish(dataset_uri, version, manifest)
    return manifest


def sources_per_shard(output: OutputConfig, config: SynthesisConfig) -> int:
    """Sources per synthesis task: enough for a train shard of about ``output.rows_per_shard`` pairs."""
    train_fraction = 1 - config.val_fraction - config.test_fraction
    return max(1, round(output.rows_per_shard / (config.crops_per_image * train_fraction)))


def build_manifest(version: str, stats: list[dict], expected: dict, config: SynthesisConfig,
                   resolved_config: dict[str, Any]) -> dict[str, Any]:
    counts: dict[str, dict[str, int]] = {split: {} for split in SPLITS}
    skipped: dict[str, set[str]] = defaultdict(set)
    converted: dict[str, set[str]] = defaultdict(set)
    shards = []
    for row in sorted(stats, key=lambda r: (r["split"], r["path"])):
        for reason, identifier in json.loads(row["skipped"]):
            skipped[reason].add(identifier)
        for kind, identifier in json.loads(row["converted"]):
            converted[kind].add(identifier)
        if row["rows"]:
            shards.append({"path": row["path"], "split": row["split"], "rows": int(row["rows"]),
                           "sha256": row["sha256"]})
            for recipe, n in json.loads(row["counts"]).items():
                counts[row["split"]][recipe] = counts[row["split"]].get(recipe, 0) + n
    return {
        "format": MANIFEST_FORMAT, "version": version, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "code_version": provenance.synthesis_code_version(), "seed": config.seed, "config": resolved_config,
        "recipes": {r.name: r.to_config() for r in config.resolved_recipes()},
        "sources": {"uri": expected["source"], "total": expected["sources"]},
        "counts": counts, "skipped": {k: sorted(v) for k, v in sorted(skipped.items())},
        "converted": {k: sorted(v) for k, v in sorted(converted.items())}, "shards": shards,
    }


# --- publishing and reading --------------------------------------------------------------------

def publish(dataset_uri: str, version: str, manifest: dict[str, Any]) -> None:
    """Write the manifest (create-only), then move LATEST forward to ``version``."""
    storage.create_only(storage.join(dataset_uri, f"v={version}", MANIFEST),
                        json.dumps(manifest, indent=2, sort_keys=True).encode())
    storage.advance_pointer(storage.join(dataset_uri, LATEST), version)


def published_versions(dataset_uri: str) -> list[str]:
    """Versions with a manifest, oldest first."""
    names = [f.uri for f in storage.list_files(dataset_uri) if f.uri.endswith("/" + MANIFEST)]
    return sorted(uri.rsplit("/", 2)[-2].removeprefix("v=") for uri in names)


def resolve_version(dataset_uri: str, version: str = "LATEST") -> str:
    if version == LATEST:
        try:
            return storage.read_bytes(storage.join(dataset_uri, LATEST)).decode().strip()
        except storage.StorageError:
            raise storage.StorageError(f"{dataset_uri}: no published version (no {LATEST})") from None
    return version.removeprefix("v=")


def read_manifest(dataset_uri: str, version: str = "LATEST", verify: bool = True) -> dict[str, Any]:
    """The manifest of a published version; with ``verify``, every shard's checksum is checked.

    Raises:
        StorageError: for an unpublished version (no manifest) or an unreadable one.
        ValueError: for a malformed manifest or a shard whose checksum does not match.
    """
    version = resolve_version(dataset_uri, version)
    version_uri = storage.join(dataset_uri, f"v={version}")
    try:
        manifest = json.loads(storage.read_bytes(storage.join(version_uri, MANIFEST)))
    except storage.StorageError:
        raise storage.StorageError(f"{version_uri}: not a published version (no {MANIFEST})") from None
    missing = [key for key in ("version", "counts", "skipped", "shards") if key not in manifest]
    if missing or manifest.get("version") != version:
        raise ValueError(f"{version_uri}/{MANIFEST} is malformed ({', '.join(missing) or 'version mismatch'})")
    if verify:
        for shard in manifest["shards"]:
            uri = storage.join(version_uri, shard["path"])
            if hashlib.sha256(storage.read_bytes(uri)).hexdigest() != shard["sha256"]:
                raise ValueError(f"{uri}: checksum mismatch; the version was altered after publishing")
    return manifest


def open_dataset(dataset_uri: str, split: str = "train", version: str = "LATEST", verify: bool = True):
    """A published version's split as a Ray Dataset of pair rows (see ``SHARD_SCHEMA``)."""
    import ray.data

    if split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    manifest = read_manifest(dataset_uri, version, verify)
    version_uri = storage.join(dataset_uri, f"v={manifest['version']}")
    paths = [storage.filesystem(storage.join(version_uri, s["path"]))[1] for s in manifest["shards"]
             if s["split"] == split]
    if not paths:
        raise ValueError(f"{version_uri}: no {split} pairs")
    fs, _ = storage.filesystem(version_uri)
    return ray.data.read_parquet(paths, filesystem=fs, partitioning=None)  # "v=<version>" is not a column


ONLINE_PAIRS_PER_TASK = 512  # train pairs, as a shard: Ray Data's cost per task (0.1-0.2 s) stays a few per cent


def online_dataset(source_uri: str, config: SynthesisConfig, split: str = "train", passes: int = 1,
                   first_pass: int = 0):
    """Fresh pairs streamed from clean images, with the same rows as ``open_dataset``, nothing written.

    The stream makes ``passes`` passes over the sources, ``config.crops_per_image`` new crops per
    source each (pass-major, so every stretch of the stream mixes all sources). ``first_pass`` starts
    later in the same stream, e.g. where a resumed training run left off. Each task takes a run of
    consecutive sources worth about ``ONLINE_PAIRS_PER_TASK`` train pairs (a slice of a packed file, or a
    few image files) and synthesizes only those in ``split``.
    """
    import ray.data
    from ray.data.expressions import col

    tasks = shard_plan(sources.unit_sizes(source_uri),
                       sources_per_shard(OutputConfig(rows_per_shard=ONLINE_PAIRS_PER_TASK), config))
    work = [{"slices": json.dumps(slices), "pass": p}
            for p in range(first_pass, first_pass + passes) for slices in tasks]
    # One block per task, as in ``synthesize``: Ray Data then runs tasks, not runs of them, on free CPUs.
    return ray.data.from_items(work, override_num_blocks=len(work)).map_batches(
        _synthesize_slices, fn_kwargs={"source_uri": source_uri, "config": config, "split": split},
        batch_size=1, batch_format="numpy", num_cpus=1).filter(
        expr=col("skip_reason") == "").drop_columns(["skip_reason", "converted_from"])


def _synthesize_slices(batch: dict[str, np.ndarray], source_uri: str, config: SynthesisConfig,
                       split: str) -> dict[str, list]:
    (slices,), (pass_,) = batch["slices"], batch["pass"]
    rows = read_slices(source_uri, json.loads(slices))
    return Synthesize(config, split)({**rows, "pass": np.full(len(rows["id"]), int(pass_))})


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
        raise ValueError(f"{source_uri}: no usable source image falls in the {split} split "
                         f"(val_fraction={config.val_fraction}, test_fraction={config.test_fraction})")
    return {**out, "degraded": np.stack(out["degraded"]), "clean": np.stack(out["clean"])}


def remove_unpublished(dataset_uri: str) -> list[str]:
    """Delete version folders that have no manifest (left by failed or killed runs); return their names.

    Only call this when no run is writing to the dataset: an in-progress version has no manifest either.
    """
    published = set(published_versions(dataset_uri))
    versions = {uri.split("/v=", 1)[1].split("/", 1)[0] for uri in (f.uri for f in storage.list_files(dataset_uri))
                if "/v=" in uri}
    removed = sorted(versions - published)
    for version in removed:
        storage.delete_tree(storage.join(dataset_uri, f"v={version}"))
    return removed
