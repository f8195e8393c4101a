"""The CPL model's convolution shapes in NCHW and in channels-last: forward, and forward + backward
(input and weight gradients), on the CPU or a CUDA GPU, median milliseconds.

This is why ``CPLNet`` runs channels-last: on the CPU, oneDNN reorders NCHW activations to its blocked
layout and back around every convolution; on a GPU in bf16, only channels-last depthwise convolutions go
to cuDNN (NCHW ones run in PyTorch's own kernels).

    python bench/conv_layouts.py                                   # CPU, float32, 2 threads
    python bench/conv_layouts.py --device cuda --dtype bfloat16 --batch 32
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch
from torch import nn

# (name, in channels, out channels, kernel, groups, side at a 128² input): the full preset's level 1-2 shapes.
SHAPES = [
    ("depthwise 3x3, 254 ch, level 1", 254, 254, 3, 254, 128),
    ("depthwise 3x3, 510 ch, level 2", 510, 510, 3, 510, 64),
    ("1x1, 48 -> 254, level 1", 48, 254, 1, 1, 128),
    ("1x1, 127 -> 48, level 1", 127, 48, 1, 1, 128),
    ("3x3, 48 -> 48, level 1", 48, 48, 3, 1, 128),
]


def milliseconds(run, device: torch.device, repeats: int) -> float:
    for _ in range(3):
        run()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        run()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--scale", type=float, default=1.0, help="side multiplier (0.5: a 64² input)")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads (CPU)")
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    where = torch.cuda.get_device_name() if device.type == "cuda" else f"CPU, {args.threads} threads"
    print(f"# convolution layouts: torch {torch.__version__}, {where}, {args.dtype}, batch {args.batch}, "
          f"{time.strftime('%Y-%m-%d')}, median of {args.repeats}")
    print("\n| convolution | input | NCHW fwd ms | NCHW fwd+bwd | channels-last fwd | channels-last fwd+bwd |")
    print("|---|---|---:|---:|---:|---:|")
    generator = torch.Generator().manual_seed(0)
    for name, cin, cout, kernel, groups, side in SHAPES:
        side = max(1, round(side * args.scale))
        conv = nn.Conv2d(cin, cout, kernel, padding=kernel // 2, groups=groups, bias=False).to(device, dtype)
        cells = []
        for layout in (torch.contiguous_format, torch.channels_last):
            x = torch.randn(args.batch, cin, side, side, generator=generator).to(device, dtype)
            x = x.contiguous(memory_format=layout).requires_grad_()
            upstream = torch.randn_like(conv(x))
            forward = milliseconds(lambda: conv(x), device, args.repeats)  # noqa: B023 (timed at once)
            both = milliseconds(lambda: torch.autograd.grad(conv(x), (x, conv.weight), upstream),  # noqa: B023
                                device, args.repeats)
            cells += [f"{forward:.2f}", f"{both:.2f}"]
        print(f"| {name} | {args.batch} x {cin} x {side}² | " + " | ".join(cells) + " |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
