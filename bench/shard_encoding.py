"""How to store image pairs in dataset shards: bytes per pair and encode/decode cost per pair.

Compares raw uint8 arrays in Parquet (uncompressed, snappy, zstd at Arrow's default level 1 and at
levels 3 and 6) with lossless PNG (levels 1 and 3) on synthesized 128² pairs of real photos, on one core.

    python bench/shard_encoding.py [--pairs 256] [--patch 128] [--recipes cdd11]
"""

from __future__ import annotations

import argparse
import sys
import time

import cv2
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from degradation_synth import degrade, resolve_recipes, rng_for
from degradation_synth.bench import keep_freed_memory
from degradation_synth.preview import square_tile
from degradation_synth.samples import load_sample_photos


def make_pairs(count: int, patch: int, recipes: str) -> list[tuple[np.ndarray, np.ndarray]]:
    photos = [square_tile(p, 4 * patch) for p in load_sample_photos().values()]
    chosen = resolve_recipes(recipes)
    pairs = []
    for index in range(count):
        rng = rng_for(0, index)
        photo = photos[index % len(photos)]
        top, left = (int(v) for v in rng.integers(0, photo.shape[0] - patch, 2))
        clean = np.ascontiguousarray(photo[top:top + patch, left:left + patch])
        pairs.append((degrade(clean, chosen[index % len(chosen)], rng)[0], clean))
    return pairs


def parquet_raw(pairs, compression, level=None):
    table = pa.table({"degraded": [d.tobytes() for d, _ in pairs], "clean": [c.tobytes() for _, c in pairs]})
    buffer = pa.BufferOutputStream()
    pq.write_table(table, buffer, compression=compression, compression_level=level)
    return buffer.getvalue().to_pybytes()


def parquet_png(pairs, level):
    encode = lambda image: cv2.imencode(".png", image, [cv2.IMWRITE_PNG_COMPRESSION, level])[1].tobytes()  # noqa: E731
    table = pa.table({"degraded": [encode(d) for d, _ in pairs], "clean": [encode(c) for _, c in pairs]})
    buffer = pa.BufferOutputStream()
    pq.write_table(table, buffer, compression="none")
    return buffer.getvalue().to_pybytes()


def read_raw(data, patch):
    table = pq.read_table(pa.BufferReader(data))
    return [np.frombuffer(b, np.uint8).reshape(patch, patch, 3) for b in table.column("degraded").to_pylist()]


def read_png(data, patch):
    table = pq.read_table(pa.BufferReader(data))
    return [cv2.imdecode(np.frombuffer(b, np.uint8), cv2.IMREAD_UNCHANGED)
            for b in table.column("degraded").to_pylist()]


def timed(fn, *args, repeats=5):
    """``fn(*args)`` and its best time of ``repeats`` calls (single calls vary by 2x on small VMs)."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn(*args)
        best = min(best, time.perf_counter() - start)
    return result, best


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=256)
    parser.add_argument("--patch", type=int, default=128)
    parser.add_argument("--recipes", default="cdd11", help="recipes or sets to synthesize the pairs with")
    args = parser.parse_args(argv)
    kept = keep_freed_memory()  # as the other benchmarks: no page faults on every fresh write buffer
    cv2.setNumThreads(1)
    pairs = make_pairs(args.pairs, args.patch, args.recipes)
    n = len(pairs)
    print(f"# shard encoding: {n} pairs of {args.patch}², recipes {args.recipes}, {time.strftime('%Y-%m-%d')}, "
          f"allocator: {'glibc, freed memory kept' if kept else 'default'}")
    print("\n| encoding | KB/pair | write ms/pair | read ms/pair (degraded column) |")
    print("|---|---:|---:|---:|")
    variants = [("raw uint8, uncompressed", lambda p: parquet_raw(p, "none"), read_raw),
                ("raw uint8, snappy", lambda p: parquet_raw(p, "snappy"), read_raw),
                ("raw uint8, zstd (level 1, Arrow's default)", lambda p: parquet_raw(p, "zstd"), read_raw),
                ("raw uint8, zstd level 3", lambda p: parquet_raw(p, "zstd", 3), read_raw),
                ("raw uint8, zstd level 6", lambda p: parquet_raw(p, "zstd", 6), read_raw),
                ("PNG level 1", lambda p: parquet_png(p, 1), read_png),
                ("PNG level 3", lambda p: parquet_png(p, 3), read_png)]
    for name, write, read in variants:
        data, write_s = timed(write, pairs)
        _, read_s = timed(read, data, args.patch)
        print(f"| {name} | {len(data) / n / 1024:.1f} | {write_s / n * 1e3:.3f} | {read_s / n * 1e3:.3f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
