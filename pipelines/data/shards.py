"""Parquet shards of pair rows: their schema, how a job's sources are cut into shards, and writing them."""

from __future__ import annotations

import hashlib
import json
from collections import Counter, defaultdict
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ..core import storage
from .synthesis import SynthesisConfig

SHARD_SCHEMA = pa.schema([
    ("sample_id", pa.string()), ("source_id", pa.string()), ("content_sha256", pa.string()), ("crop", pa.int32()),
    ("split", pa.string()), ("recipe", pa.string()), ("task", pa.string()),
    ("degraded", pa.binary()), ("clean", pa.binary()), ("height", pa.int32()), ("width", pa.int32()),
    ("record", pa.string()),
])


# Dictionary-encode the repetitive columns only: for the images, Parquet would hash every image-sized
# value before giving up on the dictionary (docs/datasets.md#shard-encoding).
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


def sources_per_shard(rows_per_shard: int, config: SynthesisConfig) -> int:
    """Sources per synthesis task: enough for a train shard of about ``rows_per_shard`` pairs."""
    train_fraction = 1 - config.val_fraction - config.test_fraction
    return max(1, round(rows_per_shard / (config.crops_per_image * train_fraction)))


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


def stats_batch(stats: list[dict[str, Any]]) -> dict[str, list]:
    """``write_shards``' stats rows as the columns a Ray Data task returns (nested values as JSON)."""
    return {key: [json.dumps(row[key]) if key in ("counts", "skipped", "converted") else row[key] for row in stats]
            for key in ("path", "rows", "sha256", "split", "counts", "skipped", "converted")}


def _take(column: Any, rows: list[int]) -> Any:
    return column[rows] if isinstance(column, np.ndarray) else [column[row] for row in rows]


def _sources_by(pairs: dict[str, list], rows: list[int], reason: str) -> list[tuple[str, str]]:
    """Sorted distinct (reason, source id) of the rows where the ``reason`` column is set."""
    return sorted({(pairs[reason][row], pairs["source_id"][row]) for row in rows if pairs[reason][row]})
