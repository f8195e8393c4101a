"""The per-batch synthesis transform, the split rule, the shard plan and the shard writer, called
directly (no Ray).

These are the pieces whose purity makes the job deterministic: a sample's pair depends only on the
seed, its content and its crop index, never on which batch or worker it lands in.
"""

from __future__ import annotations

import hashlib
import io
import json
import random
from collections import Counter

import cv2
import numpy as np
import pyarrow.parquet as pq
import pytest
from numpy.lib.stride_tricks import sliding_window_view

from degradation_synth import replay
from pipelines.data import shards, sources, synthesis
from pipelines.data.shards import SHARD_SCHEMA, shard_plan, write_shards
from pipelines.data.synthesis import PAIR_COLUMNS, Synthesize, split_of

from .conftest import photo_halves

PATCH = 64


@pytest.fixture(scope="module")
def files() -> dict[str, bytes]:
    """Four real photos as encoded files (PNG and JPEG), by source id."""
    images = photo_halves(4)
    return {f"dir/{name}.{'png' if i % 2 else 'jpg'}": cv2.imencode(f".{'png' if i % 2 else 'jpg'}", image)[1].tobytes()
            for i, (name, image) in enumerate(images.items())}


def batch_of(files: dict[str, bytes]) -> dict[str, np.ndarray]:
    """A numpy batch as Ray Data hands it to ``map_batches``."""
    ids = list(files)
    return {"id": np.array(ids, dtype=object),
            "sha256": np.array([hashlib.sha256(files[i]).hexdigest() for i in ids], dtype=object),
            "bytes": np.array([files[i] for i in ids], dtype=object)}


def config(**changes) -> synthesis.SynthesisConfig:
    return synthesis.SynthesisConfig(**{"seed": 1, "recipes": "noise25,haze", "patch": PATCH, "crops_per_image": 2,
                                       "val_fraction": 0.3, "test_fraction": 0.3, **changes})


def rows_of(out: dict[str, list]) -> list[dict]:
    return [dict(zip(out, values)) for values in zip(*out.values())]


def by_sample(out: dict[str, list]) -> dict[str, dict]:
    return {row["sample_id"]: row for row in rows_of(out)}


def as_image(data: bytes, side: int = PATCH) -> np.ndarray:
    return np.frombuffer(data, np.uint8).reshape(side, side, 3)


def write(out: dict[str, list], version_uri: str, task: int = 0) -> dict[str, dict]:
    """``write_shards`` of one task's pairs: the stats of each shard, by split."""
    return {stats["split"]: stats for stats in write_shards(out, version_uri, task)}


# --- Synthesize --------------------------------------------------------------------------------------

def test_every_source_gives_one_row_per_crop_with_every_column(files):
    out = Synthesize(config(crops_per_image=3))(batch_of(files))
    assert list(out) == list(PAIR_COLUMNS)
    assert sorted(out["sample_id"]) == sorted(f"{i}#{crop}" for i in files for crop in range(3))
    assert set(out["skip_reason"]) == {""}
    assert set(out["height"]) == set(out["width"]) == {PATCH}


def test_the_clean_patch_is_an_exact_crop_of_the_decoded_source(files):
    out = Synthesize(config())(batch_of(files))
    for row in rows_of(out):
        source = sources.decode(files[row["source_id"]], max_pixels=10**8, min_side=PATCH).image
        windows = sliding_window_view(source, (PATCH, PATCH, 3))[:, :, 0]
        clean = as_image(row["clean"])
        assert (windows == clean).all(axis=(2, 3, 4)).any(), row["sample_id"]


def test_the_record_replays_to_the_degraded_patch_and_names_the_recipe(files):
    for row in rows_of(Synthesize(config())(batch_of(files))):
        record = json.loads(row["record"])
        np.testing.assert_array_equal(replay(as_image(row["clean"]), record), as_image(row["degraded"]))
        assert record["recipe"] == row["recipe"] and record["task"] == row["task"]
        assert row["recipe"] in ("noise25", "haze")
        assert not np.array_equal(as_image(row["clean"]), as_image(row["degraded"]))


