"""Published benchmarks in their own layouts: each layout's naming rule pairs a miniature made of real photo
crops, the unpaired files are reported by name, and a folder in another layout is one error saying what
was expected and what was found."""

from __future__ import annotations

from pathlib import Path
from typing import get_args

import cv2
import pytest

from pipelines.core.errors import DataError
from pipelines.data import layouts
from pipelines.evaluation import benchmarks, config

from .conftest import photo_halves


@pytest.fixture(scope="module")
def photos() -> list:
    return list(photo_halves(6, 24).values())


def write(root: Path, photos: list, *paths: str) -> Path:
    for i, path in enumerate(paths):
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        assert cv2.imwrite(str(root / path), photos[i % len(photos)])
    return root


def pairs(benchmark: benchmarks.Benchmark) -> list[tuple[str, str, str, str]]:
    return [(u["task"], u["stem"], benchmarks.storage.relative(u["input"], benchmark.uri),
             benchmarks.storage.relative(u["target"], benchmark.uri)) for u in benchmark.units]


def test_the_config_offers_exactly_the_layouts_there_are():
    assert get_args(config.Layout) == layouts.BENCHMARK_LAYOUTS


def test_rain100l_pairs_prenet_names_in_one_folder_and_reports_the_orphans(tmp_path, photos):
    root = write(tmp_path, photos, "rain-001.png", "norain-001.png", "rain-002.png", "norain-002.png",
                 "rain-003.png", "norain-004.png")
    benchmark = benchmarks.open_benchmark(str(root), layout="rain100l")
    assert pairs(benchmark) == [("rain", "001", "rain-001.png", "norain-001.png"),
                                ("rain", "002", "rain-002.png", "norain-002.png")]
    assert benchmark.skipped == {"no_target": ["rain-003.png"], "no_input": ["norain-004.png"]}
    assert benchmark.label == f"rain100l:{root}"


@pytest.mark.parametrize(("degraded", "clean"), [("rain/rain-{}.png", "norain/norain-{}.png"),
                                                  ("rain/{}.png", "norain/{}.png"),
                                                  ("input/{}.png", "target/{}.png")])
def test_rain100l_pairs_its_folder_variants(tmp_path, photos, degraded, clean):
    root = write(tmp_path, photos, *(pattern.format(n) for n in ("001", "002") for pattern in (degraded, clean)))
    benchmark = benchmarks.open_benchmark(str(root), layout="rain100l")
    assert [(task, stem) for task, stem, _, _ in pairs(benchmark)] == [("rain", "001"), ("rain", "002")]
    assert [(i, t) for _, _, i, t in pairs(benchmark)][0] == (degraded.format("001"), clean.format("001"))


def test_sots_pairs_every_hazy_version_of_a_scene_with_its_clear_image(tmp_path, photos):
    root = write(tmp_path, photos, "hazy/0001_0.8_0.2.jpg", "hazy/0001_0.9_0.16.jpg", "hazy/0002_1_0.2.jpg",
                 "hazy/0005_0.8_0.1.jpg", "gt/0001.png", "gt/0002.png", "gt/0003.png")
    benchmark = benchmarks.open_benchmark(str(root), layout="sots-outdoor")
    assert pairs(benchmark) == [("haze", "0001_0.8_0.2", "hazy/0001_0.8_0.2.jpg", "gt/0001.png"),
                                ("haze", "0001_0.9_0.16", "hazy/0001_0.9_0.16.jpg", "gt/0001.png"),
                                ("haze", "0002_1_0.2", "hazy/0002_1_0.2.jpg", "gt/0002.png")]
    assert benchmark.skipped == {"no_target": ["hazy/0005_0.8_0.1.jpg"], "no_input": ["gt/0003.png"]}


def test_gopro_pairs_blur_and_sharp_within_each_scene(tmp_path, photos):
    root = write(tmp_path, photos, "GOPR0384_11_00/blur/000001.png", "GOPR0384_11_00/sharp/000001.png",
                 "GOPR0384_11_00/blur_gamma/000001.png", "GOPR0410_11_00/blur/000001.png",
                 "GOPR0410_11_00/sharp/000001.png", "GOPR0410_11_00/blur/000002.png")
    benchmark = benchmarks.open_benchmark(str(root), layout="gopro")
    assert [(task, stem) for task, stem, _, _ in pairs(benchmark)] == [
        ("blur", "GOPR0384_11_00/000001"), ("blur", "GOPR0410_11_00/000001")]
    assert pairs(benchmark)[1][2:] == ("GOPR0410_11_00/blur/000001.png", "GOPR0410_11_00/sharp/000001.png")
    assert benchmark.skipped == {"no_target": ["GOPR0410_11_00/blur/000002.png"]}


@pytest.mark.parametrize("base", ["", "eval15/"])
def test_lol_pairs_low_with_high_at_the_root_or_under_eval15(tmp_path, photos, base):
    root = write(tmp_path, photos, f"{base}low/1.png", f"{base}high/1.png", f"{base}low/22.png",
                 f"{base}high/22.png")
    benchmark = benchmarks.open_benchmark(str(root), layout="lol")
    assert pairs(benchmark) == [("low_light", "1", f"{base}low/1.png", f"{base}high/1.png"),
                                ("low_light", "22", f"{base}low/22.png", f"{base}high/22.png")]


def test_cdd11_pairs_each_class_present_with_the_shared_clear_folder(tmp_path, photos):
    root = write(tmp_path, photos, "clear/000.png", "clear/001.png", "haze/000.png", "haze/001.png",
                 "low_haze_rain/001.png", "low_haze_rain/007.png", "notes/000.png")
    benchmark = benchmarks.open_benchmark(str(root), layout="cdd11")
    assert [(task, stem) for task, stem, _, _ in pairs(benchmark)] == [
        ("haze", "000"), ("haze", "001"), ("low_haze_rain", "001")]
    assert pairs(benchmark)[2][2:] == ("low_haze_rain/001.png", "clear/001.png")
    assert benchmark.skipped == {"no_target": ["low_haze_rain/007.png"]}


@pytest.mark.parametrize(("layout", "expected"), [
    ("rain100l", "rain-NNN.png beside norain-NNN.png"), ("sots-outdoor", "hazy <scene>_<beta>_<A>.ext"),
    ("gopro", "<scene>/blur/ and <scene>/sharp/"), ("lol", "low/ and high/"), ("cdd11", "clear/ beside")])
def test_a_folder_in_another_layout_is_one_error_naming_what_was_expected_and_found(tmp_path, photos, layout,
                                                                                     expected):
    root = write(tmp_path, photos, "pictures/a.png", "other.png")
    with pytest.raises(DataError) as error:
        benchmarks.open_benchmark(str(root), layout=layout)
    message = str(error.value)
    assert "\n" not in message and message.startswith(f"{root}: not a ")
    assert expected in message and "found other.png, pictures/" in message


def test_a_layout_with_nothing_paired_is_an_error_counting_what_was_unpaired(tmp_path, photos):
    root = write(tmp_path, photos, "low/1.png", "high/2.png")
    with pytest.raises(DataError, match=r": no lol pairs \(unpaired: 1 no_target, 1 no_input\)$"):
        benchmarks.open_benchmark(str(root), layout="lol")
