"""The shard plan and the shard writer, called directly (no Ray): which sources a task gets, and the
bytes of the files it writes.
"""

from __future__ import annotations

import hashlib
import io
import random

import pyarrow.parquet as pq
import pytest

from pipelines.data import shards, sources
from pipelines.data.shards import SHARD_SCHEMA, shard_plan, write_shards
from pipelines.data.synthesis import Synthesize

from ..conftest import source_batch, transform_config


def write(out: dict[str, list], version_uri: str, task: int = 0) -> dict[str, dict]:
    """``write_shards`` of one task's pairs: the stats of each shard, by split."""
    return {stats["split"]: stats for stats in write_shards(out, version_uri, task)}


def test_the_plan_cuts_the_listing_into_runs_of_consecutive_sources_across_units():
    units = [("a.parquet", 5), ("b.parquet", 1), ("c.parquet", 6)]
    assert shard_plan(units, 4) == [[["a.parquet", 0, 4]], [["a.parquet", 4, 5], ["b.parquet", 0, 1],
                                                            ["c.parquet", 0, 2]], [["c.parquet", 2, 6]]]


def test_the_plan_of_a_folder_and_of_its_packed_table_name_the_same_sources_per_task():
    files = [(f"img-{i}.png", 1) for i in range(10)]
    per_task = [[stop - start for _, start, stop in task] for task in shard_plan(files, 3)]
    packed = [[stop - start for _, start, stop in task] for task in shard_plan([("p0", 4), ("p1", 6)], 3)]
    assert [sum(n) for n in per_task] == [sum(n) for n in packed] == [3, 3, 3, 1]


@pytest.mark.parametrize("rows, crops, expected", [(512, 64, 9), (512, 4, 142), (2, 1, 2), (1, 64, 1)])
def test_a_task_gets_enough_sources_for_a_train_shard_of_rows_per_shard(rows, crops, expected):
    assert shards.sources_per_shard(rows, transform_config(crops_per_image=crops, val_fraction=0.05,
                                                 test_fraction=0.05)) == expected


def test_a_task_writes_one_shard_per_split_its_sources_fall_in_named_by_split_and_task(files, tmp_path):
    out = Synthesize(transform_config())(source_batch(files))
    stats = write(out, str(tmp_path), task=7)
    assert set(stats) == set(out["split"])
    for split, shard in stats.items():
        assert shard["path"] == f"part-{split}-00007.parquet"
        table = pq.read_table(tmp_path / shard["path"])
        assert set(table.column("split").to_pylist()) == {split} and table.num_rows == shard["rows"]
        assert shard["sha256"] == hashlib.sha256((tmp_path / shard["path"]).read_bytes()).hexdigest()


def test_a_shard_s_bytes_do_not_depend_on_the_order_its_rows_arrive_in(files, tmp_path):
    out = Synthesize(transform_config())(source_batch(files))
    order = list(range(len(out["sample_id"])))
    random.Random(3).shuffle(order)
    shuffled = {column: [values[i] for i in order] for column, values in out.items()}
    first, second = write(out, str(tmp_path / "a")), write(shuffled, str(tmp_path / "b"))
    assert first == second
    for shard in first.values():
        assert (tmp_path / "a" / shard["path"]).read_bytes() == (tmp_path / "b" / shard["path"]).read_bytes()


def test_a_shard_file_holds_the_kept_rows_sorted_by_sample_id_with_the_shard_schema(files, tmp_path):
    out = Synthesize(transform_config(val_fraction=0.0, test_fraction=0.0))(source_batch({**files, "empty.jpg": b""}))
    stats = write(out, str(tmp_path))
    assert list(stats) == ["train"] and stats["train"]["rows"] == 2 * len(files)
    table = pq.read_table(io.BytesIO((tmp_path / stats["train"]["path"]).read_bytes()))
    assert table.schema.names == SHARD_SCHEMA.names
    ids = table.column("sample_id").to_pylist()
    assert ids == sorted(ids) and "empty.jpg#-1" not in ids
    assert stats["train"]["skipped"] == [(sources.EMPTY, "empty.jpg")]
    assert sum(stats["train"]["counts"].values()) == 2 * len(files)


def test_a_shard_of_skipped_sources_only_writes_no_file_but_reports_them(tmp_path):
    bad = {"empty.jpg": b"", "notes.jpg": b"text " * 30}
    out = Synthesize(transform_config(val_fraction=0.0, test_fraction=0.0))(source_batch(bad))
    stats = write(out, str(tmp_path / "v"))
    assert stats["train"]["rows"] == 0 and stats["train"]["path"] == ""
    assert stats["train"]["skipped"] == [(sources.EMPTY, "empty.jpg"), (sources.UNDECODABLE, "notes.jpg")]
    assert not (tmp_path / "v").exists()
