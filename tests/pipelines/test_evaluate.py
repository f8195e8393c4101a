"""Evaluating a model on a frozen benchmark: the CLI on paired folders (with missing, orphan and corrupt files),
registered models against a real MLflow server, clear errors for references that name nothing, published
datasets, Ray mode against in-process, how folders pair up, and the metrics against scikit-image.

The models are the conftest's brightener at known scales (0: the identity), so the expected quality is known.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import torch
from mlflow import MlflowClient

import cpl_model
from degradation_synth.recipes import Recipe
from pipelines.core import grid as sheets
from pipelines.core import provenance, references, storage
from pipelines.data import layouts, sources
from pipelines.evaluation import benchmarks, reports, scoring
from pipelines.evaluation.benchmarks import Case, Skip
from pipelines.evaluation.config import BenchmarkChoice, EvalSettings

from .conftest import REPO_ROOT, photo_halves, save_model, scaled_model, unique, write_dim_benchmark

pytestmark = pytest.mark.slow

TASKS = ("dim", "dimmer")


def evaluate_cli(env: dict[str, str], *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "pipelines/evaluate.py", *args], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout, check=False)


def write_rgb(path: Path, image: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))


def read_rgb(path: Path) -> np.ndarray:
    return cv2.cvtColor(cv2.imread(str(path), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def messy_benchmark(root: Path) -> Path:
    """The dim benchmark with a missing target (dim/1), a corrupt input with a valid target (dim/bad) and an
    orphan target (dimmer/orphan): 2 dim pairs and 3 dimmer pairs are scored."""
    write_dim_benchmark(root)
    (root / "dim" / "target" / "1.png").unlink()
    (root / "dim" / "input" / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage, not image data" * 40)
    shutil.copy(root / "dim" / "target" / "0.png", root / "dim" / "target" / "bad.png")
    shutil.copy(root / "dimmer" / "target" / "0.png", root / "dimmer" / "target" / "orphan.png")
    return root


MESSY_SKIPPED = {layouts.NO_INPUT: ["dimmer/target/orphan.png"], layouts.NO_TARGET: ["dim/input/1.png"],
                 sources.UNDECODABLE: ["dim/input/bad.png"]}
MESSY_IDS = ["dim/0", "dim/2", "dimmer/0", "dimmer/1", "dimmer/2"]


@pytest.fixture
def eval_env(cli_env, mlflow_server) -> dict[str, str]:
    return {**cli_env, "MLFLOW_TRACKING_URI": mlflow_server, "MLFLOW_DISABLE_TELEMETRY": "true"}


@pytest.fixture
def registered(registered_model) -> tuple[str, str]:
    """The trained brightener (scale 1) under a registered name of its own: ``(name, version)``."""
    name, (version,) = registered_model(1.0, prefix="eval")
    return name, version


def evaluation_runs(tracking_uri: str, tag: str, value: str) -> list:
    client = MlflowClient(tracking_uri)
    experiment = client.get_experiment_by_name(reports.EXPERIMENT)
    if experiment is None:
        return []
    return client.search_runs([experiment.experiment_id], filter_string=f"tags.`{tag}` = '{value}'")


# --- the CLI on a paired folder ----------------------------------------------------------------------

def test_cli_scores_a_registered_model_on_a_paired_folder_reports_skips_and_logs_an_evaluation_run(
        eval_env, mlflow_server, registered, tmp_path):
    name, version = registered
    data = messy_benchmark(tmp_path / "bench")
    out = tmp_path / "report"
    result = evaluate_cli(eval_env, "--model", f"models:/{name}/{version}", "--data", str(data), "--out", str(out))
    assert result.returncode == 0, result.stderr[-4000:]

    report = json.loads((out / "report.json").read_text())
    assert report["model"]["name"] == name and report["model"]["version"] == version
    assert report["model"]["uri"] == f"models:/{name}/{version}"
    assert report["data"]["kind"] == "folder" and report["data"]["label"] == str(data)
    assert report["data"]["skipped"] == MESSY_SKIPPED
    assert list(report["tasks"]) == list(TASKS)
    assert {task: s["count"] for task, s in report["tasks"].items()} == {"dim": 2, "dimmer": 3}
    assert report["all"]["count"] == 5 and report["recipes"] == {}
    for task, summary in report["tasks"].items():
        assert summary["model"]["psnr"] > summary["input"]["psnr"] + 3, task
        assert summary["model"]["ssim"] > summary["input"]["ssim"], task
        assert summary["gain_psnr"] == pytest.approx(summary["model"]["psnr"] - summary["input"]["psnr"])
    assert "cases" not in report
    assert report["code_version"] == provenance.code_version()

    rows = [json.loads(line) for line in (out / "cases.jsonl").read_text().splitlines()]
    assert [row["id"] for row in rows] == MESSY_IDS
    for task in TASKS:
        psnrs = [row["psnr"] for row in rows if row["task"] == task]
        assert report["tasks"][task]["model"]["psnr"] == pytest.approx(np.mean(psnrs), rel=1e-12)
    ranked = [row["id"] for row in sorted(rows, key=lambda row: (row["psnr"] - row["input_psnr"], row["id"]))]
    assert report["worst"] == ranked[:4] and report["best"] == ranked[::-1][:4]
    markdown = (out / "report.md").read_text()
    assert f"{name} v{version}" in markdown and "dim/input/bad.png" in markdown and "| dimmer | 3 |" in markdown
    grid = cv2.imread(str(out / "grid.png"))
    # A header, then per case shown (4 worst + 4 best of 5 cases: each once) a label strip over its panels,
    # each panel as large as the largest input enlarged (64-pixel photos, three times).
    fitted = [sheets.fit(cv2.imread(str(data / case.split("/")[0] / "input" / f"{case.split('/')[1]}.png")))
              for case in MESSY_IDS]
    cell_h, cell_w = max(image.shape[0] for image in fitted), max(image.shape[1] for image in fitted)
    assert max(cell_h, cell_w) == 3 * 64
    assert grid.shape == (sheets.STRIP + 5 * (sheets.STRIP + cell_h), 3 * cell_w + 2 * sheets.GAP, 3)

    (run,) = evaluation_runs(mlflow_server, "cpl.model_name", name)
    assert f"MLflow evaluation run: {run.info.run_id}" in result.stdout
    assert run.data.tags["cpl.model_version"] == version
    assert run.data.tags["cpl.kind"] == "evaluation"
    assert run.data.tags["cpl.model"] == f"models:/{name}/{version}"
    assert run.data.tags["cpl.data"] == str(data)
    assert run.data.tags["cpl.data_digest"] == report["data"]["digest"]
    metrics = run.data.metrics
    assert metrics["dim/psnr"] == pytest.approx(report["tasks"]["dim"]["model"]["psnr"], rel=1e-9)
    assert metrics["dim/input_psnr"] == pytest.approx(report["tasks"]["dim"]["input"]["psnr"], rel=1e-9)
    assert metrics["dimmer/ssim"] == pytest.approx(report["tasks"]["dimmer"]["model"]["ssim"], rel=1e-9)
    assert metrics["all/psnr"] == pytest.approx(report["all"]["model"]["psnr"], rel=1e-9)
    assert metrics["all/gain_psnr"] == pytest.approx(report["all"]["gain_psnr"], rel=1e-9)
    client = MlflowClient(mlflow_server)
    assert {a.path for a in client.list_artifacts(run.info.run_id)} == {"report.json", "report.md", "cases.jsonl",
                                                                        "grid.png"}
    logged = client.download_artifacts(run.info.run_id, "report.json", str(tmp_path))
    assert json.loads(Path(logged).read_text()) == report


def test_cli_scores_a_benchmark_in_its_own_layout_with_input_psnr_computed_independently(
        eval_env, brightener, tmp_path):
    """Rain100L as PReNet ships it: rain-NNN.png beside norain-NNN.png, one rain image without its clean one."""
    root = tmp_path / "Rain100L"
    photos = list(photo_halves(3, 64).values())
    expected = []
    for i, clean in enumerate(photos, start=1):
        streaks = (np.arange(clean.shape[1]) % 7 == i)[None, :, None] * 90  # vertical streaks, a column in 7
        rainy = np.clip(clean.astype(np.int16) + streaks, 0, 255).astype(np.uint8)
        write_rgb(root / f"rain-{i:03d}.png", rainy)
        if i < 3:
            write_rgb(root / f"norain-{i:03d}.png", clean)
            mse = np.mean((rainy.astype(np.float64) - clean.astype(np.float64)) ** 2)
            expected.append(10 * np.log10(255.0 ** 2 / mse))
    checkpoint = save_model(tmp_path / "checkpoint_000001", brightener, 0.0)
    out = tmp_path / "report"
    result = evaluate_cli(eval_env, "--model", str(checkpoint), "--data", str(root), "--benchmark", "rain100l",
                          "--out", str(out), "--no-log")
    assert result.returncode == 0, result.stderr[-4000:]
    report = json.loads((out / "report.json").read_text())
    assert report["data"]["label"] == f"rain100l:{root}"
    assert report["data"]["skipped"] == {"no_target": ["rain-003.png"]}
    assert {task: s["count"] for task, s in report["tasks"].items()} == {"rain": 2}
    assert report["tasks"]["rain"]["input"]["psnr"] == pytest.approx(np.mean(expected), rel=1e-5)

    wrong = evaluate_cli(eval_env, "--model", str(checkpoint), "--data", str(root), "--benchmark", "gopro",
                         "--no-log")
    assert wrong.returncode == 2 and f"{root}: not a gopro layout: expected <scene>/blur/" in wrong.stderr


def test_cli_with_the_identity_checkpoint_reports_model_metrics_exactly_equal_to_the_input(
        eval_env, mlflow_server, brightener, tmp_path):
    data = messy_benchmark(tmp_path / "bench")
    checkpoint = save_model(tmp_path / "checkpoint_000001", brightener, 0.0)
    out = tmp_path / "report"
    result = evaluate_cli(eval_env, "--model", str(checkpoint), "--data", str(data), "--out", str(out), "--no-log")
    assert result.returncode == 0, result.stderr[-4000:]

    report = json.loads((out / "report.json").read_text())
    assert report["model"]["uri"] == str(checkpoint / cpl_model.WEIGHTS) and report["model"]["name"] is None
    assert report["data"]["skipped"] == MESSY_SKIPPED
    assert {task: s["count"] for task, s in report["tasks"].items()} == {"dim": 2, "dimmer": 3}
    for summary in [*report["tasks"].values(), report["all"]]:
        assert summary["model"] == summary["input"]
        assert summary["gain_psnr"] == 0.0
        assert 5 < summary["input"]["psnr"] < 30  # a darkened photo: far from the target, far from the cap
    rows = [json.loads(line) for line in (out / "cases.jsonl").read_text().splitlines()]
    assert [row["id"] for row in rows] == MESSY_IDS
    assert all(row[name] == row[f"input_{name}"] for row in rows for name in cpl_model.METRICS)
    assert (out / "report.md").is_file() and (out / "grid.png").is_file()
    assert "MLflow evaluation run" not in result.stdout
    assert evaluation_runs(mlflow_server, "cpl.model", str(checkpoint)) == []


# --- errors: exit 2, one line naming what is at fault --------------------------------------------------

def assert_one_error_line(result: subprocess.CompletedProcess, *named: str) -> str:
    assert result.returncode == 2, (result.stdout[-2000:], result.stderr[-4000:])
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr[-4000:]
    for text in named:
        assert text in lines[0]
    return lines[0]


@pytest.mark.parametrize("case", ["missing alias", "missing checkpoint file"])
def test_cli_fails_with_exit_2_and_one_line_naming_a_model_reference_that_names_nothing(
        case, eval_env, registered, tmp_path):
    name, _ = registered
    reference, detail = {
        "missing alias": (f"models:/{name}@champion", "alias 'champion'"),
        "missing checkpoint file": (str(tmp_path / "nowhere" / "model.pt"), "no checkpoint"),
    }[case]
    out = tmp_path / "report"
    result = evaluate_cli(eval_env, "--model", reference, "--data", str(write_dim_benchmark(tmp_path / "bench", 1)),
                          "--out", str(out))
    assert_one_error_line(result, reference, detail)
    assert not (out / "report.json").exists()


def test_every_kind_of_reference_that_names_nothing_is_refused_naming_it(registered, mlflow_server, tmp_path):
    name, _ = registered
    unknown = unique("never-registered")
    for reference, detail in [(f"models:/{unknown}/1", f"no registered model '{unknown}'"),
                              (f"models:/{name}/99", "version 99"),
                              (str(tmp_path / "no-such-run" / "checkpoint_000003"), "no checkpoint")]:
        with pytest.raises(references.ModelNotFound) as refused:
            references.resolve(reference, mlflow_server)
        assert str(refused.value).startswith(f"{reference}: ") and detail in str(refused.value)


def test_cli_fails_with_exit_2_naming_a_model_file_that_is_not_a_checkpoint(eval_env, tmp_path):
    garbage = tmp_path / "checkpoint" / cpl_model.WEIGHTS
    garbage.parent.mkdir()
    garbage.write_bytes(b"not a torch file at all")
    result = evaluate_cli(eval_env, "--model", str(garbage.parent), "--data",
                          str(write_dim_benchmark(tmp_path / "bench", 1)), "--out", str(tmp_path / "out"), "--no-log")
    assert_one_error_line(result, f"cannot load {garbage} as a weights-only torch file")


def test_cli_fails_with_exit_2_and_one_line_naming_a_folder_where_nothing_pairs(eval_env, brightener, tmp_path):
    data = write_dim_benchmark(tmp_path / "data", 1)
    for task in TASKS:  # inputs whose targets are missing: nothing can be scored
        shutil.rmtree(data / task / "target")
    checkpoint = save_model(tmp_path / "checkpoint", brightener, 0.0)
    result = evaluate_cli(eval_env, "--model", str(checkpoint), "--data", str(data), "--out", str(tmp_path / "out"),
                          "--no-log")
    line = assert_one_error_line(result, str(data))
    assert "dim/input/0.png" in line and "dimmer/input/0.png" in line


def test_a_folder_without_a_benchmark_layout_or_that_does_not_exist_is_refused_naming_it(tmp_path):
    flat = tmp_path / "flat"
    for index, image in enumerate(photo_halves(2, 64).values()):
        write_rgb(flat / f"{index}.png", image)
    for data in (flat, tmp_path / "no-such-folder"):
        with pytest.raises(storage.StorageError, match=str(data)):
            benchmarks.open_benchmark(str(data))


# --- published datasets -------------------------------------------------------------------------------

def shard_sample_ids(published, split: str) -> list[str]:
    import pyarrow.parquet as pq

    version_uri = storage.join(published.uri, f"v={published.manifest['version']}")
    ids = []
    for shard in published.manifest["shards"]:
        if shard["split"] == split:
            fs, path = storage.filesystem(storage.join(version_uri, shard["path"]))
            with fs.open_input_file(path) as handle:
                ids += pq.read_table(handle, columns=["sample_id"]).column("sample_id").to_pylist()
    return sorted(ids)


def expected_groups(manifest: dict, split: str) -> tuple[dict[str, int], dict[str, int]]:
    """Pairs per task and per recipe (where the recipe is finer than its task) in ``split`` of the manifest."""
    per_task: dict[str, int] = {}
    per_recipe: dict[str, int] = {}
    for recipe, count in manifest["counts"][split].items():
        task = Recipe.from_config(manifest["recipes"][recipe]).task
        per_task[task] = per_task.get(task, 0) + count
        if recipe != task:
            per_recipe[recipe] = count
    return per_task, per_recipe


@pytest.fixture
def checkpoint(brightener, tmp_path, monkeypatch) -> Path:
    """The identity model as a local checkpoint file; tracking in a scratch store (nothing is logged)."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    return cpl_model.save_checkpoint(scaled_model(brightener, 0.0), tmp_path / "identity.pt")


