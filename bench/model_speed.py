"""CPL model speed on CPU: training-step time per sample for each preset, with and without CPR,
MACs per sample, and the ``full`` preset against a PromptIR-style baseline in the same run.

The baseline is the same network with the same weights and outputs, computed as PromptIR's code
computes it: NCHW feature maps; its layer norm reshapes every feature map to (B, HW, C) tokens and back
around each norm; its attention L2-normalises the full-size q and k maps; its GELU gate is differentiated
by autograd. (PromptIR's public model also carries 0.215 M parameters of unused convolutions; they cost
optimiser time only.)

    python bench/model_speed.py                          # every preset, 2 threads
    python bench/model_speed.py --presets full --threads 2 --steps 3
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

import cpl_model
from cpl_model import CPRConfig, LossConfig, RestorationLoss, training_step
from cpl_model.blocks import Attention, FeedForward, LayerNorm2d
from cpl_model.network import CPLNet
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


class PromptIRAttention(nn.Module):
    """PromptIR's (Restormer's) MDTA: q and k L2-normalised along HW before their product."""

    def __init__(self, source: Attention) -> None:
        super().__init__()
        self.heads, self.temperature = source.heads, source.temperature
        self.qkv, self.qkv_dwconv, self.project_out = source.qkv, source.qkv_dwconv, source.project_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        q, k, v = (t.reshape(b, self.heads, c // self.heads, h * w) for t in self.qkv_dwconv(self.qkv(x)).chunk(3, 1))
        q, k = F.normalize(q, dim=-1), F.normalize(k, dim=-1)
        attn = ((q @ k.transpose(-2, -1)) * self.temperature).softmax(dim=-1)
        return self.project_out((attn @ v).reshape(b, c, h, w))


class PromptIRFeedForward(nn.Module):
    """PromptIR's GDFN: chunk, GELU and multiply, differentiated by autograd."""

    def __init__(self, source: FeedForward) -> None:
        super().__init__()
        self.project_in, self.dwconv, self.project_out = source.project_in, source.dwconv, source.project_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, value = self.dwconv(self.project_in(x)).chunk(2, dim=1)
        return self.project_out(F.gelu(gate) * value)


def promptir_style(model: CPLNet) -> CPLNet:
    """Compute as PromptIR does, sharing the parameters: NCHW feature maps, and its layer norm,
    attention and feed-forward code."""
    replacements = {LayerNorm2d: TokenLayerNorm, Attention: PromptIRAttention, FeedForward: PromptIRFeedForward}
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if type(child) in replacements:
                setattr(module, name, replacements[type(child)](child))
    model.memory_format = torch.contiguous_format
    return model


def macs_per_sample(model: nn.Module, size: int) -> float:
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(torch.rand(1, 3, size, size))
    return counter.get_total_flops() / 2


def step_seconds(models: list[nn.Module], batch_size: int, size: int, cpr: bool, steps: int) -> list[float]:
    """Median wall time of one AdamW training step (forward, backward, optimiser) of each model.

    The models take turns step by step, so that the machine's drift (±20 % on shared VMs) affects
    them alike.
    """
    generator = torch.Generator().manual_seed(0)
    batch = {"degraded": torch.rand(batch_size, 3, size, size, generator=generator),
             "clean": torch.rand(batch_size, 3, size, size, generator=generator)}
    objective = RestorationLoss(LossConfig(cpr=CPRConfig(enabled=cpr)))
    optimizers = [torch.optim.AdamW(model.parameters(), lr=2e-4) for model in models]
    times: list[list[float]] = [[] for _ in models]
    for index in range(steps + 1):  # the first step warms up allocators and kernels
        for model, optimizer, timings in zip(models, optimizers, times, strict=True):
            start = time.perf_counter()
            loss, _ = training_step(model, batch, objective, step=index, generator=generator)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if index:
                timings.append(time.perf_counter() - start)
    return [statistics.median(timings) for timings in times]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", nargs="*", default=["tiny", "small", "full"], choices=list(cpl_model.PRESETS),
                        help="presets for the per-preset table (none: only the PromptIR comparison)")
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
        plain = step_seconds([model], args.batch, args.size, False, args.steps)[0] / args.batch
        with_cpr = step_seconds([model], args.batch, args.size, True, args.steps)[0] / args.batch
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
            t_ours, t_base = step_seconds([ours, baseline], batch, size, False, args.steps)
            print(f"| outputs differ by {gap:.1e} | {batch} x {size}² | {t_ours:.2f} | {t_base:.2f} | "
                  f"{t_base / t_ours:.2f}x |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
