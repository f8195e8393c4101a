"""Real paired training sets in their release layouts: every layout's miniature (real photo crops) pairs and
reads from a folder and from S3, malformed sets are counted by reason, the ingest job publishes the format
``synthesize.py`` writes, and a killed ingest publishes nothing."""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pyarrow.parquet as pq
import pytest

from pipelines.core import storage
from pipelines.data import ingestion, layouts, sources, versions
from pipelines.data.ingestion import IngestSection
from pipelines.data.job import NothingPublished

from ..conftest import REPO_ROOT, latest, new_bucket, photo_halves

SIDE = 160  # long side of the miniatures' images: above ingest.min_side once set to 64
MIN_SIDE = 64


@pytest.fixture(scope="module")
def photos() -> list[np.ndarray]:
    return list(photo_halves(6, SIDE).values())  # BGR, as OpenCV writes them


def write(root: Path, image: np.ndarray, path: str) -> None:
    (root / path).parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(root / path), image)


def darker(image: np.ndarray) -> np.ndarray:
    return (image * 0.6).astype(np.uint8)


# Each layout's miniature: (degraded path, clean path) pairs, by the names its release uses. A clean-only
# layout has no degraded path. ``{scene}``-style names pair one clean image with several degraded ones.
MINIATURES = {
    "rain100l": [(f"rainy/rain-{n}.png", f"gt/norain-{n}.png") for n in (1, 2, 3)],  # PromptIR's RainTrainL
    "ots": [("synthetic/part1/0001_0.8_0.2.jpg", "original/0001.jpg"),
            ("synthetic/part2/0001_0.9_0.16.jpg", "original/0001.jpg"),
            ("synthetic/part1/0002_0.8_0.2.jpg", "original/0002.jpg")],
    "its": [("hazy/1_1_0.90179.png", "clear/1.png"), ("hazy/2_3_0.7.png", "clear/2.png")],
    "gopro": [("train/GOPR0372_07_00/blur/000047.png", "train/GOPR0372_07_00/sharp/000047.png"),
              ("train/GOPR0374_11_00/blur/000001.png", "train/GOPR0374_11_00/sharp/000001.png")],
    "gopro-flat": [("blur/GOPR0372_07_00_000047.png", "sharp/GOPR0372_07_00_000047.png")],  # AdaIR's Train/Deblur
    "lol": [("our485/low/2.png", "our485/high/2.png"), ("our485/low/5.png", "our485/high/5.png")],
    "lol-gt": [("low/2.png", "gt/2.png")],  # AdaIR's Train/Enhance
    "cdd11": [("haze/001.png", "clear/001.png"), ("low_haze_rain/001.png", "clear/001.png"),
              ("snow/002.png", "clear/002.png")],
    "clean": [(None, "BSD400/a117025.jpg"), (None, "WED/00001.bmp")],
    "paired": [("input/a.png", "target/a.png"), ("input/sub/b.png", "target/sub/b.jpg")],
}
# layout -> (task, recipe) of each pair, in pairing order.
EXPECTED = {
    "rain100l": [("rain", "rain100l")] * 3,
    "ots": [("haze", "ots")] * 3,
    "its": [("haze", "its")] * 2,
    "gopro": [("blur", "gopro")] * 2,
    "gopro-flat": [("blur", "gopro")],
    "lol": [("low_light", "lol")] * 2,
    "lol-gt": [("low_light", "lol")],
    "cdd11": [("haze", "cdd11/haze"), ("low_light+haze+rain", "cdd11/low_haze_rain"), ("snow", "cdd11/snow")],
    "clean": [("noise", "clean")] * 2,
    "paired": [("mini", "mini")] * 2,
}


def write_miniature(root: Path, layout: str, photos: list) -> Path:
    clean_of: dict[str, np.ndarray] = {}
    for index, (degraded, clean) in enumerate(MINIATURES[layout]):
        image = clean_of.setdefault(clean, photos[len(clean_of) % len(photos)])
        write(root, image, clean)
        if degraded:
            write(root, darker(image), degraded)
    return root


def section(layout: str, **changes) -> IngestSection:
    return IngestSection(layout=layout, min_side=MIN_SIDE, **changes)


