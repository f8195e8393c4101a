"""The authors' networks, rebuilt for the import tests in their module layout and attribute names.

Written from a reading of PromptIR's ``net/model.py`` (va1shn9v/PromptIR) and CPLIR's
``basicsr/archs/cplir_inference_arch.py`` (Aitical/CPLIR, ``SparsePromptIR``), not copied, and sharing
nothing with ``cpl_model``: the import is checked against an independent forward pass. What differs from
their code, on purpose:

- every width is a parameter: their constructors hard-code the prompt widths (64, 128, 320) and the fusion
  widths derived from them (``int(dim*2**2) + 512`` is ``8 dim + 320`` at dim 48), which only fit dim 48;
  here each is written as what it is at dim 48, so small test networks exist;
- the norms are PromptIR's token LayerNorm or CPLIR's channel LayerNorm2d (same function), by ``norm``;
- the prompt mix is dense (PromptIR) or top-k (CPLIR's ``num_expert``), by ``top_k``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

# The released networks (both constructors' defaults).
FULL = {"dim": 48, "num_blocks": (4, 6, 6, 8), "num_refinement_blocks": 4, "heads": (1, 2, 4, 8),
        "prompt_dims": (64, 128, 320), "prompt_sizes": (64, 32, 16), "prompt_len": 5}


class TokenNorm(nn.Module):
    """PromptIR's WithBias_LayerNorm: over the last axis of (B, HW, C) tokens."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(-1, keepdim=True)
        variance = x.var(-1, keepdim=True, unbiased=False)
        return (x - mean) / torch.sqrt(variance + 1e-5) * self.weight + self.bias


