"""Restoration speed and peak memory by image size: whole images against tiled inference.

    python bench/restore_speed.py                                  # tiny preset, 256..2048 px, tile 512 vs whole
    python bench/restore_speed.py --preset small --sizes 512 1024 --tiles 256 512 0

Each (size, tile) runs in a fresh process so that its peak resident memory (ru_maxrss) is its own; the
figure reported is that peak minus the process's resident memory after loading the model. Weights are
random (speed does not depend on them). One JSON line per configuration; tile 0 means the whole image.
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


def measure(preset: str, size: int, tile: int, repeats: int) -> dict:
    import torch

    import cpl_model

    model = cpl_model.build_model(preset).eval()
    image = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(0))
    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with torch.inference_mode():
        cpl_model.restore(model, image[..., :64, :64], tile=None)  # warm-up: first-call allocations
        started = time.perf_counter()
        for _ in range(repeats):
            cpl_model.restore(model, image, tile=tile or None)
        seconds = (time.perf_counter() - started) / repeats
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"preset": preset, "size": size, "tile": tile or "whole", "seconds": round(seconds, 3),
            "megapixels_per_s": round(size * size / 1e6 / seconds, 4),
            "peak_rss_growth_mib": round((peak - baseline) / 1024), "threads": torch.get_num_threads()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="tiny", choices=("tiny", "small", "full"))
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 512, 1024, 2048], help="square sides in pixels")
    parser.add_argument("--tiles", type=int, nargs="+", default=[512, 0], help="tile sizes; 0: whole image")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--one", nargs=2, type=int, metavar=("SIZE", "TILE"), help=argparse.SUPPRESS)  # child mode
    args = parser.parse_args(argv)
    if args.one:
        print(json.dumps(measure(args.preset, args.one[0], args.one[1], args.repeats)))
        return 0
    print(json.dumps({"machine": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
                      "date": time.strftime("%Y-%m-%d")}))
    for size in args.sizes:
        for tile in args.tiles:
            if tile and tile >= size and 0 in args.tiles:
                continue  # the same as whole
            child = subprocess.run([sys.executable, __file__, "--preset", args.preset, "--repeats", str(args.repeats),
                                    "--one", str(size), str(tile)], capture_output=True, text=True, check=False)
            print(child.stdout.strip() if child.returncode == 0 else json.dumps(
                {"size": size, "tile": tile or "whole", "error": child.stderr.strip().splitlines()[-1:]}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
