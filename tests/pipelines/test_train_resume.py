"""A training run interrupted both ways, through its CLI: its driver killed with everything it started
(the rerun resumes), then one Ray Train worker killed (the run continues); on a mix of two ingested datasets,
one of which publishes a new version while the run is down."""

from __future__ import annotations

import re
from pathlib import Path
from types import SimpleNamespace

import pytest

from .conftest import latest, new_bucket
from .train_runs import (
    FAST,
    checkpoint_steps,
    finish,
    kill_a_worker,
    kill_run,
    logged_steps,
    runs_named,
    start_train,
    wait_for_checkpoint,
)

pytestmark = pytest.mark.slow

INTERRUPTED_STEPS = 30


def ingest_miniatures(base: Path, rain_out: str) -> dict[str, str]:
    """PromptIR's training sets in miniature, from their release layouts: Rain100L pairs (published under
    ``rain_out``) and clean images for online noise (under ``base``); returns the dataset URIs."""
    import cv2

    from .conftest import photo_halves

    photos = list(photo_halves(8, 96).values())
    for folder in ("rain/rainy", "rain/gt", "clean/BSD400"):
        (base / folder).mkdir(parents=True)
    for n, photo in enumerate(photos[:4]):
        cv2.imwrite(str(base / f"rain/gt/norain-{n}.png"), photo)
        cv2.imwrite(str(base / f"rain/rainy/rain-{n}.png"), (photo * 0.7).astype("uint8"))
    for n, photo in enumerate(photos[4:]):
        cv2.imwrite(str(base / f"clean/BSD400/{n}.png"), photo)
    uris = {"rain": f"{rain_out}/rain", "clean": str(base / "datasets" / "clean")}
    for layout, name in (("rain100l", "rain"), ("clean", "clean")):
        ingest(base / name, uris[name], layout)
    return uris


def ingest(source: Path, dataset: str, layout: str) -> dict:
    from pipelines.data import ingestion

    out, name = dataset.rsplit("/", 1)
    config = ingestion.IngestConfig(source=str(source), output={"uri": out, "name": name},
                                    ingest={"layout": layout, "min_side": 64, "val_fraction": 0.4})
    return ingestion.ingest(config.source, config.output, config.ingest, config.model_dump(mode="json"))


@pytest.fixture(scope="module")
def interrupted(train_env, ray_cluster, tmp_path_factory) -> SimpleNamespace:
    """One run interrupted both ways, read by the tests below (a run each would cost a minute more).

    It trains on a mix of two ingested datasets (Rain100L pairs in S3, repeated; clean images noised online).
    Its driver is killed with everything it started once it has registered a checkpoint; a new version of the
    rain set is then published, and the rerun resumes from the newest checkpoint registered by then (steps run
    on while the kill lands), on the versions it started with, and loses one Ray Train worker once it has
    registered a checkpoint of its own. INTERRUPTED_STEPS leaves steps to go after each kill even on an idle
    machine. With an EMA, whose state the resumed run takes from the checkpoint.
    """
    base = tmp_path_factory.mktemp("interrupted")
    datasets = ingest_miniatures(base, f"s3://{new_bucket()}/datasets")
    started_on = {name: latest(uri) for name, uri in datasets.items()}
    storage_uri = str(base / "runs")
    mix = f"data.datasets=[{{uri: {datasets['rain']}, repeat: 3}}, {{uri: {datasets['clean']}, sigmas: [25]}}]"
    args = ["--name", "interrupted", "--set", f"run.storage={storage_uri}", "--set", "run.max_failures=1",
            "--set", f"optim.max_steps={INTERRUPTED_STEPS}", "--set", "optim.warmup_steps=1",
            "--set", "optim.ema_decay=0.5", *[f"--set={item}" for item in FAST], "--set", "checkpoint.every=5",
            "--set", mix, "--set", "data.patch=48"]
    first = start_train(train_env, *args)
    _, first_lines = wait_for_checkpoint(first)
    kill_run(first)
    first_output = "".join(first_lines) + first.communicate()[0]
    ingest(base / "rain", datasets["rain"], "rain100l")  # LATEST moves on while the run is down

    rerun = start_train(train_env, *args)
    _, before_the_kill = wait_for_checkpoint(rerun)
    kill_a_worker(rerun)
    output = "".join(before_the_kill) + finish(rerun)
    resumed = re.search(r"^resuming from the checkpoint at step (\d+)$", output, re.MULTILINE)
    assert resumed, output[-4000:]
    assert int(resumed[1]) < INTERRUPTED_STEPS - 4, f"the killed run got to step {resumed[1]}: too far to test"
    return SimpleNamespace(storage=storage_uri, resumed_from=int(resumed[1]), output=output, datasets=datasets,
                           started_on=started_on, first_output=first_output)


def test_rerunning_a_killed_run_resumes_it_without_duplicated_or_missing_steps(interrupted, mlflow_server):
    output = interrupted.output
    assert "resuming" in output
    assert sum(line.startswith("resuming from the checkpoint at step ") for line in output.splitlines()) == 1, output
    (run,) = runs_named(mlflow_server, "interrupted")
    assert run.info.status == "FINISHED"
    assert logged_steps(mlflow_server, run.info.run_id) == list(range(1, INTERRUPTED_STEPS + 1))
    assert checkpoint_steps(interrupted.storage, "interrupted") >= {INTERRUPTED_STEPS}


def test_a_killed_worker_is_replaced_and_the_run_continues(interrupted, mlflow_server):
    output = interrupted.output
    (run,) = runs_named(mlflow_server, "interrupted")
    assert run.info.status == "FINISHED", output[-3000:]
    assert logged_steps(mlflow_server, run.info.run_id) == list(range(1, INTERRUPTED_STEPS + 1))
    # Ray's notices about the dead worker become one line of ours, naming the step the new group resumes
    # from: the newest complete when the kill landed, at or after the one the run resumed from.
    restarts = [line for line in output.splitlines() if line.startswith("worker group failed (rank ")]
    assert len(restarts) == 1, output
    restarted = re.search(r"\); restarted from the checkpoint at step (\d+)$", restarts[0])
    assert restarted and interrupted.resumed_from <= int(restarted[1]) < INTERRUPTED_STEPS, restarts
    assert "(raylet)" not in output and "RayTrainWorker" not in output


def test_a_resumed_run_on_a_mix_keeps_its_versions_logs_a_pass_and_registers_a_model(interrupted, mlflow_server):
    (run,) = runs_named(mlflow_server, "interrupted")
    assert latest(interrupted.datasets["rain"]) != interrupted.started_on["rain"]
    assert [run.data.tags[f"dataset.{i}.version"] for i in range(2)] == [interrupted.started_on["rain"],
                                                                          interrupted.started_on["clean"]]
    rain, noise = int(run.data.tags["data.pass.rain"]), int(run.data.tags["data.pass.noise"])
    assert rain > 0 and rain % 3 == 0 and noise > 0
    assert f"data: a pass is {rain + noise} patches (noise: {noise}, rain: {rain})" in interrupted.first_output
    validated = {key.split("/")[1] for key in run.data.metrics if key.endswith("/input_psnr") and key.count("/") == 2}
    assert validated and validated <= {"rain", "noise"}
    assert run.data.tags["cpl.model_version"] and run.data.tags["dataset"].startswith("mix:")


