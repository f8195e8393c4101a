"""The training driver's pieces, called directly: which dataset version a resumed run trains on, the online
stream a (resumed) run gets, the published validation set, the latest checkpoint, and the preflight checks.
The whole job end to end is ``test_train.py``.
"""

from __future__ import annotations

import re
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from pipelines.core import tracking
from pipelines.core.config import ConfigError
from pipelines.data import job, shards, sources, versions
from pipelines.training import driver
from pipelines.training.config import TrainConfig

from ..conftest import free_port, train_config, unique


def test_a_resumed_run_keeps_the_dataset_version_it_started_with_after_latest_moves(local_dataset, mlflow_server,
                                                                                    tmp_path):
    dataset = str(tmp_path / "pairs")
    shutil.copytree(local_dataset.uri, dataset)
    first = local_dataset.manifest["version"]
    experiment, name = unique("exp"), unique("run")
    tracking.start_or_resume_run(mlflow_server, experiment, name, {},
                                 {"dataset": dataset, "dataset.version": first})
    newer = job.new_version()
    shutil.copytree(Path(dataset, f"v={first}"), Path(dataset, f"v={newer}"),
                    ignore=shutil.ignore_patterns(versions.MANIFEST))
    versions.publish(dataset, newer, {**local_dataset.manifest, "version": newer})
    assert versions.resolve_version(dataset) == newer  # LATEST has moved

    config = train_config(f"data.dataset={dataset}", f"tracking.experiment={experiment}")
    assert driver.dataset_version(config, mlflow_server, name) == first  # the resumed run: its own version
    assert driver.dataset_version(config, mlflow_server, unique("run")) == newer  # a new run: LATEST
    pinned = train_config(f"data.dataset={dataset}", f"tracking.experiment={experiment}", f"data.version={newer}")
    assert driver.dataset_version(pinned, mlflow_server, name) == newer  # an explicit version is taken as given
    other = unique("run")  # a run of the same name that trained on another dataset: its tag does not apply
    tracking.start_or_resume_run(mlflow_server, experiment, other, {},
                                 {"dataset": local_dataset.uri, "dataset.version": first})
    assert driver.dataset_version(config, mlflow_server, other) == newer


def stream_config(*overrides: str) -> TrainConfig:
    """One 48-px crop per photo per pass, everything in train, one sample per step."""
    return train_config("data.synthesis.recipes=noise25", "data.synthesis.patch=48",
                        "data.synthesis.crops_per_image=1", "data.synthesis.val_fraction=0.0",
                        "data.synthesis.test_fraction=0.0", "data.batch_size=1", "optim.warmup_steps=0",
                        "optim.max_steps=8", *overrides)


def test_a_resumed_online_stream_starts_at_the_pass_its_checkpoint_reached(ray_cluster, few_photos):
    """4 photos, 1 crop each: a pass is 4 samples, so step 4 (of 8, 1 sample each) has used pass 0."""
    stream = driver.online_training_stream(str(few_photos), stream_config(), samples_per_step=1, resume_step=4)
    crops = Counter(int(row["crop"]) for row in stream.take_all())
    assert min(crops) == 1  # pass 0 is not replayed
    assert sum(crops.values()) >= 4  # enough for the 4 steps left


def test_a_resumed_online_stream_from_a_packed_table_starts_where_the_same_photos_in_a_folder_do(
        ray_cluster, few_photos, tmp_path):
    sources.pack(str(few_photos), str(tmp_path / "packed"), rows_per_file=4)  # one Parquet file, 4 photos
    stream = driver.online_training_stream(str(tmp_path / "packed"), stream_config(), samples_per_step=1,
                                             resume_step=4)
    assert min(int(row["crop"]) for row in stream.take_all()) == 1  # the folder's stream starts at pass 1


@pytest.mark.parametrize("max_pairs", [3, 1000])
def test_published_validation_holds_the_first_max_pairs_of_the_val_split_by_sample_id(local_dataset, max_pairs):
    config = train_config(f"data.dataset={local_dataset.uri}", f"validation.max_pairs={max_pairs}")
    validation = driver.published_validation(config, local_dataset.manifest["version"])
    everything = sorted(versions.open_dataset(local_dataset.uri, "val").take_all(), key=lambda r: r["sample_id"])
    expected = everything[:max_pairs]
    assert 3 < len(everything) < 1000  # so that one case cuts the split and the other takes all of it
    assert validation["sample_id"] == [row["sample_id"] for row in expected]
    assert validation["task"] == [row["task"] for row in expected]
    rows = {column: [row[column] for row in expected] for column in ("degraded", "clean", "height", "width")}
    np.testing.assert_array_equal(validation["degraded"], shards.pair_images(rows, "degraded"))
    np.testing.assert_array_equal(validation["clean"], shards.pair_images(rows, "clean"))


