"""Restoration speed and peak memory by image size: whole images against tiled inference.

    python bench/restore_speed.py                                  # tiny preset, 256..2048 px, tile 512 vs whole
    python bench/restore_speed.py --preset small --sizes 512 1024 --tiles 256 512 0
    python bench/restore_speed.py --preset full --device cuda --sizes 480x320 1280x720 --tiles 0

Each (size, tile) runs in a fresh process so that its peak memory is its own: on the CPU the peak resident
memory (ru_maxrss) minus the process's after loading the model; on a GPU the peak of allocated device
memory (torch.cuda.max_memory_allocated) during restoration, the weights included. Sizes are a side
(square) or WIDTHxHEIGHT, as the literature's test images are (the published benchmarks run whole under
their protocols: docs/evaluation.md). Weights are random (speed does not depend on them). One JSON line
per configuration; tile 0 means the whole image.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def side_or_shape(text: str) -> tuple[int, int]:
    """``"512"`` -> (512, 512); ``"1280x720"`` -> (1280, 720): (width, height)."""
    width, _, height = text.partition("x")
    return int(width), int(height or width)


def measure(preset: str, width: int, height: int, tile: int, repeats: int, device: str) -> dict:
    import torch

    import cpl_model

    model = cpl_model.build_model(preset).eval().to(device)
    image = torch.rand(1, 3, height, width, generator=torch.Generator().manual_seed(0)).to(device)
    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with torch.inference_mode():
        cpl_model.restore(model, image, tile=tile or None)  # warm-up: first-call allocations, cuDNN choices
        if device == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        started = time.perf_counter()
        for _ in range(repeats):
            cpl_model.restore(model, image, tile=tile or None)
        if device == "cuda":
            torch.cuda.synchronize()
        seconds = (time.perf_counter() - started) / repeats
    peak = {"peak_cuda_allocated_mib": round(torch.cuda.max_memory_allocated() / 2**20)} if device == "cuda" else {
        "peak_rss_growth_mib": round((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - baseline) / 1024)}
    return {"preset": preset, "size": f"{width}x{height}", "tile": tile or "whole", "device": device,
            "seconds": round(seconds, 4), "megapixels_per_s": round(width * height / 1e6 / seconds, 4), **peak,
            "threads": torch.get_num_threads()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="tiny", choices=("tiny", "small", "full"))
    parser.add_argument("--sizes", nargs="+", default=["256", "512", "1024", "2048"],
                        help="square sides or WIDTHxHEIGHT, in pixels")
    parser.add_argument("--tiles", type=int, nargs="+", default=[512, 0], help="tile sizes; 0: whole image")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--one", nargs=2, metavar=("SIZE", "TILE"), help=argparse.SUPPRESS)  # child mode
    args = parser.parse_args(argv)
    if args.one:
        print(json.dumps(measure(args.preset, *side_or_shape(args.one[0]), int(args.one[1]), args.repeats,
                                 args.device)))
        return 0
    print(json.dumps({"machine": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
                      "date": time.strftime("%Y-%m-%d")}))
    for size in args.sizes:
        for tile in args.tiles:
            if tile and tile >= max(side_or_shape(size)) and 0 in args.tiles:
                continue  # the same as whole
            child = subprocess.run([sys.executable, __file__, "--preset", args.preset, "--repeats", str(args.repeats),
                                    "--device", args.device, "--one", size, str(tile)], capture_output=True,
                                   text=True, check=False)
            print(child.stdout.strip() if child.returncode == 0 else json.dumps(
                {"size": size, "tile": tile or "whole", "error": child.stderr.strip().splitlines()[-1:]}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
