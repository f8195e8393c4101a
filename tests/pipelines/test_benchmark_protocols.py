"""Each published benchmark scored exactly as its paper's protocol says, and a suite laid out as the paper's table.

Every miniature is made of real photo crops at sizes that are not multiples of 16, so the protocols' crop or
pad matters. Counts and input PSNR are recomputed here with numpy from the written files and the protocol's
rule, never with the code under test.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from degradation_synth import rng_for
from pipelines.core import references
from pipelines.core.config import ConfigError
from pipelines.evaluation import benchmarks, protocols, scoring, suites
from pipelines.evaluation.benchmarks import Case
from pipelines.evaluation.config import EvalSettings

from .conftest import REPO_ROOT, photo_halves, scaled_model

HEIGHT, WIDTH = 52, 70  # centre-cropped to 48 x 64 by PromptIR's rule: rows 2..50, columns 3..67
IDENTITY = references.ModelRef("identity", "identity")


@pytest.fixture(scope="module")
def photos() -> list[np.ndarray]:
    """RGB photo crops of HEIGHT x WIDTH."""
    return [cv2.cvtColor(cv2.resize(p, (WIDTH, HEIGHT), interpolation=cv2.INTER_AREA), cv2.COLOR_BGR2RGB)
            for p in photo_halves(6, 80).values()]


def write(path: Path, image: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))


def darken(image: np.ndarray, factor: float) -> np.ndarray:
    return (image * factor).astype(np.uint8)


def crop16(image: np.ndarray) -> np.ndarray:
    return image[2:50, 3:67]


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    return float(10 * np.log10(255.0**2 / np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)))


def luma(image: np.ndarray) -> np.ndarray:
    rgb = image.astype(np.float64)
    return 16.0 + (65.481 * rgb[..., 0] + 128.553 * rgb[..., 1] + 24.966 * rgb[..., 2]) / 255.0


@pytest.fixture(scope="module")
def identity(brightener) -> torch.nn.Module:
    return scaled_model(brightener, 0.0)


@pytest.fixture
def eval_cli(cli_env, mlflow_server):
    """``python pipelines/evaluate.py ARGS`` against the test MLflow server."""
    env = {**cli_env, "MLFLOW_TRACKING_URI": mlflow_server, "MLFLOW_DISABLE_TELEMETRY": "true"}
    return lambda *args: subprocess.run([sys.executable, "pipelines/evaluate.py", *args], cwd=REPO_ROOT, env=env,
                                        capture_output=True, text=True, timeout=300, check=False)


def score(root: Path, layout: str, model: torch.nn.Module, **options) -> dict:
    benchmark = benchmarks.open_benchmark(str(root), layout=layout, **options)
    return scoring.evaluate(IDENTITY, benchmark, EvalSettings(progress=False), "unused", model=model)


def check(report: dict, expected: dict[str, list[float]], metric: str = "psnr") -> None:
    """Per task: the pair count and the mean input metric over the pairs."""
    assert {task: s["count"] for task, s in report["tasks"].items()} == {t: len(v) for t, v in expected.items()}
    for task, values in expected.items():
        assert report["tasks"][task]["input"][metric] == pytest.approx(np.mean(values), abs=1e-3), task
        assert report["tasks"][task]["model"][metric] == pytest.approx(np.mean(values), abs=1e-3), task  # identity


# --- every layout, scored ---------------------------------------------------------------------------

def test_rain100l_sots_gopro_lol_and_cdd11_score_exactly_under_the_promptir_crop(tmp_path, photos, identity):
    expected: dict[str, dict[str, list[float]]] = {}
    layouts = {
        "rain100l": lambda i: (f"rain-{i:03d}.png", f"norain-{i:03d}.png"),
        "sots-outdoor": lambda i: (f"hazy/{i:04d}_0.8_0.2.jpg", f"gt/{i:04d}.png"),
        "gopro": lambda i: (f"GOPR0384_11_00/blur/{i:06d}.png", f"GOPR0384_11_00/sharp/{i:06d}.png"),
        "lol": lambda i: (f"eval15/low/{i}.png", f"eval15/high/{i}.png"),
        "cdd11": lambda i: (f"{('haze', 'low_rain')[i % 2]}/{i:03d}.png", f"clear/{i:03d}.png"),
    }
    tasks = {"rain100l": "rain", "sots-outdoor": "haze", "gopro": "blur", "lol": "low_light"}
    for layout, names in layouts.items():
        root = tmp_path / layout
        expected[layout] = {}
        for i, clean in enumerate(photos[:4], start=1):
            degraded_name, clean_name = names(i)
            degraded = darken(clean, 0.4 + 0.1 * i)
            write(root / clean_name, clean)
            write(root / degraded_name, degraded)
            if degraded_name.endswith(".jpg"):  # what the file holds, not what was written
                degraded = cv2.cvtColor(cv2.imread(str(root / degraded_name)), cv2.COLOR_BGR2RGB)
            task = tasks.get(layout) or degraded_name.split("/")[0]
            expected[layout].setdefault(task, []).append(psnr(crop16(degraded), crop16(clean)))
        report = score(root, layout, identity)
        check(report, expected[layout])
        assert report["protocol"]["name"] == "promptir" and report["protocol"]["inference"] == "whole images"
        assert {row["height"] for row in report["cases"]} == {48} and {row["width"] for row in report["cases"]} == {64}


def test_cbsd68_noises_each_image_at_each_sigma_as_promptir_and_the_same_bytes_every_time(tmp_path, photos,
                                                                                        identity):
    for i, clean in enumerate(photos[:3]):
        write(tmp_path / "CBSD68" / "original_png" / f"{i:04d}.png", clean)
    report = score(tmp_path / "CBSD68", "cbsd68", identity, sigmas=(15, 50))
    expected = {}
    for sigma in (15, 50):
        for i, clean in enumerate(photos[:3]):
            # PromptIR's rule: clean + sigma * N(0, 1), clipped to [0, 255], truncated to uint8; seeded by name
            noise = rng_for(0, "cbsd68", sigma, f"{i:04d}").standard_normal(clean.shape)
            noisy = np.clip(clean + sigma * noise, 0, 255).astype(np.uint8)
            expected.setdefault(f"noise_{sigma}", []).append(psnr(crop16(noisy), crop16(clean)))
    check(report, expected)
    # About the PSNR of Gaussian noise of that sigma (clipping lowers it, truncation's bias raises the error).
    assert report["tasks"]["noise_15"]["input"]["psnr"] == pytest.approx(20 * np.log10(255 / 15), abs=0.5)
    assert report["tasks"]["noise_50"]["input"]["psnr"] == pytest.approx(20 * np.log10(255 / 50), abs=1.0)
    again = score(tmp_path / "CBSD68", "cbsd68", identity, sigmas=(50,))
    assert again["tasks"]["noise_50"] == report["tasks"]["noise_50"]


def test_sots_indoor_crops_the_white_frame_of_its_clear_images(tmp_path, photos, identity):
    expected = []
    for i, clean in enumerate(photos[:3], start=1):
        framed = cv2.copyMakeBorder(clean, 10, 10, 10, 10, cv2.BORDER_CONSTANT, value=(255, 255, 255))
        write(tmp_path / "gt" / f"{1399 + i}.png", framed if i < 3 else clean)  # the third: frame already cut
        degraded = darken(clean, 0.6)
        write(tmp_path / "hazy" / f"{1399 + i}_{i}.png", degraded)
        expected.append(psnr(crop16(degraded), crop16(clean)))
    write(tmp_path / "gt" / "1500.png", cv2.copyMakeBorder(photos[3], 0, 4, 0, 4, cv2.BORDER_REFLECT))
    write(tmp_path / "hazy" / "1500_1.png", photos[3])
    report = score(tmp_path, "sots-indoor", identity)
    check(report, {"haze": expected})
    assert report["data"]["skipped"] == {"size_mismatch": ["hazy/1500_1.png"]}


def test_weatherbench_scores_rain_haze_and_snow_on_the_luma_under_basicsrs_protocol(tmp_path, photos, identity):
    expected = {}
    for t, task in enumerate(("rain", "haze", "snow")):
        for i in range(2):
            clean = photos[2 * t + i]
            degraded = darken(clean, 0.5 + 0.1 * i)
            write(tmp_path / task / "input" / f"{i}.png", degraded)
            write(tmp_path / task / "target" / f"{i}.png", clean)
            mse = np.mean((luma(degraded) - luma(clean)) ** 2)  # the whole image: BasicSR pads, never crops
            expected.setdefault(task, []).append(10 * np.log10(255.0**2 / mse))
    report = score(tmp_path, "weatherbench", identity)
    check(report, expected, metric="psnr_y")
    assert report["protocol"]["name"] == "basicsr" and report["protocol"]["headline"] == ["psnr_y", "ssim_y"]
    assert {(row["height"], row["width"]) for row in report["cases"]} == {(HEIGHT, WIDTH)}


@pytest.mark.parametrize(("layout", "files", "expected"), [
    ("cbsd68", ["pictures/a.png"], "clean images at the root or under original_png/"),
    ("sots-indoor", ["other.png"], "hazy <scene>_<beta>_<A>.ext"),
    ("weatherbench", ["rain/input/0.png", "fog/target/0.png"], "rain/, haze/ or snow/, each with input/ and target/"),
])
def test_the_new_layouts_refuse_another_layout_in_one_line(tmp_path, photos, layout, files, expected):
    for name in files:
        write(tmp_path / name, photos[0])
    with pytest.raises(benchmarks.DataError) as error:
        benchmarks.open_benchmark(str(tmp_path), layout=layout)
    assert "\n" not in str(error.value) and expected in str(error.value) and "found" in str(error.value)


# --- the protocols ------------------------------------------------------------------------------------

def test_the_promptir_fit_is_the_centre_crop_to_a_multiple_of_16(photos):
    case = Case("a", "t", "t", photos[0], photos[1])
    fitted = protocols.fit(case, protocols.PROTOCOLS["promptir"])
    assert np.array_equal(fitted.degraded, crop16(photos[0])) and np.array_equal(fitted.clean, crop16(photos[1]))
    assert protocols.fit(case, protocols.PROTOCOLS["basicsr"]) is case


def test_basicsr_restores_the_reflect_padded_input_and_rounds_the_output_to_8_bits(brightener, photos):
    model = scaled_model(brightener, 1.0)
    image = torch.from_numpy(photos[0]).permute(2, 0, 1)[None].float() / 255
    padded = torch.nn.functional.pad(image, (0, 80 - WIDTH, 0, 64 - HEIGHT), mode="reflect")
    with torch.inference_mode():
        expected = model(padded).clamp(0, 1)[..., :HEIGHT, :WIDTH]
        restored = protocols.restore(model, image, protocols.PROTOCOLS["basicsr"], tile=None)
    assert torch.equal(restored, torch.round(expected * 255) / 255)
    assert not torch.equal(restored, expected)


def test_a_published_benchmark_runs_whole_and_other_data_tiled_unless_told():
    assert EvalSettings().resolved("rain100l").tile is None
    assert EvalSettings().resolved(None).tile == 512
    assert EvalSettings(tile=256).resolved("lol").tile == 256
    assert EvalSettings().resolved("weatherbench").protocol == "basicsr"
    assert EvalSettings(protocol="promptir").resolved("weatherbench").protocol == "promptir"


# --- suites -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("path", sorted((REPO_ROOT / "configs" / "benchmarks").glob("*.yaml")), ids=lambda p: p.stem)
def test_every_shipped_suite_is_valid_and_its_published_rows_average_as_printed(path):
    suite = suites.load_suite(path)
    assert suite.columns and all(column.benchmark in suite.roots for column in suite.columns)
    for label, cells in suite.published.items():
        values = [float(cell.split("/")[0]) for cell in cells]
        if (path.stem, label) == ("cdd11", "OneRestore"):  # a misprint in the paper, noted in the suite file
            continue
        assert np.mean(values[:-1]) == pytest.approx(values[-1], abs=0.02), label  # transcribed correctly


def test_a_suite_file_with_a_bad_key_is_one_error_naming_the_file_and_key(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("title: x\nroots: {rain100l: a}\ncolumns:\n  - {label: R, benchmark: rain100l, task: rain, x: 1}\n")
    with pytest.raises(ConfigError, match=rf"^suite {path}: columns.0.x: unknown key$"):
        suites.load_suite(path)
    path.write_text("title: x\nroots: {rain100l: a}\ncolumns:\n  - {label: R, benchmark: gopro, task: blur}\n")
    with pytest.raises(ConfigError, match="column 'R': no root for benchmark gopro"):
        suites.load_suite(path)


def write_suite(tmp_path: Path, photos: list[np.ndarray]) -> tuple[Path, dict[str, float]]:
    """A two-benchmark suite (CBSD68 at sigma 25 and Rain100L), and the input PSNR of each column."""
    for i, clean in enumerate(photos[:2]):
        write(tmp_path / "cbsd" / f"{i}.png", clean)
        write(tmp_path / "rain" / "input" / f"{i}.png", darken(clean, 0.5))
        write(tmp_path / "rain" / "target" / f"{i}.png", clean)
    suite = tmp_path / "suite.yaml"
    suite.write_text(f"""title: Two tasks
