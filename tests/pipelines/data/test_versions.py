"""Publishing versions (create-only manifest, then LATEST by compare-and-swap) and reading them back, on local
folders and S3. Versions here are hand-made (a shard file and its manifest), so no Ray job is needed."""

from __future__ import annotations

import hashlib
import json
import os

import pytest

from pipelines.core import storage
from pipelines.core.storage import AlreadyExists, StorageError
from pipelines.data import versions

from ..conftest import latest, run_together

OLD, MID, NEW = "20260101T000000Z-aaaaaa", "20260201T000000Z-bbbbbb", "20260301T000000Z-cccccc"


def manifest_for(version: str, shards: dict[str, bytes], **extra) -> dict:
    return {"format": 1, "version": version, "counts": {"train": {"haze": len(shards)}, "val": {}, "test": {}},
            "skipped": {}, "converted": {},
            "shards": [{"path": name, "split": "train", "rows": 1, "sha256": hashlib.sha256(data).hexdigest()}
                       for name, data in shards.items()], **extra}


def write_version(dataset: str, version: str, *, publish: bool = True, **extra) -> dict:
    """Write one shard under ``v=<version>/`` and, with ``publish``, publish the version; return its manifest."""
    shards = {"part-train-00000.parquet": f"rows of {version}".encode()}
    for name, data in shards.items():
        storage.write_bytes(storage.join(dataset, f"v={version}", name), data)
    manifest = manifest_for(version, shards, **extra)
    if publish:
        versions.publish(dataset, version, manifest)
    return manifest


def delete_object(uri: str) -> None:
    if storage.is_s3(uri):
        bucket, key = uri.removeprefix("s3://").split("/", 1)
        storage.s3_client().delete_object(Bucket=bucket, Key=key)
    else:
        os.remove(uri)


def stored_manifest(dataset: str, version: str) -> dict:
    return json.loads(storage.read_bytes(storage.join(dataset, f"v={version}", versions.MANIFEST)))


@pytest.fixture
def dataset(root) -> str:
    return storage.join(root, "datasets", "pairs")


def test_a_published_version_is_readable_listed_and_latest(dataset):
    manifest = write_version(dataset, OLD)
    assert versions.read_manifest(dataset) == manifest
    assert versions.read_manifest(dataset, OLD) == manifest
    assert versions.read_manifest(dataset, f"v={OLD}") == manifest
    assert versions.published_versions(dataset) == [OLD]
    assert latest(dataset) == OLD


def test_latest_follows_the_newest_version_whatever_the_publishing_order(dataset):
    write_version(dataset, MID)
    write_version(dataset, NEW)
    write_version(dataset, OLD)  # e.g. a slow job that started first
    assert latest(dataset) == NEW
    assert versions.published_versions(dataset) == [OLD, MID, NEW]
    assert versions.read_manifest(dataset)["version"] == NEW


def test_publishing_a_version_twice_fails_and_keeps_the_first_manifest(dataset):
    first = write_version(dataset, MID, note="first")
    with pytest.raises(AlreadyExists):
        versions.publish(dataset, MID, {**first, "note": "second"})
    assert stored_manifest(dataset, MID)["note"] == "first"
    assert versions.read_manifest(dataset, MID) == first


def test_concurrent_publishers_of_one_version_leave_exactly_one_intact_manifest(dataset):
    shards = {"part-train-00000.parquet": b"shared rows"}
    storage.write_bytes(storage.join(dataset, f"v={MID}", "part-train-00000.parquet"),
                        shards["part-train-00000.parquet"])
    results = run_together(6, lambda i: versions.publish(dataset, MID, manifest_for(MID, shards, writer=i)))
    winners = [i for i, result in enumerate(results) if result is None]
    assert len(winners) == 1, results
    assert all(isinstance(r, AlreadyExists) for i, r in enumerate(results) if i != winners[0])
    assert versions.read_manifest(dataset, MID)["writer"] == winners[0]
    assert latest(dataset) == MID


