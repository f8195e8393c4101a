"""The training pipeline's pieces, one at a time: the LR schedule, the DeepSpeed config, batch decoding,
validation, MLflow tracking (against a real server), the online data stream and the driver's checks.

Everything here runs in seconds; the whole job end to end is ``test_train_job.py``.
"""

from __future__ import annotations

import hashlib
import math
import shutil
import uuid
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pytest
import torch

import cpl_model
from pipelines.core import tracking
from pipelines.core.config import load_config
from pipelines.core.tracking import LOCAL_TRACKING_URI
from pipelines.data import job, online, shards, sources, synthesis, versions
from pipelines.training import driver, loop, validation
from pipelines.training.config import TrainConfig, tracking_uri

from .conftest import REPO_ROOT, free_port, synthesis_config, write_photo_folder

COMPOSITE = "low_light+haze+rain"


def train_config(*overrides: str) -> TrainConfig:
    return load_config(TrainConfig, None, list(overrides))


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


# --- warmup_cosine -----------------------------------------------------------------------------------

def test_warmup_ramps_linearly_and_reaches_one_on_its_last_step():
    factor = loop.warmup_cosine(warmup=10, total=100, floor=0.1)
    ramp = [factor(step) for step in range(10)]
    assert ramp[-1] == pytest.approx(1.0)
    assert np.diff(ramp) == pytest.approx(np.full(9, 0.1))  # equal increments: linear
    assert 0 < ramp[0] < ramp[-1]


def test_after_warmup_the_cosine_decays_monotonically_to_the_floor_and_stays_there():
    factor = loop.warmup_cosine(warmup=10, total=100, floor=0.1)
    assert factor(10) == pytest.approx(1.0)
    decay = [factor(step) for step in range(10, 101)]
    assert (np.diff(decay) <= 1e-12).all()  # non-increasing
    assert factor(55) == pytest.approx(0.1 + 0.9 * 0.5)  # half-way through the decay: half-way down
    assert factor(100) == pytest.approx(0.1)
    assert [factor(step) for step in (101, 150, 10_000)] == pytest.approx([0.1] * 3)


def test_without_warmup_the_schedule_starts_at_one():
    factor = loop.warmup_cosine(warmup=0, total=20, floor=0.0)
    assert factor(0) == pytest.approx(1.0)
    assert factor(20) == pytest.approx(0.0)


# --- deepspeed_config --------------------------------------------------------------------------------

def test_deepspeed_global_batch_is_micro_batch_times_accumulation_times_world_size():
    config = train_config("data.batch_size=3", "optim.accumulation=4")
    ds_config = loop.deepspeed_config(config, world_size=2, on_gpu=False)
    assert ds_config["train_micro_batch_size_per_gpu"] == 3
    assert ds_config["gradient_accumulation_steps"] == 4
    assert ds_config["train_batch_size"] == 3 * 4 * 2


@pytest.mark.parametrize(("precision", "on_gpu", "bf16"), [
    ("auto", True, True), ("auto", False, False),
    ("fp32", True, False), ("fp32", False, False),
    ("bf16", True, True), ("bf16", False, True),
])
def test_precision_auto_means_bf16_on_gpu_only_and_explicit_choices_are_honoured(precision, on_gpu, bf16):
    config = train_config(f"optim.precision={precision}")
    assert loop.deepspeed_config(config, world_size=1, on_gpu=on_gpu)["bf16"] == {"enabled": bf16}


def test_zero_stage_and_gradient_clipping_reach_deepspeed():
    config = TrainConfig.model_validate({"optim": {"zero_stage": 2, "grad_clip": 0.25}})
    ds_config = loop.deepspeed_config(config, world_size=1, on_gpu=False)
    assert ds_config["zero_optimization"] == {"stage": 2}
    assert ds_config["gradient_clipping"] == 0.25


# --- to_tensors and metric_name ------------------------------------------------------------------------

