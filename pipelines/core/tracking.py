"""MLflow: the run a training job logs into, its metrics, and the registered model.

The driver creates (or, for a resumed run name, finds) the run and passes its id to the workers;
rank 0 logs into it by id through ``RunLogger``. Remote processes do not inherit the driver's active
run or tracking URI, so nothing here relies on MLflow's fluent, thread-local state.
"""

from __future__ import annotations

import json
import os
import re
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from . import console
from .config import ConfigError
from .errors import PipelineError

RUN_NAME_TAG = "cpl.run_name"
MODEL_VERSION_TAG = "cpl.model_version"
_METRICS_PER_CALL = 1000  # MLflow's log_batch limit
LOCAL_TRACKING_URI = "sqlite:///outputs/mlflow.db"


class TrackingUnreachable(PipelineError, ConnectionError):
    """The MLflow tracking server does not answer; the message names its URI."""


def resolve_tracking_uri(configured: str | None = None) -> str:
    """``MLFLOW_TRACKING_URI`` when set (the standard variable), else ``configured``, else a local store.

    A local sqlite store's relative path is made absolute here: Ray workers have other working directories.
    """
    uri = os.environ.get("MLFLOW_TRACKING_URI") or configured or LOCAL_TRACKING_URI
    path = uri.removeprefix("sqlite:///")
    if uri.startswith("sqlite:///") and not Path(path).is_absolute():
        return "sqlite:///" + str(Path(path).resolve())
    return uri


def _client(uri: str):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=uri)


def metric_name(task: str) -> str:
    """A task label as an MLflow metric name, which allows only alphanumerics and ``_-. :/``: '+' (joining
    composite labels) and anything else becomes '-', e.g. low_light+haze -> low_light-haze."""
    return re.sub(r"[^0-9A-Za-z_\-. :/]", "-", task)


def check_reachable(uri: str, timeout: float = 10.0) -> None:
    """Fail fast, naming ``uri``, when an HTTP tracking server does not answer its health check.

    Raises:
        TrackingUnreachable: the server is unreachable or unhealthy.
    """
    if not uri.startswith(("http://", "https://")):
        return
    try:
        with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout) as response:
            if response.status == 200:
                return
            reason = f"HTTP {response.status}"
    except (urllib.error.URLError, OSError) as err:
        reason = str(getattr(err, "reason", err))
    raise TrackingUnreachable(f"cannot reach the MLflow tracking server at {uri}: {reason}")


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": "1"}``: the resolved config as MLflow params."""
    flat: dict[str, str] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(flatten(value, name + "."))
        else:
            flat[name] = json.dumps(value) if not isinstance(value, str) else value
    return flat


def local_artifact_location(uri: str) -> str | None:
    """For a local sqlite store, artifacts beside the database (MLflow's default is ./mlruns in the cwd)."""
    if not uri.startswith("sqlite:///"):
        return None
    return (Path(uri.removeprefix("sqlite:///")).parent / "mlartifacts").resolve().as_uri()


def ensure_experiment(uri: str, name: str) -> str:
    """The id of experiment ``name``, created on first use (a local store keeps artifacts beside its database)."""
    client = _client(uri)
    found = client.get_experiment_by_name(name)
    return found.experiment_id if found else client.create_experiment(name,
                                                                      artifact_location=local_artifact_location(uri))


def find_run(uri: str, experiment: str, run_name: str):
    """The MLflow run named ``run_name`` in ``experiment``, or None (also when there is no such experiment)."""
    client = _client(uri)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        return None
    runs = client.search_runs([found.experiment_id], filter_string=f"tags.`{RUN_NAME_TAG}` = '{run_name}'",
                              max_results=1)
    return runs[0] if runs else None


def start_or_resume_run(uri: str, experiment: str, run_name: str, params: dict[str, str],
                        tags: dict[str, str]) -> tuple[str, bool]:
    """The run named ``run_name`` in ``experiment``, created on first use; returns ``(run_id, resumed)``.

    Raises:
        ConfigError: when resuming with params that differ from the ones the run was started with
            (MLflow params are write-once, and a silent change would make the run lie).
    """
    from mlflow.entities import Param, RunTag

    client = _client(uri)
    run = find_run(uri, experiment, run_name)
    if run is not None:
        changed = sorted(key for key, value in params.items() if run.data.params.get(key, value) != value)
        if changed:
            key = changed[0]
            raise ConfigError(f"run {run_name!r} was started with {key}={run.data.params[key]}, now {params[key]}; "
                             "use a new run name (run.name) or the original config")
        added = [Param(key, value) for key, value in params.items() if key not in run.data.params]
        if added:  # keys this code version has and the run's did not: record them, they change nothing
            client.log_batch(run.info.run_id, params=added)
        client.update_run(run.info.run_id, status="RUNNING")
        return run.info.run_id, True
    run = client.create_run(ensure_experiment(uri, experiment), run_name=run_name,
                            tags={**tags, RUN_NAME_TAG: run_name})
    items = list(params.items())
    for first in range(0, len(items), 100):
        client.log_batch(run.info.run_id, params=[Param(k, v) for k, v in items[first:first + 100]],
                         tags=[RunTag(k, v) for k, v in tags.items()] if first == 0 else [])
    return run.info.run_id, False


class RunLogger:
    """Rank 0's handle on the driver's run: logs metrics with explicit steps, never a step twice."""

    def __init__(self, uri: str, run_id: str, marker: str = "train/loss") -> None:
        self.client, self.run_id = _client(uri), run_id
        history = self.client.get_metric_history(run_id, marker)
        self.logged_through = max((m.step for m in history), default=0)

    def flush(self, pending: list[tuple[int, dict[str, float]]]) -> None:
        """Log ``(step, metrics)`` entries for steps after the last one this run already holds."""
        from mlflow.entities import Metric

        fresh = [(step, values) for step, values in pending if step > self.logged_through]
        if not fresh:
            return
        import time

        now = int(time.time() * 1000)
        metrics = [Metric(name, float(value), now, step) for step, values in fresh for name, value in values.items()]
        for first in range(0, len(metrics), _METRICS_PER_CALL):
            self.client.log_batch(self.run_id, metrics=metrics[first:first + _METRICS_PER_CALL])
        self.logged_through = max(step for step, _ in fresh)


def finish_run(uri: str, run_id: str, status: str = "FINISHED", tags: dict[str, str] | None = None) -> None:
    client = _client(uri)
    for key, value in (tags or {}).items():
        client.set_tag(run_id, key, value)
    with console.without_lines(console.RUN_LINKS, stream="stdout"):
        client.set_terminated(run_id, status)


def run_tag(uri: str, run_id: str, key: str) -> str | None:
    return _client(uri).get_run(run_id).data.tags.get(key)
