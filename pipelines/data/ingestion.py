"""The ingest job: a real paired set in its release layout in, a published dataset version out, with Ray Data.

The layout pairs the files by its own naming (``layouts.pair_layout``); the driver cuts the pairs into runs
of ``output.rows_per_shard``, one per Ray task; each task reads and checks its pairs and writes
``part-<split>-N`` for each split they fall in. Images stay whole (cut into tiles only above ``max_side``),
so that training takes fresh random crops of them every pass (``patches.py``). A pair's split follows its
reference image's bytes, salted with the seed: every hazy version of one clear scene lands in one split.
The manifest is written last and LATEST moved after it, as ``synthesize.py`` does (``versions.publish``).
"""

from __future__ import annotations

import hashlib
import json
import time
from typing import Any, Literal

import numpy as np
from pydantic import Field, model_validator

from degradation_synth import DegradationKind, task_label

from ..core import provenance, storage
from ..core.config import Frozen
from ..core.runtime import RayConfig
from . import layouts
from .job import NothingPublished, OutputConfig, new_version, summarize_shards
from .shards import stats_batch, write_shards
from .synthesis import PAIR_COLUMNS, check_train_split_left, split_of
from .versions import MANIFEST_FORMAT, publish

Layout = Literal["rain100l", "ots", "its", "gopro", "lol", "cdd11", "clean", "paired"]

# CDD-11's class names -> the degradation kinds of the shared task labels.
_CDD11_KINDS = {"low": DegradationKind.LOW_LIGHT, "haze": DegradationKind.HAZE, "rain": DegradationKind.RAIN,
                "snow": DegradationKind.SNOW}


class IngestSection(Frozen):
    layout: Layout | None = None  # required
    seed: int = Field(0, ge=0)  # salts the split: another seed holds out other images
    task: str | None = Field(None, pattern=r"^[A-Za-z0-9_+.-]+$")  # every pair's task (default: the layout's)
    val_fraction: float = Field(0.05, ge=0.0, lt=1.0)
    test_fraction: float = Field(0.0, ge=0.0, lt=1.0)  # the benchmarks are the test sets
    min_side: int = Field(128, ge=16)  # smaller images cannot give a training patch (data.patch) of this side
    max_side: int = Field(2048, ge=64)  # larger images are cut into tiles of at most this side
    max_pixels: int = Field(100_000_000, ge=1)  # decompression-bomb guard
    max_skipped_fraction: float = Field(0.5, ge=0.0, le=1.0)  # above it the job fails instead of publishing

    @model_validator(mode="after")
    def _train_split_left(self) -> "IngestSection":
        check_train_split_left(self.val_fraction, self.test_fraction)
        if self.min_side > self.max_side:
            raise ValueError(f"min_side ({self.min_side}) must not exceed max_side ({self.max_side})")
        return self


class IngestOutput(OutputConfig):
    rows_per_shard: int = Field(32, ge=1)  # whole images: a shard of 32 GoPro pairs holds about 180 MB raw


class IngestConfig(Frozen):
    source: str | None = None  # required
    output: IngestOutput = IngestOutput()
    ingest: IngestSection = IngestSection()
    ray: RayConfig = RayConfig()


def task_and_recipe(layout: str, unit_task: str, override: str | None) -> tuple[str, str]:
    """A pair's task label (shared with synthesis) and its ``recipe`` column (its finer origin)."""
    if layout == "cdd11":
        return task_label(_CDD11_KINDS[part] for part in unit_task.split("_")), f"cdd11/{unit_task}"
    if layout == "paired":
        return override or unit_task, override or unit_task
    return override or unit_task, layout


def plan(source_uri: str, config: IngestSection) -> dict[str, Any]:
    """What a run would do: the pairs the layout finds and those it cannot pair; no image is decoded."""
    pairing = layouts.pair_layout(config.layout, source_uri)
    tasks: dict[str, int] = {}
    for unit in pairing.units:
        task = task_and_recipe(config.layout, unit["task"], config.task)[0]
        tasks[task] = tasks.get(task, 0) + 1
    return {"source": source_uri, "layout": config.layout, "pairs": len(pairing.units), "tasks": tasks,
            "unpaired": {reason: len(files) for reason, files in pairing.skipped.items()}}