def test_to_tensors_decodes_raw_uint8_rows_into_exact_float_images_and_keeps_the_tasks():
    rng = np.random.default_rng(0)
    height, width = 5, 7
    degraded = rng.integers(0, 256, (3, height, width, 3), dtype=np.uint8)
    clean = rng.integers(0, 256, (3, height, width, 3), dtype=np.uint8)
    degraded[0, 0, 0] = (0, 255, 128)  # both ends of the range
    batch = {"degraded": np.array([image.tobytes() for image in degraded], dtype=object),
             "clean": np.array([image.tobytes() for image in clean], dtype=object),
             "task": np.array(["noise", COMPOSITE, "haze"], dtype=object),
             "height": np.full(3, height, np.int32), "width": np.full(3, width, np.int32)}
    out = loop.to_tensors(batch)
    assert out["task"] == ["noise", COMPOSITE, "haze"]
    for name, images in (("degraded", degraded), ("clean", clean)):
        tensor = out[name]
        assert tensor.dtype == torch.float32 and tensor.shape == (3, 3, height, width)
        assert tensor.min() >= 0 and tensor.max() <= 1
        back = (tensor * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
        np.testing.assert_array_equal(back, images)
    assert out["degraded"][0, :, 0, 0].tolist() == [0.0, 1.0, pytest.approx(128 / 255)]


def test_metric_name_turns_composite_labels_into_names_mlflow_accepts():
    from mlflow.exceptions import MlflowException
    from mlflow.utils.validation import _validate_metric_name

    assert tracking.metric_name(COMPOSITE) == "low_light-haze-rain"
    assert tracking.metric_name("noise") == "noise"
    with pytest.raises(MlflowException):
        _validate_metric_name(f"val/{COMPOSITE}/psnr")  # why the mapping exists
    _validate_metric_name(f"val/{tracking.metric_name(COMPOSITE)}/psnr")


# --- validate ----------------------------------------------------------------------------------------

def hand_made_pairs(side: int = 32) -> dict:
    """Six real-looking pairs: smooth clean images, noisy degraded ones, three tasks (one composite)."""
    rng = np.random.default_rng(1)
    ramp = np.linspace(0, 1, side)
    clean = []
    for index in range(6):
        image = np.stack([np.outer(ramp, ramp) * (index + 1) / 6, np.outer(1 - ramp, ramp), np.outer(ramp, 1 - ramp)],
                         axis=-1)
        clean.append((image * 255).astype(np.uint8))
    clean = np.stack(clean)
    noise = rng.normal(0, 12 + 4 * np.arange(6)[:, None, None, None], clean.shape)
    degraded = np.clip(clean + noise, 0, 255).astype(np.uint8)
    return {"degraded": degraded, "clean": clean, "task": ["noise", "haze", COMPOSITE, "noise", COMPOSITE, "haze"]}


def as_tensor(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(images).permute(0, 3, 1, 2).float().div(255)


@pytest.fixture(scope="module")
def validated() -> tuple[torch.nn.Module, dict, dict[str, float]]:
    """The tiny sparse model validated once on the hand-made pairs, in chunks of 4 (so 6 pairs span two)."""
    model, pairs = cpl_model.build_model("tiny"), hand_made_pairs()
    model.eval()
    return model, pairs, validation.validate(model, pairs, torch.device("cpu"), torch.float32, batch_size=4)


def test_validate_reports_overall_and_per_task_metrics_under_mlflow_safe_names(validated):
    _, _, metrics = validated
    for prefix in ("val/", "val/noise/", "val/haze/", "val/low_light-haze-rain/"):
        for name in ("psnr", "ssim", "psnr_y", "ssim_y", "input_psnr", "input_ssim", "input_psnr_y", "input_ssim_y"):
            assert math.isfinite(metrics[prefix + name]), prefix + name
    assert not any("+" in key for key in metrics)
    assert all(isinstance(value, float) and math.isfinite(value) for value in metrics.values())


def test_validate_input_metrics_are_those_of_the_degraded_input_computed_directly(validated):
    _, pairs, metrics = validated
    direct = cpl_model.psnr(as_tensor(pairs["degraded"]), as_tensor(pairs["clean"]))
    assert metrics["val/input_psnr"] == pytest.approx(direct.mean().item(), rel=1e-5)
    rows = [i for i, task in enumerate(pairs["task"]) if task == COMPOSITE]
    assert metrics["val/low_light-haze-rain/input_psnr"] == pytest.approx(direct[rows].mean().item(), rel=1e-5)
    baseline = cpl_model.image_metrics(as_tensor(pairs["degraded"]), as_tensor(pairs["clean"]))
    assert metrics["val/input_ssim_y"] == pytest.approx(baseline["ssim_y"].mean().item(), rel=1e-5)


def test_validate_router_usage_fractions_of_each_site_sum_to_one_overall_and_per_task(validated):
    _, _, metrics = validated
    totals: dict[tuple[str, ...], float] = defaultdict(float)
    for key, value in metrics.items():
        if key.startswith("val/usage/"):
            totals[tuple(key.split("/")[2:-1])] += value  # (site,) or (site, task)
    sites = {group[0] for group in totals}
    assert sites  # the sparse tiny model has prompt sites
    assert set(totals) == {(site,) for site in sites} | {(site, task) for site in sites
                                                         for task in ("noise", "haze", "low_light-haze-rain")}
    assert all(total == pytest.approx(1.0) for total in totals.values()), totals
    assert "val/router_entropy" in metrics


def test_validate_leaves_the_model_in_training_mode(validated):
    model, _, _ = validated
    assert model.training


def test_validate_on_identical_images_with_an_identity_model_reports_finite_psnr():
    model = cpl_model.build_model("tiny")
    torch.nn.init.zeros_(model.output.weight)  # the global residual alone: output == input
    pairs = hand_made_pairs()
    pairs = {**pairs, "degraded": pairs["clean"].copy()}
    metrics = validation.validate(model, pairs, torch.device("cpu"), torch.float32)
    assert all(math.isfinite(value) for value in metrics.values()), metrics
    assert metrics["val/psnr"] == metrics["val/input_psnr"] == 100.0
    assert metrics["val/ssim"] == pytest.approx(1.0)


# --- tracking: flatten, tracking_uri, check_reachable ---------------------------------------------------

def test_flatten_joins_nested_keys_and_json_encodes_non_strings():
    tree = {"run": {"name": "r1", "seed": 3, "storage": None},
            "model": {"overrides": {}, "identity_init": True, "size": {"depth": [1, 2]}},
            "optim": {"betas": [0.9, 0.999], "lr": 0.002}, "top": "plain"}
    assert tracking.flatten(tree) == {
        "run.name": "r1", "run.seed": "3", "run.storage": "null",
        "model.overrides": "{}", "model.identity_init": "true", "model.size.depth": "[1, 2]",
        "optim.betas": "[0.9, 0.999]", "optim.lr": "0.002", "top": "plain"}


def test_flatten_of_a_whole_train_config_gives_string_params_only():
    config = TrainConfig()
    flat = tracking.flatten(config.model_dump(mode="json"))
    assert all(isinstance(value, str) for value in flat.values())
    assert flat["optim.max_steps"] == str(config.optim.max_steps) and flat["model.preset"] == config.model.preset
    assert flat["data.synthesis.patch"] == str(config.data.synthesis.patch)


def test_the_environment_tracking_uri_wins_over_the_config(monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://env.example:5000")
    assert tracking_uri(train_config("tracking.uri=http://config.example:5000")) == "http://env.example:5000"


def test_the_config_tracking_uri_wins_over_the_local_default_and_http_is_untouched(monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert tracking_uri(train_config("tracking.uri=http://config.example:5000/")) == "http://config.example:5000/"


def test_without_env_or_config_the_local_sqlite_store_is_used_with_an_absolute_path(monkeypatch, tmp_path):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    expected = (tmp_path / LOCAL_TRACKING_URI.removeprefix("sqlite:///")).resolve()
    assert tracking_uri(TrainConfig()) == f"sqlite:///{expected}"


def test_a_relative_sqlite_path_becomes_absolute_and_an_absolute_one_stays(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///runs/store.db")
    assert tracking_uri(TrainConfig()) == f"sqlite:///{(tmp_path / 'runs' / 'store.db').resolve()}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/abs.db")
    assert tracking_uri(TrainConfig()) == f"sqlite:///{tmp_path}/abs.db"


def test_check_reachable_names_the_url_when_nothing_listens():
    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(ConnectionError, match=url.replace(".", r"\.")):
        tracking.check_reachable(url, timeout=5)


def test_check_reachable_passes_for_a_running_server(mlflow_server):
    tracking.check_reachable(mlflow_server)
    tracking.check_reachable(mlflow_server + "/")


def test_check_reachable_does_not_check_local_stores(tmp_path):
    tracking.check_reachable(f"sqlite:///{tmp_path}/missing/dir/mlflow.db")


# --- tracking against a real MLflow server ---------------------------------------------------------

def test_a_run_is_created_once_and_resumed_by_name(mlflow_server):
    from mlflow import MlflowClient

    experiment, name = unique("exp"), unique("run")
    params = {"optim.lr": "0.002", "model.preset": "tiny"}
    run_id, resumed = tracking.start_or_resume_run(mlflow_server, experiment, name, params, {"dataset": "d1"})
    assert not resumed
    again, resumed = tracking.start_or_resume_run(mlflow_server, experiment, name, params, {"dataset": "d1"})
    assert (again, resumed) == (run_id, True)
    client = MlflowClient(mlflow_server)
    run = client.get_run(run_id)
    assert run.data.params == params
    assert run.data.tags["dataset"] == "d1" and run.data.tags[tracking.RUN_NAME_TAG] == name
    runs = client.search_runs([client.get_experiment_by_name(experiment).experiment_id])
    assert [r.info.run_id for r in runs] == [run_id]
    other, resumed = tracking.start_or_resume_run(mlflow_server, experiment, unique("run"), params, {})
    assert other != run_id and not resumed


def test_resuming_with_a_changed_param_fails_naming_the_key(mlflow_server):
    experiment, name = unique("exp"), unique("run")
    tracking.start_or_resume_run(mlflow_server, experiment, name, {"optim.lr": "0.002", "seed": "0"}, {})
    with pytest.raises(ValueError, match=r"optim\.lr=0\.002, now 0\.01"):
        tracking.start_or_resume_run(mlflow_server, experiment, name, {"optim.lr": "0.01", "seed": "0"}, {})


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


def test_run_logger_logs_every_step_once_even_when_a_restart_flushes_overlapping_steps(mlflow_server):
    from mlflow import MlflowClient

    run_id, _ = tracking.start_or_resume_run(mlflow_server, unique("exp"), unique("run"), {}, {})
    first = tracking.RunLogger(mlflow_server, run_id)
    first.flush([(step, {"train/loss": 1.0 / step}) for step in (1, 2, 3)])
    first.flush([(step, {"train/loss": 1.0 / step}) for step in (2, 3)])  # already logged: nothing
    restart = tracking.RunLogger(mlflow_server, run_id)  # a new process, knowing only MLflow
    assert restart.logged_through == 3
    # The replay's values differ, so a second copy of a step could not hide as a duplicate row.
    restart.flush([(step, {"train/loss": 10.0 + step, "val/psnr": 20.0 + step}) for step in (2, 3, 4, 5)])
    history = MlflowClient(mlflow_server).get_metric_history(run_id, "train/loss")
    assert sorted((m.step, m.value) for m in history) == [(1, 1.0), (2, 0.5), (3, pytest.approx(1 / 3)),
                                                          (4, 14.0), (5, 15.0)]
    psnr = MlflowClient(mlflow_server).get_metric_history(run_id, "val/psnr")
    assert sorted(m.step for m in psnr) == [4, 5]


# --- online_dataset and validation_pairs --------------------------------------------------------------

@pytest.fixture
def few_photos(tmp_path) -> Path:
    """Four real photos: enough for every property, cheap for a 2-CPU Ray."""
    folder = tmp_path / "photos"
    write_photo_folder(folder, count=4)
    return folder


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


def test_validation_pairs_apply_every_recipe_to_crops_of_each_val_source_only(photo_folder):
    config = synthesis_config(val_fraction=0.3, test_fraction=0.3, patch=48)
    pairs = synthesis.validation_pairs(str(photo_folder), config, crops_per_recipe=2)
    contents = {path.name: hashlib.sha256(path.read_bytes()).hexdigest() for path in photo_folder.iterdir()}
    val_sources = sorted(name for name, content in contents.items()
                         if synthesis.split_of(content, config.val_fraction, config.test_fraction) == "val")
    assert val_sources and len(val_sources) < len(contents)  # the check below means something
    recipes = [recipe.name for recipe in config.resolved_recipes()]
    assert sorted(pairs["sample_id"]) == sorted(f"{source}#{crop}/{recipe}" for source in val_sources
                                                for crop in range(2) for recipe in recipes)
    count = len(val_sources) * 2 * len(recipes)
    assert pairs["degraded"].shape == pairs["clean"].shape == (count, 48, 48, 3)
    assert pairs["degraded"].dtype == pairs["clean"].dtype == np.uint8
    assert Counter(pairs["recipe"]) == {recipe: len(val_sources) * 2 for recipe in recipes}
    tasks = {recipe.name: recipe.task for recipe in config.resolved_recipes()}
    assert pairs["task"] == [tasks[recipe] for recipe in pairs["recipe"]]
    # Every recipe degrades the same clean crop: the clean patch depends on source and crop only.
    by_crop = defaultdict(set)
    for sample_id, clean in zip(pairs["sample_id"], pairs["clean"], strict=True):
        by_crop[sample_id.split("/")[0]].add(clean.tobytes())
    assert all(len(cleans) == 1 for cleans in by_crop.values())
    assert len({next(iter(c)) for c in by_crop.values()}) == len(by_crop)

    again = synthesis.validation_pairs(str(photo_folder), config, crops_per_recipe=2)
    assert again["sample_id"] == pairs["sample_id"] and again["task"] == pairs["task"]
    np.testing.assert_array_equal(again["degraded"], pairs["degraded"])
    np.testing.assert_array_equal(again["clean"], pairs["clean"])


def test_validation_pairs_from_an_empty_val_split_fail_naming_the_split(few_photos):
    config = synthesis_config(val_fraction=0.0, test_fraction=0.3)
    with pytest.raises(ValueError, match="val split"):
        synthesis.validation_pairs(str(few_photos), config)


def test_read_unit_of_a_folder_gives_one_row_per_file_with_its_relative_id_and_content_hash(few_photos):
    units = sources.source_units(str(few_photos))
    assert len(units) == 4
    for unit in units:
        read = sources.read_unit(str(few_photos), unit)
        data = Path(unit).read_bytes()
        assert read == {"id": [Path(unit).name], "sha256": [hashlib.sha256(data).hexdigest()], "bytes": [data]}


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


# --- latest_checkpoint_step and preflight ------------------------------------------------------------

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


# --- shipped configs ---------------------------------------------------------------------------

def test_the_quickstart_config_spells_out_exactly_the_defaults():
    assert load_config(TrainConfig, REPO_ROOT / "configs" / "train_quickstart.yaml") == TrainConfig()


@pytest.mark.parametrize("name", ["train_three_task", "train_five_task", "train_cdd11"])
def test_every_shipped_training_config_is_valid_and_follows_the_promptir_recipe(name):
    config = load_config(TrainConfig, REPO_ROOT / "configs" / f"{name}.yaml")
    assert config.optim.lr == 2e-4 and config.data.batch_size * config.scaling.workers == 32
    assert config.scaling.use_gpu and config.model.preset == "full"
    assert 0 < config.optim.warmup_steps < config.optim.max_steps
