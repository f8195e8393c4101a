"""Synthesis speed on one core: pairs/s per recipe and size, next to a straightforward reference.

The reference implements the 3-way composite low light + haze + rain the way the field's code does
(numpy's generator for noise, ``ndarray.max``/``np.power``, streaks from thresholded noise convolved
with a rotated line kernel through ``cv2.filter2D``, a full-resolution colour-attenuation depth),
with the same parameter distributions and order as ``cdd11/low_haze_rain``, in the same run.

    python -m degradation_synth.bench                      # full table
    python -m degradation_synth.bench --sizes 128 --recipes cdd11/low_haze_rain
"""

from __future__ import annotations

import argparse
import ctypes
import os
import platform
import sys
import time
from typing import Callable

import cv2
import numpy as np

from .chain import degrade
from .ops.haze import HazeSpec
from .ops.low_light import LowLightSpec
from .ops.rain import RainSpec
from .preview import square_tile
from .recipes import RECIPES, get_recipe
from .samples import load_sample_photos
from .seeding import rng_for

COMPOSITE = "cdd11/low_haze_rain"


def pairs_per_second(make_pair: Callable[[int], object], seconds: float, repeats: int) -> float:
    """Best rate over ``repeats`` windows of ``seconds`` (the best window is the least disturbed)."""
    make_pair(0)  # warm-up
    best, index = 0.0, 1
    for _ in range(repeats):
        count, start = 0, time.perf_counter()
        while (elapsed := time.perf_counter() - start) < seconds:
            make_pair(index)
            index, count = index + 1, count + 1
        best = max(best, count / elapsed)
    return best


# --- the straightforward reference -----------------------------------------------------------

def _reference_low_light(image: np.ndarray, rng: np.random.Generator, spec: LowLightSpec) -> np.ndarray:
    gamma, sigma = spec.draw("gamma", rng), spec.draw("sigma", rng)
    light = cv2.GaussianBlur(image.max(axis=2), (0, 0), 3.0)
    dark = image * np.power(light, gamma - 1.0)[:, :, None]
    return np.clip(dark + rng.standard_normal(image.shape, dtype=np.float32) * (sigma / 255.0), 0.0, 1.0)


def _reference_rain(image: np.ndarray, rng: np.random.Generator, spec: RainSpec) -> np.ndarray:
    height, width = image.shape[:2]
    length = int(round(spec.draw("length", rng)))
    amount = spec.draw("density", rng) / 1000.0
    angle, intensity, blur = spec.draw("angle", rng), spec.draw("intensity", rng), spec.draw("blur", rng)
    seeds = (rng.random((height, width), dtype=np.float32) < amount).astype(np.float32)
    seeds = cv2.blur(seeds, (3, 3))
    line = np.diag(np.ones(length, np.float32))
    rotation = cv2.getRotationMatrix2D(((length - 1) / 2, (length - 1) / 2), angle - 45.0, 1.0)
    kernel = cv2.GaussianBlur(cv2.warpAffine(line, rotation, (length, length)), (3, 3), blur)
    streaks = cv2.filter2D(seeds, -1, kernel / max(kernel.sum(), 1e-6) * length)
    streaks = np.clip(streaks, 0.0, 1.0) * intensity
    return np.clip(image + streaks[:, :, None], 0.0, 1.0)


def _reference_haze(image: np.ndarray, rng: np.random.Generator, spec: HazeSpec) -> np.ndarray:
    beta, airlight = spec.draw("beta", rng), spec.draw("airlight", rng)
    hsv = cv2.cvtColor(image, cv2.COLOR_RGB2HSV)
    depth = 0.121779 + 0.959710 * hsv[:, :, 2] - 0.780245 * hsv[:, :, 1]
    depth = cv2.GaussianBlur(depth, (0, 0), max(image.shape[:2]) / 32)
    depth = (depth - depth.min()) / max(float(depth.max() - depth.min()), 1e-6)
    transmission = np.exp(-beta * np.minimum(depth, 0.7))[:, :, None]
    return np.clip(image * transmission + airlight * (1.0 - transmission), 0.0, 1.0)


