"""Restormer building blocks: channel LayerNorm, MDTA attention, GDFN feed-forward, resampling.

Follows Restormer (Zamir et al., CVPR'22) as PromptIR uses it. Convolutions carry no bias.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class LayerNorm2d(nn.Module):
    """LayerNorm over the channels of an NCHW tensor, with weight and bias.

    Computed directly on NCHW: PromptIR reshapes to (B, HW, C) tokens and back around every norm,
    two copies per call. Statistics are taken in float32, so the norm is safe under bf16.
    """

    def __init__(self, channels: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x32 = x.float()
        var, mean = torch.var_mean(x32, dim=1, unbiased=False, keepdim=True)
        y = (x32 - mean) * torch.rsqrt(var + self.eps)
        return torch.addcmul(self.bias[:, None, None], y, self.weight[:, None, None]).to(x.dtype)


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
        q, k = F.normalize(q, dim=-1), F.normalize(k, dim=-1)
        attn = (q @ k.transpose(-2, -1)) * self.temperature  # (B, heads, C/heads, C/heads)
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
