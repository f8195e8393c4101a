"""``python pipelines/synthesize.py`` in a subprocess, from the repository root: help, dry run, the contract
form, one-line errors, ``--pack``, ``--clean``, and a run killed with SIGKILL before it publishes."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipelines.core import storage
from pipelines.data import sources, versions

from .conftest import REPO_ROOT, ROWS_PER_SHARD, SOURCE_COUNT, SYNTHESIS, shard_checksums

# The flags that reproduce the shared datasets' config (``SYNTHESIS``, ``ROWS_PER_SHARD``).
SAME_CONFIG = ["--seed", str(SYNTHESIS["seed"]), "--recipes", SYNTHESIS["recipes"], "--patch", str(SYNTHESIS["patch"]),
               "--crops-per-image", str(SYNTHESIS["crops_per_image"]),
               "--set", f"synthesis.val_fraction={SYNTHESIS['val_fraction']}",
               "--set", f"synthesis.test_fraction={SYNTHESIS['test_fraction']}",
               "--set", f"output.rows_per_shard={ROWS_PER_SHARD}", "--set", "ray.progress_bars=false"]


RAY_LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+\s+(INFO|WARNING) ")


def one_line_error(result: subprocess.CompletedProcess) -> str:
    """The CLI's single stderr line of a failed run (Ray's own log lines aside), asserting there is one."""
    assert result.returncode != 0, result.stdout
    lines = [line for line in result.stderr.strip().splitlines() if not RAY_LOG_LINE.match(line)]
    assert len(lines) == 1, result.stderr
    return lines[0]


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*")}


def latest(dataset: str) -> str:
    return storage.read_bytes(storage.join(dataset, versions.LATEST)).decode().strip()


def test_help_exits_0_and_shows_every_mode(run_cli):
    result = run_cli("--help")
    assert result.returncode == 0, result.stderr
    for flag in ("--source", "--out", "--name", "--seed", "--recipes", "--patch", "--crops-per-image", "--config",
                 "--set", "--dry-run", "--pack", "--clean"):
        assert flag in result.stdout


def test_dry_run_prints_the_plan_as_json_and_writes_nothing(run_cli, photo_folder, tmp_path):
    before = snapshot(tmp_path)
    result = run_cli("--source", str(photo_folder), "--out", str(tmp_path / "out"), "--name", "pairs",
                     "--recipes", "noise25,haze", "--crops-per-image", "3", "--set", "synthesis.seed=11", "--dry-run")
    assert result.returncode == 0, result.stderr
    printed = json.loads(result.stdout)
    assert printed["plan"] == {"source": str(photo_folder), "packed": False, "sources": SOURCE_COUNT,
                               "recipes": ["noise25", "haze"], "expected_pairs": 3 * SOURCE_COUNT}
    assert printed["output"] == str(tmp_path / "out" / "pairs" / "v=<new>")
    assert printed["config"]["synthesis"]["seed"] == 11 and printed["config"]["output"]["name"] == "pairs"
    assert snapshot(tmp_path) == before


def test_dry_run_on_a_packed_s3_table_counts_its_images(run_cli, photo_folder, bucket):
    sources.pack(str(photo_folder), f"s3://{bucket}/packed")
    result = run_cli("--source", f"s3://{bucket}/packed", "--out", f"s3://{bucket}/datasets", "--name", "pairs",
                     "--recipes", "cdd11", "--dry-run")
    assert result.returncode == 0, result.stderr
    plan = json.loads(result.stdout)["plan"]
    assert plan["packed"] is True and plan["sources"] == SOURCE_COUNT and len(plan["recipes"]) == 11
    assert [f.uri for f in storage.list_files(f"s3://{bucket}/datasets")] == []


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_the_contract_form_publishes_a_version_identical_to_an_in_process_run_on_one_cpu(run_cli, local_dataset,
                                                                                          tmp_path):
    """One Ray CPU in the subprocess against two in the session: the shards must not change."""
    out = tmp_path / "out"
    result = run_cli("--source", local_dataset.source, "--out", str(out), "--name", "pairs", *SAME_CONFIG,
                     "--set", "ray.num_cpus=1", timeout=240)
    assert result.returncode == 0, result.stderr[-3000:]
    version = latest(str(out / "pairs"))
    assert f"published {out / 'pairs' / f'v={version}'}" in result.stdout
    assert f"pairs: {SOURCE_COUNT} " in result.stdout
    manifest = versions.read_manifest(str(out / "pairs"))
    assert manifest["version"] == version != local_dataset.manifest["version"]
    assert shard_checksums(manifest) == shard_checksums(local_dataset.manifest)
    assert manifest["config"]["ray"]["num_cpus"] == 1


@pytest.mark.parametrize("args, named", [
    (["--set", "synthesis.crops_per_imag=2"], "synthesis.crops_per_imag: unknown key"),
    (["--set", "training.epochs=2"], "training: unknown key"),
    (["--patch", "8"], "synthesis.patch"),
    (["--set", "synthesis.seed"], "--set expects key=value"),
    (["--recipes", "noise25,hazy"], "'hazy'"),
])
def test_a_bad_setting_exits_non_zero_with_one_line_naming_it(run_cli, photo_folder, tmp_path, args, named):
    result = run_cli("--source", str(photo_folder), "--out", str(tmp_path / "out"), "--name", "pairs", *args)
    assert named in one_line_error(result)
    assert not (tmp_path / "out").exists()


def test_a_bad_config_file_is_named(run_cli, photo_folder, tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("synthesis:\n  sed: 3\n")
    result = run_cli("--config", str(config), "--source", str(photo_folder), "--out", str(tmp_path / "out"))
    assert "synthesis.sed: unknown key" in one_line_error(result)


def test_a_missing_source_folder_is_named(run_cli, tmp_path):
    result = run_cli("--source", str(tmp_path / "nowhere"), "--out", str(tmp_path / "out"), "--name", "pairs")
    assert one_line_error(result) == f"error: {tmp_path / 'nowhere'}: no such file or directory"


@pytest.mark.timeout(120)
def test_a_missing_output_bucket_is_named_before_ray_starts(run_cli, photo_folder):
    """Like a missing source, an unusable output is found before any work, Ray's start-up included."""
    result = run_cli("--source", str(photo_folder), "--out", "s3://bucket-does-not-exist-0/datasets",
                     "--name", "pairs")
    assert one_line_error(result) == "error: s3://bucket-does-not-exist-0/datasets/pairs: no such bucket"
    assert "Started a local Ray instance" not in result.stderr