@pytest.mark.parametrize("which", ["local_dataset", "s3_dataset"])
def test_a_published_dataset_test_split_is_scored_per_task_with_the_manifest_counts(which, request, checkpoint,
                                                                                      tmp_path):
    published = request.getfixturevalue(which)
    manifest = published.manifest
    report, run_id = reports.run(str(checkpoint), BenchmarkChoice(data=published.uri), tmp_path / "out",
                                    log=False)
    assert run_id is None
    per_task, per_recipe = expected_groups(manifest, "test")
    assert {task: s["count"] for task, s in report["tasks"].items()} == per_task
    assert {recipe: s["count"] for recipe, s in report["recipes"].items()} == per_recipe
    assert report["all"]["count"] == sum(manifest["counts"]["test"].values())
    assert report["data"] | {"digest": None} == {
        "kind": "dataset", "uri": published.uri, "label": f"{published.uri}@{manifest['version']}:test",
        "digest": None, "split": "test", "version": manifest["version"], "layout": None, "units": sum(
            shard["split"] == "test" for shard in manifest["shards"]), "skipped": {}}
    assert sorted(row["id"] for row in report["cases"]) == shard_sample_ids(published, "test")
    assert report["all"]["model"] == report["all"]["input"]  # the identity
    written = json.loads((tmp_path / "out" / "report.json").read_text())
    assert written["tasks"] == report["tasks"]


