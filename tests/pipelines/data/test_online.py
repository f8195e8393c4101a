"""The online stream: the same pairs as a published version of the same config, nothing written.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from types import SimpleNamespace

import pytest

from pipelines.core import storage
from pipelines.data import online, shards
from pipelines.data.shards import SHARD_SCHEMA

from ..conftest import (
    snapshot,
    synthesis_config,
)


@pytest.fixture(scope="module")
def online_rows(local_dataset):
    """Train rows streamed by ``online_dataset`` with the shared config, and whether anything was written."""
    base = Path(local_dataset.source).parent
    before = snapshot(base)
    writes = []
    with pytest.MonkeyPatch.context() as patch:
        for name in ("write_bytes", "create_only", "advance_pointer", "delete_tree"):
            patch.setattr(storage, name, lambda *args, _name=name, **kwargs: writes.append((_name, args)))
        dataset = online.online_dataset(local_dataset.source, synthesis_config(), "train")
        rows = dataset.take_all()
        columns = dataset.schema().names
    return SimpleNamespace(rows=rows, columns=columns, writes=writes, changed=snapshot(base) != before)


def test_online_rows_have_the_same_columns_as_published_rows(online_rows, local_train_rows):
    assert online_rows.columns == local_train_rows.columns


def test_online_pairs_equal_the_published_pairs_of_the_same_config(online_rows, local_train_rows):
    published = {row["sample_id"]: row for row in local_train_rows.rows}
    streamed = {row["sample_id"]: row for row in online_rows.rows}
    assert streamed.keys() == published.keys()
    for sample_id, row in streamed.items():
        assert {k: row[k] for k in SHARD_SCHEMA.names} == {k: published[sample_id][k] for k in SHARD_SCHEMA.names}


def test_online_mode_writes_nothing(online_rows):
    assert online_rows.writes == []
    assert not online_rows.changed


def sorted_rows(dataset) -> list[dict]:
    return sorted(dataset.take_all(), key=lambda row: row["sample_id"])


def test_an_online_stream_makes_fresh_distinct_crops_each_pass_deterministically(ray_cluster, few_photos):
    config = synthesis_config(crops_per_image=2, val_fraction=0.0, test_fraction=0.0)
    rows = sorted_rows(online.online_dataset(str(few_photos), config, "train", passes=2))
    assert len(rows) == 4 * 2 * 2
    assert len({row["sample_id"] for row in rows}) == len(rows)
    crops = defaultdict(list)
    for row in rows:
        crops[row["source_id"]].append(int(row["crop"]))
        assert row["sample_id"] == f"{row['source_id']}#{row['crop']}"
        assert row["split"] == "train"
    assert {source: sorted(c) for source, c in crops.items()} == {source: [0, 1, 2, 3] for source in crops}
    assert len({row["clean"] for row in rows}) == len(rows)  # every pair is a new crop
    assert set(rows[0]) == set(shards.SHARD_SCHEMA.names)  # the rows open_dataset yields

    again = sorted_rows(online.online_dataset(str(few_photos), config, "train", passes=2))
    assert again == rows

    later = sorted_rows(online.online_dataset(str(few_photos), config, "train", passes=1, first_pass=1))
    assert later == [row for row in rows if row["crop"] >= config.crops_per_image]
