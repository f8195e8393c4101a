"""The entry points share one command line (``pipelines.core.cli``): help, ``--dry-run``, flags that are
config keys, one-line errors for what the user can fix, tracebacks for everything else, console scripts.

Most tests call ``main(argv)`` in this process, with the library function behind each command replaced,
so that they check the command line and not the work.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import json
import os
import shutil
import subprocess
import sys

import pytest

from pipelines.core import cli, console
from pipelines.core.errors import DataError, PipelineError, SetupError, user_error
from pipelines.core.references import ModelNotFound
from pipelines.core.storage import StorageError

from ..conftest import REPO_ROOT

NAMES = ("synthesize", "train", "evaluate", "promote", "restore", "import_weights")

# The least each command needs to get past its config check; --set and --dry-run are added by the tests.
REQUIRED = {"synthesize": ["--clean"], "train": [], "evaluate": ["--model", "m.pt"], "promote": ["--rollback"],
            "restore": ["--input", "in", "--output", "out"],
            "import_weights": ["--format", "promptir", "--checkpoint", "model.ckpt"]}

# The library function each entry point calls, by module and name, and what a replacement must return.
LIBRARY = {"synthesize": ("pipelines.data.command", "run"), "train": ("pipelines.training.driver", "train"),
           "evaluate": ("pipelines.evaluation.command", "run"), "promote": ("pipelines.registry.command", "run"),
           "restore": ("pipelines.serving.command", "run"), "import_weights": ("pipelines.registry.imports", "run")}


def entry(name: str):
    return importlib.import_module(f"pipelines.{name}")


def script(name: str) -> str:
    """The console script of entry point ``name``: cpl-import-weights for import_weights."""
    return f"cpl-{name.replace('_', '-')}"


@pytest.fixture(autouse=True)
def quiet(monkeypatch):
    """Record ``console.configure`` instead of changing this process's logging; no CPL_DEBUG from outside."""
    calls = []
    monkeypatch.setattr(console, "configure", calls.append)
    monkeypatch.delenv(cli.DEBUG_VARIABLE, raising=False)
    return calls


@pytest.fixture
def no_ray(monkeypatch):
    """Fail the test if anything starts or joins Ray."""
    import ray

    def refuse(*args, **kwargs):
        raise AssertionError("Ray was started")

    monkeypatch.setattr(ray, "init", refuse)


def replace_library(monkeypatch, name: str, behaviour):
    module, function = LIBRARY[name]
    monkeypatch.setattr(importlib.import_module(module), function, behaviour)


def dry_run(name: str, *args: str, capsys) -> dict:
    assert entry(name).main([*REQUIRED[name], *args, "--dry-run"]) == 0
    return json.loads(capsys.readouterr().out)


# --- help and dry runs --------------------------------------------------------------------------------

@pytest.mark.parametrize("name", NAMES)
def test_help_lists_the_commands_flags_with_their_keys_and_the_common_flags(name, capsys):
    with pytest.raises(SystemExit) as exited:
        entry(name).main(["--help"])
    assert exited.value.code == 0
    shown = capsys.readouterr().out
    assert shown.startswith(f"usage: {script(name)} ")
    for flag in ("--config", "--set", "--dry-run", "--verbose", "--debug"):
        assert flag in shown
    assert "Exit status" in shown and cli.DEBUG_VARIABLE in shown


# One --set per command, and where it shows in the printed config.
A_SETTING = {"synthesize": ("ray.num_cpus=1", ("ray", "num_cpus"), 1),
             "train": ("ray.num_cpus=1", ("ray", "num_cpus"), 1), "evaluate": ("out=elsewhere", ("out",), "elsewhere"),
             "promote": ("gate.margin_db=0.5", ("gate", "margin_db"), 0.5),
             "restore": ("restore.workers=3", ("restore", "workers"), 3),
             "import_weights": ("name=published", ("name",), "published")}


@pytest.mark.parametrize("name", NAMES)
def test_dry_run_prints_the_resolved_config_and_does_no_work(name, capsys, no_ray, monkeypatch):
    def work(*args, dry_run=False, **kwargs):
        # promote's dry run still decides (it evaluates both models), but is told to change nothing
        assert name == "promote" and dry_run, "the dry run did the work"
        return 0

    replace_library(monkeypatch, name, work)
    setting, path, expected = A_SETTING[name]
    printed = dry_run(name, "--set", setting, capsys=capsys)
    value = printed["config"]
    for part in path:
        value = value[part]
    assert value == expected
    assert isinstance(printed["plan"], dict)


