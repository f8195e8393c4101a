"""The storage layer on local paths and on a real S3-API server (moto): atomic writes, create-only writes,
the compare-and-swap pointer, listing, and errors that name the URI."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipelines.core import storage
from pipelines.core.storage import AlreadyExists, StorageError

from ..conftest import run_together


def test_write_then_read_returns_the_same_bytes(root):
    uri = storage.join(root, "a", "b", "blob.bin")
    data = bytes(range(256)) * 41
    storage.write_bytes(uri, data)
    assert storage.read_bytes(uri) == data
    assert storage.exists(uri)


def test_write_replaces_the_previous_content(root):
    uri = storage.join(root, "blob.bin")
    storage.write_bytes(uri, b"first version, longer")
    storage.write_bytes(uri, b"second")
    assert storage.read_bytes(uri) == b"second"


def test_an_empty_object_round_trips(root):
    uri = storage.join(root, "empty")
    storage.write_bytes(uri, b"")
    assert storage.read_bytes(uri) == b""
    assert storage.exists(uri)


def test_a_local_write_leaves_no_partial_file_behind(tmp_path):
    storage.write_bytes(str(tmp_path / "d" / "x.bin"), b"data")
    assert [p.name for p in (tmp_path / "d").iterdir()] == ["x.bin"]


def test_create_only_writes_once_then_refuses_without_changing_the_content(root):
    uri = storage.join(root, "v=1", "manifest.json")
    storage.create_only(uri, b"the first")
    with pytest.raises(AlreadyExists, match="already exists") as caught:
        storage.create_only(uri, b"the second")
    assert str(caught.value).startswith(uri)
    assert storage.read_bytes(uri) == b"the first"


def test_create_only_refuses_an_object_written_by_a_plain_write(root):
    uri = storage.join(root, "x")
    storage.write_bytes(uri, b"plain")
    with pytest.raises(AlreadyExists):
        storage.create_only(uri, b"create")
    assert storage.read_bytes(uri) == b"plain"


def test_concurrent_create_only_has_exactly_one_winner_whose_content_stays(root):
    uri = storage.join(root, "manifest.json")
    results = run_together(8, lambda i: storage.create_only(uri, f"writer {i}".encode()))
    winners = [i for i, result in enumerate(results) if result is None]
    assert len(winners) == 1, results
    assert all(isinstance(result, AlreadyExists) for i, result in enumerate(results) if i != winners[0])
    assert storage.read_bytes(uri) == f"writer {winners[0]}".encode()


def test_the_pointer_moves_forward_only_and_reports_whether_it_moved(root):
    uri = storage.join(root, "LATEST")
    assert storage.advance_pointer(uri, "20260101T000000Z-aaaaaa") is True  # absent -> set
    assert storage.advance_pointer(uri, "20260301T000000Z-aaaaaa") is True
    assert storage.advance_pointer(uri, "20260201T000000Z-ffffff") is False  # older: stays
    assert storage.advance_pointer(uri, "20260301T000000Z-aaaaaa") is False  # same: stays
    assert storage.read_bytes(uri).decode().strip() == "20260301T000000Z-aaaaaa"


def test_concurrent_pointer_updates_end_at_the_largest_value(root):
    uri = storage.join(root, "LATEST")
    values = [f"20260101T0000{second:02d}Z-{second:06x}" for second in (7, 3, 11, 0, 9, 5, 1, 10)]
    results = run_together(len(values), lambda i: storage.advance_pointer(uri, values[i], timeout=60))
    assert not [r for r in results if isinstance(r, Exception)], results
    assert storage.read_bytes(uri).decode().strip() == max(values)
    assert results[values.index(max(values))] is True  # the largest value always lands


def test_a_held_local_pointer_lock_makes_the_update_time_out_naming_the_uri(tmp_path):
    uri = str(tmp_path / "LATEST")
    (tmp_path / ".LATEST.lock").write_bytes(b"")  # another writer is mid-update
    with pytest.raises(StorageError, match="could not update the pointer") as caught:
        storage.advance_pointer(uri, "v2", timeout=0.3)
    assert str(caught.value).startswith(uri)
    assert not Path(uri).exists()


def test_list_files_is_recursive_sorted_filtered_by_suffix_and_skips_hidden_files(root):
    for name in ("b.png", "a/z.JPG", "a/b/c.jpeg", "notes.txt", ".hidden.png", "a/.partial.jpg"):
        storage.write_bytes(storage.join(root, *name.split("/")), b"12345")
    everything = storage.list_files(root)
    assert [f.uri for f in everything] == sorted(f.uri for f in everything)
    assert {f.uri.removeprefix(root.rstrip("/") + "/") for f in everything} == {
        "a/b/c.jpeg", "a/z.JPG", "b.png", "notes.txt"}
    images = storage.list_files(root, (".png", ".jpg", ".jpeg"))
    assert [f.uri.removeprefix(root.rstrip("/") + "/") for f in images] == ["a/b/c.jpeg", "a/z.JPG", "b.png"]
    assert all(f.size == 5 for f in images)


def test_listing_a_missing_prefix_is_empty(root):
    assert storage.list_files(storage.join(root, "nothing-here")) == []


def test_delete_tree_removes_the_subtree_only_and_tolerates_a_missing_one(root):
    keep, drop = storage.join(root, "keep", "x"), storage.join(root, "drop", "y", "z")
    storage.write_bytes(keep, b"k")
    storage.write_bytes(drop, b"d")
    storage.delete_tree(storage.join(root, "drop"))
    assert not storage.exists(drop)
    assert storage.read_bytes(keep) == b"k"
    storage.delete_tree(storage.join(root, "never-existed"))


def test_reading_a_missing_object_raises_a_storage_error_naming_the_uri(root):
    uri = storage.join(root, "missing.json")
    with pytest.raises(StorageError) as caught:
        storage.read_bytes(uri)
    assert str(caught.value).startswith(uri)


def test_check_writable_passes_on_a_writable_root_and_leaves_nothing(root):
    storage.check_writable(root)
    assert storage.list_files(root) == []


def test_check_writable_on_a_missing_bucket_names_the_uri_and_the_cause(s3_endpoint):
    uri = "s3://bucket-does-not-exist-0/datasets/pairs"
    with pytest.raises(StorageError) as caught:
        storage.check_writable(uri)
    assert str(caught.value) == f"{uri}: no such bucket"


def test_writing_into_a_missing_bucket_raises_a_storage_error_naming_the_uri(s3_endpoint):
    uri = "s3://bucket-does-not-exist-0/x"
    with pytest.raises(StorageError) as caught:
        storage.write_bytes(uri, b"x")
    assert str(caught.value).startswith(uri) and "NoSuchBucket" in str(caught.value)


def test_check_writable_under_a_file_names_the_uri(tmp_path):
    (tmp_path / "file").write_bytes(b"")
    with pytest.raises(StorageError, match=str(tmp_path / "file" / "sub")):
        storage.check_writable(str(tmp_path / "file" / "sub"))


def test_check_readable_on_a_missing_local_folder_names_it(tmp_path):
    missing = str(tmp_path / "no-such-folder")
    with pytest.raises(StorageError) as caught:
        storage.check_readable(missing)
    assert str(caught.value) == f"{missing}: no such file or directory"


def test_check_readable_on_a_missing_bucket_names_it(s3_endpoint):
    with pytest.raises(StorageError, match="^s3://bucket-does-not-exist-0/clean: no such bucket$"):
        storage.check_readable("s3://bucket-does-not-exist-0/clean")


def test_check_readable_passes_on_an_existing_bucket_and_folder(bucket, tmp_path):
    storage.check_readable(f"s3://{bucket}/anything")
    storage.check_readable(str(tmp_path))


def test_join_and_filesystem_paths():
    assert storage.join("s3://b/x/", "y", "z.json") == "s3://b/x/y/z.json"
    assert storage.join("/data/x", "y") == "/data/x/y"
    assert storage.filesystem("s3://bucket/a/b/")[1] == "bucket/a/b"
    assert storage.filesystem("relative/dir")[1] == str(Path("relative/dir").resolve())