def test_the_val_split_and_a_pinned_version_of_a_published_dataset_can_be_scored(local_dataset, checkpoint):
    manifest = local_dataset.manifest
    pinned = f"{local_dataset.uri}/v={manifest['version']}"
    benchmark = benchmarks.open_benchmark(pinned, "val")
    assert benchmark.split == "val" and benchmark.version == manifest["version"]
    ref = references.resolve(str(checkpoint), "unused")
    report = scoring.evaluate(ref, benchmark, EvalSettings(), "unused")
    per_task, _ = expected_groups(manifest, "val")
    assert {task: s["count"] for task, s in report["tasks"].items()} == per_task
    assert sorted(row["id"] for row in report["cases"]) == shard_sample_ids(local_dataset, "val")
    assert not set(shard_sample_ids(local_dataset, "val")) & set(shard_sample_ids(local_dataset, "test"))


def test_a_split_the_dataset_does_not_have_fails_naming_the_dataset_and_the_split(local_dataset):
    with pytest.raises(ValueError, match=r"no holdout pairs \(splits: test, train, val\)") as raised:
        benchmarks.open_benchmark(local_dataset.uri, "holdout")
    assert local_dataset.uri in str(raised.value)


# --- Ray mode ------------------------------------------------------------------------------------------

def assert_same_up_to_rounding(ours: Any, theirs: Any) -> None:
    """Equal structure, strings and ints; floats equal to float32 rounding. A Ray worker restores on one
    torch thread and this process on several: oneDNN and BLAS sum in a thread-dependent order, so the
    restored pixels (and the metrics) may differ in the last bit."""
    if isinstance(ours, dict):
        assert isinstance(theirs, dict) and ours.keys() == theirs.keys()
        for key in ours:
            assert_same_up_to_rounding(ours[key], theirs[key])
    elif isinstance(ours, list):
        assert isinstance(theirs, list) and len(ours) == len(theirs)
        for mine, reference in zip(ours, theirs, strict=True):
            assert_same_up_to_rounding(mine, reference)
    elif isinstance(ours, float):
        assert ours == pytest.approx(theirs, rel=1e-6, abs=1e-9)
    else:
        assert ours == theirs


