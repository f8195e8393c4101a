"""What the training-run tests share: running ``python pipelines/train.py`` in a subprocess, reading its
console, killing it (the driver with everything it started, or one Ray Train worker), and reading the run
back from MLflow and the checkpoint storage."""

from __future__ import annotations

import os
import re
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipelines.core import storage

from .conftest import REPO_ROOT

# Small and fast: 48² patches, batch 4, two validation crops, checkpoints every 2 steps.
FAST = ["data.synthesis.patch=48", "data.batch_size=4", "validation.crops_per_recipe=1",
        "data.synthesis.recipes=noise25,haze,low_light", "checkpoint.every=2"]


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


# Generous: with two test workers on two cores, a training run takes up to four times as long as alone.
def finish(process: subprocess.Popen, timeout: float = 900) -> str:
    try:
        output, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_run(process)
        output, _ = process.communicate()
        pytest.fail(f"training did not finish in {timeout} s:\n{output[-4000:]}")
    assert process.returncode == 0, output[-4000:]
    return output


def checkpoint_steps(storage_uri: str, run_name: str) -> set[int]:

    return {int(part[5:]) for info in storage.list_files(storage.join(storage_uri, run_name))
            for part in info.uri.split("/") if part.startswith("step-")}


def wait_for_line(process: subprocess.Popen, pattern: str, timeout: float = 600) -> tuple[re.Match, list[str]]:
    """Read the run's output up to the next line that matches ``pattern``; return the match and the lines read."""
    deadline, lines = time.monotonic() + timeout, []
    while select.select([process.stdout], [], [], max(0.0, deadline - time.monotonic()))[0]:
        line = process.stdout.readline()
        if not line:
            pytest.fail(f"training ended before a line matching {pattern!r}:\n" + "".join(lines)[-4000:])
        lines.append(line)
        if found := re.match(pattern, line):
            return found, lines
    kill_run(process)
    pytest.fail(f"no line matching {pattern!r} after {timeout} s:\n" + "".join(lines)[-4000:])


def wait_for_checkpoint(process: subprocess.Popen, timeout: float = 600) -> tuple[int, list[str]]:
    """Read the run's output up to its next "step N/M: checkpoint ..." line, which the driver prints once Ray
    Train has registered the checkpoint (a step folder on disk may still be half-written), and return N with
    the lines read."""
    checkpointed, lines = wait_for_line(process, r"step (\d+)/\d+: checkpoint ", timeout)
    return int(checkpointed[1]), lines


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


def kill_a_worker(process: subprocess.Popen) -> None:
    """SIGKILL one Ray Train worker of this run's own Ray (its session), never one of another job on the
    machine."""
    workers = subprocess.run(["pgrep", "-s", str(process.pid), "-f", "RayTrainWorker"], capture_output=True,
                             text=True, check=False).stdout.split()
    if not workers:
        kill_run(process)
        pytest.fail("no Ray Train worker process found")
    os.kill(int(workers[0]), signal.SIGKILL)
