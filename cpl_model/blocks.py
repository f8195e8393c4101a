"""Restormer building blocks: channel LayerNorm, MDTA attention, GDFN feed-forward, resampling.

Follows Restormer (Zamir et al., CVPR'22) as PromptIR uses it. Convolutions carry no bias.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class _ChannelNorm(torch.autograd.Function):
    """LayerNorm over dim 1 with a hand-derived backward.

    The variance is taken in two passes (mean, then the mean of squared deviations: as stable as
    Welford's update): on NCHW, ``torch.var_mean`` over the channels runs a scalar Welford loop per
    pixel and costs 4-8x as much on CPU. Autograd's version of the expression keeps four
    intermediates and runs a kernel per operation backwards; this one keeps the normalised map and
    the inverse std. Computed in at least float32 (bf16-safe). See docs/benchmarks.md.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float) -> torch.Tensor:
        ctx.input_dtype = x.dtype
        x = x.to(torch.promote_types(x.dtype, torch.float32))
        normed = x - x.mean(dim=1, keepdim=True)
        inv_std = torch.rsqrt(normed.square().mean(dim=1, keepdim=True) + eps)
        normed *= inv_std
        ctx.save_for_backward(normed, inv_std, weight)
        out = torch.addcmul(bias.to(x.dtype)[:, None, None], normed, weight.to(x.dtype)[:, None, None])
        return out.to(ctx.input_dtype)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        normed, inv_std, weight = ctx.saved_tensors
        grad = grad.to(normed.dtype)
        scaled = grad * weight.to(normed.dtype)[:, None, None]
        # d/dx of (x - mean) * inv_std, contracted with the incoming gradient:
        # inv_std * (scaled - mean(scaled) - normed * mean(scaled * normed)), in three full-size passes.
        projection = (scaled * normed).mean(1, keepdim=True)
        scaled -= scaled.mean(1, keepdim=True)
        grad_x = torch.addcmul(scaled, normed, projection, value=-1).mul_(inv_std)
        grad_weight = (grad * normed).sum(dim=(0, 2, 3)).to(weight.dtype)
        return grad_x.to(ctx.input_dtype), grad_weight, grad.sum(dim=(0, 2, 3)).to(weight.dtype), None


class LayerNorm2d(nn.Module):
    """LayerNorm over the channels of an NCHW tensor, with weight and bias.

    Computed directly on NCHW (PromptIR reshapes to (B, HW, C) tokens and back around every norm),
    with statistics in float32 so that it is safe under bf16.
    """

    def __init__(self, channels: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _ChannelNorm.apply(x, self.weight, self.bias, self.eps)


class Attention(nn.Module):
    """Multi-Dconv head transposed attention (MDTA): attention across channels, not pixels,
    so its cost is linear in the number of pixels."""

    def __init__(self, channels: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.temperature = nn.Parameter(torch.ones(heads, 1, 1))
        self.qkv = nn.Conv2d(channels, channels * 3, 1, bias=False)
        self.qkv_dwconv = nn.Conv2d(channels * 3, channels * 3, 3, padding=1, groups=channels * 3, bias=False)
        self.project_out = nn.Conv2d(channels, channels, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        qkv = self.qkv_dwconv(self.qkv(x))  # (B, 3C, H, W)
        q, k, v = (t.reshape(b, self.heads, c // self.heads, h * w) for t in qkv.chunk(3, dim=1))
        # Cosine similarity of q and k rows (Restormer L2-normalises both along HW): dividing the small
        # (C/heads)^2 product by the norms equals normalising q and k first, without two passes over,
        # and two gradients through, full-size maps.
        q_norm = torch.linalg.vector_norm(q, dim=-1, keepdim=True).clamp_min(1e-12)
        k_norm = torch.linalg.vector_norm(k, dim=-1, keepdim=True).clamp_min(1e-12)
        attn = (q @ k.transpose(-2, -1)) / (q_norm * k_norm.transpose(-2, -1)) * self.temperature
        out = attn.softmax(dim=-1) @ v  # (B, heads, C/heads, HW)
        return self.project_out(out.reshape(b, c, h, w))


class FeedForward(nn.Module):
    """Gated-Dconv feed-forward network (GDFN): GELU(x1) * x2 after a depthwise 3x3."""

    def __init__(self, channels: int, expansion: float) -> None:
        super().__init__()
        hidden = int(channels * expansion)
        self.project_in = nn.Conv2d(channels, hidden * 2, 1, bias=False)
        self.dwconv = nn.Conv2d(hidden * 2, hidden * 2, 3, padding=1, groups=hidden * 2, bias=False)
        self.project_out = nn.Conv2d(hidden, channels, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, value = self.dwconv(self.project_in(x)).chunk(2, dim=1)
        return self.project_out(F.gelu(gate) * value)


class TransformerBlock(nn.Module):
    def __init__(self, channels: int, heads: int, expansion: float) -> None:
        super().__init__()
        self.norm1 = LayerNorm2d(channels)
        self.attn = Attention(channels, heads)
        self.norm2 = LayerNorm2d(channels)
        self.ffn = FeedForward(channels, expansion)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.ffn(self.norm2(x))


def transformer_stage(channels: int, heads: int, expansion: float, depth: int) -> nn.Sequential:
    return nn.Sequential(*(TransformerBlock(channels, heads, expansion) for _ in range(depth)))


class Downsample(nn.Sequential):
    """C -> 2C channels at half resolution: 3x3 conv to C/2, then pixel-unshuffle."""

    def __init__(self, channels: int) -> None:
        super().__init__(nn.Conv2d(channels, channels // 2, 3, padding=1, bias=False), nn.PixelUnshuffle(2))


class Upsample(nn.Sequential):
    """C -> C/2 channels at double resolution: 3x3 conv to 2C, then pixel-shuffle."""

    def __init__(self, channels: int) -> None:
        super().__init__(nn.Conv2d(channels, channels * 2, 3, padding=1, bias=False), nn.PixelShuffle(2))