def test_a_dry_run_of_a_rollback_changes_nothing(monkeypatch, capsys):
    from pipelines.registry import command, promotion
    from pipelines.registry.config import PromoteConfig

    monkeypatch.setattr(promotion, "rollback", lambda *args: pytest.fail("rolled back in a dry run"))
    assert command.run(PromoteConfig(rollback=True), dry_run=True) == 0


def scored(config: dict) -> dict:
    """The evaluation settings that flags set."""
    return {key: config["evaluation"][key] for key in ("tile", "batch_size", "workers", "use_gpu")}


def test_evaluate_flags_set_their_config_keys(capsys):
    printed = dry_run("evaluate", "--data", "bench/", "--split", "val", "--out", "report", "--tile", "0",
                      "--batch-size", "2", "--workers", "1", "--gpu", "--experiment", "exp", "--no-log",
                      capsys=capsys)["config"]
    assert {key: printed[key] for key in ("model", "data", "split", "out", "log", "experiment")} == \
        {"model": "m.pt", "data": "bench/", "split": "val", "out": "report", "log": False, "experiment": "exp"}
    assert scored(printed) == {"tile": None, "batch_size": 2, "workers": 1, "use_gpu": True}


def test_promote_flags_set_their_config_keys(capsys):
    printed = dry_run("promote", "--name", "other", "--reason", "halos", "--margin", "0.2", "--tolerance", "0.3",
                      "--data", "bench/", "--split", "val", "--out", "decisions", "--tile", "256",
                      "--batch-size", "4", "--workers", "2", "--gpu", capsys=capsys)["config"]
    assert printed["rollback"] is True and printed["model"] is None
    assert (printed["name"], printed["reason"], printed["data"], printed["split"], printed["out"]) == \
        ("other", "halos", "bench/", "val", "decisions")
    assert printed["gate"] == {"margin_db": 0.2, "tolerance_db": 0.3}
    assert scored(printed) == {"tile": 256, "batch_size": 4, "workers": 2, "use_gpu": True}


def test_restore_flags_set_their_config_keys(capsys):
    printed = dry_run("restore", "--model", "models:/m/1", "--format", "webp", "--tile", "128", "--overwrite",
                      "--workers", "2", "--gpu", capsys=capsys)["config"]
    assert (printed["model"], printed["input"], printed["output"]) == ("models:/m/1", "in", "out")
    assert {key: printed["restore"][key] for key in ("tile", "format", "overwrite", "workers", "use_gpu")} == \
        {"tile": 128, "format": "webp", "overwrite": True, "workers": 2, "use_gpu": True}


def test_import_weights_flags_set_their_config_keys(capsys):
    printed = dry_run("import_weights", "--format", "cplir", "--name", "cplir", "--param-key", "params",
                      "--experiment", "imports", capsys=capsys)
    assert printed["config"] == {"format": "cplir", "checkpoint": "model.ckpt", "name": "cplir",
                                 "param_key": "params", "experiment": "imports"}
    assert printed["plan"]["network"].startswith("sparse prompts")


def test_train_flags_smoke_and_name_set_their_keys_and_set_wins(capsys):
    printed = dry_run("train", "--smoke", "--name", "run-1", "--set", "optim.max_steps=6", capsys=capsys)["config"]
    assert printed["run"]["name"] == "run-1"
    assert printed["optim"]["max_steps"] == 6 and printed["optim"]["warmup_steps"] == 1  # --smoke, then --set


def test_synthesize_flags_set_their_config_keys(capsys):
    printed = dry_run("synthesize", "--source", "photos", "--out", "datasets", "--name", "pairs", "--seed", "4",
                      "--recipes", "haze", "--patch", "64", "--crops-per-image", "2", capsys=capsys)["config"]
    assert printed["source"] == "photos" and printed["output"]["uri"] == "datasets"
    assert printed["output"]["name"] == "pairs"
    assert {key: printed["synthesis"][key] for key in ("seed", "recipes", "patch", "crops_per_image")} == \
        {"seed": 4, "recipes": "haze", "patch": 64, "crops_per_image": 2}


