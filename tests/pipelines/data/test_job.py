"""The synthesis job end to end on a local Ray: folder or packed table in, published version out, on local
folders and S3; determinism; disjoint splits; bad inputs; failed runs; and its refusals before any work.

Each Ray job costs seconds here, so runs are module- or session-scoped fixtures that tests only read.
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pyarrow.parquet as pq
import pytest

from degradation_synth import replay
from pipelines.core import provenance, storage
from pipelines.core.storage import StorageError
from pipelines.data import job, sources, versions
from pipelines.data.shards import SHARD_SCHEMA
from pipelines.data.synthesis import split_of

from ..conftest import (
    ROWS_PER_SHARD,
    SOURCE_COUNT,
    SYNTHESIS,
    BadInputs,
    latest,
    run_job,
    shard_checksums,
    snapshot,
    synthesis_config,
    write_bad_inputs,
    write_photo_folder,
)

PATCH = SYNTHESIS["patch"]


def read_shards(dataset: str, manifest: dict) -> list[dict]:
    """Every row of a version, read straight from its Parquet files (no Ray)."""
    rows = []
    for shard in manifest["shards"]:
        data = storage.read_bytes(storage.join(dataset, f"v={manifest['version']}", shard["path"]))
        rows += [{**row, "_shard": shard} for row in pq.read_table(io.BytesIO(data)).to_pylist()]
    return rows


def as_image(data: bytes) -> np.ndarray:
    return np.frombuffer(data, np.uint8).reshape(PATCH, PATCH, 3)


def assert_pairs_replay(rows: list[dict]) -> None:
    for row in rows:
        assert (row["height"], row["width"]) == (PATCH, PATCH)
        assert len(row["degraded"]) == len(row["clean"]) == PATCH * PATCH * 3
        record = json.loads(row["record"])
        np.testing.assert_array_equal(replay(as_image(row["clean"]), record), as_image(row["degraded"]))


def test_a_run_publishes_a_version_that_latest_names(local_dataset):
    version = local_dataset.manifest["version"]
    assert latest(local_dataset.uri) == version
    assert versions.published_versions(local_dataset.uri) == [version]
    assert versions.read_manifest(local_dataset.uri) == local_dataset.manifest


def test_a_version_folder_holds_exactly_its_shards_and_manifest(local_dataset):
    folder = Path(local_dataset.uri) / f"v={local_dataset.manifest['version']}"
    expected = {shard["path"] for shard in local_dataset.manifest["shards"]} | {versions.MANIFEST}
    assert {p.name for p in folder.iterdir()} == expected  # no partial files, no write probes
    assert sorted(p.name for p in Path(local_dataset.uri).iterdir()) == [versions.LATEST, folder.name]


def test_the_manifest_counts_every_pair_by_split_and_recipe(local_dataset):
    manifest = local_dataset.manifest
    assert set(manifest["counts"]) == {"train", "val", "test"}
    assert sum(n for split in manifest["counts"].values() for n in split.values()) == SOURCE_COUNT
    assert {recipe for split in manifest["counts"].values() for recipe in split} <= {"noise25", "haze"}
    for split, by_recipe in manifest["counts"].items():
        assert sum(by_recipe.values()) == sum(s["rows"] for s in manifest["shards"] if s["split"] == split)
    rows = read_shards(local_dataset.uri, manifest)
    for split, by_recipe in manifest["counts"].items():
        for recipe, count in by_recipe.items():
            assert count == sum(1 for r in rows if r["split"] == split and r["recipe"] == recipe)
    assert manifest["sources"] == {"uri": local_dataset.source, "total": SOURCE_COUNT}
    assert manifest["skipped"] == {} and manifest["converted"] == {}


def test_the_manifest_records_the_seed_the_resolved_config_and_the_recipes(local_dataset):
    manifest = local_dataset.manifest
    assert manifest["seed"] == SYNTHESIS["seed"]
    assert manifest["config"]["synthesis"] == synthesis_config().model_dump(mode="json")
    assert manifest["config"]["output"]["rows_per_shard"] == ROWS_PER_SHARD
    assert set(manifest["recipes"]) == {"noise25", "haze"}
    assert manifest["recipes"]["haze"]["steps"][0]["kind"] == "haze"
    assert manifest["code_version"] == provenance.synthesis_code_version()


def test_every_shard_is_listed_with_its_rows_and_a_checksum_of_its_file(local_dataset):
    manifest = local_dataset.manifest
    folder = Path(local_dataset.uri) / f"v={manifest['version']}"
    for shard in manifest["shards"]:
        data = (folder / shard["path"]).read_bytes()
        assert shard["sha256"] == hashlib.sha256(data).hexdigest()
        assert pq.read_metadata(io.BytesIO(data)).num_rows == shard["rows"]
        assert shard["path"].startswith(f"part-{shard['split']}-")
    assert max(sum(1 for s in manifest["shards"] if s["split"] == split) for split in manifest["counts"]) > 1


def test_open_dataset_yields_train_pairs_whose_records_replay(local_dataset, local_train_rows):
    rows = local_train_rows.rows
    assert len(rows) == sum(local_dataset.manifest["counts"]["train"].values()) > 0
    assert {row["split"] for row in rows} == {"train"}
    assert len({row["sample_id"] for row in rows}) == len(rows)
    assert_pairs_replay(rows)


def test_open_dataset_rows_have_exactly_the_documented_columns(local_train_rows):
    assert local_train_rows.columns == SHARD_SCHEMA.names


def test_splits_are_disjoint_by_source_and_follow_the_content_hash(local_dataset):
    rows = read_shards(local_dataset.uri, local_dataset.manifest)
    by_split = {split: {r["source_id"] for r in rows if r["split"] == split} for split in ("train", "val", "test")}
    assert all(by_split.values()), by_split  # every split got sources
    assert not (by_split["train"] & by_split["val"] or by_split["train"] & by_split["test"]
                or by_split["val"] & by_split["test"])
    assert sum(map(len, by_split.values())) == SOURCE_COUNT
    for row in rows:
        assert row["split"] == row["_shard"]["split"]
        assert row["split"] == split_of(row["content_sha256"], SYNTHESIS["val_fraction"], SYNTHESIS["test_fraction"])


def test_rows_within_a_shard_are_sorted_by_sample_id(local_dataset):
    rows = read_shards(local_dataset.uri, local_dataset.manifest)
    for shard in local_dataset.manifest["shards"]:
        ids = [r["sample_id"] for r in rows if r["_shard"] is shard]
        assert ids == sorted(ids)


def test_an_s3_run_from_a_packed_table_publishes_a_checked_version(s3_dataset):
    manifest = s3_dataset.manifest
    assert latest(s3_dataset.uri) == manifest["version"]
    assert versions.published_versions(s3_dataset.uri) == [manifest["version"]]
    assert versions.read_manifest(s3_dataset.uri) == manifest  # verifies every shard's checksum on S3
    assert manifest["sources"] == {"uri": s3_dataset.source, "total": SOURCE_COUNT}
    stored = {f.uri.rsplit("/", 1)[1] for f in storage.list_files(
        storage.join(s3_dataset.uri, f"v={manifest['version']}"))}
    assert stored == {s["path"] for s in manifest["shards"]} | {versions.MANIFEST}


def test_open_dataset_on_s3_yields_pairs_whose_records_replay(s3_dataset):
    rows = versions.open_dataset(s3_dataset.uri, "val").take_all()
    assert len(rows) == sum(s3_dataset.manifest["counts"]["val"].values()) > 0
    assert_pairs_replay(rows)


def test_same_seed_gives_identical_shards_from_a_packed_s3_table_and_from_the_raw_folder(local_dataset, s3_dataset):
    assert s3_dataset.manifest["version"] != local_dataset.manifest["version"]
    assert shard_checksums(s3_dataset.manifest) == shard_checksums(local_dataset.manifest)
    assert s3_dataset.manifest["counts"] == local_dataset.manifest["counts"]


@pytest.fixture(scope="module")
def packed_locally(local_dataset, tmp_path_factory):
    """The shared photos packed into a local table and synthesized again with the same config."""
    base = tmp_path_factory.mktemp("packed-locally")
    sources.pack(local_dataset.source, str(base / "packed"), rows_per_file=4)
    return run_job(str(base / "packed"), str(base / "datasets"), "pairs")


def test_same_seed_gives_identical_shards_from_a_local_packed_table(local_dataset, packed_locally):
    assert shard_checksums(packed_locally) == shard_checksums(local_dataset.manifest)


@dataclass(frozen=True)
class Interrupted:
    uri: str  # a copy of the shared dataset into which a run failed at publishing time
    previous: str  # the version published before
    failed: str  # the version whose manifest could not be written
    error: Exception


SEED_B = SYNTHESIS["seed"] + 1


@pytest.fixture(scope="module")
def interrupted(local_dataset, tmp_path_factory) -> Interrupted:
    """A run (seed ``SEED_B``) whose manifest write fails, as if the job were killed right before it."""
    uri = str(tmp_path_factory.mktemp("interrupted") / "pairs")
    shutil.copytree(local_dataset.uri, uri)
    attempted, create_only = [], storage.create_only

    def fail_on_manifests(target: str, data: bytes) -> None:
        if target.endswith(versions.MANIFEST):
            attempted.append(target)
            raise StorageError(f"{target}: simulated crash")
        create_only(target, data)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(storage, "create_only", fail_on_manifests)
        with pytest.raises(StorageError) as caught:
            run_job(local_dataset.source, str(Path(uri).parent), "pairs", seed=SEED_B)
    assert len(attempted) == 1
    failed = Path(attempted[0]).parent.name.removeprefix("v=")
    return Interrupted(uri, local_dataset.manifest["version"], failed, caught.value)


@pytest.fixture(scope="module")
def rerun(interrupted, local_dataset, tmp_path_factory):
    """A copy of the interrupted dataset, and the manifest of the same run tried again there."""
    uri = str(tmp_path_factory.mktemp("rerun") / "pairs")
    shutil.copytree(interrupted.uri, uri)
    manifest = run_job(local_dataset.source, str(Path(uri).parent), "pairs", seed=SEED_B)
    return SimpleNamespace(uri=uri, manifest=manifest)


def test_a_run_that_dies_before_its_manifest_publishes_nothing(interrupted):
    assert "simulated crash" in str(interrupted.error)
    leftover = Path(interrupted.uri) / f"v={interrupted.failed}"
    assert any(leftover.glob("part-*.parquet")) and not (leftover / versions.MANIFEST).exists()
    assert versions.published_versions(interrupted.uri) == [interrupted.previous]
    assert latest(interrupted.uri) == interrupted.previous
    assert versions.read_manifest(interrupted.uri)["version"] == interrupted.previous


def test_readers_reject_the_unpublished_version(interrupted):
    with pytest.raises(StorageError, match="not a published version"):
        versions.read_manifest(interrupted.uri, interrupted.failed)
    with pytest.raises(StorageError, match="not a published version"):
        versions.open_dataset(interrupted.uri, "train", version=interrupted.failed)


def test_the_rerun_publishes_a_complete_version_with_the_same_bytes(interrupted, rerun):
    version = rerun.manifest["version"]
    assert version not in (interrupted.previous, interrupted.failed)
    assert latest(rerun.uri) == version
    assert versions.published_versions(rerun.uri) == sorted([interrupted.previous, version])
    assert versions.read_manifest(rerun.uri) == rerun.manifest
    leftover = Path(rerun.uri) / f"v={interrupted.failed}"
    assert {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
            for p in leftover.glob("part-*.parquet")} == shard_checksums(rerun.manifest)


def test_remove_unpublished_deletes_the_leftover_and_only_it(interrupted, rerun, tmp_path):
    uri = str(tmp_path / "pairs")
    shutil.copytree(rerun.uri, uri)
    published = {v: snapshot(Path(uri) / f"v={v}") for v in versions.published_versions(uri)}
    assert versions.remove_unpublished(uri) == [interrupted.failed]
    assert not (Path(uri) / f"v={interrupted.failed}").exists()
    assert {v: snapshot(Path(uri) / f"v={v}") for v in versions.published_versions(uri)} == published
    assert latest(uri) == rerun.manifest["version"]


def test_a_different_seed_gives_different_shards(local_dataset, rerun):
    ours, theirs = shard_checksums(local_dataset.manifest), shard_checksums(rerun.manifest)
    assert ours.keys() == theirs.keys()  # same sources and sample ids, hence the same shards...
    assert all(ours[path] != theirs[path] for path in ours)  # ...with different pairs in every one


GOOD = 6


MAX_PIXELS = 250_000


@pytest.fixture(scope="module")
def bad_inputs(ray_cluster, tmp_path_factory):
    base = tmp_path_factory.mktemp("bad-inputs")
    write_photo_folder(base / "photos", count=GOOD)
    expected = write_bad_inputs(base / "photos", patch=PATCH, max_pixels=MAX_PIXELS)
    manifest = run_job(str(base / "photos"), str(base / "datasets"), "pairs", max_pixels=MAX_PIXELS)
    return SimpleNamespace(source=str(base / "photos"), uri=str(base / "datasets" / "pairs"), manifest=manifest,
                           expected=expected)


def bad_input_counts(expected: BadInputs) -> tuple[int, int]:
    """(image files, skipped files) of a folder written by ``write_bad_inputs`` plus ``GOOD`` photos."""
    skipped = sum(map(len, expected.skipped.values()))
    return GOOD + skipped + sum(map(len, expected.converted.values())), skipped


def test_every_bad_input_is_skipped_and_listed_under_its_reason(bad_inputs):
    assert bad_inputs.manifest["skipped"] == bad_inputs.expected.skipped


def test_grayscale_rgba_and_16_bit_sources_are_converted_and_listed(bad_inputs):
    assert bad_inputs.manifest["converted"] == bad_inputs.expected.converted


def test_the_job_publishes_the_pairs_of_the_good_and_converted_sources(bad_inputs):
    total, skipped = bad_input_counts(bad_inputs.expected)
    assert bad_inputs.manifest["sources"]["total"] == total  # README.txt is not a source at all
    assert latest(bad_inputs.uri) == bad_inputs.manifest["version"]
    rows = read_shards(bad_inputs.uri, bad_inputs.manifest)
    converted = {i for ids in bad_inputs.expected.converted.values() for i in ids}
    assert len(rows) == total - skipped
    assert converted <= {r["source_id"] for r in rows}
    assert not {i for ids in bad_inputs.expected.skipped.values() for i in ids} & {r["source_id"] for r in rows}
    assert_pairs_replay([r for r in rows if r["source_id"] in converted])


def test_above_max_skipped_fraction_the_job_fails_and_publishes_nothing(bad_inputs, tmp_path):
    total, skipped = bad_input_counts(bad_inputs.expected)
    threshold = skipped / total - 0.05
    uri = tmp_path / "pairs"
    shutil.copytree(bad_inputs.uri, uri)
    before = bad_inputs.manifest["version"]
    with pytest.raises(RuntimeError, match="max_skipped_fraction") as caught:
        run_job(bad_inputs.source, str(tmp_path), "pairs", max_pixels=MAX_PIXELS, max_skipped_fraction=threshold)
    assert f"{skipped} of {total} sources were skipped" in str(caught.value)
    assert versions.published_versions(str(uri)) == [before]
    assert latest(str(uri)) == before
    assert [p for p in uri.rglob(versions.MANIFEST)] == [uri / f"v={before}" / versions.MANIFEST]


@pytest.fixture
def no_work(monkeypatch):
    """Fails the test if the job gets as far as building its Ray pipeline."""

    def forbidden(*args, **kwargs):
        raise AssertionError("the job started work before failing")

    monkeypatch.setattr(job, "shard_plan", forbidden)


def test_an_empty_source_folder_fails_before_any_work_naming_it(tmp_path, no_work):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no images here")
    with pytest.raises(StorageError, match=f"^{tmp_path / 'empty'}: no images"):
        run_job(str(tmp_path / "empty"), str(tmp_path / "out"), "pairs")
    assert not (tmp_path / "out").exists()


def test_a_missing_source_folder_fails_before_any_work_naming_it(tmp_path, no_work):
    missing = tmp_path / "missing"
    with pytest.raises(StorageError, match=f"^{missing}: no such file or directory$"):
        run_job(str(missing), str(tmp_path / "out"), "pairs")
    assert not (tmp_path / "out").exists()


def test_a_missing_source_bucket_fails_before_any_work_naming_it(tmp_path, s3_endpoint, no_work):
    with pytest.raises(StorageError, match="^s3://bucket-does-not-exist-0/clean: no such bucket$"):
        run_job("s3://bucket-does-not-exist-0/clean", str(tmp_path / "out"), "pairs")


def test_a_missing_output_bucket_fails_before_any_work_naming_it(photo_folder, s3_endpoint, no_work):
    with pytest.raises(StorageError, match="^s3://bucket-does-not-exist-0/datasets/pairs: no such bucket$"):
        run_job(str(photo_folder), "s3://bucket-does-not-exist-0/datasets", "pairs")


def test_an_unknown_recipe_fails_before_any_work(photo_folder, tmp_path, no_work):
    with pytest.raises(ValueError, match="unknown recipe or set 'hazy'"):
        run_job(str(photo_folder), str(tmp_path / "out"), "pairs", recipes="noise25,hazy")
    assert not (tmp_path / "out").exists()
