"""The training job end to end, through its CLI, against a real MLflow server, S3 server and Ray.

Each run is a real ``python pipelines/train.py`` process: local Ray, Ray Train + DeepSpeed on CPU,
tracking over HTTP, checkpoints in S3. Interrupted runs are in ``test_train_resume.py`` (a file of their own,
so that the test workers run the two at once).
"""

from __future__ import annotations

import io
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from pipelines.core import provenance, references, storage

from .conftest import REPO_ROOT, free_port, new_bucket, unique
from .train_runs import (
    assert_console_speaks_for_the_job,
    checkpoint_steps,
    finish,
    logged_steps,
    runs_named,
    start_train,
)

pytestmark = pytest.mark.slow


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