def test_a_config_file_is_overridden_by_flags_and_flags_by_set(tmp_path, capsys):
    path = tmp_path / "evaluate.yaml"
    path.write_text("model: from-file\ndata: file-data\nevaluation:\n  batch_size: 3\n  workers: 1\n")
    printed = dry_run("evaluate", "--config", str(path), "--data", "flag-data", "--workers", "2",
                      "--set", "evaluation.workers=4", capsys=capsys)["config"]
    assert printed["model"] == "m.pt" and printed["data"] == "flag-data"
    assert printed["evaluation"]["batch_size"] == 3 and printed["evaluation"]["workers"] == 4


def test_verbose_reaches_the_console_once_and_train_passes_it_on(monkeypatch, quiet, capsys):
    seen = {}

    class Summary:
        def lines(self):
            return ["summary"]

    def train(config, verbose=False):
        seen["verbose"] = verbose
        return Summary()

    replace_library(monkeypatch, "train", train)
    assert entry("train").main(["--smoke", "--verbose"]) == 0
    assert quiet == [True] and seen == {"verbose": True}
    assert capsys.readouterr().out == "summary\n"


# --- errors -------------------------------------------------------------------------------------------

def one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


@pytest.mark.parametrize("name", NAMES)
def test_an_unknown_set_key_fails_in_one_line_naming_it_before_ray_starts(name, capsys, no_ray, monkeypatch):
    replace_library(monkeypatch, name, lambda *args, **kwargs: pytest.fail("the work started"))
    assert entry(name).main([*REQUIRED[name], "--set", "nosuch.key=1"]) == 2
    assert one_error_line(capsys) == "error: config error: nosuch: unknown key"


@pytest.mark.parametrize(("name", "args", "named"), [
    ("evaluate", ["--tile", "50"], "evaluation.tile (--tile): must be 0 (whole images) or at least 96"),
    ("evaluate", ["--split", "holdout"], "split (--split): Input should be 'train', 'val' or 'test'"),
    ("promote", ["--margin", "-1"], "gate.margin_db (--margin): Input should be greater than or equal to 0"),
    ("restore", ["--format", "gif"], "restore.format (--format): Input should be 'png', 'jpg', 'webp' or 'tif'"),
    ("restore", ["--workers", "-1"], "restore.workers (--workers)"),
    ("import_weights", ["--format", "restormer"], "format (--format): Input should be 'promptir' or 'cplir'"),
])
def test_a_bad_flag_value_is_named_by_key_and_flag(name, args, named, capsys):
    assert entry(name).main([*REQUIRED[name], *args]) == 2
    assert one_error_line(capsys).startswith(f"error: config error: {named}")


@pytest.mark.parametrize(("name", "args", "named"), [
    ("evaluate", [], "model (--model): Field required"),
    ("restore", ["--input", "in"], "output (--output): Field required"),
    ("promote", [], "model (--model) or rollback (--rollback) is required"),
    ("promote", ["--model", "models:/m/1", "--rollback"], "exclude each other"),
    ("synthesize", [], "source (--source): required"),
    ("synthesize", ["--pack", "--source", "photos"], "--pack needs --source and --out"),
    ("import_weights", ["--checkpoint", "model.ckpt"], "format (--format): Field required"),
    ("import_weights", ["--format", "promptir"], "checkpoint (--checkpoint): Field required"),
    ("import_weights", ["--format", "promptir", "--checkpoint", "m.ckpt", "--param-key", "params"],
     "param_key (--param-key) is a BasicSR entry; a promptir checkpoint has none"),
])
def test_a_missing_setting_is_named(name, args, named, capsys):
    assert entry(name).main(args) == 2
    assert named in one_error_line(capsys)


@pytest.mark.parametrize("name", NAMES)
def test_a_user_error_from_the_library_is_one_line_with_exit_2(name, monkeypatch, capsys):
    def fail(*args, **kwargs):
        raise StorageError("s3://bucket-x/data: no such bucket")

    replace_library(monkeypatch, name, fail)
    args = ["--smoke"] if name == "train" else REQUIRED[name]
    assert entry(name).main(args) == 2
    assert one_error_line(capsys) == "error: s3://bucket-x/data: no such bucket"


