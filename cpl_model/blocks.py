"""Restormer building blocks: channel LayerNorm, MDTA attention, GDFN feed-forward, resampling.

Follows Restormer (Zamir et al., CVPR'22) as PromptIR uses it. Convolutions carry no bias.
The blocks take any memory format and are written for channels-last (NHWC), which the network uses:
oneDNN runs NCHW convolutions by reordering activations to a blocked layout and back around every call,
which costs more than its NHWC kernels lose. Attention has a hand-written backward so that no gradient
takes a detour through NCHW (see docs/benchmarks.md).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class LayerNorm2d(nn.Module):
    """LayerNorm over the channels of a (B, C, H, W) map, with weight and bias.

    A channels-last map *is* a (B, H, W, C) tensor of pixel tokens, so PyTorch's fused ``layer_norm``
    runs on it without a copy, forward and backward, far faster than a norm over dim 1 built from
    reductions (figures: docs/benchmarks.md). PromptIR reshapes to (B, HW, C) and back around every norm; an
    NCHW map pays that copy here too. Statistics accumulate in float32, so bf16 is safe.
    """

    def __init__(self, channels: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = F.layer_norm(x.permute(0, 2, 3, 1), (x.shape[1],), self.weight, self.bias, self.eps)
        return in_layout_of(x, tokens.permute(0, 3, 1, 2))


def in_layout_of(reference: torch.Tensor, output: torch.Tensor) -> torch.Tensor:
    """``output`` in ``reference``'s memory layout, channels-last or NCHW (no copy where it already is).

    Needed where an op picks its own layout: CUDA's pixel (un)shuffle returns NCHW whatever its input
    (the CPU's keeps channels-last), which would turn every later map of a GPU model NCHW; the
    attention's output is pixel-major, which an NCHW model must not inherit; a prompt is built from a
    parameter, and concatenating it keeps a shared layout only.
    """
    channels_last = reference.is_contiguous(memory_format=torch.channels_last) and not reference.is_contiguous()
    return output.contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)


class _ChannelAttention(torch.autograd.Function):
    """Restormer's attention core on pixel-major tokens, with a hand-derived backward.

    ``tokens`` (B, HW, 3, heads, d) holds q, k and v; a channels-last (B, 3C, H, W) map is this tensor
    without a copy. Per head, ``attn = softmax(temperature * cos(q_i, k_j))`` over channel pairs (the
    cosine taken along HW, as Restormer's L2-normalised q kᵀ), and ``out = attn v``, returned as
    (B, HW, heads, d), channels-last again. Autograd's backward would return q, k and v's gradients
    channel-major and scatter each into a zero-filled copy of the input; this one computes them
    pixel-major and writes one tensor. The (d x d) statistics are at least float32 (bf16-safe).
    """

    @staticmethod
    def forward(ctx, tokens: torch.Tensor, temperature: torch.Tensor) -> torch.Tensor:
        q, k, v = _split_heads(tokens)  # each (B, heads, HW, d)
        stats = torch.promote_types(tokens.dtype, torch.float32)
        # The norms over HW by square-and-sum: on CPU, ``vector_norm`` over this strided axis is much slower.
        q_norm, k_norm = (t.square().sum(-2, dtype=stats).sqrt().clamp_min(1e-12) for t in (q, k))  # (B, heads, d)
        cosine = (q.transpose(-2, -1) @ k).to(stats) / (q_norm[..., :, None] * k_norm[..., None, :])
        attn = (cosine * temperature.to(stats)).softmax(dim=-1)  # (B, heads, d, d)
        ctx.save_for_backward(tokens, temperature, q_norm, k_norm, cosine, attn)
        return (v @ attn.to(v.dtype).transpose(-2, -1)).transpose(1, 2)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        tokens, temperature, q_norm, k_norm, cosine, attn = ctx.saved_tensors
        q, k, v = _split_heads(tokens)
        grad = grad.to(tokens.dtype).transpose(1, 2)  # (B, heads, HW, d)
        grad_v = grad @ attn.to(grad.dtype)
        grad_attn = (grad.transpose(-2, -1) @ v).to(attn.dtype)
        grad_logits = attn * (grad_attn - (grad_attn * attn).sum(-1, keepdim=True))  # softmax
        grad_temperature = (grad_logits * cosine).sum(dim=(0, 2, 3))[:, None, None]
        grad_cosine = grad_logits * temperature.to(attn.dtype)
        # cosine_ij = q_i . k_j / (|q_i| |k_j|): the product term, then each norm's (none at the clamp).
        grad_gram = grad_cosine / (q_norm[..., :, None] * k_norm[..., None, :])
        q_scale = torch.where(q_norm > 1e-12, (grad_cosine * cosine).sum(-1) / q_norm.square(), 0)
        k_scale = torch.where(k_norm > 1e-12, (grad_cosine * cosine).sum(-2) / k_norm.square(), 0)
        grad_q = k @ grad_gram.to(k.dtype).transpose(-2, -1) - q * q_scale[..., None, :].to(q.dtype)
        grad_k = q @ grad_gram.to(q.dtype) - k * k_scale[..., None, :].to(k.dtype)
        grads = [g.transpose(1, 2) for g in (grad_q, grad_k, grad_v)]  # (B, HW, heads, d)
        return torch.stack(grads, dim=2), grad_temperature.to(temperature.dtype)


def _split_heads(tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(B, HW, 3, heads, d) -> q, k, v as (B, heads, HW, d) views."""
    return tuple(tokens[:, :, i].transpose(1, 2) for i in range(3))


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
        tokens = qkv.permute(0, 2, 3, 1).reshape(b, h * w, 3, self.heads, c // self.heads)  # a view if channels-last
        out = _ChannelAttention.apply(tokens, self.temperature)  # (B, HW, heads, d)
        return self.project_out(in_layout_of(x, out.reshape(b, h, w, c).permute(0, 3, 1, 2)))


class FeedForward(nn.Module):
    """Gated-Dconv feed-forward network (GDFN): GELU(x1) * x2 after a depthwise 3x3."""

    def __init__(self, channels: int, expansion: float) -> None:
        super().__init__()
        hidden = int(channels * expansion)
        self.project_in = nn.Conv2d(channels, hidden * 2, 1, bias=False)
        self.dwconv = nn.Conv2d(hidden * 2, hidden * 2, 3, padding=1, groups=hidden * 2, bias=False)
        self.project_out = nn.Conv2d(hidden, channels, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Each half through its own slices of the two convolutions' weights (the same arithmetic as
        # chunking their 2 x hidden output): the halves of one channels-last map interleave every
        # ``hidden`` channels, which slows the GELU and both products on CPU.
        # The hidden width (e.g. 255 = int(96 x 2.66)) is zero-padded to whole blocks of channels, in
        # which oneDNN's kernels and tensor cores work: a padded channel stays zero through the block,
        # adds nothing to the output, and its weights are not parameters (the speed-up on CPU and GPU:
        # docs/benchmarks.md).
        hidden = self.project_out.in_channels
        extra = -hidden % _CHANNEL_BLOCK
        gate, value = (F.conv2d(F.conv2d(x, _pad_dim(self.project_in.weight[half], 0, extra)),
                                _pad_dim(self.dwconv.weight[half], 0, extra), padding=1, groups=hidden + extra)
                       for half in (slice(None, hidden), slice(hidden, None)))
        return F.conv2d(F.gelu(gate) * value, _pad_dim(self.project_out.weight, 1, extra))


_CHANNEL_BLOCK = 8  # AVX2's float32 vector width; tensor cores want multiples of 8 too


def _pad_dim(weight: torch.Tensor, dim: int, extra: int) -> torch.Tensor:
    """``weight`` with ``extra`` zero slices appended along ``dim`` (gradients flow to the original part)."""
    if not extra:  # F.pad would still copy the weight
        return weight
    padding = [0, 0] * (weight.dim() - 1 - dim) + [0, extra]
    return F.pad(weight, padding)


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

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return in_layout_of(x, super().forward(x))


class Upsample(nn.Sequential):
    """C -> C/2 channels at double resolution: 3x3 conv to 2C, then pixel-shuffle."""

    def __init__(self, channels: int) -> None:
        super().__init__(nn.Conv2d(channels, channels * 2, 3, padding=1, bias=False), nn.PixelShuffle(2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return in_layout_of(x, super().forward(x))
