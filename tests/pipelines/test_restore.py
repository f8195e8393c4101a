"""``python pipelines/restore.py`` end to end: a folder with a corrupt file restored by the registered champion,
re-runs that keep existing outputs, single files and one-line errors, S3 in and out, tiles and Ray actors.

The models are the conftest's brightener at known scales: 0 is the identity (every output equals its decoded
input exactly), 1 undoes a x0.5 darkening (far above the darkened input's PSNR). The MLflow server, the S3
server and Ray are real.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import boto3
import cv2
import numpy as np
import pytest
import torch
from mlflow import MlflowClient

import cpl_model
from pipelines.core import references
from pipelines.data import sources
from pipelines.serving import restoring
from pipelines.serving.config import RestoreSettings

from .conftest import REPO_ROOT, photo_halves, save_model, unique

pytestmark = pytest.mark.slow

SIDE = 96  # long side of the small test photos
CORRUPT = "sub/broken.jpg"
SKIPPED_LINE = f"skipped {CORRUPT}: {sources.UNDECODABLE}"
FAST = RestoreSettings(progress=False)


def restore_cli(env: dict[str, str], *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "pipelines/restore.py", *args], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout, check=False)


def psnr(image: np.ndarray, reference: np.ndarray) -> float:
    error = np.mean((image.astype(np.float64) - reference.astype(np.float64)) ** 2)
    return float(10 * np.log10(255.0 ** 2 / error))


def write(path: Path, image: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), image)


def files_under(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


def mixed_folder(folder: Path) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Write a PNG, a darkened PNG, a JPEG and a grayscale PNG in nested folders, plus ``CORRUPT`` (garbage
    bytes named .jpg). Returns the expected output of the identity model per output path (the decoded input,
    BGR, grayscale on three channels) and the clean original of ``dark.png``."""
    clean, photo, gray_source, other = photo_halves(4, SIDE).values()
    gray = cv2.cvtColor(gray_source, cv2.COLOR_BGR2GRAY)
    write(folder / "dark.png", (clean * 0.5).astype(np.uint8))
    write(folder / "other.png", other)
    write(folder / "sub" / "photo.jpeg", photo)
    write(folder / "sub" / "deeper" / "gray.png", gray)
    (folder / CORRUPT).write_bytes(b"\x00garbage, not a JPEG\xff" * 40)
    expected = {"dark.png": (clean * 0.5).astype(np.uint8), "other.png": other,
                "sub/photo.png": cv2.imread(str(folder / "sub" / "photo.jpeg"), cv2.IMREAD_COLOR),
                "sub/deeper/gray.png": np.repeat(gray[:, :, None], 3, axis=2)}
    return expected, clean


@pytest.fixture
def env(cli_env) -> dict[str, str]:
    """One torch thread per CLI process: on a 2-core machine shared with the MLflow, S3 and Ray servers, two
    spinning OpenMP threads make inference many times slower (measured: 11 s instead of 0.6 s for 3 images)."""
    return {**cli_env, "OMP_NUM_THREADS": "1"}


@pytest.fixture
def restore_env(env, mlflow_server) -> dict[str, str]:
    return {**env, "MLFLOW_TRACKING_URI": mlflow_server, "MLFLOW_DISABLE_TELEMETRY": "true"}