def tiles(height: int, width: int, max_side: int) -> list[tuple[int, int, int, int]]:
    """(top, left, height, width) of the tiles of an image: itself when no side exceeds ``max_side``, else an
    even grid of the fewest tiles within it."""
    rows, columns = -(-height // max_side), -(-width // max_side)
    tops = np.linspace(0, height, rows + 1).astype(int)
    lefts = np.linspace(0, width, columns + 1).astype(int)
    return [(int(t), int(left), int(b - t), int(r - left))
            for t, b in zip(tops[:-1], tops[1:]) for left, r in zip(lefts[:-1], lefts[1:])]


def read_pairs(units: list[dict[str, str]], source_uri: str, config: IngestSection) -> dict[str, list]:
    """Pair rows (``synthesis.PAIR_COLUMNS``) of the units: whole images or tiles; a skipped unit gives one row
    with ``skip_reason`` set, naming the file at fault. Clean-only units (``clean``) leave ``degraded`` empty."""
    out: dict[str, list] = {column: [] for column in PAIR_COLUMNS}
    for unit in units:
        pair = layouts.read_pair(unit, max_pixels=config.max_pixels, min_side=config.min_side)
        task, recipe = task_and_recipe(config.layout, unit["task"], config.task)
        source_id = storage.relative(unit.get("input", unit["target"]), source_uri)
        if pair.skip_reason:
            _append(out, f"{source_id}#-1", storage.relative(pair.file, source_uri), "", -1, "", task, recipe, None,
                    None, {}, pair.skip_reason, "")
            continue
        content = pair.target_sha256
        split = split_of(hashlib.sha256(f"{config.seed}/{content}".encode()).hexdigest(), config.val_fraction,
                         config.test_fraction)
        record = {"layout": config.layout, "target": storage.relative(unit["target"], source_uri),
                  **({"input": source_id} if "input" in unit else {})}
        for index, (top, left, height, width) in enumerate(tiles(*pair.clean.shape[:2], config.max_side)):
            window = (slice(top, top + height), slice(left, left + width))
            _append(out, f"{source_id}#{index}", source_id, content, index, split, task, recipe,
                    None if pair.degraded is None else pair.degraded[window], pair.clean[window],
                    {**record, "tile": [top, left, height, width]}, "", pair.converted_from or "")
    for column in ("crop", "height", "width"):
        out[column] = np.asarray(out[column], np.int32)
    return out


def _append(out, sample_id, source_id, content, crop, split, task, recipe, degraded, clean, record, skip_reason,
            converted) -> None:
    values = {"sample_id": sample_id, "source_id": source_id, "content_sha256": content, "crop": crop,
              "split": split, "recipe": recipe, "task": task,
              "degraded": b"" if degraded is None else np.ascontiguousarray(degraded).tobytes(),
              "clean": b"" if clean is None else np.ascontiguousarray(clean).tobytes(),
              "height": 0 if clean is None else clean.shape[0], "width": 0 if clean is None else clean.shape[1],
              "record": json.dumps(record) if record else "", "skip_reason": skip_reason,
              "converted_from": converted}
    for column, value in values.items():
        out[column].append(value)


def ingest_shards(batch: dict[str, np.ndarray], source_uri: str, version_uri: str,
                  config: IngestSection) -> dict[str, list]:
    """Ray Data ``map_batches`` function: one task's units -> its shards, written; one stats row per shard."""
    import cv2

    cv2.setNumThreads(1)  # one task per CPU: OpenCV's own pool would oversubscribe them
    stats = []
    for task, units in zip(batch["task"], batch["units"], strict=True):
        stats += write_shards(read_pairs(json.loads(units), source_uri, config), version_uri, int(task))
    return stats_batch(stats)


def ingest(source_uri: str, output: OutputConfig, config: IngestSection,
           resolved_config: dict[str, Any]) -> dict[str, Any]:
    """Pair, check, write and publish a new version; return its manifest.

    Raises:
        StorageError: unreadable source, missing bucket or unwritable output (before any work).
        DataError: the source is not in ``config.layout``.
        NothingPublished: more than ``max_skipped_fraction`` of the pairs were unusable, or none was usable.
    """
    import ray.data

    pairing = layouts.pair_layout(config.layout, source_uri)
    dataset_uri = storage.join(output.uri, output.name)
    storage.check_writable(dataset_uri)
    version = new_version()
    version_uri = storage.join(dataset_uri, f"v={version}")
    started = time.perf_counter()
    chunks = [pairing.units[i:i + output.rows_per_shard] for i in range(0, len(pairing.units), output.rows_per_shard)]
    stats = []
    if chunks:
        work = ray.data.from_items([{"task": index, "units": json.dumps(units)} for index, units in enumerate(chunks)],
                                   override_num_blocks=len(chunks))
        stats = work.map_batches(ingest_shards, batch_size=1, batch_format="numpy", num_cpus=1,
                                 fn_kwargs={"source_uri": source_uri, "version_uri": version_uri,
                                            "config": config}).take_all()
    summary = summarize_shards(stats)
    for reason, files in pairing.skipped.items():  # what the names could not pair
        summary["skipped"][reason] = sorted(set(summary["skipped"].get(reason, [])) | set(files))
    total = len(pairing.units) + sum(len(files) for reason, files in pairing.skipped.items()
                                     if reason != layouts.SAME_NAME)
    skipped = sum(len(files) for files in summary["skipped"].values())
    if total and skipped / total > config.max_skipped_fraction:
        raise NothingPublished(f"{skipped} of {total} files were skipped "
                               f"({', '.join(f'{r}: {len(f)}' for r, f in summary['skipped'].items())}), "
                               f"above ingest.max_skipped_fraction={config.max_skipped_fraction}; nothing published")
    if not any(summary["counts"].values()):
        raise NothingPublished(f"{source_uri}: no usable {config.layout} pairs; nothing published")
    manifest = {
        "format": MANIFEST_FORMAT, "version": version, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "kind": "ingested", "layout": config.layout, "images": "whole", "min_side": config.min_side,
        "code_version": provenance.code_version(), "seed": config.seed, "config": resolved_config,
        "sources": {"uri": source_uri, "total": total, "listing_sha256": _listing_digest(pairing, source_uri)},
        "tasks": {recipe: task for task, recipe in (task_and_recipe(config.layout, unit["task"], config.task)
                                                      for unit in pairing.units)},
        **summary, "seconds": round(time.perf_counter() - started, 2)}
    publish(dataset_uri, version, manifest)
    return manifest


def _listing_digest(pairing: layouts.Pairing, root: str) -> str:
    """Which files were paired, by name relative to the root (contents are hashed per pair, in ``content_sha256``)."""
    listing = sorted((unit["task"], *(storage.relative(unit[key], root) for key in ("input", "target") if key in unit))
                     for unit in pairing.units)
    return hashlib.sha256(json.dumps(listing).encode()).hexdigest()


HELP = """\
Import a real paired training set in its release layout into a versioned, sharded dataset, with Ray Data.

--layout: rain100l (Rain100L/RainTrainL), ots and its (RESIDE), gopro, lol, cdd11, clean (clean images
only: Gaussian noise is added in training, as PromptIR does with BSD400 + WED) or paired (input/ and
target/). Versions go to <out>/<name>/v=<version>/ (shards, then manifest.json, then LATEST moves), in the
format synthesize.py writes; train.py mixes them with data.datasets. Images stay whole (tiles above
ingest.max_side), and training crops them afresh every pass. Config sections: source, output, ingest, ray.
"""


def required(config: IngestConfig) -> tuple[str, IngestSection]:
    """The source URI (absolute: Ray workers have other working directories) and the ingest section."""
    from ..core.config import ConfigError

    if config.source is None:
        raise ConfigError("config error: source (--source): required")
    if config.ingest.layout is None:
        raise ConfigError("config error: ingest.layout (--layout): required")
    return storage.absolute(config.source), config.ingest


def dry_run_plan(config: IngestConfig, options: Any) -> dict[str, Any]:
    """What ``--dry-run`` shows beside the config: the listing's pairs; nothing is decoded or written."""
    source, section = required(config)
    return {"plan": plan(source, section),
            "output": storage.join(config.output.uri, config.output.name, "v=<new>")}


def run(config: IngestConfig) -> int:
    """Ingest and publish a new version; print what was done. Returns the exit status, 0.

    Raises:
        PipelineError: naming the key, URI or file at fault; nothing is published then.
    """
    from ..core.runtime import init_ray

    source, section = required(config)
    dataset = storage.join(config.output.uri, config.output.name)
    storage.check_readable(source)  # both before Ray starts
    storage.check_writable(dataset)
    init_ray(config.ray, locations={"source": source, "output.uri": config.output.uri})
    manifest = ingest(source, config.output, section, config.model_dump(mode="json"))
    print(f"published {storage.join(dataset, 'v=' + manifest['version'])} ({section.layout})")
    for split, counts in manifest["counts"].items():
        if counts:
            by_task = ", ".join(f"{task}: {count}" for task, count in sorted(counts.items()))
            print(f"  {split}: {sum(counts.values())} pairs ({by_task})")
    print(f"  {len(manifest['shards'])} shards; skipped: "
          f"{ {reason: len(files) for reason, files in manifest['skipped'].items()} or 'none'}")
    return 0