@pytest.mark.parametrize("name", NAMES)
def test_an_unexpected_exception_propagates_with_its_traceback(name, monkeypatch, capsys):
    def fail(*args, **kwargs):
        return 1 / 0

    replace_library(monkeypatch, name, fail)
    args = ["--smoke"] if name == "train" else REQUIRED[name]
    with pytest.raises(ZeroDivisionError):
        entry(name).main(args)
    assert "error:" not in capsys.readouterr().err


@pytest.mark.parametrize("how", ["flag", "environment"])
def test_debug_prints_the_traceback_before_the_error_line(how, monkeypatch, capsys):
    if how == "environment":
        monkeypatch.setenv(cli.DEBUG_VARIABLE, "1")
    assert entry("restore").main([*REQUIRED["restore"], "--set", "restore.tiles=3",
                                  *(["--debug"] if how == "flag" else [])]) == 2
    err = capsys.readouterr().err
    assert err.startswith("Traceback (most recent call last):") and "ConfigError" in err
    assert err.strip().splitlines()[-1] == "error: config error: restore.tiles: unknown key"


def test_cpl_debug_0_means_off(monkeypatch, capsys):
    monkeypatch.setenv(cli.DEBUG_VARIABLE, "0")
    assert entry("restore").main([*REQUIRED["restore"], "--set", "restore.tiles=3"]) == 2
    assert one_error_line(capsys) == "error: config error: restore.tiles: unknown key"


def test_a_multi_line_message_still_prints_as_one_line(monkeypatch, capsys):
    def fail(*args, **kwargs):
        raise DataError("first\nsecond")

    replace_library(monkeypatch, "restore", fail)
    assert entry("restore").main(REQUIRED["restore"]) == 2
    assert one_error_line(capsys) == "error: first second"


def test_gpu_work_in_process_without_cuda_is_a_setup_error(monkeypatch):
    import torch

    from pipelines.core.runtime import check_local_gpu

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(SetupError, match=r"use_gpu \(--gpu\) is set but torch sees no CUDA device"):
        check_local_gpu(True, workers=0)
    check_local_gpu(True, workers=2)  # Ray workers may run where the GPUs are
    check_local_gpu(False, workers=0)


# --- errors from Ray workers --------------------------------------------------------------------------

def test_user_error_finds_a_pipeline_error_inside_ray_s_wrappers():
    import ray.exceptions
    from ray.train import ControllerError, WorkerGroupError

    storage_error = StorageError("s3://b/x: no such bucket")
    task = ray.exceptions.RayTaskError("task", "Traceback ...\n  remote frames", storage_error).as_instanceof_cause()
    assert isinstance(task, StorageError)  # Ray makes it one, with the remote traceback as its message
    assert user_error(task) is storage_error

    udf = ray.exceptions.UserCodeException("user code failed")
    udf.__cause__ = DataError("x: no pairs")
    assert str(user_error(ray.exceptions.RayTaskError("map", "tb", udf).as_instanceof_cause())) == "x: no pairs"

    empty = DataError("the training data yields no full batch")
    assert user_error(WorkerGroupError("rank 1 failed", {0: ZeroDivisionError(), 1: empty})) is empty
    assert user_error(ControllerError(task)) is storage_error
    assert user_error(WorkerGroupError("rank 0 failed", {0: ZeroDivisionError()})) is None
    assert user_error(RuntimeError("wrapped")) is None


def test_user_error_rebuilds_one_of_ours_from_a_remote_traceback_s_text():
    """What Ray Data raises for a failed map function: the original survives only in the text."""
    import ray.exceptions

    text = ("\x1b[36mray::MapBatches(udf)()\x1b[39m (pid=1, ip=10.0.0.1)\n"
            '  File "job.py", line 5, in udf\n    raise StorageError(uri)\n'
            "pipelines.core.storage.StorageError: s3://b/v=1/part-0.parquet: access denied\n"
            "(while writing)\n\n"
            "The above exception was the direct cause of the following exception:\n\n"
            "ray.exceptions.UserCodeException: UDF failed to process a data block.\n")
    wrapped = ray.exceptions.RayTaskError("udf", text, ray.exceptions.UserCodeException("UDF failed"))
    found = user_error(wrapped.as_instanceof_cause())
    assert type(found) is StorageError
    assert str(found) == "s3://b/v=1/part-0.parquet: access denied\n(while writing)"
    assert user_error(ray.exceptions.RayTaskError("udf", "pipelines.nowhere.Error: x", ValueError())) is None