class ChannelNorm(nn.Module):
    """CPLIR's LayerNorm2d (NAFNet's): over dim 1 of a (B, C, H, W) map."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(1, keepdim=True)
        variance = (x - mean).pow(2).mean(1, keepdim=True)
        y = (x - mean) / (variance + 1e-5).sqrt()
        return self.weight.view(1, -1, 1, 1) * y + self.bias.view(1, -1, 1, 1)


class LayerNorm(nn.Module):
    """The authors' wrapper: the norm sits in ``body``."""

    def __init__(self, channels: int, norm: str) -> None:
        super().__init__()
        self.norm = norm
        self.body = TokenNorm(channels) if norm == "tokens" else ChannelNorm(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.norm != "tokens":
            return self.body(x)
        b, c, h, w = x.shape
        tokens = x.flatten(2).transpose(1, 2)  # (B, HW, C)
        return self.body(tokens).transpose(1, 2).reshape(b, c, h, w)


class FeedForward(nn.Module):
    def __init__(self, dim: int, ffn_expansion_factor: float) -> None:
        super().__init__()
        hidden = int(dim * ffn_expansion_factor)
        self.project_in = nn.Conv2d(dim, hidden * 2, kernel_size=1, bias=False)
        self.dwconv = nn.Conv2d(hidden * 2, hidden * 2, kernel_size=3, padding=1, groups=hidden * 2, bias=False)
        self.project_out = nn.Conv2d(hidden, dim, kernel_size=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        first, second = self.dwconv(self.project_in(x)).chunk(2, dim=1)
        return self.project_out(F.gelu(first) * second)


class Attention(nn.Module):
    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.temperature = nn.Parameter(torch.ones(num_heads, 1, 1))
        self.qkv = nn.Conv2d(dim, dim * 3, kernel_size=1, bias=False)
        self.qkv_dwconv = nn.Conv2d(dim * 3, dim * 3, kernel_size=3, padding=1, groups=dim * 3, bias=False)
        self.project_out = nn.Conv2d(dim, dim, kernel_size=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        q, k, v = (t.reshape(b, self.num_heads, c // self.num_heads, h * w)
                   for t in self.qkv_dwconv(self.qkv(x)).chunk(3, dim=1))
        q, k = F.normalize(q, dim=-1), F.normalize(k, dim=-1)
        attn = (q @ k.transpose(-2, -1) * self.temperature).softmax(dim=-1)  # (B, heads, c, c)
        return self.project_out((attn @ v).reshape(b, c, h, w))


class TransformerBlock(nn.Module):
    def __init__(self, dim: int, num_heads: int, ffn_expansion_factor: float, norm: str) -> None:
        super().__init__()
        self.norm1 = LayerNorm(dim, norm)
        self.attn = Attention(dim, num_heads)
        self.norm2 = LayerNorm(dim, norm)
        self.ffn = FeedForward(dim, ffn_expansion_factor)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.ffn(self.norm2(x))


class OverlapPatchEmbed(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(3, dim, kernel_size=3, padding=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x)


class Downsample(nn.Module):
    def __init__(self, n_feat: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(n_feat, n_feat // 2, kernel_size=3, padding=1, bias=False),
                                  nn.PixelUnshuffle(2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class Upsample(nn.Module):
    def __init__(self, n_feat: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(n_feat, n_feat * 2, kernel_size=3, padding=1, bias=False),
                                  nn.PixelShuffle(2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class PromptGenBlock(nn.Module):
    """A bank of ``prompt_len`` learned maps, mixed by a router on the pooled feature; ``top_k`` None: densely."""

    def __init__(self, prompt_dim: int, prompt_len: int, prompt_size: int, lin_dim: int, top_k: int | None) -> None:
        super().__init__()
        self.prompt_param = nn.Parameter(torch.rand(1, prompt_len, prompt_dim, prompt_size, prompt_size))
        self.linear_layer = nn.Linear(lin_dim, prompt_len)
        self.conv3x3 = nn.Conv2d(prompt_dim, prompt_dim, kernel_size=3, padding=1, bias=False)
        self.top_k = top_k

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weights = F.softmax(self.linear_layer(x.mean(dim=(-2, -1))), dim=1)  # (B, len)
        if self.top_k is not None:
            chosen = weights.topk(self.top_k, dim=1).indices
            weights = torch.zeros_like(weights).scatter(1, chosen, weights.gather(1, chosen))
        prompt = (weights[:, :, None, None, None] * self.prompt_param).sum(dim=1)  # (B, dim, size, size)
        return self.conv3x3(F.interpolate(prompt, x.shape[-2:], mode="bilinear"))


class AuthorsPromptIR(nn.Module):
    """PromptIR with ``decoder=True`` (``unused_convs``, ``norm="tokens"``, ``top_k=None``) or CPLIR's
    SparsePromptIR with ``decoder=True`` (no unused convolutions, ``norm="channels"``, ``top_k=1``)."""

    def __init__(self, dim: int = 48, num_blocks=(4, 6, 6, 8), num_refinement_blocks: int = 4, heads=(1, 2, 4, 8),
                 prompt_dims=(64, 128, 320), prompt_sizes=(64, 32, 16), prompt_len: int = 5,
                 ffn_expansion_factor: float = 2.66, norm: str = "tokens", top_k: int | None = None,
                 unused_convs: bool = True) -> None:
        super().__init__()
        p1, p2, p3 = prompt_dims

        def stage(channels: int, num_heads: int, depth: int) -> nn.Sequential:
            return nn.Sequential(*(TransformerBlock(channels, num_heads, ffn_expansion_factor, norm)
                                   for _ in range(depth)))

        self.patch_embed = OverlapPatchEmbed(dim)
        self.prompt1 = PromptGenBlock(p1, prompt_len, prompt_sizes[0], 2 * dim, top_k)
        self.prompt2 = PromptGenBlock(p2, prompt_len, prompt_sizes[1], 4 * dim, top_k)
        self.prompt3 = PromptGenBlock(p3, prompt_len, prompt_sizes[2], 8 * dim, top_k)
        if unused_convs:  # built by PromptIR's constructor, never called by its forward
            self.chnl_reduce1 = nn.Conv2d(p1, p1, kernel_size=1, bias=False)
            self.chnl_reduce2 = nn.Conv2d(p2, p2, kernel_size=1, bias=False)
            self.chnl_reduce3 = nn.Conv2d(p3, p3 * 4 // 5, kernel_size=1, bias=False)  # 320 -> 256
            self.reduce_noise_channel_1 = nn.Conv2d(dim + p1, dim, kernel_size=1, bias=False)
            self.reduce_noise_channel_2 = nn.Conv2d(2 * dim + p2, 2 * dim, kernel_size=1, bias=False)
            self.reduce_noise_channel_3 = nn.Conv2d(4 * dim + p3 * 4 // 5, 4 * dim, kernel_size=1, bias=False)
        self.encoder_level1 = stage(dim, heads[0], num_blocks[0])
        self.down1_2 = Downsample(dim)
        self.encoder_level2 = stage(2 * dim, heads[1], num_blocks[1])
        self.down2_3 = Downsample(2 * dim)
        self.encoder_level3 = stage(4 * dim, heads[2], num_blocks[2])
        self.down3_4 = Downsample(4 * dim)
        self.latent = stage(8 * dim, heads[3], num_blocks[3])

        self.up4_3 = Upsample(4 * dim)  # their Upsample(int(dim*2**2)) on the 4 dim the fusion left
        self.reduce_chan_level3 = nn.Conv2d(6 * dim, 4 * dim, kernel_size=1, bias=False)
        self.noise_level3 = TransformerBlock(8 * dim + p3, heads[2], ffn_expansion_factor, norm)
        self.reduce_noise_level3 = nn.Conv2d(8 * dim + p3, 4 * dim, kernel_size=1, bias=False)
        self.decoder_level3 = stage(4 * dim, heads[2], num_blocks[2])

        self.up3_2 = Upsample(4 * dim)
        self.reduce_chan_level2 = nn.Conv2d(4 * dim, 2 * dim, kernel_size=1, bias=False)
        self.noise_level2 = TransformerBlock(4 * dim + p2, heads[2], ffn_expansion_factor, norm)
        self.reduce_noise_level2 = nn.Conv2d(4 * dim + p2, 4 * dim, kernel_size=1, bias=False)
        self.decoder_level2 = stage(2 * dim, heads[1], num_blocks[1])

        self.up2_1 = Upsample(2 * dim)
        self.noise_level1 = TransformerBlock(2 * dim + p1, heads[2], ffn_expansion_factor, norm)
        self.reduce_noise_level1 = nn.Conv2d(2 * dim + p1, 2 * dim, kernel_size=1, bias=False)
        self.decoder_level1 = stage(2 * dim, heads[0], num_blocks[0])
        self.refinement = stage(2 * dim, heads[0], num_refinement_blocks)
        self.output = nn.Conv2d(2 * dim, 3, kernel_size=3, padding=1, bias=False)

    def forward(self, inp_img: torch.Tensor) -> torch.Tensor:
        out_enc_level1 = self.encoder_level1(self.patch_embed(inp_img))
        out_enc_level2 = self.encoder_level2(self.down1_2(out_enc_level1))
        out_enc_level3 = self.encoder_level3(self.down2_3(out_enc_level2))
        latent = self.latent(self.down3_4(out_enc_level3))

        latent = torch.cat([latent, self.prompt3(latent)], 1)
        latent = self.reduce_noise_level3(self.noise_level3(latent))
        inp_dec_level3 = self.reduce_chan_level3(torch.cat([self.up4_3(latent), out_enc_level3], 1))
        out_dec_level3 = self.decoder_level3(inp_dec_level3)

        out_dec_level3 = torch.cat([out_dec_level3, self.prompt2(out_dec_level3)], 1)
        out_dec_level3 = self.reduce_noise_level2(self.noise_level2(out_dec_level3))
        inp_dec_level2 = self.reduce_chan_level2(torch.cat([self.up3_2(out_dec_level3), out_enc_level2], 1))
        out_dec_level2 = self.decoder_level2(inp_dec_level2)

        out_dec_level2 = torch.cat([out_dec_level2, self.prompt1(out_dec_level2)], 1)
        out_dec_level2 = self.reduce_noise_level1(self.noise_level1(out_dec_level2))
        inp_dec_level1 = torch.cat([self.up2_1(out_dec_level2), out_enc_level1], 1)
        out_dec_level1 = self.refinement(self.decoder_level1(inp_dec_level1))
        return self.output(out_dec_level1) + inp_img


def promptir(**sizes) -> AuthorsPromptIR:
    """PromptIR's network (``sizes`` as for ``AuthorsPromptIR``; default the released size)."""
    return AuthorsPromptIR(**{**FULL, **sizes}, norm="tokens", top_k=None, unused_convs=True)


def sparse_promptir(**sizes) -> AuthorsPromptIR:
    """CPLIR's SparsePromptIR (``num_expert=1``)."""
    return AuthorsPromptIR(**{**FULL, **sizes}, norm="channels", top_k=1, unused_convs=False)
