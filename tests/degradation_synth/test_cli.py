"""``python -m degradation_synth`` (preview, list) and ``python -m degradation_synth.bench``."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from degradation_synth import RECIPE_SETS, RECIPES
from degradation_synth.__main__ import main
from degradation_synth.preview import square_tile


def run_module(repo_root: Path, module: str, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(repo_root)}
    return subprocess.run([sys.executable, "-m", module, *args], cwd=repo_root, env=env,
                          capture_output=True, text=True, timeout=180)


def test_preview_writes_a_labelled_png_sheet(repo_root, tmp_path, sample_photos):
    out = tmp_path / "nested" / "s.png"
    result = run_module(repo_root, "degradation_synth", "preview", "--out", str(out), "--recipes", "noise15,haze",
                        "--photos", "2", "--size", "64")
    assert result.returncode == 0, result.stderr
    assert str(out) in result.stdout
    sheet = cv2.imread(str(out), cv2.IMREAD_COLOR)
    assert sheet is not None
    height, width = sheet.shape[:2]
    assert width == 2 * 64
    label = (height - 3 * 64) / 3  # rows: clean, noise15, haze; each under a label strip
    assert label == int(label) and label > 0
    label = int(label)
    # The clean row holds the first two sample photos' tiles, losslessly.
    clean_row = cv2.cvtColor(sheet[label:label + 64], cv2.COLOR_BGR2RGB)
    first_two = list(sample_photos.values())[:2]
    np.testing.assert_array_equal(clean_row, np.hstack([square_tile(p, 64) for p in first_two]))


def test_list_prints_every_recipe_and_set(repo_root):
    result = run_module(repo_root, "degradation_synth", "list")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert any(line.split()[0] == "cdd11/low_haze_rain" and "low_light -> rain -> haze" in line for line in lines)
    assert any(line.split()[0] == "physical/low_haze_rain" and "haze -> rain -> low_light" in line for line in lines)
    listed = {line.split()[0] for line in lines if not line.startswith("set ")}
    assert listed == set(RECIPES)
    assert {line.split()[1].rstrip(":") for line in lines if line.startswith("set ")} == set(RECIPE_SETS)


def test_preview_of_an_unknown_recipe_fails_naming_it(repo_root, tmp_path):
    out = tmp_path / "s.png"
    result = run_module(repo_root, "degradation_synth", "preview", "--out", str(out), "--recipes", "noise15,hazy",
                        "--photos", "1", "--size", "32")
    assert result.returncode != 0
    assert "hazy" in result.stderr
    assert "Traceback" not in result.stderr
    assert not out.exists()


def test_cli_without_a_command_fails(repo_root):
    result = run_module(repo_root, "degradation_synth")
    assert result.returncode != 0
    assert "preview" in result.stderr and "list" in result.stderr


def test_preview_renders_recipes_from_a_yaml_file(tmp_path, capsys):
    recipe_file = tmp_path / "mine.yaml"
    recipe_file.write_text("recipes:\n  - name: mine\n    steps: [{kind: noise, sigma: 5}]\n"
                           "  - name: other\n    steps: [{kind: blur, kernel: defocus}]\n")
    out = tmp_path / "sheet.png"
    assert main(["preview", "--out", str(out), "--recipe-file", str(recipe_file), "--photos", "1", "--size", "40"]) == 0
    assert "2 recipes" in capsys.readouterr().out
    sheet = cv2.imread(str(out))
    assert sheet.shape[1] == 40 and (sheet.shape[0] - 3 * 40) % 3 == 0


def test_preview_reports_a_bad_recipe_file(tmp_path, capsys):
    recipe_file = tmp_path / "bad.yaml"
    recipe_file.write_text("name: bad\nsteps: [{kind: noise, sigmaa: 5}]\n")
    assert main(["preview", "--out", str(tmp_path / "s.png"), "--recipe-file", str(recipe_file)]) == 2
    assert "sigmaa" in capsys.readouterr().err


def test_bench_help(repo_root):
    result = run_module(repo_root, "degradation_synth.bench", "--help")
    assert result.returncode == 0, result.stderr
    assert "--sizes" in result.stdout and "--recipes" in result.stdout


def test_tiny_bench_run_prints_the_tables(repo_root):
    result = run_module(repo_root, "degradation_synth.bench", "--sizes", "32", "--recipes", "noise15",
                        "--seconds", "0.01", "--repeats", "1")
    assert result.returncode == 0, result.stderr
    rows = [line for line in result.stdout.splitlines() if line.startswith("|")]
    assert any(line.startswith("| noise15 |") for line in rows)
    assert any("speed-up" in line for line in rows)
    speed_up = [line for line in rows if line.startswith("| 32² |")]
    assert len(speed_up) == 1 and speed_up[0].rstrip(" |").endswith("x")


def test_bench_rejects_an_unknown_recipe(repo_root):
    result = run_module(repo_root, "degradation_synth.bench", "--recipes", "hazy", "--sizes", "32",
                        "--seconds", "0.01", "--repeats", "1")
    assert result.returncode != 0
    assert "hazy" in result.stderr


@pytest.mark.parametrize("argv", [["preview", "--photos", "x"], ["nope"]])
def test_bad_arguments_exit_with_a_usage_error(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert "usage" in capsys.readouterr().err