def test_ray_workers_give_the_same_rows_skips_and_summary_as_in_process(ray_cluster, brightener, tmp_path):
    data = messy_benchmark(tmp_path / "bench")
    checkpoint = cpl_model.save_checkpoint(scaled_model(brightener, 0.5), tmp_path / "half.pt")
    ref = references.resolve(str(checkpoint), "unused")
    benchmark = benchmarks.open_benchmark(str(data))
    local = scoring.evaluate(ref, benchmark, EvalSettings(workers=0), "unused")
    spread = scoring.evaluate(ref, benchmark, EvalSettings(workers=2), "unused")
    assert [row["id"] for row in local["cases"]] == MESSY_IDS
    assert_same_up_to_rounding(spread["cases"], local["cases"])
    assert spread["data"]["skipped"] == local["data"]["skipped"] == MESSY_SKIPPED
    for key in ("tasks", "recipes", "all", "worst", "best"):
        assert_same_up_to_rounding(spread[key], local[key])
    assert local["all"]["gain_psnr"] > 1  # a model that changes the images: equal rows are not trivially equal


# --- how folders pair up -------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def photos() -> list[np.ndarray]:
    return list(photo_halves(3, 64).values())


def pairs(benchmark: benchmarks.Benchmark) -> list[Case | Skip]:
    return [item for unit in benchmark.units for item in benchmark.cases(unit)]


