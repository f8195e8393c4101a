"""The synthesis job refuses unusable inputs and outputs before any work starts (no Ray needed)."""

from __future__ import annotations

import pytest

from pipelines.core.storage import StorageError
from pipelines.data import job

from .conftest import run_job


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
