"""End-to-end synthesis throughput: the whole Ray Data job (decode, crop, degrade, Parquet write,
publish) against the single-process library rate times the CPU count, in one run.

    python bench/synthesis_job.py [--sources 64] [--crops 32] [--recipes cdd11/low_haze_rain] [--cpus 2]

Sources are 512² tiles of the sample photos, written as PNG files to a temporary folder. The job rate
counts from the start of ``job.synthesize`` (Ray already running, no task run yet) to the published
manifest. Also reported: the library rate of ``--cpus`` processes running at once, which is what the
CPUs deliver together (on a small VM, less than one process's rate times their number), and the
pipeline without Ray: the job's own per-task code (read the sources, ``Synthesize``, ``write_shards``)
looped in one process and in ``--cpus`` processes at once, so that what Ray costs (job / (pipeline x
CPUs)) shows apart from what the job does beyond the library (sample bookkeeping, records, the Parquet
write). Last, the online stream training reads when it has no published dataset
(``online.online_dataset``, one pass, train split): train pairs per second reaching a consumer in the
driver, nothing written.

The rates this VM delivers drift by ±20 % over minutes, so every reference rate is measured twice, once
before and once after the job, and the mean of the two is what the job is compared with (both are
printed).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import cv2
import numpy as np

from degradation_synth import degrade, get_recipe, rng_for
from degradation_synth.bench import keep_freed_memory
from degradation_synth.preview import square_tile
from degradation_synth.samples import load_sample_photos
from pipelines.data import job, online, shards, sources, synthesis


def write_sources(folder: Path, count: int) -> None:
    photos = [square_tile(p, 768) for p in load_sample_photos().values()]
    for index in range(count):
        photo = photos[index % len(photos)]
        offset = (index // len(photos)) * 17 % 256  # distinct crops of the same photos
        tile = photo[offset:offset + 512, offset:offset + 512]
        cv2.imwrite(str(folder / f"src-{index:05d}.png"), cv2.cvtColor(tile, cv2.COLOR_RGB2BGR))


def library_rate(folder: Path, config: synthesis.SynthesisConfig, seconds: float = 3.0) -> float:
    """Pairs/s of one process doing the same per-pair work: decode (amortised over crops), crop, degrade."""
    files = sorted(folder.iterdir())
    recipe = get_recipe(config.recipes)
    pairs, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        data = files[pairs // config.crops_per_image % len(files)].read_bytes()
        image = sources.decode(data, max_pixels=config.max_pixels, min_side=config.patch).image
        for crop in range(config.crops_per_image):
            tile = image[crop:crop + config.patch, crop:crop + config.patch].copy()
            degrade(tile, recipe, rng_for(0, pairs, crop))
            pairs += 1
    return pairs / (time.perf_counter() - start)


def pipeline_rate(folder: Path, config: synthesis.SynthesisConfig, rows_per_shard: int, seconds: float = 8.0) -> float:
    """Pairs/s of one process running the job's task function in a loop without Ray, after one warm-up
    task (a fresh process's first Parquet write pays for lazy imports; the job's workers pay it once too)."""
    tasks = shards.shard_plan(sources.unit_sizes(str(folder)), shards.sources_per_shard(rows_per_shard, config))
    with tempfile.TemporaryDirectory() as out:
        pairs, start = 0, 0.0
        for number, slices in enumerate(tasks * 4):
            if number == 1:
                pairs, start = 0, time.perf_counter()
            plan_rows = {"task": np.array([number]), "slices": np.array([json.dumps(slices)])}
            pairs += sum(job.synthesize_shards(plan_rows, str(folder), out, config)["rows"])
            if number and time.perf_counter() - start > seconds:
                break
        return pairs / (time.perf_counter() - start)


REFERENCES = ("library, one process", "library, {cpus} at once", "pipeline without Ray, one process",
              "pipeline without Ray, {cpus} at once")


def reference_rates(folder: Path, config: synthesis.SynthesisConfig, cpus: int, rows_per_shard: int) -> list[float]:
    """The rates named in ``REFERENCES``: the library and the pipeline without Ray, in one process and
    in ``cpus`` processes at once."""
    rates = []
    for rate, args in ((library_rate, (folder, config)), (pipeline_rate, (folder, config, rows_per_shard))):
        rates.append(rate(*args))
        with ProcessPoolExecutor(cpus) as pool:
            rates.append(sum(pool.map(rate, *([arg] * cpus for arg in args))))
    return rates


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sources", type=int, default=64, help="source images (512² PNG)")
    parser.add_argument("--crops", type=int, default=32, help="patches per source")
    parser.add_argument("--recipes", default="cdd11/low_haze_rain")
    parser.add_argument("--patch", type=int, default=128)
    parser.add_argument("--cpus", type=int, default=os.cpu_count(), help="CPUs for the local Ray instance")
    parser.add_argument("--rows-per-shard", type=int, default=512)
    args = parser.parse_args(argv)
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    # Ray workers are fresh processes: they take the allocator setting from the environment.
    os.environ.setdefault("MALLOC_MMAP_THRESHOLD_", str(256 << 20))
    os.environ.setdefault("MALLOC_TRIM_THRESHOLD_", str(256 << 20))
    keep_freed_memory()
    cv2.setNumThreads(1)
    config = synthesis.SynthesisConfig(recipes=args.recipes, patch=args.patch, crops_per_image=args.crops)
    with tempfile.TemporaryDirectory() as tmp:
        folder, out = Path(tmp, "sources"), Path(tmp, "out")
        folder.mkdir()
        write_sources(folder, args.sources)
        before = reference_rates(folder, config, args.cpus, args.rows_per_shard)

        import ray
        from ray.data import DataContext

        ray.init(address="local", num_cpus=args.cpus, include_dashboard=False, log_to_driver=False)
        DataContext.get_current().enable_progress_bars = False
        start = time.perf_counter()
        manifest = job.synthesize(str(folder), job.OutputConfig(uri=str(out), name="bench",
                                                                         rows_per_shard=args.rows_per_shard),
                                       config, {})
        elapsed = time.perf_counter() - start
        start = time.perf_counter()
        stream = online.online_dataset(str(folder), config, "train").iter_batches(batch_size=256,
                                                                                     batch_format="pyarrow")
        streamed = sum(batch.num_rows for batch in stream)
        stream_rate = streamed / (time.perf_counter() - start)
        ray.shutdown()
        after = reference_rates(folder, config, args.cpus, args.rows_per_shard)
    single, together, pipeline_single, pipeline = ((b + a) / 2 for b, a in zip(before, after, strict=True))
    pairs = sum(sum(c.values()) for c in manifest["counts"].values())
    job_rate, cpus = pairs / elapsed, args.cpus
    print(f"# synthesis job: {pairs} pairs ({args.sources} sources x {args.crops} crops, {args.recipes}, "
          f"{args.patch}²), {cpus} CPUs, {time.strftime('%Y-%m-%d')}")
    print(f"\n| {' | '.join(name.format(cpus=cpus) for name in REFERENCES)} | Ray Data job "
          "| job / (library x CPUs) | job / (pipeline x CPUs) | job / pipeline at once "
          "| online stream, train pairs | online / (library x CPUs) |")
    print("|---:" * 10 + "|")
    print(f"| {single:,.0f} pairs/s | {together:,.0f} | {pipeline_single:,.0f} | {pipeline:,.0f} "
          f"| {job_rate:,.0f} pairs/s ({elapsed:.1f} s) | {job_rate / (single * cpus):.2f} "
          f"| {job_rate / (pipeline_single * cpus):.2f} | {job_rate / pipeline:.2f} "
          f"| {stream_rate:,.0f} pairs/s ({streamed} pairs) | {stream_rate / (single * cpus):.2f} |")
    print("\nreference rates before / after the job (pairs/s): " + ", ".join(
        f"{name.format(cpus=cpus)} {b:,.0f} / {a:,.0f}" for name, b, a in zip(REFERENCES, before, after, strict=True)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