@pytest.fixture
def one_thread():
    """Restore in this process on one torch thread, as a Ray actor with one CPU does (and as fast, see ``env``)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def identity(tmp_path_factory, brightener) -> Path:
    return save_model(tmp_path_factory.mktemp("identity"), brightener, 0.0)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, brightener) -> Path:
    return save_model(tmp_path_factory.mktemp("trained"), brightener, 1.0)


# --- folders -----------------------------------------------------------------------------------------

def test_folder_with_a_corrupt_file_is_restored_by_the_champion_and_the_corrupt_file_skipped(
        restore_env, mlflow_server, registered_model, tmp_path):
    expected, clean = mixed_folder(tmp_path / "in")
    name, (identity_version, trained_version) = registered_model(0.0, 1.0, prefix="restore")
    client = MlflowClient(mlflow_server)
    client.set_registered_model_alias(name, "champion", identity_version)

    result = restore_cli(restore_env, "--model", f"models:/{name}@champion", "--input", str(tmp_path / "in"),
                         "--output", str(tmp_path / "identity"))
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.startswith(f"restored 4 image(s) into {tmp_path / 'identity'} in ")
    stderr = result.stderr.splitlines()
    assert SKIPPED_LINE in stderr and not any(line.startswith("error:") for line in stderr), result.stderr
    assert "restoring: 100%" in result.stderr and "5/5" in result.stderr  # the progress bar, corrupt file included
    assert files_under(tmp_path / "identity") == sorted(expected)  # relative paths kept, .png, nothing for CORRUPT
    for path, image in expected.items():
        restored = cv2.imread(str(tmp_path / "identity" / path), cv2.IMREAD_UNCHANGED)
        assert restored.shape == image.shape, path
        np.testing.assert_array_equal(restored, image, err_msg=path)

    # The alias moves to the trained model: the same command now brightens the darkened photo.
    client.set_registered_model_alias(name, "champion", trained_version)
    result = restore_cli(restore_env, "--model", f"models:/{name}@champion", "--input", str(tmp_path / "in"),
                         "--output", str(tmp_path / "trained"))
    assert result.returncode == 0, result.stderr[-3000:]
    assert SKIPPED_LINE in result.stderr.splitlines()
    assert files_under(tmp_path / "trained") == sorted(expected)
    for path, image in expected.items():
        assert cv2.imread(str(tmp_path / "trained" / path), cv2.IMREAD_UNCHANGED).shape == image.shape, path
    dark, brightened = expected["dark.png"], cv2.imread(str(tmp_path / "trained" / "dark.png"), cv2.IMREAD_COLOR)
    assert brightened.mean() > dark.mean() + 30
    assert psnr(brightened, clean) > psnr(dark, clean) + 10  # measured: about 11 dB -> 28 to 33 dB


def snapshot(folder: Path) -> dict[str, tuple[bytes, int]]:
    return {path: ((folder / path).read_bytes(), (folder / path).stat().st_mtime_ns) for path in files_under(folder)}


def test_rerun_keeps_existing_outputs_and_overwrite_restores_them_again(env, trained, tmp_path):
    photos = list(photo_halves(3, 64).values())
    for path, image in zip(("a.png", "b.jpg", "sub/c.png"), photos, strict=True):
        write(tmp_path / "in" / path, image)
    out = tmp_path / "out"
    args = ["--model", str(trained / cpl_model.WEIGHTS), "--input", str(tmp_path / "in"), "--output", str(out)]

    first = restore_cli(env, *args)
    assert first.returncode == 0, first.stderr[-3000:]
    assert first.stdout.startswith("restored 3 image(s)") and "already there" not in first.stdout
    restored = {path: data for path, (data, _) in snapshot(out).items()}
    assert sorted(restored) == ["a.png", "b.png", "sub/c.png"]

    # An output that differs from what the model makes (so a rewrite would show) and one that is missing.
    marker = cv2.imencode(".png", np.zeros((8, 8, 3), np.uint8))[1].tobytes()
    (out / "a.png").write_bytes(marker)
    (out / "sub" / "c.png").unlink()
    kept = snapshot(out)
    again = restore_cli(env, *args)
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stdout.startswith("restored 1 image(s)")
    assert "; 2 already there (--overwrite to redo)" in again.stdout
    now = snapshot(out)
    assert {path: now[path] for path in kept} == kept  # same bytes, same mtime: not rewritten
    assert now["a.png"][0] == marker
    assert now["sub/c.png"][0] == restored["sub/c.png"]

    overwritten = restore_cli(env, *args, "--overwrite")
    assert overwritten.returncode == 0, overwritten.stderr[-3000:]
    assert overwritten.stdout.startswith("restored 3 image(s)") and "already there" not in overwritten.stdout
    final = snapshot(out)
    assert {path: data for path, (data, _) in final.items()} == restored
    assert all(final[path][1] != now[path][1] for path in final)


# --- single files and errors ---------------------------------------------------------------------------

def test_a_single_file_is_restored_into_a_folder_or_to_the_named_file(env, identity, tmp_path):
    photo = next(iter(photo_halves(1, SIDE).values()))
    write(tmp_path / "photo.jpg", photo)
    decoded = cv2.imread(str(tmp_path / "photo.jpg"), cv2.IMREAD_COLOR)

    into_folder = restore_cli(env, "--model", str(identity), "--input", str(tmp_path / "photo.jpg"),
                              "--output", str(tmp_path / "folder"))
    assert into_folder.returncode == 0, into_folder.stderr[-3000:]
    assert into_folder.stdout.startswith(f"restored 1 image(s) into {tmp_path / 'folder'}")
    assert files_under(tmp_path / "folder") == ["photo.png"]
    np.testing.assert_array_equal(cv2.imread(str(tmp_path / "folder" / "photo.png"), cv2.IMREAD_UNCHANGED), decoded)

    named = restore_cli(env, "--model", str(identity), "--input", str(tmp_path / "photo.jpg"),
                        "--output", str(tmp_path / "named" / "restored.png"))
    assert named.returncode == 0, named.stderr[-3000:]
    assert files_under(tmp_path / "named") == ["restored.png"]
    np.testing.assert_array_equal(cv2.imread(str(tmp_path / "named" / "restored.png"), cv2.IMREAD_UNCHANGED), decoded)


def test_a_single_corrupt_file_exits_2_with_one_line_naming_it(env, identity, tmp_path):
    corrupt = tmp_path / "broken.jpg"
    corrupt.write_bytes(b"\x00garbage, not a JPEG\xff" * 40)
    result = restore_cli(env, "--model", str(identity), "--input", str(corrupt), "--output", str(tmp_path / "out"))
    assert result.returncode == 2
    assert result.stderr.splitlines() == [f"error: {corrupt}: {sources.UNDECODABLE}"]
    assert files_under(tmp_path) == ["broken.jpg"]


def test_a_missing_input_exits_2_naming_it(env, identity, tmp_path):
    missing = tmp_path / "no-such-folder"
    result = restore_cli(env, "--model", str(identity), "--input", str(missing), "--output", str(tmp_path / "out"))
    assert result.returncode == 2
    assert result.stderr.splitlines() == [f"error: {missing}: no such file or directory"]
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("case", ["default champion", "unknown alias", "missing checkpoint"])
def test_a_model_reference_that_names_nothing_exits_2_naming_it(restore_env, mlflow_server, case, tmp_path):
    photo = next(iter(photo_halves(1, 64).values()))
    write(tmp_path / "in" / "photo.png", photo)
    if case == "default champion":
        reference, args = "models:/cpl-restore@champion", []  # --model left out; the session's server has no champion
    elif case == "unknown alias":
        name = unique("restore")
        MlflowClient(mlflow_server).create_registered_model(name)
        reference = f"models:/{name}@nope"
        args = ["--model", reference]
    else:
        reference = str(tmp_path / "no-model")
        args = ["--model", reference]
    result = restore_cli(restore_env, *args, "--input", str(tmp_path / "in"), "--output", str(tmp_path / "out"))
    assert result.returncode == 2
    (line,) = result.stderr.splitlines()
    assert line.startswith(f"error: {reference}: "), line
    assert not (tmp_path / "out").exists()


# --- S3 -------------------------------------------------------------------------------------------------

def test_an_s3_prefix_is_restored_into_another_prefix_with_an_s3_checkpoint(env, s3_endpoint, bucket, brightener,
                                                                             tmp_path):
    s3 = boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1")
    photos = list(photo_halves(3, 64).values())
    expected = {}
    for (key, image), ext in zip({"a": photos[0], "sub/b": photos[1], "sub/deeper/c": photos[2]}.items(),
                                 (".png", ".jpg", ".png"), strict=True):
        data = cv2.imencode(ext, image)[1].tobytes()
        s3.put_object(Bucket=bucket, Key=f"in/{key}{ext}", Body=data)
        expected[f"{key}.png"] = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    s3.put_object(Bucket=bucket, Key=f"in/{CORRUPT}", Body=b"\x00garbage, not a JPEG\xff" * 40)
    s3.put_object(Bucket=bucket, Key=f"models/identity/{cpl_model.WEIGHTS}",
                  Body=(save_model(tmp_path / "model", brightener, 0.0) / cpl_model.WEIGHTS).read_bytes())

    result = restore_cli(env, "--model", f"s3://{bucket}/models/identity", "--input", f"s3://{bucket}/in/",
                         "--output", f"s3://{bucket}/out")
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.startswith(f"restored 3 image(s) into s3://{bucket}/out")
    assert SKIPPED_LINE in result.stderr.splitlines()
    listed = [item["Key"] for item in s3.list_objects_v2(Bucket=bucket, Prefix="out/")["Contents"]]
    assert sorted(listed) == sorted(f"out/{path}" for path in expected)
    for path, image in expected.items():
        body = s3.get_object(Bucket=bucket, Key=f"out/{path}")["Body"].read()
        np.testing.assert_array_equal(cv2.imdecode(np.frombuffer(body, np.uint8), cv2.IMREAD_UNCHANGED), image,
                                      err_msg=path)


# --- tiles and Ray --------------------------------------------------------------------------------------

def test_tiles_reproduce_the_identity_exactly_and_stay_close_to_the_whole_image_result(identity, trained, one_thread,
                                                                                      tmp_path):
    photo = next(iter(photo_halves(1, 400).values()))
    clean = cv2.resize(photo, (260, 300), interpolation=cv2.INTER_AREA)  # 300 high, 260 wide: 3 x 3 tiles of 128
    dark = (clean * 0.5).astype(np.uint8)
    write(tmp_path / "clean.png", clean)
    write(tmp_path / "dark.png", dark)

    def restore(model: Path, name: str, tile: int | None) -> np.ndarray:
        output = tmp_path / f"{model.name}-{tile}" / "out.png"
        summary = restoring.restore_images(references.resolve(str(model), ""), str(tmp_path / name), str(output),
                                           RestoreSettings(tile=tile, progress=False), "")
        assert summary.outcomes == {restoring.RESTORED: [str(tmp_path / name)]}
        return cv2.imread(str(output), cv2.IMREAD_UNCHANGED)

    np.testing.assert_array_equal(restore(identity, "clean.png", 128), clean)

    tiled = restore(trained, "dark.png", 128).astype(np.float64)
    whole = restore(trained, "dark.png", None).astype(np.float64)
    assert tiled.shape == whole.shape == clean.shape
    # The network attends over the whole input it is given, so tiles cannot match the whole image exactly
    # (measured: 0.8 to 1.4 levels on average); blended tiles must still change the result far less than the
    # restoration itself does (about 60 levels here) and keep its quality.
    difference = np.abs(tiled - whole).mean()
    assert 0 < difference < 0.05 * np.abs(whole - dark).mean()
    assert psnr(tiled, clean) > psnr(whole, clean) - 0.5
    assert psnr(tiled, clean) > psnr(dark, clean) + 10


def test_ray_workers_write_the_same_bytes_as_in_process_and_report_the_corrupt_file(ray_cluster, mlflow_server,
                                                                                  registered_brighteners, one_thread,
                                                                                  tmp_path):
    mixed_folder(tmp_path / "in")
    ref = references.resolve(registered_brighteners[1.0], mlflow_server)
    # One torch thread here as in each one-CPU actor: float sums can round a pixel differently with another count.
    local = restoring.restore_images(ref, str(tmp_path / "in"), str(tmp_path / "local"), FAST, mlflow_server)
    remote = restoring.restore_images(ref, str(tmp_path / "in"), str(tmp_path / "ray"),
                                      RestoreSettings(workers=2, progress=False), mlflow_server)
    assert remote.skipped == local.skipped == {sources.UNDECODABLE: [CORRUPT]}
    assert sorted(remote.outcomes[restoring.RESTORED]) == sorted(local.outcomes[restoring.RESTORED]) == \
        ["dark.png", "other.png", "sub/deeper/gray.png", "sub/photo.jpeg"]
    assert files_under(tmp_path / "ray") == files_under(tmp_path / "local")
    for path in files_under(tmp_path / "local"):
        assert (tmp_path / "ray" / path).read_bytes() == (tmp_path / "local" / path).read_bytes(), path


def test_inputs_that_would_share_an_output_are_reported_and_relative_paths_reach_ray_actors(
        ray_cluster, identity, one_thread, tmp_path, monkeypatch):
    photo = next(iter(photo_halves(1, 64).values()))
    write(tmp_path / "in" / "a.png", photo)
    write(tmp_path / "in" / "a.jpg", photo)
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / cpl_model.WEIGHTS).write_bytes((identity / cpl_model.WEIGHTS).read_bytes())
    monkeypatch.chdir(tmp_path)  # not where Ray started: actors resolve relative paths elsewhere
    summary = restoring.restore_images(references.resolve("model", "unused"), "in", "out",
                                       RestoreSettings(workers=1, progress=False), "unused")
    assert summary.outcomes[restoring.RESTORED] == ["a.jpg"]
    assert summary.skipped == {restoring.SAME_OUTPUT: ["a.png"]}
    assert [path.name for path in (tmp_path / "out").iterdir()] == ["a.png"]


def test_an_output_file_name_chooses_its_encoding(identity, tmp_path):
    photo = next(iter(photo_halves(1, 64).values()))
    write(tmp_path / "photo.png", photo)
    ref = references.resolve(str(identity), "unused")
    restoring.restore_images(ref, str(tmp_path / "photo.png"), str(tmp_path / "named.jpg"), FAST, "unused")
    assert (tmp_path / "named.jpg").read_bytes()[:3] == b"\xff\xd8\xff"  # JPEG, not PNG bytes under a .jpg name