def test_latest_checkpoint_step_is_zero_for_a_run_without_a_folder(tmp_path):
    assert driver.latest_checkpoint_step(str(tmp_path / "runs"), "never-ran") == 0


def test_latest_checkpoint_step_is_the_largest_step_folder_of_the_run(tmp_path):
    storage_uri = tmp_path / "runs"
    for step in (4, 12, 8):
        folder = storage_uri / "r1" / f"step-{step:08d}"
        folder.mkdir(parents=True)
        (folder / "model.pt").write_bytes(b"weights")
    (storage_uri / "r1" / "step-notes").mkdir()
    (storage_uri / "r1" / "step-notes" / "x.txt").write_text("not a checkpoint")
    other = storage_uri / "r2" / "step-00000099"  # another run's checkpoint
    other.mkdir(parents=True)
    (other / "model.pt").write_bytes(b"weights")
    assert driver.latest_checkpoint_step(str(storage_uri), "r1") == 12


def test_latest_checkpoint_step_ignores_a_run_name_that_looks_like_a_checkpoint_folder(tmp_path):
    folder = tmp_path / "runs" / "step-99" / "step-00000004"
    folder.mkdir(parents=True)
    (folder / "model.pt").write_bytes(b"weights")
    assert driver.latest_checkpoint_step(str(tmp_path / "runs"), "step-99") == 4


@pytest.fixture
def local_job(monkeypatch, tmp_path):
    """Overrides for a local job that preflight can check without any server."""
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return ["ray.num_cpus=2", f"run.storage={tmp_path / 'runs'}", f"tracking.uri=sqlite:///{tmp_path}/mlflow.db"]


def test_preflight_rejects_local_workers_that_leave_no_cpu_for_data(local_job):
    config = train_config(*local_job, "scaling.workers=2", "scaling.cpus_per_worker=1")
    with pytest.raises(ValueError, match="scaling"):
        driver.preflight(config)


def test_preflight_accepts_workers_that_leave_a_cpu_for_data(local_job):
    driver.preflight(train_config(*local_job, "scaling.workers=1", "scaling.cpus_per_worker=1"))
    driver.preflight(train_config(*local_job, "scaling.workers=2", "scaling.cpus_per_worker=0.5"))


def test_preflight_names_an_unreachable_tracking_server(local_job):
    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(ConnectionError, match=url.replace(".", r"\.")):
        driver.preflight(train_config(*local_job, f"tracking.uri={url}"))


def test_preflight_names_missing_vgg_weights_before_anything_starts(local_job, tmp_path):
    missing = str(tmp_path / "vgg19.pth")
    config = train_config(*local_job, "loss.cpr.features=vgg19", f"loss.cpr.vgg_weights={missing}")
    with pytest.raises(ConfigError, match=f"^config error: loss.cpr.vgg_weights: {re.escape(missing)}: no such file$"):
        driver.preflight(config)


def test_preflight_returns_the_pinned_init_weights_and_names_a_reference_that_names_nothing(local_job, tmp_path):
    import cpl_model
    from pipelines.core.references import ModelNotFound

    model = cpl_model.build_model("tiny", "dense", seed=5)
    cpl_model.save_checkpoint(model, tmp_path / "start" / cpl_model.WEIGHTS)
    init = driver.preflight(train_config(*local_job, f"model.init={tmp_path / 'start'}"))
    assert init.pinned == str(tmp_path / "start" / cpl_model.WEIGHTS)
    assert init.state_dict.keys() == model.state_dict().keys()
    assert driver.preflight(train_config(*local_job)) is None
    missing = str(tmp_path / "nowhere")
    with pytest.raises(ModelNotFound, match=f"^model.init: {re.escape(missing)}: no checkpoint"):
        driver.preflight(train_config(*local_job, f"model.init={missing}"))


def test_the_plan_shows_the_model_a_run_starts_from():
    reference = "models:/cpl-restore@champion"
    assert driver.plan(train_config(f"model.init={reference}"))["init"] == reference
    assert driver.plan(train_config())["init"] == "none (from scratch)"