def test_inputs_and_targets_pair_by_relative_path_without_extension_and_accept_lq_gt_names(photos, tmp_path):
    root = tmp_path / "bench"
    write_rgb(root / "blur" / "input" / "a.png", photos[0] // 2)
    (root / "blur" / "target").mkdir(parents=True)
    assert cv2.imwrite(str(root / "blur" / "target" / "a.jpg"), cv2.cvtColor(photos[0], cv2.COLOR_RGB2BGR),
                       [cv2.IMWRITE_JPEG_QUALITY, 95])
    write_rgb(root / "blur" / "input" / "scenes" / "01.png", photos[1] // 2)
    write_rgb(root / "blur" / "target" / "scenes" / "01.bmp", photos[1])
    write_rgb(root / "rain" / "lq" / "x.png", photos[2] // 3)
    write_rgb(root / "rain" / "gt" / "x.png", photos[2])
    benchmark = benchmarks.open_benchmark(str(root))
    assert benchmark.kind == "folder" and benchmark.skipped == {}
    assert [(u["task"], u["stem"]) for u in benchmark.units] == [("blur", "a"), ("blur", "scenes/01"), ("rain", "x")]
    cases = pairs(benchmark)
    assert [(c.id, c.task, c.recipe) for c in cases] == [
        ("blur/a", "blur", "blur"), ("blur/scenes/01", "blur", "blur"), ("rain/x", "rain", "rain")]
    assert np.array_equal(cases[0].degraded, read_rgb(root / "blur" / "input" / "a.png"))
    assert np.array_equal(cases[0].clean, read_rgb(root / "blur" / "target" / "a.jpg"))  # the JPEG, decoded
    assert np.array_equal(cases[1].clean, photos[1]) and np.array_equal(cases[2].degraded, photos[2] // 3)


def test_a_root_holding_input_and_target_itself_is_one_task_named_after_the_root(photos, tmp_path):
    root = tmp_path / "Rain100L"
    for index, photo in enumerate(photos[:2]):
        write_rgb(root / "input" / f"{index}.png", photo // 2)
        write_rgb(root / "target" / f"{index}.png", photo)
    benchmark = benchmarks.open_benchmark(str(root))
    assert [(c.id, c.task) for c in pairs(benchmark)] == [("Rain100L/0", "Rain100L"), ("Rain100L/1", "Rain100L")]


def test_a_pair_of_different_sizes_is_skipped_as_size_mismatch_naming_the_input(photos, tmp_path):
    root = tmp_path / "bench"
    write_rgb(root / "snow" / "input" / "big.png", photos[0])
    write_rgb(root / "snow" / "target" / "big.png", photos[0][:48])
    write_rgb(root / "snow" / "input" / "ok.png", photos[1] // 2)
    write_rgb(root / "snow" / "target" / "ok.png", photos[1])
    benchmark = benchmarks.open_benchmark(str(root))
    items = pairs(benchmark)
    assert items[0] == Skip(layouts.SIZE_MISMATCH, "snow/input/big.png")
    assert [item.id for item in items[1:]] == ["snow/ok"] and isinstance(items[1], Case)


# --- the metrics ----------------------------------------------------------------------------------------

def one_pair(root: Path, degraded: np.ndarray, clean: np.ndarray) -> benchmarks.Benchmark:
    write_rgb(root / "task" / "input" / "0.png", degraded)
    write_rgb(root / "task" / "target" / "0.png", clean)
    return benchmarks.open_benchmark(str(root))


def test_psnr_and_ssim_agree_with_scikit_image_for_the_input_and_for_a_restoring_model(brightener, photos, tmp_path):
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    clean, degraded = photos[0], (photos[0] * 0.5).astype(np.uint8)
    benchmark = one_pair(tmp_path / "bench", degraded, clean)
    ref = references.ModelRef("identity", "identity")
    (row,) = scoring.evaluate(ref, benchmark, EvalSettings(), "unused",
                                 model=scaled_model(brightener, 0.0))["cases"]
    psnr = peak_signal_noise_ratio(clean, degraded, data_range=255)
    ssim = structural_similarity(clean, degraded, channel_axis=2, data_range=255)
    assert row["psnr"] == row["input_psnr"] == pytest.approx(psnr, abs=1e-4)
    assert row["ssim"] == row["input_ssim"] == pytest.approx(ssim, abs=1e-4)

    model = scaled_model(brightener, 1.0)
    (row,) = scoring.evaluate(ref, benchmark, EvalSettings(), "unused", model=model)["cases"]
    with torch.inference_mode():
        restored = model(torch.from_numpy(degraded).permute(2, 0, 1)[None].float() / 255).clamp(0, 1)
    restored = restored[0].permute(1, 2, 0).double().numpy()
    target = clean.astype(np.float64) / 255
    assert row["psnr"] == pytest.approx(peak_signal_noise_ratio(target, restored, data_range=1), abs=1e-4)
    assert row["ssim"] == pytest.approx(structural_similarity(target, restored, channel_axis=2, data_range=1),
                                        abs=1e-4)
    assert row["psnr"] > psnr + 3 and row["input_psnr"] == pytest.approx(psnr, abs=1e-4)


def test_an_input_identical_to_its_target_reports_the_capped_psnr_and_perfect_ssim(brightener, photos, tmp_path):
    benchmark = one_pair(tmp_path / "bench", photos[0], photos[0])
    report = scoring.evaluate(references.ModelRef("identity", "identity"), benchmark, EvalSettings(),
                                 "unused", model=scaled_model(brightener, 0.0))
    (row,) = report["cases"]
    assert row["psnr"] == row["input_psnr"] == row["psnr_y"] == cpl_model.PSNR_CAP
    assert row["ssim"] == pytest.approx(1.0) and row["ssim_y"] == pytest.approx(1.0)
    assert report["all"]["model"]["psnr"] == cpl_model.PSNR_CAP and report["all"]["gain_psnr"] == 0.0


def test_two_files_with_one_name_are_reported_not_guessed_between(tmp_path):
    photo = next(iter(photo_halves(1, 64).values()))
    for name in ("input/a.png", "input/a.jpg", "target/a.png"):
        write_rgb(tmp_path / "t" / name, photo)
    benchmark = benchmarks.open_benchmark(str(tmp_path))
    assert [unit["stem"] for unit in benchmark.units] == ["a"]
    assert benchmark.skipped == {layouts.SAME_NAME: ["t/input/a.png"]}  # sorted: a.jpg pairs, a.png is reported


def test_task_folders_with_any_name_are_logged_as_metrics(mlflow_server, brightener, tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    data = tmp_path / "data"
    photo = next(iter(photo_halves(1, 64).values()))
    write_rgb(data / "Rain100L (heavy)" / "input" / "0.png", (photo * 0.5).astype(np.uint8))
    write_rgb(data / "Rain100L (heavy)" / "target" / "0.png", photo)
    checkpoint = save_model(tmp_path / "checkpoint", brightener, 1.0)
    report, run_id = reports.run(str(checkpoint), BenchmarkChoice(data=str(data)), tmp_path / "out", log=True,
                                    experiment=unique("names"))
    assert list(report["tasks"]) == ["Rain100L (heavy)"]
    logged = MlflowClient(mlflow_server).get_run(run_id).data.metrics
    assert logged["Rain100L -heavy-/psnr"] == pytest.approx(report["tasks"]["Rain100L (heavy)"]["model"]["psnr"])