def test_crops_of_one_source_differ(files):
    out = by_sample(Synthesize(config(crops_per_image=2))(batch_of(files)))
    for identifier in files:
        assert out[f"{identifier}#0"]["clean"] != out[f"{identifier}#1"]["clean"]


def test_a_sample_does_not_depend_on_its_batch_or_its_position_in_it(files):
    together = by_sample(Synthesize(config())(batch_of(files)))
    reversed_batch = by_sample(Synthesize(config())(batch_of(dict(reversed(files.items())))))
    alone = {}
    for identifier, data in files.items():
        alone.update(by_sample(Synthesize(config())(batch_of({identifier: data}))))
    assert together == reversed_batch == alone


def test_a_renamed_copy_gets_the_same_split_and_pair_because_both_come_from_the_content(files):
    identifier, data = next(iter(files.items()))
    out = by_sample(Synthesize(config())(batch_of({identifier: data, "elsewhere/copy.bin": data})))
    original, copy = out[f"{identifier}#0"], out["elsewhere/copy.bin#0"]
    assert (copy["split"], copy["degraded"], copy["clean"]) == (original["split"], original["degraded"],
                                                               original["clean"])


def test_the_seed_changes_every_pair(files):
    first = by_sample(Synthesize(config(seed=1))(batch_of(files)))
    second = by_sample(Synthesize(config(seed=2))(batch_of(files)))
    assert first.keys() == second.keys()
    assert all(first[s]["degraded"] != second[s]["degraded"] for s in first)


def test_the_split_column_follows_the_content_hash(files):
    for row in rows_of(Synthesize(config())(batch_of(files))):
        assert row["split"] == split_of(row["content_sha256"], 0.3, 0.3)
        assert row["content_sha256"] == hashlib.sha256(files[row["source_id"]]).hexdigest()


@pytest.mark.parametrize("split", ["train", "val", "test"])
def test_a_transform_for_one_split_makes_exactly_that_split_s_rows_and_skips_the_rest_unread(files, split):
    batch = batch_of({**files, "notes.jpg": b"plain text " * 40})
    everything = by_sample(Synthesize(config())(batch))
    notes_split = split_of(hashlib.sha256(b"plain text " * 40).hexdigest(), 0.3, 0.3)
    only = by_sample(Synthesize(config(), split)(batch))
    assert only == {sample: row for sample, row in everything.items() if row["split"] == split}
    assert ("notes.jpg#-1" in only) == (notes_split == split)  # nor is a bad source of another split reported
    assert {row["split"] for row in everything.values()} == {"train", "val", "test"}  # the four photos span them


def test_recipe_weights_steer_the_mixture(files):
    many = config(crops_per_image=8)
    even = Counter(Synthesize(many)(batch_of(files))["recipe"])
    skewed = Counter(Synthesize(config(crops_per_image=8, recipe_weights={"haze": 1e-6}))(batch_of(files))["recipe"])
    assert set(even) == {"noise25", "haze"}
    assert skewed == {"noise25": 8 * len(files)}


def test_a_bad_source_yields_one_row_with_its_reason_and_no_images(files):
    batch = batch_of({**files, "empty.jpg": b"", "notes.jpg": b"plain text " * 40})
    out = rows_of(Synthesize(config())(batch))
    bad = {row["source_id"]: row for row in out if row["skip_reason"]}
    assert {k: v["skip_reason"] for k, v in bad.items()} == {"empty.jpg": sources.EMPTY,
                                                             "notes.jpg": sources.UNDECODABLE}
    for row in bad.values():
        assert (row["crop"], row["degraded"], row["clean"], row["record"], row["recipe"]) == (-1, b"", b"", "", "")
    assert len(out) == 2 * len(files) + 2


