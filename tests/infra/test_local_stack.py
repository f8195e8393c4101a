"""``python -m infra.local_stack``: real services on 127.0.0.1, real processes started, found and stopped.

The main test is the path a user takes: ``up``, ``ray job submit`` of the quickstart's smoke run against
the stack (data from sample photos, checkpoints in the stack's S3, the model registered in its MLflow),
then ``down``, which must leave no process of the stack behind and nothing else stopped.
"""

from __future__ import annotations

import json
import os
import shlex
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from tests.pipelines.conftest import free_port

REPO_ROOT = Path(__file__).resolve().parents[2]
STACK = [sys.executable, "-m", "infra.local_stack"]
# The smoke run, small: 48² patches, batch 4, one validation crop per recipe, checkpoints every 2 steps.
SMOKE = ["--smoke", "--set", "data.synthesis.patch=48", "--set", "data.batch_size=4",
         "--set", "validation.crops_per_recipe=1", "--set", "data.synthesis.recipes=noise25,haze,low_light",
         "--set", "checkpoint.every=2"]


def clean_env() -> dict[str, str]:
    """This environment without any AWS, MLflow or Ray settings of the test session."""
    return {key: value for key, value in os.environ.items() if not key.startswith(("AWS_", "MLFLOW_", "RAY_"))}


def stack(folder: Path, *args: str, env: dict[str, str] | None = None, timeout: float = 300) \
        -> subprocess.CompletedProcess:
    return subprocess.run([*STACK, *args, "--dir", str(folder)], cwd=REPO_ROOT, env=env or clean_env(),
                          capture_output=True, text=True, timeout=timeout, check=False)


def parse_exports(text: str) -> dict[str, str]:
    env = {}
    for line in text.splitlines():
        assert line.startswith("export "), line
        key, _, value = line[len("export "):].partition("=")
        env[key] = shlex.split(value)[0]
    return env


def recorded_pids(folder: Path) -> dict[str, int]:
    state = json.loads((folder / "stack.json").read_text())
    return {name: record["pid"] for name, record in state["services"].items()}


def processes_naming(marker: str) -> list[psutil.Process]:
    found = []
    for process in psutil.process_iter(["cmdline"]):
        if marker in " ".join(process.info["cmdline"] or ()):
            found.append(process)
    return found


@pytest.fixture
def bystander():
    """An unrelated process that ``down`` must leave alone."""
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    yield process
    process.kill()
    process.wait()


@pytest.fixture
def stack_dir(tmp_path):
    """A stack folder; whatever the test leaves running is stopped afterwards."""
    folder = tmp_path / "stack"
    yield folder
    if (folder / "stack.json").exists():
        stack(folder, "down")


