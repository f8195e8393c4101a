"""CPL model speed: training-step time per sample for each preset, with and without CPR, MACs per
sample, and the ``full`` preset against a PromptIR-style baseline in the same run, on the CPU (float32)
or a CUDA GPU (bf16 weights and activations, as ``pipelines/training/loop.py``'s DeepSpeed engine trains there).

The baseline is the same network with the same weights and outputs, computed as PromptIR's code
computes it: NCHW feature maps; its layer norm reshapes every feature map to (B, HW, C) tokens and back
around each norm; its attention L2-normalises the full-size q and k maps; its GELU gate is differentiated
by autograd. (PromptIR's public model also carries 0.215 M parameters of unused convolutions; they cost
optimiser time only.)

Our model is timed twice, with channels-last feature maps (as shipped) and with NCHW ones.

    python bench/model_speed.py                          # every preset, 2 threads
    python bench/model_speed.py --presets full --threads 2 --steps 3
    python bench/model_speed.py --device cuda --batch 8 --steps 20 --compare 8x128 32x128
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


def nchw(model: CPLNet) -> CPLNet:
    """Our code with NCHW feature maps instead of channels-last."""
    model.memory_format = torch.contiguous_format
    return model


def promptir_style(model: CPLNet) -> CPLNet:
    """Compute as PromptIR does, sharing the parameters: NCHW feature maps, and its layer norm,
    attention and feed-forward code."""
    replacements = {LayerNorm2d: TokenLayerNorm, Attention: PromptIRAttention, FeedForward: PromptIRFeedForward}
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if type(child) in replacements:
                setattr(module, name, replacements[type(child)](child))
    return nchw(model)


def macs_per_sample(model: nn.Module, size: int) -> float:
    parameter = next(model.parameters())
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(torch.rand(1, 3, size, size).to(parameter))
    return counter.get_total_flops() / 2


def step_seconds(models: list[nn.Module], batch_size: int, size: int, cpr: bool, steps: int,
                 warmup: int = 1) -> list[list[float]]:
    """Wall time of each timed AdamW training step (forward, backward, optimiser) of each model.

    The models take turns step by step, so that the machine's drift (±20 % on shared VMs) affects
    them alike, and step i of one model can be compared with step i of another. Inputs take the
    models' device and dtype.
    """
    parameter = next(models[0].parameters())
    cuda = parameter.device.type == "cuda"
    generator = torch.Generator().manual_seed(0)
    batch = {name: torch.rand(batch_size, 3, size, size, generator=generator).to(parameter)
             for name in ("degraded", "clean")}
    negatives = torch.Generator(parameter.device).manual_seed(0)
    objective = RestorationLoss(LossConfig(cpr=CPRConfig(enabled=cpr))).to(parameter.device)
    optimizers = [torch.optim.AdamW(model.parameters(), lr=2e-4) for model in models]
    times: list[list[float]] = [[] for _ in models]
    for index in range(-warmup, steps):  # warm-up steps fill allocators' pools and pick kernels
        for model, optimizer, timings in zip(models, optimizers, times, strict=True):
            if cuda:
                torch.cuda.synchronize()
            start = time.perf_counter()
            loss, _ = training_step(model, batch, objective, step=index, generator=negatives)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if cuda:
                torch.cuda.synchronize()
            if index >= 0:
                timings.append(time.perf_counter() - start)
    return times


def peak_memory_gib(model: nn.Module, batch_size: int, size: int) -> float:
    """Peak CUDA memory of one training step, weights and optimiser state included."""
    torch.cuda.reset_peak_memory_stats()
    step_seconds([model], batch_size, size, False, steps=1, warmup=0)
    return torch.cuda.max_memory_allocated() / 2**30


def agreement(device: torch.device) -> tuple[float, float]:
    """How far our channels-last and NCHW code and the PromptIR-style code disagree, in float32 (TF32 off):
    the largest output difference and the largest relative L2 difference of a parameter's gradient."""
    tf32 = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    models = [cpl_model.build_model("full", "sparse").to(device)]
    models += [nchw(cpl_model.build_model("full", "sparse").to(device)),
               promptir_style(cpl_model.build_model("full", "sparse").to(device))]
    generator = torch.Generator().manual_seed(1)
    x, target = (torch.rand(2, 3, 40, 48, generator=generator).to(device) for _ in range(2))
    outputs, gradients = [], []
    for model in models:
        model.load_state_dict(models[0].state_dict())
        output = model(x)
        F.l1_loss(output, target).backward()
        outputs.append(output.detach())
        gradients.append([p.grad for p in model.parameters()])
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = tf32
    output_gap = max((output - outputs[0]).abs().max().item() for output in outputs[1:])
    gradient_gap = max(((g - g0).norm() / g0.norm().clamp_min(1e-30)).item()
                       for other in gradients[1:] for g, g0 in zip(other, gradients[0], strict=True))
    return output_gap, gradient_gap


