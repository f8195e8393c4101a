"""MLflow tracking: metric names, params from configs, the tracking URI, the health check, and runs created,
resumed and logged into exactly once against a real server.
"""

from __future__ import annotations

import pytest

from pipelines.core import tracking
from pipelines.core.tracking import LOCAL_TRACKING_URI
from pipelines.training.config import TrainConfig, tracking_uri

from ..conftest import free_port, train_config, unique

COMPOSITE = "low_light+haze+rain"


def test_metric_name_turns_composite_labels_into_names_mlflow_accepts():
    from mlflow.exceptions import MlflowException
    from mlflow.utils.validation import _validate_metric_name

    assert tracking.metric_name(COMPOSITE) == "low_light-haze-rain"
    assert tracking.metric_name("noise") == "noise"
    with pytest.raises(MlflowException):
        _validate_metric_name(f"val/{COMPOSITE}/psnr")  # why the mapping exists
    _validate_metric_name(f"val/{tracking.metric_name(COMPOSITE)}/psnr")


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