@pytest.mark.slow
def test_up_submit_the_quickstart_then_down_leaves_nothing_behind(stack_dir, bystander):
    ports = {"--s3-port": free_port(), "--mlflow-port": free_port(), "--ray-port": free_port(),
             "--dashboard-port": free_port()}
    port_args = [str(item) for pair in ports.items() for item in pair]
    started = stack(stack_dir, "up", "--num-cpus=2", *port_args)
    assert started.returncode == 0, started.stderr
    env = parse_exports(started.stdout)
    assert env["MLFLOW_TRACKING_URI"] == f"http://127.0.0.1:{ports['--mlflow-port']}"
    assert env["AWS_ENDPOINT_URL"] == f"http://127.0.0.1:{ports['--s3-port']}"
    assert env["RAY_ADDRESS"] == f"127.0.0.1:{ports['--ray-port']}"
    pids = recorded_pids(stack_dir)
    state = json.loads((stack_dir / "stack.json").read_text())
    assert oct((stack_dir / "stack.json").stat().st_mode & 0o777) == "0o600"  # it holds the Ray token

    # Idempotent: a second `up` starts nothing and prints the same environment.
    again = stack(stack_dir, "up", *port_args)
    assert again.returncode == 0, again.stderr
    assert parse_exports(again.stdout) == env and recorded_pids(stack_dir) == pids
    assert "starting" not in again.stderr
    status = stack(stack_dir, "status")
    assert status.returncode == 0 and status.stdout.count("running") == 3, status.stdout

    # The user's path: the printed environment, the documented submit command, the quickstart config.
    job_env = {**clean_env(), **env}
    submit = subprocess.run(
        [str(Path(sys.executable).with_name("ray")), "job", "submit", "--working-dir", ".",
         "--runtime-env", "configs/runtime_env.yaml", "--",
         "python", "pipelines/train.py", "--name", "on-the-stack", "--set", "run.storage=s3://cpl/runs", *SMOKE],
        cwd=REPO_ROOT, env=job_env, capture_output=True, text=True, timeout=600, check=False)
    assert submit.returncode == 0, (submit.stdout + submit.stderr)[-4000:]
    assert "succeeded" in submit.stdout

    from mlflow import MlflowClient

    client = MlflowClient(env["MLFLOW_TRACKING_URI"])
    (version,) = client.search_model_versions("name = 'cpl-restore'")
    run = client.get_run(version.run_id)
    assert run.data.tags["cpl.run_name"] == "on-the-stack" and run.info.status == "FINISHED"
    assert run.data.tags["best_checkpoint"].startswith("s3://cpl/runs/on-the-stack/step-")
    artifacts = client.get_run(version.run_id).info.artifact_uri
    assert artifacts.startswith("mlflow-artifacts:"), artifacts  # proxied: clients need no S3 access

    # A service that died is restarted alone; the others keep their processes (and S3 its objects).
    psutil.Process(pids["mlflow"]).kill()
    status = stack(stack_dir, "status")
    assert status.returncode == 1 and "mlflow  stopped" in status.stdout, status.stdout
    restarted = stack(stack_dir, "up")
    assert restarted.returncode == 0, restarted.stderr
    new_pids = recorded_pids(stack_dir)
    assert new_pids["mlflow"] != pids["mlflow"] and new_pids["s3"] == pids["s3"] and new_pids["ray"] == pids["ray"]
    assert MlflowClient(env["MLFLOW_TRACKING_URI"]).get_model_version("cpl-restore", version.version)

    stack_processes = {process.pid for pid in new_pids.values() if psutil.pid_exists(pid)
                       for process in [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]}
    stopped = stack(stack_dir, "down")
    assert stopped.returncode == 0, stopped.stderr
    assert not [pid for pid in stack_processes if psutil.pid_exists(pid)
                and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE]
    assert not processes_naming(state["ray_temp_dir"])
    for port in ports.values():
        with socket.socket() as probe:
            assert probe.connect_ex(("127.0.0.1", port)) != 0, f"port {port} still listening"
    assert bystander.poll() is None
    assert not (stack_dir / "stack.json").exists()
    status = stack(stack_dir, "status")
    assert status.returncode == 1 and status.stdout.count("stopped") == 3


def test_a_port_in_use_fails_naming_it_and_starts_nothing(stack_dir):
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        result = stack(stack_dir, "up", f"--mlflow-port={port}", f"--s3-port={free_port()}",
                       f"--ray-port={free_port()}", f"--dashboard-port={free_port()}")
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert f"127.0.0.1:{port}" in line and "--mlflow-port" in line
    assert not (stack_dir / "stack.json").exists()


def test_down_never_stops_a_process_that_only_reuses_a_recorded_pid(stack_dir, bystander):
    """A stale state file whose pid now belongs to someone else (a reboot, pid reuse) stops nothing."""
    stack_dir.mkdir()
    state = {"ports": {"s3": 1, "mlflow": 2, "ray": 3, "dashboard": 4}, "token": "t", "ray_temp_dir": "/nonexistent",
             "services": {"s3": {"pid": bystander.pid, "started": psutil.Process(bystander.pid).create_time() - 60}}}
    (stack_dir / "stack.json").write_text(json.dumps(state))
    result = stack(stack_dir, "down")
    assert result.returncode == 0 and "nothing was running" in result.stderr
    time.sleep(0.5)
    assert bystander.poll() is None


def test_env_and_status_of_a_stack_that_is_not_running(stack_dir):
    result = stack(stack_dir, "env")
    assert result.returncode == 2
    assert result.stderr.strip() == f"local stack: no local stack is running from {stack_dir}; start one with `up`"
    status = stack(stack_dir, "status")
    assert status.returncode == 1 and status.stdout.count("stopped") == 3


def test_ports_given_to_ray_s_agents_are_distinct_free_and_below_the_ephemeral_range():
    """Ray's components bind port 0 in the ephemeral range: a port picked there can be taken before the
    agent binds it (seen in CI: the job agent never started and every submission was refused)."""
    from infra import local_stack

    ports = local_stack._free_ports(5)
    assert len(set(ports)) == 5
    if local_stack._ephemeral_ports_start() > local_stack._PICKED_PORTS_FROM + 100:
        assert all(local_stack._PICKED_PORTS_FROM <= port < local_stack._ephemeral_ports_start() for port in ports)
    for port in ports:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", port))
