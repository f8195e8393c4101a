"""How fast one CPU core cuts training patches from ingested whole images, the work behind ``data.datasets``.

Writes one shard of whole pairs at a given size (real photos, resized; the degraded side darkened), then
times ``patches._patches_of``: reading the shard, decoding its rows and cutting ``--copies`` seeded patches of
each, flipped and rotated, with and without online noise (a ``clean`` dataset). Also times the shard read
alone. No Ray: one process, one OpenCV/numpy thread, so the figures are per core.

    python bench/patch_reader.py [--sizes 481x321,1280x720] [--patch 128] [--rows 32] [--copies 4] [--repeats 3]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from degradation_synth.samples import load_sample_photos
from pipelines.data import patches
from pipelines.data.shards import write_shards
from pipelines.data.synthesis import PAIR_COLUMNS


def shard_of(folder: Path, width: int, height: int, rows: int) -> str:
    """One train shard of ``rows`` whole pairs of ``width`` x ``height``; returns its path."""
    photos = [cv2.resize(photo, (width, height), interpolation=cv2.INTER_AREA)
              for photo in load_sample_photos().values()]
    pairs: dict[str, list] = {column: [] for column in PAIR_COLUMNS}
    for index in range(rows):
        clean = photos[index % len(photos)]
        values = {"sample_id": f"{index:05d}#0", "source_id": f"{index:05d}", "content_sha256": "", "crop": 0,
                  "split": "train", "recipe": "bench", "task": "bench", "degraded": (clean * 0.6).astype(np.uint8),
                  "clean": clean, "height": height, "width": width, "record": "", "skip_reason": "",
                  "converted_from": ""}
        for column, value in values.items():
            pairs[column].append(value.tobytes() if isinstance(value, np.ndarray) else value)
    (stats,) = write_shards(pairs, str(folder), 0)
    return str(folder / stats["path"])


def best_of(repeats: int, work) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        work()
        times.append(time.perf_counter() - started)
    return min(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="481x321,1280x720", help="WxH of the whole images, comma-separated")
    parser.add_argument("--patch", type=int, default=128, help="patch side (data.patch)")
    parser.add_argument("--rows", type=int, default=32, help="pairs in the shard (ingest's rows_per_shard)")
    parser.add_argument("--copies", type=int, default=4, help="patches cut from each pair per work item")
    parser.add_argument("--repeats", type=int, default=3, help="timed calls; the best is reported")
    args = parser.parse_args(argv)
    cv2.setNumThreads(1)

    print(f"# patch reader: {args.patch}² patches, {args.rows} pairs per shard, {args.copies} copies each, "
          "one core; best of", args.repeats)
    print("| whole image | shard read ms | pairs: patches/s | clean, 3 noise levels: patches/s |")
    print("|---|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as folder:
        for size in args.sizes.split(","):
            width, height = (int(v) for v in size.lower().split("x"))
            shard = shard_of(Path(folder) / size, width, height, args.rows)
            work = [(0, shard, 0, args.copies)]
            read = best_of(args.repeats, lambda: patches.read_rows(shard))
            rates = []
            for spec in ({"clean_only": False, "sigmas": [15]}, {"clean_only": True, "sigmas": [15, 25, 50]}):
                made = args.rows * args.copies * len(spec["sigmas"] if spec["clean_only"] else [0])
                seconds = best_of(args.repeats, lambda spec=spec: patches._patches_of(
                    {"id": np.array([0])}, work, [spec], args.patch, 0, 0))
                rates.append(made / seconds)
            print(f"| {width}x{height} | {read * 1000:.0f} | {rates[0]:.0f} | {rates[1]:.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
