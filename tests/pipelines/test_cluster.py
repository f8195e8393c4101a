"""Across nodes, for real: the entry points on a Ray cluster of a head and two worker nodes (``ray_nodes``).

Which cluster a command joins; locations that only one machine sees are refused before any work; a synthesis
job that loses a worker node publishes the same bytes. A training run that loses nodes: test_cluster_training.py.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from pipelines.core import storage
from pipelines.data import sources, versions

from .conftest import (
    REPO_ROOT,
    SYNTHESIS,
    free_port,
    new_bucket,
    run_job,
    save_model,
    shard_checksums,
    write_dim_benchmark,
    write_photo_folder,
)
from .test_synthesize import one_line_error

pytestmark = pytest.mark.slow

SAME_CONFIG = [f"--set=synthesis.{key}={value}" for key, value in SYNTHESIS.items()]


def run_entry_point(script: str, env: dict[str, str], *args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, f"pipelines/{script}", *args], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout, check=False)


# --- which cluster a command joins ------------------------------------------------------------------------

@pytest.fixture
def dead_head(tmp_path) -> SimpleNamespace:
    """What a Ray head killed without ``ray stop`` leaves: a record naming its address, where nothing listens.
    Under a RAY_TMPDIR of its own (short: Ray puts socket paths below it), not the machine's /tmp/ray."""
    ray_tmp = Path(tempfile.mkdtemp(prefix="ray-", dir="/tmp"))
    (ray_tmp / "ray").mkdir()
    address = f"127.0.0.1:{free_port()}"
    (ray_tmp / "ray" / "ray_current_cluster").write_text(address)
    yield SimpleNamespace(tmpdir=str(ray_tmp), address=address)
    shutil.rmtree(ray_tmp, ignore_errors=True)


def test_with_no_address_a_command_starts_its_own_ray_whatever_record_a_dead_head_left(cli_env, dead_head,
                                                                                       photo_folder, tmp_path):
    env = {**cli_env, "RAY_TMPDIR": dead_head.tmpdir}
    result = run_entry_point("synthesize.py", env, "--source", str(photo_folder), "--out", str(tmp_path / "out"),
                             "--name", "pairs", *SAME_CONFIG)
    assert result.returncode == 0, result.stderr[-3000:]
    assert versions.read_manifest(str(tmp_path / "out" / "pairs"))["counts"]


@pytest.mark.parametrize("how", ["RAY_ADDRESS", "ray.address", "auto"])
def test_an_address_where_no_cluster_answers_is_one_line_naming_it(cli_env, dead_head, photo_folder, tmp_path, how):
    address = "auto" if how == "auto" else dead_head.address
    env = {**cli_env, "RAY_TMPDIR": dead_head.tmpdir, **({"RAY_ADDRESS": address} if how != "ray.address" else {})}
    setting = ["--set", f"ray.address={address}"] if how == "ray.address" else []
    result = run_entry_point("synthesize.py", env, "--source", str(photo_folder), "--out", str(tmp_path / "out"),
                             "--name", "pairs", *setting, timeout=60)
    assert one_line_error(result) == (f"error: cannot join the Ray cluster at {address} (ray.address or RAY_ADDRESS): "
                                      f"nothing answers at {dead_head.address} (Connection refused)")
    assert not [path for path in (tmp_path / "out").rglob("*") if path.is_file()]


# --- node-local locations ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def cluster_inputs(tmp_path_factory, brightener) -> SimpleNamespace:
    """Local photos, a local paired benchmark, a local model checkpoint, and the photos packed into S3."""
    base = tmp_path_factory.mktemp("cluster-inputs")
    write_photo_folder(base / "photos", count=4)
    bucket = new_bucket()
    sources.pack(str(base / "photos"), f"s3://{bucket}/packed", rows_per_file=2)
    return SimpleNamespace(photos=str(base / "photos"), benchmark=str(write_dim_benchmark(base / "benchmark", 1)),
                           model=str(save_model(base / "model", brightener, 1.0)), packed=f"s3://{bucket}/packed",
                           bucket=bucket)