def test_a_converted_source_is_marked_on_its_rows(files):
    gray = cv2.cvtColor(next(iter(photo_halves(1).values())), cv2.COLOR_BGR2GRAY)
    out = rows_of(Synthesize(config())(batch_of({"gray.png": cv2.imencode(".png", gray)[1].tobytes()})))
    assert [row["converted_from"] for row in out] == ["grayscale", "grayscale"]
    assert all(row["skip_reason"] == "" for row in out)


# --- split_of ----------------------------------------------------------------------------------------

def test_split_of_is_a_deterministic_function_of_the_hash():
    hashes = [hashlib.sha256(str(i).encode()).hexdigest() for i in range(200)]
    assert [split_of(h, 0.2, 0.1) for h in hashes] == [split_of(h, 0.2, 0.1) for h in hashes]


def test_split_of_cuts_the_hash_range_test_then_val_then_train():
    assert split_of("0" * 64, 0.1, 0.1) == "test"
    assert split_of("1a" + "0" * 62, 0.1, 0.1) == "val"  # 0x1a/0x100 = 0.10 .. 0.11
    assert split_of("f" * 64, 0.1, 0.1) == "train"
    assert split_of("0" * 64, 0.0, 0.0) == "train"


def test_split_of_follows_the_fractions_over_many_sources():
    rng = random.Random(0)
    hashes = [f"{rng.getrandbits(256):064x}" for _ in range(20_000)]
    counts = Counter(split_of(h, 0.2, 0.1) for h in hashes)
    assert abs(counts["val"] / len(hashes) - 0.2) < 0.015
    assert abs(counts["test"] / len(hashes) - 0.1) < 0.015


# --- shard_plan --------------------------------------------------------------------------------------

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
    assert shards.sources_per_shard(rows, config(crops_per_image=crops, val_fraction=0.05,
                                                 test_fraction=0.05)) == expected


# --- write_shards ------------------------------------------------------------------------------------

def test_a_task_writes_one_shard_per_split_its_sources_fall_in_named_by_split_and_task(files, tmp_path):
    out = Synthesize(config())(batch_of(files))
    stats = write(out, str(tmp_path), task=7)
    assert set(stats) == set(out["split"])
    for split, shard in stats.items():
        assert shard["path"] == f"part-{split}-00007.parquet"
        table = pq.read_table(tmp_path / shard["path"])
        assert set(table.column("split").to_pylist()) == {split} and table.num_rows == shard["rows"]
        assert shard["sha256"] == hashlib.sha256((tmp_path / shard["path"]).read_bytes()).hexdigest()


def test_a_shard_s_bytes_do_not_depend_on_the_order_its_rows_arrive_in(files, tmp_path):
    out = Synthesize(config())(batch_of(files))
    order = list(range(len(out["sample_id"])))
    random.Random(3).shuffle(order)
    shuffled = {column: [values[i] for i in order] for column, values in out.items()}
    first, second = write(out, str(tmp_path / "a")), write(shuffled, str(tmp_path / "b"))
    assert first == second
    for shard in first.values():
        assert (tmp_path / "a" / shard["path"]).read_bytes() == (tmp_path / "b" / shard["path"]).read_bytes()


def test_a_shard_file_holds_the_kept_rows_sorted_by_sample_id_with_the_shard_schema(files, tmp_path):
    out = Synthesize(config(val_fraction=0.0, test_fraction=0.0))(batch_of({**files, "empty.jpg": b""}))
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
    out = Synthesize(config(val_fraction=0.0, test_fraction=0.0))(batch_of(bad))
    stats = write(out, str(tmp_path / "v"))
    assert stats["train"]["rows"] == 0 and stats["train"]["path"] == ""
    assert stats["train"]["skipped"] == [(sources.EMPTY, "empty.jpg"), (sources.UNDECODABLE, "notes.jpg")]
    assert not (tmp_path / "v").exists()