@pytest.mark.timeout(120)
def test_an_output_below_a_file_is_named_in_one_line(run_cli, photo_folder, tmp_path):
    (tmp_path / "a-file").write_text("")
    result = run_cli("--source", str(photo_folder), "--out", str(tmp_path / "a-file"), "--name", "pairs")
    assert str(tmp_path / "a-file") in one_line_error(result)


def test_pack_writes_a_table_once_and_refuses_a_second_time(run_cli, photo_folder, tmp_path):
    packed = tmp_path / "packed"
    result = run_cli("--pack", "--source", str(photo_folder), "--out", str(packed))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"packed {SOURCE_COUNT} images from {photo_folder} into {packed}"
    assert sources.is_packed(str(packed))
    summary = json.loads((packed / sources.PACKED_MARKER).read_text())
    assert summary["count"] == SOURCE_COUNT
    again = run_cli("--pack", "--source", str(photo_folder), "--out", str(packed))
    assert "already holds a packed table" in one_line_error(again)
    assert json.loads((packed / sources.PACKED_MARKER).read_text()) == summary


def test_pack_needs_a_source_and_an_output(run_cli, tmp_path):
    assert "--pack needs --source and --out" in one_line_error(run_cli("--pack", "--out", str(tmp_path / "p")))


def test_pack_and_clean_are_exclusive(run_cli, tmp_path):
    result = run_cli("--pack", "--clean", "--out", str(tmp_path))
    assert result.returncode != 0 and "not allowed with argument" in result.stderr


