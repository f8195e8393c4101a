"""The training job end to end, through its CLI, against a real MLflow server, S3 server and Ray.

Each run is a real ``python pipelines/train.py`` process: local Ray, Ray Train + DeepSpeed on CPU,
tracking over HTTP, checkpoints in S3. Interruptions are real kills: the whole driver process group
(resume) or one Ray Train worker process (fault tolerance).
"""

from __future__ import annotations

import io
import os
import re
import select
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from pipelines.core import provenance, references, storage

from .conftest import REPO_ROOT, cli_environment, free_port, latest, new_bucket, unique

pytestmark = pytest.mark.slow

# Small and fast: 48² patches, batch 4, two validation crops, checkpoints every 2 steps.
FAST = ["data.synthesis.patch=48", "data.batch_size=4", "validation.crops_per_recipe=1",
        "data.synthesis.recipes=noise25,haze,low_light", "checkpoint.every=2"]


@pytest.fixture(scope="module")
def train_env(s3_endpoint, mlflow_server) -> dict[str, str]:
    return {**cli_environment(), "MLFLOW_TRACKING_URI": mlflow_server, "MLFLOW_DISABLE_TELEMETRY": "true",
            "RAY_TRAIN_ENABLE_V2_MIGRATION_WARNINGS": "0"}


def start_train(env: dict[str, str], *args: str, cwd: Path = REPO_ROOT) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(REPO_ROOT / "pipelines" / "train.py"), *args], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)


def kill_run(process: subprocess.Popen) -> None:
    """SIGKILL a training run and everything it started, and wait until all of it is gone: its session, since
    Ray gives its workers process groups of their own (a worker outliving its driver can still write a
    checkpoint)."""
    subprocess.run(["pkill", "-KILL", "-s", str(process.pid)], check=False)
    process.wait()
    deadline = time.monotonic() + 60
    while subprocess.run(["pgrep", "-s", str(process.pid)], capture_output=True, check=False).returncode == 0:
        assert time.monotonic() < deadline, f"processes of session {process.pid} outlived SIGKILL for 60 s"
        time.sleep(0.2)


def finish(process: subprocess.Popen, timeout: float = 400) -> str:
    try:
        output, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_run(process)
        output, _ = process.communicate()
        pytest.fail(f"training did not finish in {timeout} s:\n{output[-4000:]}")
    assert process.returncode == 0, output[-4000:]
    return output


def checkpoint_steps(storage_uri: str, run_name: str) -> set[int]:
    from pipelines.core import storage

    return {int(part[5:]) for info in storage.list_files(storage.join(storage_uri, run_name))
            for part in info.uri.split("/") if part.startswith("step-")}


def wait_for_checkpoint(process: subprocess.Popen, timeout: float = 300) -> tuple[int, list[str]]:
    """Read the run's output up to its next "step N/M: checkpoint ..." line, which the driver prints once Ray
    Train has registered the checkpoint (a step folder on disk may still be half-written), and return N with
    the lines read."""
    deadline, lines = time.monotonic() + timeout, []
    while select.select([process.stdout], [], [], max(0.0, deadline - time.monotonic()))[0]:
        line = process.stdout.readline()
        if not line:
            pytest.fail("training ended before a checkpoint:\n" + "".join(lines)[-4000:])
        lines.append(line)
        if checkpointed := re.match(r"step (\d+)/\d+: checkpoint ", line):
            return int(checkpointed[1]), lines
    kill_run(process)
    pytest.fail(f"no checkpoint after {timeout} s:\n" + "".join(lines)[-4000:])