def refusals(inputs, mlflow_url: str, local: Path) -> list:
    s3 = f"s3://{inputs.bucket}"
    return [
        ("synthesize.py", {}, ["--source", inputs.photos, "--out", f"{s3}/datasets", "--name", "pairs"],
         f"source: {inputs.photos} is on this machine only"),
        ("synthesize.py", {}, ["--source", inputs.packed, "--out", str(local), "--name", "pairs"],
         f"output.uri: {local} is on this machine only"),
        ("train.py", {"MLFLOW_TRACKING_URI": mlflow_url},
         ["--smoke", "--set", f"data.source={inputs.packed}", "--set", f"run.storage={local}"],
         f"run.storage: {local} is on this machine only"),
        ("train.py", {"MLFLOW_TRACKING_URI": ""},
         ["--smoke", "--set", f"data.source={inputs.packed}", "--set", f"run.storage={s3}/runs"],
         "MLFLOW_TRACKING_URI (or tracking.uri): sqlite:///"),
        ("evaluate.py", {}, ["--model", inputs.model, "--data", inputs.benchmark, "--workers", "1"],
         f"data: {inputs.benchmark} is on this machine only"),
        ("restore.py", {}, ["--model", inputs.model, "--input", inputs.photos, "--output", f"{s3}/restored",
                            "--workers", "1"], f"input: {inputs.photos} is on this machine only"),
    ]


@pytest.mark.parametrize("case", range(6), ids=["synthesize source", "synthesize output", "train storage",
                                                 "train sqlite tracking", "evaluate data", "restore input"])
def test_a_location_only_this_machine_sees_is_refused_before_any_work(ray_nodes, cluster_inputs, mlflow_server,
                                                                      tmp_path, case):
    script, env, args, named = refusals(cluster_inputs, mlflow_server, tmp_path / "local")[case]
    environment = {**ray_nodes.env, **env, "MLFLOW_DISABLE_TELEMETRY": "true"}
    environment = {key: value for key, value in environment.items() if value}
    result = run_entry_point(script, environment, *args)
    line = one_line_error(result)
    assert named in line, line
    assert "the Ray cluster spans 3 nodes" in line and "CPL_SHARED_PATHS" in line
    assert ("an HTTP tracking server" if "tracking" in named else "use s3://") in line
    assert not storage.list_files(f"s3://{cluster_inputs.bucket}/datasets")
    assert not storage.list_files(f"s3://{cluster_inputs.bucket}/restored")
    assert not [path for path in tmp_path.rglob("*") if path.is_file()]  # the write probes are gone too


def test_a_folder_declared_shared_is_accepted(ray_nodes, cluster_inputs, tmp_path):
    out = tmp_path / "restored"
    env = {**ray_nodes.env, "CPL_SHARED_PATHS": f"/nowhere:{cluster_inputs.photos}:{tmp_path}:{cluster_inputs.model}"}
    result = run_entry_point("restore.py", env, "--model", cluster_inputs.model, "--input", cluster_inputs.photos,
                             "--output", str(out), "--workers", "2")
    assert result.returncode == 0, result.stderr[-3000:]
    assert sorted(p.stem for p in out.iterdir()) == sorted(p.stem for p in Path(cluster_inputs.photos).iterdir())


# --- a lost node ------------------------------------------------------------------------------------------

def wait_until(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"no {what} after {timeout} s"
        time.sleep(0.2)


def test_a_synthesis_job_that_loses_a_worker_node_publishes_the_same_bytes(ray_nodes, ray_cluster, tmp_path):
    """Killed once the first shards are written, with tasks still running on both worker nodes."""
    bucket = new_bucket()
    write_photo_folder(tmp_path / "photos", count=16)
    sources.pack(str(tmp_path / "photos"), f"s3://{bucket}/packed", rows_per_file=4)
    undisturbed = run_job(f"s3://{bucket}/packed", f"s3://{bucket}/reference", "pairs", rows_per_shard=1)

    dataset = f"s3://{bucket}/datasets/pairs"
    job = subprocess.Popen([sys.executable, "pipelines/synthesize.py", "--source", f"s3://{bucket}/packed",
                            "--out", f"s3://{bucket}/datasets", "--name", "pairs", "--set", "output.rows_per_shard=1",
                            *SAME_CONFIG], cwd=REPO_ROOT, env=ray_nodes.env, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True)
    def written() -> int:
        return sum(info.uri.endswith(".parquet") for info in storage.list_files(dataset))

    try:
        wait_until(lambda: written() > 0, 180, "shard written")
        ray_nodes.kill(ray_nodes.workers[0])
        written_before_the_kill = written()
        output, errors = job.communicate(timeout=300)
    finally:
        job.kill()
        ray_nodes.add_worker()  # back to two worker nodes for the tests after this one
    assert job.returncode == 0, errors[-3000:]
    manifest = versions.read_manifest(dataset)
    assert written_before_the_kill < len(manifest["shards"]), "the job was over before the node was lost"
    assert shard_checksums(manifest) == shard_checksums(undisturbed)
    assert manifest["counts"] == undisturbed["counts"]
    version = storage.join(dataset, f"v={manifest['version']}")
    listed = {storage.relative(info.uri, version) for info in storage.list_files(version)}
    assert listed == {"manifest.json", *(shard["path"] for shard in manifest["shards"])}
