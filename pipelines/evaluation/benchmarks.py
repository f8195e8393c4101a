"""Frozen benchmark sets: what evaluation and the promotion gate measure models on.

``open_benchmark(data)`` accepts

- a dataset published by ``synthesize.py`` (``<out>/<name>`` for its ``LATEST``, or ``<out>/<name>/v=<version>``):
  one split, by default ``test``; shard checksums are verified, so the set is exactly the one published;
- a folder (or ``s3://`` prefix) of real paired benchmarks, one sub-folder per task::

      <root>/<task>/input/<name>.<ext>     degraded    (also accepted: lq/, degraded/)
      <root>/<task>/target/<name>.<ext>    reference   (also accepted: gt/, clean/)

  Inputs and targets pair by relative path without extension (``input/a/01.png`` with
  ``target/a/01.jpg``). ``<root>`` itself may hold ``input/`` and ``target/`` for a single task named
  after it. Unpaired, undecodable or differently sized files are skipped and reported by name;
- a published benchmark in the layout it is downloaded in (``layout``: CBSD68, Rain100L, SOTS, GoPro, LOL,
  CDD-11, WeatherBench; see ``layouts``), paired by that benchmark's own naming rule;
- ``samples``: every five-task recipe on crops of the bundled sample photos that the quickstart
  holds out from training. Content-seeded, so the same code version gives the same bytes.

A benchmark is a list of small *units* (a shard, a file pair) that ``cases(unit)`` turns into pairs,
so evaluation can read units in one process or spread them over Ray workers.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Iterator

import numpy as np

from ..core import provenance, storage
from ..core.errors import DataError
from ..data import layouts, patches, sources, synthesis, versions

MAX_PIXELS = 100_000_000
MIN_SIDE = 16  # the protocols crop or pad to multiples of 16; BasicSR's SSIM needs 11

SAMPLES_CROPS = 4
SAMPLES_PATCH = 128


@dataclass(frozen=True)
class Case:
    """One benchmark pair: uint8 RGB (H, W, 3) images of the same size."""

    id: str
    task: str
    recipe: str
    degraded: np.ndarray
    clean: np.ndarray


@dataclass(frozen=True)
class Skip:
    """A unit that gave no pair: why, and the file at fault (relative to the benchmark's root)."""

    reason: str
    id: str


@dataclass
class Benchmark:
    kind: str  # "dataset", "folder" or "samples"
    uri: str
    label: str  # what reports and tags call it, e.g. s3://b/datasets/five_task@20261126-...:test
    digest: str  # identity of the frozen contents: manifest, file listing or code version
    units: list[dict[str, str]]
    skipped: dict[str, list[str]] = field(default_factory=dict)
    split: str | None = None
    version: str | None = None
    layout: str | None = None  # the published benchmark a folder holds, in its own layout

    def cases(self, unit: dict[str, str]) -> Iterator[Case | Skip]:
        return _readers[self.kind](self, unit)

    def spec(self) -> dict[str, str | None]:
        """Enough to reopen the same set elsewhere (a Ray worker), without listing again."""
        return {"kind": self.kind, "uri": self.uri, "split": self.split, "version": self.version}

    def pairs(self) -> int | None:
        """How many rows (pairs and skips) ``cases`` yields over all units, when known without reading them."""
        if self.kind == "folder":
            return len(self.units)
        if self.kind == "dataset":
            return sum(int(unit["rows"]) for unit in self.units)
        return None

    def describe(self) -> dict[str, object]:
        return {"kind": self.kind, "uri": self.uri, "label": self.label, "digest": self.digest, "split": self.split,
                "version": self.version, "layout": self.layout, "units": len(self.units), "skipped": self.skipped}


def open_benchmark(data: str, split: str = "test", layout: str | None = None,
                   sigmas: tuple[int, ...] = layouts.SIGMAS) -> Benchmark:
    """The frozen set ``data`` names; see the module docstring. With ``layout`` (a name in
    ``layouts.BENCHMARK_LAYOUTS``), ``data`` is a folder of that published benchmark in its own layout (``sigmas``:
    CBSD68's noise levels).

    Raises:
        StorageError: ``data`` is unreadable or holds no benchmark.
        ValueError: a dataset version has no ``split`` pairs or a corrupt manifest; ``data`` does not hold
            ``layout``.
    """
    if layout is not None:
        return _native(storage.absolute(data), layout, sigmas)
    if data == sources.SAMPLES:
        return _samples()
    data = storage.absolute(data)  # Ray workers that read it have other working directories
    if storage.exists(storage.join(data, versions.LATEST)) or "/v=" in data.replace("\\", "/"):
        return _published(data, split)
    return _paired_folders(data)


def _published(data: str, split: str) -> Benchmark:
    root, _, version = data.rstrip("/").partition("/v=")
    manifest = versions.read_manifest(root, version or versions.LATEST, verify=True)
    shards = [shard for shard in manifest["shards"] if shard["split"] == split]
    if not shards:
        splits = sorted({shard["split"] for shard in manifest["shards"]})
        raise DataError(f"{root}/v={manifest['version']}: no {split} pairs (splits: {', '.join(splits)})")
    version_uri = storage.join(root, f"v={manifest['version']}")
    return Benchmark("dataset", root, f"{root}@{manifest['version']}:{split}", versions.manifest_digest(manifest),
                     [{"shard": storage.join(version_uri, shard["path"]), "rows": shard["rows"]} for shard in shards],
                     split=split, version=manifest["version"])


def _read_shard(benchmark: Benchmark, unit: dict[str, str]) -> Iterator[Case | Skip]:
    """A shard's pairs, row by row: an ingested dataset's whole images differ in size. A clean-image dataset
    (``ingest.py --layout clean``) has no degraded images to score and is refused, naming the shard."""
    rows = patches.read_rows(unit["shard"])
    for i, sample_id in enumerate(rows["sample_id"]):
        yield Case(sample_id, rows["task"][i], rows["recipe"][i], patches.row_image(rows, i, "degraded", unit["shard"]),
                   patches.row_image(rows, i, "clean", unit["shard"]))


def _paired_folders(root: str) -> Benchmark:
    try:
        pairing = layouts.pair_layout("paired", root)
    except DataError:
        raise storage.StorageError(f"{root}: no paired benchmark (expected <task>/input/ and <task>/target/ "
                                   f"folders of {', '.join(sources.IMAGE_SUFFIXES)} images)") from None
    listing = sorted((u["task"], u["stem"]) for u in pairing.units)
    digest = hashlib.sha256(json.dumps(listing).encode()).hexdigest()  # which pairs; contents are not hashed
    return Benchmark("folder", root, root, digest, pairing.units, pairing.skipped)


def _native(root: str, layout: str, sigmas: tuple[int, ...]) -> Benchmark:
    pairing = layouts.pair_layout(layout, root, sigmas)
    if not pairing.units:
        raise DataError(f"{root}: no {layout} pairs (unpaired: "
                        f"{', '.join(f'{len(v)} {k}' for k, v in pairing.skipped.items()) or 'none'})")
    listing = sorted((u["task"], u["stem"]) for u in pairing.units)
    digest = hashlib.sha256(json.dumps([layout, listing]).encode()).hexdigest()
    return Benchmark("folder", root, f"{layout}:{root}", digest, pairing.units, pairing.skipped, layout=layout)


def _read_pair(benchmark: Benchmark, unit: dict[str, str]) -> Iterator[Case | Skip]:
    pair = layouts.read_pair(unit, max_pixels=MAX_PIXELS, min_side=MIN_SIDE)
    if pair.skip_reason:
        yield Skip(pair.skip_reason, storage.relative(pair.file, benchmark.uri))
        return
    yield Case(f"{unit['task']}/{unit['stem']}", unit["task"], unit["task"], pair.degraded, pair.clean)


def _samples_config() -> synthesis.SynthesisConfig:
    # The quickstart's split, so its training never saw these photos; bigger crops than its patches.
    return synthesis.QUICKSTART.model_copy(update={"patch": SAMPLES_PATCH})


def _samples() -> Benchmark:
    config = _samples_config()
    digest = hashlib.sha256(f"{provenance.synthesis_code_version()}:{config.model_dump_json()}".encode()).hexdigest()
    return Benchmark("samples", sources.SAMPLES, f"samples (five_task, seed {config.seed})", digest,
                     [{"recipes": config.recipes}], split="val")


def _synthesize_samples(benchmark: Benchmark, unit: dict[str, str]) -> Iterator[Case | Skip]:
    pairs = synthesis.validation_pairs(sources.sample_photos(), _samples_config(), crops_per_recipe=SAMPLES_CROPS)
    for i, sample_id in enumerate(pairs["sample_id"]):
        yield Case(sample_id, pairs["task"][i], pairs["recipe"][i], pairs["degraded"][i], pairs["clean"][i])


_readers = {"dataset": _read_shard, "folder": _read_pair, "samples": _synthesize_samples}


def reopen(spec: dict[str, str | None]) -> Benchmark:
    """A benchmark from ``Benchmark.spec()`` that can read units (its listing is not rebuilt)."""
    return Benchmark(spec["kind"], spec["uri"], spec["uri"], "", [], split=spec["split"], version=spec["version"])
