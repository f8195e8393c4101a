"""CPL model speed on CPU: training-step time per sample for each preset, with and without CPR,
MACs per sample, and the ``full`` preset against a PromptIR-style baseline in the same run.

The baseline is the same network with the same weights and outputs, but with PromptIR's layer norm,
which reshapes every feature map to (B, HW, C) tokens and back around each norm. (PromptIR's public
model also carries 0.215 M parameters of unused convolutions; they cost optimiser time only.)

    python bench/model_speed.py                          # every preset, 2 threads
    python bench/model_speed.py --presets full --threads 2 --steps 3
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

import cpl_model
from cpl_model import CPRConfig, LossConfig, RestorationLoss, training_step
from cpl_model.blocks import LayerNorm2d
from degradation_synth.bench import keep_freed_memory


class TokenLayerNorm(nn.Module):
    """PromptIR's layer norm: to (B, HW, C) tokens, normalise the last axis, back to NCHW."""

    def __init__(self, source: LayerNorm2d) -> None:
        super().__init__()
        self.weight, self.bias, self.eps = source.weight, source.bias, source.eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        tokens = x.permute(0, 2, 3, 1).reshape(b, h * w, c)
        mean = tokens.mean(-1, keepdim=True)
        var = tokens.var(-1, keepdim=True, unbiased=False)
        tokens = (tokens - mean) / torch.sqrt(var + self.eps) * self.weight + self.bias
        return tokens.reshape(b, h, w, c).permute(0, 3, 1, 2)  # a view, as PromptIR's to_4d


def promptir_style(model: nn.Module) -> nn.Module:
    """Swap every LayerNorm2d for the token version, sharing the parameters."""
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, LayerNorm2d):
                setattr(module, name, TokenLayerNorm(child))
    return model


def macs_per_sample(model: nn.Module, size: int) -> float:
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(torch.rand(1, 3, size, size))
    return counter.get_total_flops() / 2


def step_seconds(model: nn.Module, batch_size: int, size: int, cpr: bool, steps: int) -> float:
    """Median wall time of one AdamW training step (forward, backward, optimiser)."""
    generator = torch.Generator().manual_seed(0)
    batch = {"degraded": torch.rand(batch_size, 3, size, size, generator=generator),
             "clean": torch.rand(batch_size, 3, size, size, generator=generator)}
    objective = RestorationLoss(LossConfig(cpr=CPRConfig(enabled=cpr)))
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-4)
    times = []
    for index in range(steps + 1):  # the first step warms up allocators and kernels
        start = time.perf_counter()
        loss, _ = training_step(model, batch, objective, step=index, generator=generator)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if index:
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", nargs="+", default=["tiny", "small", "full"], choices=list(cpl_model.PRESETS))
    parser.add_argument("--size", type=int, default=128, help="square patch side")
    parser.add_argument("--batch", type=int, default=2, help="samples per step")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per measurement (median)")
    parser.add_argument("--no-baseline", dest="baseline", action="store_false",
                        help="skip the PromptIR-style comparison of the full preset")
    parser.add_argument("--default-malloc", dest="tune_malloc", action="store_false",
                        help="leave glibc's malloc thresholds at their defaults")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    allocator = "glibc, freed memory kept" if args.tune_malloc and keep_freed_memory() else "default"
    print(f"# cpl_model speed: torch {torch.__version__}, {args.threads} threads, {time.strftime('%Y-%m-%d')}, "
          f"batch {args.batch} x {args.size}², AdamW, median of {args.steps} steps, allocator: {allocator}")
    print("\n| preset | params | GMACs/sample (fwd) | s/sample, no CPR | s/sample, CPR (1 negative) | CPR cost |")
    print("|---|---:|---:|---:|---:|---:|")
    for name in args.presets:
        model = cpl_model.build_model(name, "sparse").train()
        params = sum(p.numel() for p in model.parameters()) / 1e6
        macs = macs_per_sample(model, args.size) / 1e9
        plain = step_seconds(model, args.batch, args.size, False, args.steps) / args.batch
        with_cpr = step_seconds(model, args.batch, args.size, True, args.steps) / args.batch
        print(f"| {name} | {params:.2f} M | {macs:.2f} | {plain:.3f} | {with_cpr:.3f} | {with_cpr / plain:.2f}x |",
              flush=True)
    if args.baseline:
        print("\n| full preset, no CPR | batch | ours s/step | PromptIR-style s/step | speed-up |")
        print("|---|---|---:|---:|---:|")
        for batch, size in ((2, 128), (4, 64)):
            ours = cpl_model.build_model("full", "sparse").train()
            baseline = promptir_style(cpl_model.build_model("full", "sparse").train())
            x = torch.rand(1, 3, 32, 32)
            with torch.no_grad():
                gap = (ours.eval()(x) - baseline.eval()(x)).abs().max().item()
            ours.train(), baseline.train()
            t_ours = step_seconds(ours, batch, size, False, args.steps)
            t_base = step_seconds(baseline, batch, size, False, args.steps)
            print(f"| outputs differ by {gap:.1e} | {batch} x {size}² | {t_ours:.2f} | {t_base:.2f} | "
                  f"{t_base / t_ours:.2f}x |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