def shape(text: str) -> tuple[int, int]:
    batch, _, size = text.partition("x")
    return int(batch), int(size)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", nargs="*", default=["tiny", "small", "full"], choices=list(cpl_model.PRESETS),
                        help="presets for the per-preset table (none: only the PromptIR comparison)")
    parser.add_argument("--size", type=int, default=128, help="square patch side")
    parser.add_argument("--batch", type=int, default=2, help="samples per step")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads (CPU)")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per measurement (median)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps before them")
    parser.add_argument("--compare", nargs="*", type=shape, default=[(2, 128), (4, 64)], metavar="BxS",
                        help="batch x patch side of each PromptIR-style comparison (none: skip it)")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu",
                        help="cuda: bf16 weights and activations, as the training job uses a GPU")
    parser.add_argument("--cudnn-benchmark", action="store_true", help="cuda: let cuDNN time its algorithms")
    parser.add_argument("--default-malloc", dest="tune_malloc", action="store_false",
                        help="leave glibc's malloc thresholds at their defaults")
    args = parser.parse_args(argv)
    cuda = args.device == "cuda"
    device, dtype = torch.device(args.device), torch.bfloat16 if cuda else torch.float32
    torch.set_num_threads(args.threads)
    torch.backends.cudnn.benchmark = args.cudnn_benchmark
    allocator = "glibc, freed memory kept" if args.tune_malloc and keep_freed_memory() else "default"
    where = (f"{torch.cuda.get_device_name()}, bf16, cuDNN benchmark {'on' if args.cudnn_benchmark else 'off'}"
             if cuda else f"CPU, {args.threads} threads, float32")
    print(f"# cpl_model speed: torch {torch.__version__}, {where}, {time.strftime('%Y-%m-%d')}, "
          f"AdamW, median of {args.steps} steps after {args.warmup} warm-up, allocator: {allocator}")

    def build(name: str) -> CPLNet:
        return cpl_model.build_model(name, "sparse").to(device, dtype).train()

    if args.presets:
        print(f"\nbatch {args.batch} x {args.size}²\n")
        print("| preset | params | GMACs/sample (fwd) | ms/sample, no CPR | ms/sample, CPR (1 negative) | CPR cost |")
        print("|---|---:|---:|---:|---:|---:|")
    for name in args.presets:
        model = build(name)
        params = sum(p.numel() for p in model.parameters()) / 1e6
        macs = macs_per_sample(model, args.size) / 1e9
        plain, with_cpr = (1e3 * statistics.median(step_seconds([model], args.batch, args.size, cpr, args.steps,
                                                                        args.warmup)[0])
                           / args.batch for cpr in (False, True))
        print(f"| {name} | {params:.2f} M | {macs:.2f} | {plain:.4g} | {with_cpr:.4g} | {with_cpr / plain:.2f}x |",
              flush=True)
    if args.compare:
        output_gap, gradient_gap = agreement(device)
        print(f"\nThe three compute the same function: in float32, outputs differ by at most {output_gap:.1e}, "
              f"a parameter's gradient by {gradient_gap:.1e} (relative L2).")
        print("\nMedians of the steps; the speed-up is the median of the per-step ratios (PromptIR-style step i "
              "over ours, taken in turn), with their range.")
        print("\n| full preset, no CPR: batch | ours s/step | ours, NCHW | PromptIR-style | speed-up (range) |"
              + (" peak GiB: ours / NCHW / PromptIR-style |" if cuda else ""))
        print("|---|---:|---:|---:|---:|" + ("---:|" if cuda else ""))
    for batch, size in args.compare:
        models = [build("full"), nchw(build("full")), promptir_style(build("full"))]
        for model in models[1:]:
            model.load_state_dict(models[0].state_dict())
        times = step_seconds(models, batch, size, False, args.steps, args.warmup)
        ours, ours_nchw, base = (statistics.median(timings) for timings in times)
        ratios = [theirs / mine for mine, theirs in zip(times[0], times[2], strict=True)]
        memory = " / ".join(f"{peak_memory_gib(model, batch, size):.1f}" for model in models) if cuda else ""
        print(f"| {batch} x {size}² | {ours:.4g} | {ours_nchw:.4g} | {base:.4g} | "
              f"{statistics.median(ratios):.2f}x ({min(ratios):.2f}-{max(ratios):.2f}) |"
              + (f" {memory} |" if cuda else ""), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