def assert_console_speaks_for_the_job(output: str, run_name: str, total: int, checkpoints: list[int]) -> None:
    """The header, our progress and checkpoint lines, the summary; none of Ray's, DeepSpeed's or MLflow's chatter."""
    lines = output.splitlines()
    assert lines[0].startswith(f"run {run_name}: starting"), output[-3000:]
    reported = [line for line in lines if ": checkpoint step-" in line]
    assert [line.split(":")[0] for line in reported] == [f"step {step}/{total}" for step in checkpoints], output
    assert all("validation PSNR" in line for line in reported)
    assert any(line.startswith(f"step {total}/{total} [") for line in lines), output
    assert any(line.startswith(f"run {run_name} (") for line in lines) and "degraded input -> restored" in output
    for chatter in ("Checkpoint successfully created", "Reporting training result", "TrainController", "RayTrainWorker",
                    "Setting accelerator", "Started a local Ray instance", "Add type hints", "Downloading artifacts",
                    "Successfully registered model", "Created version", "Warning", "INFO"):
        assert chatter not in output, f"{chatter!r} in the console:\n{output[-3000:]}"
    assert len(lines) <= 40, output


def runs_named(tracking_uri: str, run_name: str) -> list:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri)
    experiment = client.get_experiment_by_name("cpl-restore")
    return client.search_runs([experiment.experiment_id], filter_string=f"tags.`cpl.run_name` = '{run_name}'")


def logged_steps(tracking_uri: str, run_id: str, metric: str = "train/loss") -> list[int]:
    from mlflow import MlflowClient

    return sorted(m.step for m in MlflowClient(tracking_uri).get_metric_history(run_id, metric))


def test_smoke_run_registers_a_model_that_loads_in_a_fresh_process(train_env, mlflow_server, s3_endpoint):
    """--smoke: online synthesis, checkpoints in S3, tracking over HTTP, a registered pyfunc model; an EMA."""
    storage_uri = f"s3://{new_bucket()}/runs"
    args = ["--smoke", "--name", "smoke", "--set", f"run.storage={storage_uri}", "--set", "optim.ema_decay=0.5"]
    output = finish(start_train(train_env, *args))
    (run,) = runs_named(mlflow_server, "smoke")
    assert run.info.status == "FINISHED"
    assert logged_steps(mlflow_server, run.info.run_id) == [1, 2, 3, 4]
    assert logged_steps(mlflow_server, run.info.run_id, "val/psnr") == [2, 4]
    version = run.data.tags["cpl.model_version"]
    assert f"models:/cpl-restore/{version}" in output
    assert_console_speaks_for_the_job(output, "smoke", total=4, checkpoints=[2, 4])
    assert run.data.params["model.preset"] == "tiny" and run.data.tags["dataset"].startswith("online:")
    assert run.data.tags["code_version"] == provenance.code_version()
    assert run.data.tags["synthesis_code_version"] == provenance.synthesis_code_version()
    assert checkpoint_steps(storage_uri, "smoke") == {2, 4}

    from mlflow import MlflowClient

    artifacts = {a.path for a in MlflowClient(mlflow_server).list_artifacts(run.info.run_id)}
    assert {"config.yaml", "model_card.md", "validation_grid.png"} <= artifacts
    model_version = MlflowClient(mlflow_server).get_model_version("cpl-restore", version)
    assert "Validation" in model_version.description and model_version.run_id == run.info.run_id

    # The registered weights are the average that rode in the best checkpoint, not the last weights trained.
    states = torch.load(io.BytesIO(storage.read_bytes(storage.join(run.data.tags["best_checkpoint"], "ds",
                                                                   "mp_rank_00_model_states.pt"))),
                        weights_only=False)
    average = {key.removeprefix("averaged.module."): value for key, value in states["ema"].items()
               if key.startswith("averaged.module.")}
    registered = references.load(references.resolve(f"models:/cpl-restore/{version}", mlflow_server),
                                 mlflow_server).state_dict()
    assert average.keys() == registered.keys()
    assert all(torch.equal(registered[key], average[key].float()) for key in average)
    assert any(not torch.equal(states["module"][key], average[key]) for key in average)

    # The same run name again (checked last) runs alongside the registry check: each is mostly a start-up.
    again = start_train(train_env, *args)

    # The registry contract, in a process that never saw the training code's imports.
    check = ("import sys, mlflow, numpy as np\n"
             f"model = mlflow.pyfunc.load_model('models:/cpl-restore/{version}')\n"
             "for shape in [(1, 3, 37, 53), (2, 3, 64, 30)]:\n"
             "    x = np.random.default_rng(0).random(shape, dtype=np.float32)\n"
             "    y = model.predict(x)\n"
             "    assert y.shape == shape and y.dtype == np.float32 and 0 <= y.min() and y.max() <= 1, y.shape\n"
             "print('ok')\n")
    env = {key: value for key, value in train_env.items() if key != "PYTHONPATH"}
    loaded = subprocess.run([sys.executable, "-c", check], cwd="/", env=env, capture_output=True, text=True,
                            timeout=120)
    output, _ = again.communicate(timeout=300)
    assert loaded.returncode == 0 and loaded.stdout.strip().endswith("ok"), loaded.stderr[-3000:]

    # The rerun: nothing to resume, nothing registered twice, the run stays finished.
    assert again.returncode == 2 and "already finished and registered its model" in output, output[-3000:]
    (run,) = runs_named(mlflow_server, "smoke")
    assert run.info.status == "FINISHED"