source: a test
roots: {{cbsd68: {tmp_path / 'nowhere'}, rain100l: {tmp_path / 'rain'}}}
sigma: [25]
columns:
  - {{label: Noise, benchmark: cbsd68, task: noise_25}}
  - {{label: Rain, benchmark: rain100l, task: rain}}
published:
  Paper: ["30.00/.800", "32.00/.900", "31.00/.850"]
""")
    noise = [psnr(crop16(np.clip(c + 25 * rng_for(0, "cbsd68", 25, str(i)).standard_normal(c.shape), 0, 255)
                         .astype(np.uint8)), crop16(c)) for i, c in enumerate(photos[:2])]
    rain = [psnr(crop16(darken(c, 0.5)), crop16(c)) for c in photos[:2]]
    return suite, {"Noise": float(np.mean(noise)), "Rain": float(np.mean(rain))}


def test_a_suite_prints_the_paper_shaped_table_and_logs_one_run(eval_cli, tmp_path, photos, brightener):
    from .conftest import save_model

    suite, inputs = write_suite(tmp_path, photos)
    checkpoint = save_model(tmp_path / "checkpoint_000001", brightener, 0.0)
    out = tmp_path / "report"
    result = eval_cli("--model", str(checkpoint), "--suite", str(suite), "--set", f"roots.cbsd68={tmp_path / 'cbsd'}",
                      "--out", str(out))
    assert result.returncode == 0, result.stderr[-4000:]
    report = json.loads((out / "report.json").read_text())
    table = report["table"]
    assert table["columns"] == ["Noise", "Rain"]
    inputs_psnr = [cell[0] for cell in table["rows"]["input"]["cells"]]
    assert inputs_psnr == pytest.approx([inputs["Noise"], inputs["Rain"]], abs=1e-3)
    assert table["rows"]["input"]["average"][0] == pytest.approx(np.mean(inputs_psnr))
    assert sorted(report["tasks"]) == ["cbsd68/noise_25", "rain100l/rain"]
    for name in ("cbsd68", "rain100l"):
        assert (out / name / "report.md").exists() and (out / name / "grid.png").exists()
    markdown = (out / "report.md").read_text()
    assert "| | Noise | Rain | Avg |" in markdown
    assert "| Paper (published) | 30.00/.800 | 32.00/.900 | 31.00/.850 |" in markdown
    assert f"| degraded input | {inputs['Noise']:.2f}/" in markdown and markdown in result.stdout
    assert "Protocol of rain100l: promptir" in markdown
    assert "MLflow evaluation run" in result.stdout


def test_a_suite_with_a_missing_root_fails_naming_it(eval_cli, tmp_path, photos, brightener):
    from .conftest import save_model

    suite, _ = write_suite(tmp_path, photos)
    checkpoint = save_model(tmp_path / "checkpoint_000001", brightener, 0.0)
    result = eval_cli("--model", str(checkpoint), "--suite", str(suite), "--no-log")
    assert result.returncode == 2 and str(tmp_path / "nowhere") in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    both = eval_cli("--model", str(checkpoint), "--suite", str(suite), "--benchmark", "lol", "--no-log")
    assert both.returncode == 2 and "excludes data (--data) and benchmark (--benchmark)" in both.stderr