def test_concurrent_publishers_of_different_versions_all_publish_and_latest_is_the_newest(dataset):
    names = [f"2026010{day}T000000Z-{day:06x}" for day in (4, 1, 7, 3, 9, 2)]
    for version in names:
        storage.write_bytes(storage.join(dataset, f"v={version}", "part-train-00000.parquet"), version.encode())
    manifests = {v: manifest_for(v, {"part-train-00000.parquet": v.encode()}) for v in names}
    results = run_together(len(names), lambda i: versions.publish(dataset, names[i], manifests[names[i]]))
    assert results == [None] * len(names)
    assert versions.published_versions(dataset) == sorted(names)
    assert all(versions.read_manifest(dataset, v) == manifests[v] for v in names)
    assert latest(dataset) == max(names)


def test_an_unpublished_version_does_not_exist_for_readers(dataset):
    write_version(dataset, OLD)
    write_version(dataset, NEW, publish=False)  # shards written, then the job died
    with pytest.raises(StorageError, match=f"v={NEW}: not a published version"):
        versions.read_manifest(dataset, NEW)
    with pytest.raises(StorageError, match=f"v={NEW}: not a published version"):
        versions.open_dataset(dataset, "train", version=NEW)
    assert versions.published_versions(dataset) == [OLD]
    assert latest(dataset) == OLD
    assert versions.read_manifest(dataset)["version"] == OLD


def test_a_dataset_without_any_published_version_is_refused(dataset):
    write_version(dataset, OLD, publish=False)
    with pytest.raises(StorageError, match="no published version"):
        versions.read_manifest(dataset)
    assert versions.published_versions(dataset) == []


def test_a_tampered_shard_is_refused_naming_it(dataset):
    write_version(dataset, OLD)
    shard = storage.join(dataset, f"v={OLD}", "part-train-00000.parquet")
    storage.write_bytes(shard, b"rows of someone else")
    with pytest.raises(ValueError, match="checksum mismatch") as caught:
        versions.read_manifest(dataset)
    assert str(caught.value).startswith(shard)
    with pytest.raises(ValueError, match="checksum mismatch"):
        versions.open_dataset(dataset, "train")
    assert versions.read_manifest(dataset, verify=False)["version"] == OLD  # the check is what refuses it


def test_a_missing_shard_is_refused_naming_it(dataset):
    write_version(dataset, OLD)
    shard = storage.join(dataset, f"v={OLD}", "part-train-00000.parquet")
    delete_object(shard)
    with pytest.raises(StorageError, match="part-train-00000.parquet"):
        versions.read_manifest(dataset)


def test_a_manifest_of_another_version_is_refused(dataset):
    manifest = write_version(dataset, OLD, publish=False)
    versions.publish(dataset, OLD, {**manifest, "version": MID})
    with pytest.raises(ValueError, match="malformed .*version mismatch"):
        versions.read_manifest(dataset, OLD)


def test_open_dataset_refuses_an_unknown_split(dataset):
    write_version(dataset, OLD)
    with pytest.raises(ValueError, match="split must be one of train, val, test"):
        versions.open_dataset(dataset, "validation")


def test_remove_unpublished_deletes_exactly_the_unpublished_versions(dataset):
    kept = {v: write_version(dataset, v) for v in (OLD, NEW)}
    write_version(dataset, MID, publish=False)
    write_version(dataset, "20260401T000000Z-dddddd", publish=False)
    assert versions.remove_unpublished(dataset) == [MID, "20260401T000000Z-dddddd"]
    remaining = {f.uri.removeprefix(dataset.rstrip("/") + "/") for f in storage.list_files(dataset)}
    assert remaining == {"LATEST"} | {f"v={v}/{name}" for v in kept for name in
                                      ("manifest.json", "part-train-00000.parquet")}
    assert all(versions.read_manifest(dataset, v) == m for v, m in kept.items())
    assert latest(dataset) == NEW
    assert versions.remove_unpublished(dataset) == []