def kill_a_worker(process: subprocess.Popen) -> None:
    """SIGKILL one Ray Train worker of this run's own Ray (its session), never one of another job on the
    machine."""
    workers = subprocess.run(["pgrep", "-s", str(process.pid), "-f", "RayTrainWorker"], capture_output=True,
                             text=True, check=False).stdout.split()
    if not workers:
        kill_run(process)
        pytest.fail("no Ray Train worker process found")
    os.kill(int(workers[0]), signal.SIGKILL)


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


def test_an_unreachable_tracking_server_fails_before_training(train_env, tmp_path):
    env = {**train_env, "MLFLOW_TRACKING_URI": f"http://127.0.0.1:{free_port()}"}
    started = time.monotonic()
    result = subprocess.run([sys.executable, "pipelines/train.py", "--smoke"], cwd=REPO_ROOT, env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith(f"error: cannot reach the MLflow tracking server at "
                                                             f"{env['MLFLOW_TRACKING_URI']}")
    assert "Started a local Ray instance" not in result.stdout + result.stderr
    assert time.monotonic() - started < 60


def test_fine_tuning_imported_promptir_weights_with_cpl_on_a_published_s3_dataset(
        train_env, mlflow_server, s3_dataset, tmp_path, monkeypatch):
    """What a user tries first: PromptIR's checkpoint (the authors' layout, at the tiny preset's widths) imported,
    then trained with CPL's sparse prompts from ``model.init`` as an alias, on published shards in S3.

    The run names the dataset version and the manifest's checksum. The init reference is pinned to its version
    in the console, params, tags and card, and every rank starts from its weights: at a learning rate of 1e-12
    they stay where they started, so the registered model is the import (from scratch it would be the identity).
    """
    from mlflow import MlflowClient

    from pipelines.registry import imports
    from pipelines.registry.config import ImportConfig

    from .registry.authors_network import promptir
    from .registry.test_imports import lightning_checkpoint

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        authors = promptir(dim=16, num_blocks=(1, 1, 1, 1), num_refinement_blocks=1, heads=(1, 2, 2, 4),
                           prompt_dims=(16, 32, 64), prompt_sizes=(16, 8, 4))
    torch.save(lightning_checkpoint(authors), tmp_path / "model.ckpt")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    name = unique("promptir")
    imported = imports.import_weights(ImportConfig(format="promptir", checkpoint=str(tmp_path / "model.ckpt"),
                                                   name=name))
    client = MlflowClient(mlflow_server)
    client.set_registered_model_alias(name, "champion", imported.version)
    run_name, target, pinned = unique("from-promptir"), unique("fine-tuned"), f"models:/{name}/{imported.version}"
    output = finish(start_train(train_env, "--smoke", "--name", run_name, "--set", f"data.dataset={s3_dataset.uri}",
                                "--set", "data.batch_size=2", "--set", f"run.storage=s3://{new_bucket()}/runs",
                                "--set", f"model.init=models:/{name}@champion", "--set", "optim.lr=1e-12",
                                "--set", f"tracking.model_name={target}"))
    assert output.splitlines()[0].startswith(f"run {run_name}: starting (tiny/sparse from {pinned}, 4 steps"), output
    assert f"\n  init:       {pinned}\n" in output, output[-3000:]
    (run,) = runs_named(mlflow_server, run_name)
    assert run.data.tags["dataset.version"] == s3_dataset.manifest["version"]
    assert len(run.data.tags["dataset.manifest_sha256"]) == 64
    validated = {key.split("/")[1] for key in run.data.metrics if key.endswith("/input_psnr") and key.count("/") == 2}
    assert validated == {"noise", "haze"}  # the tasks of the fixture's recipes, noise25 and haze
    assert logged_steps(mlflow_server, run.info.run_id) == [1, 2, 3, 4]
    assert run.data.params["model.init"] == pinned
    assert run.data.tags["model.init"] == pinned and run.data.tags["model.init.reference"] == f"models:/{name}@champion"
    assert f"initialised from `{pinned}` (`model.init: models:/{name}@champion`)" in \
        client.get_model_version(target, "1").description
    load = lambda reference: references.load(references.resolve(reference, mlflow_server), mlflow_server)  # noqa: E731
    registered, source = load(f"models:/{target}/1"), load(pinned)
    assert (registered.config.prompt, source.config.prompt) == ("sparse", "dense")
    registered, source = registered.state_dict(), source.state_dict()
    assert registered.keys() == source.keys()
    assert all(torch.allclose(registered[key], source[key], atol=1e-6) for key in source)


@pytest.mark.parametrize("case", ["names nothing", "does not fit"])
def test_an_init_model_that_names_nothing_or_does_not_fit_fails_before_training(train_env, tmp_path, case):
    import cpl_model

    if case == "names nothing":
        reference, more = f"models:/{unique('nowhere')}/1", []
        expected = f"error: model.init: {reference}: no registered model"
    else:
        reference, more = str(tmp_path / "step-00000004"), ["--set", "model.preset=small"]
        cpl_model.save_checkpoint(cpl_model.build_model("tiny"), Path(reference) / cpl_model.WEIGHTS)
        expected = (f"error: config error: model.init: {reference} does not fit model small/sparse: "
                    "dim is 16 there, 24 here")
    started = time.monotonic()
    result = subprocess.run([sys.executable, "pipelines/train.py", "--smoke", "--set", f"model.init={reference}", *more,
                             "--set", f"run.storage={tmp_path / 'runs'}"], cwd=REPO_ROOT, env=train_env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stderr[-3000:]
    assert result.stderr.strip().splitlines()[-1].startswith(expected), result.stderr[-3000:]
    assert "Started a local Ray instance" not in result.stdout + result.stderr
    assert time.monotonic() - started < 60


@pytest.mark.parametrize(("override", "named"), [
    ("optim.learning_rate=1e-3", "optim.learning_rate: unknown key"),
    ("optim.warmup_steps=1200", "optim: warmup_steps (1200) must be below max_steps (1000)"),
    ("scaling.workers=0", "scaling.workers: Input should be greater than or equal to 1"),
    ("loss.cpr.form=triplet", "loss: cpr config: form must be one of"),
    ("loss.cpr={features: vgg19, vgg_weights: /nowhere/vgg19.pth}",
     "loss.cpr.vgg_weights: /nowhere/vgg19.pth: no such file"),
])
def test_a_bad_config_fails_on_the_driver_naming_the_key(train_env, override, named):
    result = subprocess.run([sys.executable, "pipelines/train.py", "--set", override], cwd=REPO_ROOT, env=train_env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert line.startswith(f"error: config error: {named}"), result.stderr
    assert "Ray" not in result.stdout + result.stderr