@pytest.fixture
def dataset_with_a_leftover(local_dataset, tmp_path):
    """A copy of the shared dataset plus an unpublished version (shards, no manifest)."""
    uri = tmp_path / "out" / "pairs"
    shutil.copytree(local_dataset.uri, uri)
    leftover = uri / "v=20990101T000000Z-dead00"
    shutil.copytree(uri / f"v={local_dataset.manifest['version']}", leftover)
    (leftover / versions.MANIFEST).unlink()
    return uri, leftover


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_clean_removes_exactly_the_unpublished_versions(run_cli, dataset_with_a_leftover, local_dataset):
    uri, leftover = dataset_with_a_leftover
    # --source is irrelevant to --clean; see test_clean_runs_in_its_documented_form_without_a_source.
    result = run_cli("--clean", "--out", str(uri.parent), "--name", "pairs", "--source", "unused")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "removed 1 unpublished version(s): 20990101T000000Z-dead00"
    assert not leftover.exists()
    assert versions.read_manifest(str(uri)) == local_dataset.manifest


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_clean_runs_in_its_documented_form_without_a_source(run_cli, dataset_with_a_leftover):
    uri, leftover = dataset_with_a_leftover
    result = run_cli("--clean", "--out", str(uri.parent), "--name", "pairs")  # as in the docstring and README
    assert result.returncode == 0, result.stderr
    assert not leftover.exists()


# --- a real kill -------------------------------------------------------------------------------------------

# Runs the CLI, but stalls where the job would publish: every shard is written, the manifest is not. The
# test then kills the whole process group with SIGKILL, the way an OOM killer or a preempted node would.
STALL_BEFORE_PUBLISHING = """
import os, sys, time
sys.path.insert(0, os.getcwd())
from pipelines import synthesize
from pipelines.data import job

def stall(dataset_uri, version, manifest):
    with open(os.environ["STALLED_MARKER"] + ".tmp", "w") as marker:
        marker.write(version)
    os.replace(os.environ["STALLED_MARKER"] + ".tmp", os.environ["STALLED_MARKER"])
    time.sleep(600)

job.publish = stall  # the job calls it by this name
sys.exit(synthesize.main(sys.argv[1:]))
"""


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_run_killed_with_sigkill_before_publishing_leaves_nothing_readers_can_see(cli_env, local_dataset,
                                                                                    tmp_path):
    uri = tmp_path / "out" / "pairs"
    shutil.copytree(local_dataset.uri, uri)
    previous = local_dataset.manifest["version"]
    marker = tmp_path / "stalled"
    with open(tmp_path / "stdout", "w") as stdout, open(tmp_path / "stderr", "w") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-c", STALL_BEFORE_PUBLISHING, "--source", local_dataset.source,
             "--out", str(uri.parent), "--name", "pairs", *SAME_CONFIG],
            cwd=REPO_ROOT, env={**cli_env, "STALLED_MARKER": str(marker)}, stdout=stdout, stderr=stderr,
            start_new_session=True)
        try:
            deadline = time.monotonic() + 240
            while not marker.exists():
                assert process.poll() is None, (tmp_path / "stderr").read_text()[-3000:]
                assert time.monotonic() < deadline, "the job never reached publishing"
                time.sleep(0.2)
        finally:
            with contextlib.suppress(ProcessLookupError):  # already gone if it failed early
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=60)
    assert process.returncode == -signal.SIGKILL
    killed = marker.read_text()
    folder = uri / f"v={killed}"
    assert any(folder.glob("part-*.parquet")) and not (folder / versions.MANIFEST).exists()
    assert versions.published_versions(str(uri)) == [previous]
    assert latest(str(uri)) == previous
    with pytest.raises(storage.StorageError, match="not a published version"):
        versions.read_manifest(str(uri), killed)
    assert versions.read_manifest(str(uri)) == local_dataset.manifest
    assert versions.remove_unpublished(str(uri)) == [killed]