def test_a_pipeline_error_raised_in_a_train_worker_is_reported_in_one_line(monkeypatch, capsys):
    from ray.train import WorkerGroupError

    def fail(*args, **kwargs):
        raise WorkerGroupError("Training failed due to worker errors:\n[Rank 0]\nTraceback ...\n",
                               {0: DataError("the training data yields no full batch; lower data.batch_size")})

    replace_library(monkeypatch, "train", fail)
    assert entry("train").main(["--smoke"]) == 2
    assert one_error_line(capsys) == "error: the training data yields no full batch; lower data.batch_size"


@pytest.mark.slow
def test_a_pipeline_error_raised_in_real_ray_tasks_is_found(ray_cluster):
    """A plain task and a Ray Data UDF: what the driver receives still leads to our error."""
    import ray
    import ray.data

    @ray.remote
    def task():
        raise StorageError("s3://b/x: no such bucket")

    with pytest.raises(Exception) as caught:
        ray.get(task.remote())
    assert str(user_error(caught.value)) == "s3://b/x: no such bucket"

    def udf(batch):
        raise DataError("shard 3: no pairs")

    with pytest.raises(Exception) as caught:
        ray.data.from_items([{"x": 1}]).map_batches(udf).take_all()
    found = user_error(caught.value)  # Ray Data keeps only the text of the traceback
    assert isinstance(found, DataError) and str(found) == "shard 3: no pairs"

    class Scorer:  # an actor whose model does not load, as in evaluate.py --workers 2
        def __init__(self):
            raise ModelNotFound("models:/m/9: registered model 'm' has no version 9")

        def __call__(self, batch):
            return batch

    with pytest.raises(Exception) as caught:
        ray.data.from_items([{"x": 1}]).map_batches(Scorer, concurrency=1, batch_size=1).take_all()
    found = user_error(caught.value)
    assert isinstance(found, ModelNotFound) and str(found) == "models:/m/9: registered model 'm' has no version 9"


# --- how the commands are run -------------------------------------------------------------------------

@pytest.mark.parametrize("name", NAMES)
def test_every_entry_point_is_thin(name):
    lines = [line for line in (REPO_ROOT / "pipelines" / f"{name}.py").read_text().splitlines()
             if line.strip() and not line.strip().startswith("#")]
    assert len(lines) <= 60


def test_every_console_script_is_installed():
    scripts = {point.name: point.value for point in importlib.metadata.entry_points(group="console_scripts")}
    assert {script(name): scripts.get(script(name)) for name in NAMES} == \
        {script(name): f"pipelines.{name}:main" for name in NAMES}


def run(command: list[str]) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    return subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120, check=False)


@pytest.mark.parametrize("name", [pytest.param(name, marks=pytest.mark.slow) if name == "train" else name
                                  for name in NAMES])
def test_each_console_script_answers_help(name):
    found = shutil.which(script(name), path=os.path.dirname(sys.executable))
    assert found, f"{script(name)} is not installed beside {sys.executable}"
    result = run([found, "--help"])
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"usage: {script(name)} ")


@pytest.mark.parametrize("form", ["path", "module"])
def test_an_entry_point_runs_as_a_file_and_as_a_module(form):
    command = ["pipelines/restore.py"] if form == "path" else ["-m", "pipelines.restore"]
    result = run([sys.executable, *command, "--input", "in", "--output", "out", "--set", "restore.tiles=1"])
    assert result.returncode == 2
    assert result.stderr.strip() == "error: config error: restore.tiles: unknown key"
    assert result.stdout == ""


def test_pipeline_errors_keep_their_builtin_bases():
    from pipelines.core.config import ConfigError
    from pipelines.core.tracking import TrackingUnreachable
    from pipelines.registry.lock import PromotionError

    for error, base in [(ConfigError, ValueError), (StorageError, RuntimeError), (ModelNotFound, ValueError),
                        (TrackingUnreachable, ConnectionError), (PromotionError, RuntimeError),
                        (DataError, ValueError)]:
        assert issubclass(error, PipelineError) and issubclass(error, base), error
