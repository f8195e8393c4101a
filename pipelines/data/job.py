"""The synthesis job: clean images in, a new published dataset version out, with Ray Data.

The driver cuts the source listing into runs of consecutive sources, one per synthesis task; task N
reads its sources, synthesizes every crop and writes ``part-<split>-N`` for each split its sources fall
in (sized so that its train shard holds about ``rows_per_shard`` pairs; its val and test shards are
correspondingly smaller). The manifest is written last and LATEST moved after it (``versions.publish``).
"""

from __future__ import annotations

import json
import time
import uuid
from collections import defaultdict
from typing import Any

import numpy as np
from pydantic import Field

from ..core import provenance, storage
from ..core.config import Frozen
from ..core.errors import DataError
from ..core.runtime import RayConfig
from . import sources
from .shards import shard_plan, sources_per_shard, stats_batch, write_shards
from .synthesis import SPLITS, SynthesisConfig, Synthesize, read_slices
from .versions import MANIFEST_FORMAT, publish


class NothingPublished(DataError, RuntimeError):
    """The job ended without publishing: too many sources were unusable, or none gave a pair."""


class OutputConfig(Frozen):
    uri: str = "outputs/datasets"
    name: str = Field("pairs", pattern=r"^[A-Za-z0-9_.-]+$")
    rows_per_shard: int = Field(512, ge=1)


class SynthesizeConfig(Frozen):
    source: str | None = None  # required except with --clean
    output: OutputConfig = OutputConfig()
    synthesis: SynthesisConfig = SynthesisConfig()
    ray: RayConfig = RayConfig()


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
    return stats_batch(stats)


def synthesize(source_uri: str, output: OutputConfig, config: SynthesisConfig,
               resolved_config: dict[str, Any]) -> dict[str, Any]:
    """Synthesize, write and publish a new version; return its manifest.

    Raises:
        StorageError: unreadable source, missing bucket or unwritable output (before any work).
        NothingPublished: when more than ``max_skipped_fraction`` of the sources were skipped, or no
            pair was produced (nothing is published then).
    """
    import ray.data

    expected, units = _plan(source_uri, config)
    dataset_uri = storage.join(output.uri, output.name)
    storage.check_writable(dataset_uri)
    version = new_version()
    version_uri = storage.join(dataset_uri, f"v={version}")
    started = time.perf_counter()

    tasks = shard_plan(units, sources_per_shard(output.rows_per_shard, config))
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
        raise NothingPublished(f"{skipped_sources} of {total} sources were skipped "
                           f"({', '.join(f'{r}: {len(i)}' for r, i in manifest['skipped'].items())}), "
                           f"above synthesis.max_skipped_fraction={config.max_skipped_fraction}; nothing published")
    if not any(manifest["counts"].values()):
        raise NothingPublished(f"{source_uri}: no pairs were produced; nothing published")
    manifest["seconds"] = round(time.perf_counter() - started, 2)
    publish(dataset_uri, version, manifest)
    return manifest


def build_manifest(version: str, stats: list[dict], expected: dict, config: SynthesisConfig,
                   resolved_config: dict[str, Any]) -> dict[str, Any]:
    recipes = config.resolved_recipes()
    return {
        "format": MANIFEST_FORMAT, "version": version, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "code_version": provenance.synthesis_code_version(), "seed": config.seed, "config": resolved_config,
        "recipes": {r.name: r.to_config() for r in recipes}, "tasks": {r.name: r.task for r in recipes},
        "sources": {"uri": expected["source"], "total": expected["sources"]}, **summarize_shards(stats),
    }


def summarize_shards(stats: list[dict]) -> dict[str, Any]:
    """The manifest's ``counts`` (split -> recipe -> pairs), ``skipped`` and ``converted`` (reason -> sorted ids)
    and ``shards`` from the stats rows of a job's tasks (``shards.write_shards``)."""
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
    return {"counts": counts, "skipped": {k: sorted(v) for k, v in sorted(skipped.items())},
            "converted": {k: sorted(v) for k, v in sorted(converted.items())}, "shards": shards}