def rgb(image: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


@pytest.mark.parametrize("where", ["local", "s3"])
@pytest.mark.parametrize("miniature", list(MINIATURES))
def test_every_layout_pairs_and_reads_its_miniature_whole(tmp_path, photos, miniature, where, request):
    layout = miniature.split("-")[0]  # a variant: gopro-flat is a gopro layout
    root = write_miniature(tmp_path / "mini", miniature, photos)
    source = str(root)
    if where == "s3":
        request.getfixturevalue("s3_endpoint")
        source = f"s3://{new_bucket()}/{root.name}"
        for path in root.rglob("*"):
            if path.is_file():
                storage.write_bytes(storage.join(source, *path.relative_to(root).parts), path.read_bytes())
    config = section(layout)
    rows = ingestion.read_pairs(layouts.pair_layout(layout, source).units, source, config)
    assert list(zip(rows["task"], rows["recipe"], strict=True)) == EXPECTED[miniature]
    assert not any(rows["skip_reason"])
    for i, record in enumerate(rows["record"]):
        record = json.loads(record)
        clean = cv2.imread(str(root / record["target"]))
        assert (rows["height"][i], rows["width"][i]) == clean.shape[:2]  # whole, not cropped
        if layout in ("its",):  # exact images: PNG; the JPEG/BMP ones only by size
            image = np.frombuffer(rows["clean"][i], np.uint8).reshape(*clean.shape)
            np.testing.assert_array_equal(image, rgb(clean))
        if layout == "clean":
            assert rows["degraded"][i] == b"" and "input" not in record  # noised in training
        else:
            degraded = cv2.imread(str(root / record["input"]))
            assert len(rows["degraded"][i]) == degraded.size
    plan = ingestion.plan(source, config)
    assert plan["pairs"] == len(EXPECTED[miniature]) and plan["unpaired"] == {}


def test_a_hazy_image_pairs_with_its_scene_and_all_versions_of_a_scene_share_a_split(tmp_path, photos):
    root = tmp_path / "ots"
    for scene in range(12):
        write(root, photos[scene % 6], f"original/{scene:04d}.jpg")
        for beta in ("0.8", "0.16"):
            write(root, darker(photos[scene % 6]), f"hazy/{scene:04d}_{beta}_0.2.jpg")
    rows = ingestion.read_pairs(layouts.pair_layout("ots", str(root)).units, str(root),
                                section("ots", val_fraction=0.4))
    split_of_scene: dict[str, set[str]] = {}
    for record, split in zip(rows["record"], rows["split"], strict=True):
        split_of_scene.setdefault(json.loads(record)["target"], set()).add(split)
    assert all(len(splits) == 1 for splits in split_of_scene.values())
    assert {s for splits in split_of_scene.values() for s in splits} == {"train", "val"}
    other = ingestion.read_pairs(layouts.pair_layout("ots", str(root)).units, str(root),
                                 section("ots", val_fraction=0.4, seed=1))
    assert other["split"] != rows["split"]  # the seed salts the split


def test_an_image_above_max_side_is_cut_into_an_even_grid_of_tiles_that_covers_it(tmp_path, photos):
    root = tmp_path / "lol"
    big = cv2.resize(photos[0], (300, 130))
    write(root, darker(big), "low/1.png")
    write(root, big, "high/1.png")
    rows = ingestion.read_pairs(layouts.pair_layout("lol", str(root)).units, str(root), section("lol", max_side=128))
    tiles = [json.loads(record)["tile"] for record in rows["record"]]
    assert tiles == [[0, 0, 65, 100], [0, 100, 65, 100], [0, 200, 65, 100],
                     [65, 0, 65, 100], [65, 100, 65, 100], [65, 200, 65, 100]]
    whole = rgb(big)
    for i, (top, left, height, width) in enumerate(tiles):
        tile = np.frombuffer(rows["clean"][i], np.uint8).reshape(height, width, 3)
        np.testing.assert_array_equal(tile, whole[top:top + height, left:left + width])
    assert rows["sample_id"] == [f"low/1.png#{i}" for i in range(6)]


def write_malformed_lol(root: Path, photos: list) -> dict[str, list[str]]:
    """A LOL miniature with one pair of each fault; returns the skips a manifest must list."""
    for n in range(4):
        write(root, darker(photos[n]), f"low/{n}.png")
        write(root, photos[n], f"high/{n}.png")
    write(root, darker(photos[4]), "low/orphan.png")  # its reference is missing
    write(root, photos[5], "high/lonely.png")  # its degraded image is missing
    write(root, darker(photos[5])[:100], "low/cropped.png")  # another size than its reference
    write(root, photos[5], "high/cropped.png")
    png = (root / "high/0.png").read_bytes()
    (root / "low/broken.png").write_bytes(png[:len(png) // 3])  # a truncated download
    write(root, photos[1], "high/broken.png")
    return {layouts.NO_INPUT: ["high/lonely.png"], layouts.NO_TARGET: ["low/orphan.png"],
            layouts.SIZE_MISMATCH: ["low/cropped.png"], sources.UNDECODABLE: ["low/broken.png"]}


@pytest.fixture(scope="module")
def malformed(ray_cluster, tmp_path_factory, photos):
    """A malformed LOL miniature ingested from a folder, and the same files ingested from S3."""
    base = tmp_path_factory.mktemp("malformed")
    expected = write_malformed_lol(base / "lol", photos)
    s3_source = f"s3://{new_bucket()}/lol"
    for path in (base / "lol").rglob("*.png"):
        storage.write_bytes(storage.join(s3_source, *path.relative_to(base / "lol").parts), path.read_bytes())
    runs = {}
    for where, source, out in (("local", str(base / "lol"), str(base / "datasets")),
                               ("s3", s3_source, s3_source.rsplit("/", 1)[0] + "/datasets")):
        config = ingestion.IngestConfig(source=source, output={"uri": out, "name": "lol", "rows_per_shard": 2},
                                        ingest=section("lol", val_fraction=0.3))
        manifest = ingestion.ingest(source, config.output, config.ingest, config.model_dump(mode="json"))
        runs[where] = (storage.join(out, "lol"), manifest)
    return expected, runs


def shard_rows(dataset: str, manifest: dict) -> list[dict]:
    rows = []
    for shard in manifest["shards"]:
        data = storage.read_bytes(storage.join(dataset, f"v={manifest['version']}", shard["path"]))
        rows += pq.read_table(io.BytesIO(data)).to_pylist()
    return rows


@pytest.mark.parametrize("where", ["local", "s3"])
def test_a_malformed_set_publishes_its_good_pairs_and_counts_the_rest_by_reason(malformed, where):
    expected, runs = malformed
    dataset, manifest = runs[where]
    assert manifest["skipped"] == expected
    assert manifest["layout"] == "lol" and manifest["kind"] == "ingested" and manifest["tasks"] == {"lol": "low_light"}
    assert sum(sum(c.values()) for c in manifest["counts"].values()) == 4
    assert latest(dataset) == manifest["version"]
    assert versions.read_manifest(dataset) == manifest  # checksums verified
    rows = shard_rows(dataset, manifest)
    assert sorted(row["sample_id"] for row in rows) == [f"low/{n}.png#0" for n in range(4)]
    assert all(row["split"] == shard["split"] for shard in manifest["shards"]
               for row in shard_rows(dataset, {**manifest, "shards": [shard]}))


def test_the_same_set_from_a_folder_and_from_s3_gives_the_same_rows(malformed):
    _, runs = malformed
    local, remote = (sorted(shard_rows(*runs[where]), key=lambda row: row["sample_id"]) for where in ("local", "s3"))
    assert local == remote


def test_too_many_unusable_pairs_publish_nothing(ray_cluster, tmp_path, photos):
    root = tmp_path / "lol"
    write(root, darker(photos[0]), "low/1.png")
    write(root, photos[0], "high/1.png")
    for n in range(2, 5):
        write(root, darker(photos[n]), f"low/{n}.png")  # no references
    config = ingestion.IngestConfig(source=str(root), output={"uri": str(tmp_path / "out"), "name": "lol"},
                                    ingest=section("lol"))
    with pytest.raises(NothingPublished, match="3 of 4 files were skipped"):
        ingestion.ingest(str(root), config.output, config.ingest, {})
    assert not versions.published_versions(str(tmp_path / "out" / "lol"))


def test_a_folder_in_another_layout_is_refused_before_any_work(tmp_path, photos):
    root = write_miniature(tmp_path / "gopro", "gopro", photos)
    with pytest.raises(layouts.DataError, match=r"not a lol layout: expected low/ and high/.*found train/"):
        ingestion.plan(str(root), section("lol"))


def run_cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "pipelines/ingest.py", *args], cwd=REPO_ROOT, capture_output=True,
                          text=True, timeout=300, env=env)


def test_the_cli_dry_run_lists_the_pairs_and_writes_nothing(tmp_path, photos):
    root = write_miniature(tmp_path / "cdd11", "cdd11", photos)
    result = run_cli("--layout", "cdd11", "--source", str(root), "--out", str(tmp_path / "out"), "--name", "cdd",
                     "--dry-run")
    assert result.returncode == 0, result.stderr
    plan = json.loads(result.stdout)["plan"]
    assert plan["pairs"] == 3 and plan["tasks"] == {"haze": 1, "low_light+haze+rain": 1, "snow": 1}
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(("args", "named"), [
    (["--layout", "rain100h"], "ingest.layout"),
    (["--layout", "lol", "--set", "ingest.min_sid=3"], "ingest.min_sid"),
    (["--layout", "lol", "--source", "/nonexistent/lol"], "/nonexistent/lol"),
])
def test_a_bad_setting_exits_2_with_one_line_naming_it(tmp_path, args, named):
    result = run_cli("--source", str(tmp_path), "--out", str(tmp_path / "out"), "--name", "x", *args)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and named in lines[0], result.stderr


# --- a real kill ---------------------------------------------------------------------------------------------

# The CLI, stalled where the job would publish (every shard written, no manifest), then killed with SIGKILL.
STALL_BEFORE_PUBLISHING = """
import os, sys, time
sys.path.insert(0, os.getcwd())
from pipelines import ingest
from pipelines.data import ingestion

def stall(dataset_uri, version, manifest):
    with open(os.environ["STALLED_MARKER"] + ".tmp", "w") as marker:
        marker.write(version)
    os.replace(os.environ["STALLED_MARKER"] + ".tmp", os.environ["STALLED_MARKER"])
    time.sleep(600)

ingestion.publish = stall  # the job calls it by this name
sys.exit(ingest.main(sys.argv[1:]))
"""


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_an_ingest_killed_with_sigkill_before_publishing_leaves_nothing_readers_can_see(cli_env, tmp_path, photos):
    root = write_miniature(tmp_path / "rain", "rain100l", photos)
    out, marker = tmp_path / "out", tmp_path / "stalled"
    with open(tmp_path / "stderr", "w") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-c", STALL_BEFORE_PUBLISHING, "--layout", "rain100l", "--source", str(root),
             "--out", str(out), "--name", "rain", "--set", "ingest.min_side=64", "--set", "ray.num_cpus=1"],
            cwd=REPO_ROOT, env={**cli_env, "STALLED_MARKER": str(marker)}, stdout=subprocess.DEVNULL,
            stderr=stderr, start_new_session=True)
        try:
            deadline = time.monotonic() + 240
            while not marker.exists():
                assert process.poll() is None, (tmp_path / "stderr").read_text()[-3000:]
                assert time.monotonic() < deadline, "the job never reached publishing"
                time.sleep(0.2)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=60)
    assert process.returncode == -signal.SIGKILL
    killed = out / "rain" / f"v={marker.read_text()}"
    assert any(killed.glob("part-*.parquet")) and not (killed / versions.MANIFEST).exists()
    assert versions.published_versions(str(out / "rain")) == []
    with pytest.raises(storage.StorageError, match="no published version"):
        versions.read_manifest(str(out / "rain"))



def test_an_ingested_split_is_a_benchmark_of_whole_images(malformed):
    from pipelines.evaluation import benchmarks

    _, runs = malformed
    dataset, manifest = runs["local"]
    split = next(split for split, counts in manifest["counts"].items() if counts)
    benchmark = benchmarks.open_benchmark(dataset, split=split)
    cases = [case for unit in benchmark.units for case in benchmark.cases(unit)]
    assert len(cases) == sum(manifest["counts"][split].values())
    assert all(case.task == "low_light" and case.degraded.shape == case.clean.shape for case in cases)
    assert {case.clean.shape[:2] for case in cases} <= {(SIDE, w) for w in range(SIDE + 1)} | \
        {(h, SIDE) for h in range(SIDE + 1)}  # whole photos: the long side is SIDE