def reference_composite(clean: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """cdd11/low_haze_rain, written the straightforward way (low light -> rain -> haze)."""
    low, rain, haze = (step.spec for step in get_recipe(COMPOSITE).steps)
    image = clean.astype(np.float32) / 255.0
    image = _reference_low_light(image, rng, low)
    image = _reference_rain(image, rng, rain)
    image = _reference_haze(image, rng, haze)
    return np.clip(image * 255.0 + 0.5, 0, 255).astype(np.uint8)


# --- driver ----------------------------------------------------------------------------------

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3


def keep_freed_memory(limit: int = 256 << 20) -> bool:
    """Ask glibc to keep freed blocks up to ``limit`` bytes in the process instead of returning them
    to the OS. Image-sized temporaries are then reused rather than page-faulted in afresh, which is
    costly on virtual machines with expensive page faults (docs/benchmarks.md).
    Equivalent to starting with MALLOC_MMAP_THRESHOLD_ and MALLOC_TRIM_THRESHOLD_ set. Returns
    False where there is no glibc."""
    try:
        libc = ctypes.CDLL(None)
        return bool(libc.mallopt(_M_MMAP_THRESHOLD, limit)) and bool(libc.mallopt(_M_TRIM_THRESHOLD, limit))
    except (OSError, AttributeError):
        return False


def run(recipes: list[str], sizes: list[int], seconds: float, repeats: int, reference: bool, allocator: str) -> None:
    photos = list(load_sample_photos().values())
    print(f"# degradation_synth bench: {_cpu_name()}, {time.strftime('%Y-%m-%d')}, one core, "
          f"{seconds:g}s x {repeats} windows (best), allocator: {allocator}")
    print(f"\n| recipe | {' | '.join(f'{s}² pairs/s' for s in sizes)} |")
    print(f"|---|{'---:|' * len(sizes)}")
    tiles = {size: [square_tile(photo, size) for photo in photos] for size in sizes}
    for name in recipes:
        recipe = get_recipe(name)
        rates = [pairs_per_second(lambda i: degrade(tiles[s][i % len(photos)], recipe, rng_for(0, i, name)),
                                  seconds, repeats) for s in sizes]
        print(f"| {name} | {' | '.join(f'{r:,.0f}' for r in rates)} |", flush=True)
    if reference:
        print(f"\n| {COMPOSITE} vs reference | ours pairs/s | reference pairs/s | speed-up |")
        print("|---|---:|---:|---:|")
        for size in sizes:
            ours = pairs_per_second(lambda i: degrade(tiles[size][i % len(photos)], COMPOSITE, rng_for(0, i, "b")),
                                    seconds, repeats)
            theirs = pairs_per_second(lambda i: reference_composite(tiles[size][i % len(photos)], rng_for(0, i, "r")),
                                      seconds, repeats)
            print(f"| {size}² | {ours:,.0f} | {theirs:,.0f} | {ours / theirs:.2f}x |", flush=True)


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            return next(line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m degradation_synth.bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipes", nargs="+", default=list(RECIPES), metavar="NAME",
                        help="recipes to time (default: every built-in)")
    parser.add_argument("--sizes", nargs="+", type=int, default=[128, 256, 512], help="square patch sides")
    parser.add_argument("--seconds", type=float, default=1.0, help="length of one timing window")
    parser.add_argument("--repeats", type=int, default=3, help="windows per measurement; the best is kept")
    parser.add_argument("--core", type=int, default=0, help="CPU core to pin to (Linux)")
    parser.add_argument("--no-reference", dest="reference", action="store_false",
                        help="skip the straightforward reference comparison")
    parser.add_argument("--default-malloc", dest="tune_malloc", action="store_false",
                        help="leave glibc's malloc thresholds at their defaults (see keep_freed_memory)")
    args = parser.parse_args(argv)
    for name in args.recipes:
        get_recipe(name)  # fail before timing anything
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {args.core})
    cv2.setNumThreads(1)
    allocator = "glibc, freed memory kept" if args.tune_malloc and keep_freed_memory() else "default"
    run(args.recipes, args.sizes, args.seconds, args.repeats, args.reference, allocator)
    return 0


if __name__ == "__main__":
    sys.exit(main())
