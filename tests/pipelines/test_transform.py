"""The per-batch synthesis transform, the split rule and the shard writer, called directly (no Ray).

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
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from numpy.lib.stride_tricks import sliding_window_view

from degradation_synth import replay
from pipelines import datasets, sources
from pipelines.datasets import PAIR_COLUMNS, SHARD_SCHEMA, Synthesize, split_of, write_shard

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


def config(**changes) -> datasets.SynthesisConfig:
    return datasets.SynthesisConfig(**{"seed": 1, "recipes": "noise25,haze", "patch": PATCH, "crops_per_image": 2,
                                       "val_fraction": 0.3, "test_fraction": 0.3, **changes})


def rows_of(out: dict[str, list]) -> list[dict]:
    return [dict(zip(out, values)) for values in zip(*out.values())]


def by_sample(out: dict[str, list]) -> dict[str, dict]:
    return {row["sample_id"]: row for row in rows_of(out)}


def as_image(data: bytes, side: int = PATCH) -> np.ndarray:
    return np.frombuffer(data, np.uint8).reshape(side, side, 3)


def as_group(rows: list[dict]) -> pa.Table:
    """Rows as the Arrow group Ray Data hands to ``map_groups``."""
    return pa.table({column: [row[column] for row in rows] for column in PAIR_COLUMNS})


def write(rows: list[dict], version_uri: str) -> dict[str, list]:
    """``write_shard`` on one group, its one-row stats table as a dict of columns."""
    return write_shard(as_group(rows), version_uri).to_pydict()


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


def test_shard_names_stay_within_the_split_s_shard_count_and_follow_the_sample_id(files):
    shards = {"train": 3, "val": 2, "test": 1}
    out = rows_of(Synthesize(config(crops_per_image=4), shards)(batch_of(files)))
    for row in out:
        split, index = row["shard"].rsplit("-", 1)
        assert split == row["split"] and 0 <= int(index) < shards[split]
    again = by_sample(Synthesize(config(crops_per_image=4, seed=9), shards)(batch_of(files)))
    assert all(again[row["sample_id"]]["shard"] == row["shard"] for row in out)  # not the seed: the id


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


# --- write_shard -------------------------------------------------------------------------------------

def shard_rows(files, **changes) -> list[dict]:
    rows = rows_of(Synthesize(config(**changes), {"train": 1, "val": 1, "test": 1})(batch_of(files)))
    return [{**row, "shard": "train-00000", "split": "train"} for row in rows]  # one group, as map_groups gives


def test_a_shard_s_bytes_do_not_depend_on_the_order_its_rows_arrive_in(files, tmp_path):
    rows = shard_rows(files)
    shuffled = rows[:]
    random.Random(3).shuffle(shuffled)
    first = write(rows, str(tmp_path / "a"))
    second = write(shuffled, str(tmp_path / "b"))
    assert first == second
    name = first["path"][0]
    data = (tmp_path / "a" / name).read_bytes()
    assert data == (tmp_path / "b" / name).read_bytes()
    assert first["sha256"] == [hashlib.sha256(data).hexdigest()]


def test_a_shard_file_holds_the_kept_rows_sorted_by_sample_id_with_the_shard_schema(files, tmp_path):
    rows = shard_rows({**files, "empty.jpg": b""})
    random.Random(5).shuffle(rows)
    stats = write(rows, str(tmp_path))
    assert stats["path"] == ["part-train-00000.parquet"] and stats["rows"] == [2 * len(files)]
    table = pq.read_table(io.BytesIO((tmp_path / stats["path"][0]).read_bytes()))
    assert table.schema.names == SHARD_SCHEMA.names
    ids = table.column("sample_id").to_pylist()
    assert ids == sorted(ids) and "empty.jpg#-1" not in ids
    assert json.loads(stats["skipped"][0]) == [[sources.EMPTY, "empty.jpg"]]
    assert sum(json.loads(stats["counts"][0]).values()) == 2 * len(files)


def test_a_shard_of_skipped_sources_only_writes_no_file_but_reports_them(tmp_path):
    rows = shard_rows({"empty.jpg": b"", "notes.jpg": b"text " * 30})
    stats = write(rows, str(tmp_path / "v"))
    assert stats["rows"] == [0] and stats["path"] == [""]
    assert sorted(map(tuple, json.loads(stats["skipped"][0]))) == [(sources.EMPTY, "empty.jpg"),
                                                                  (sources.UNDECODABLE, "notes.jpg")]
    assert not (tmp_path / "v").exists()
