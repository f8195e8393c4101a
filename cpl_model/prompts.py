"""Decoder prompts: PromptIR's dense prompt generation and CPL's Sparse Prompt Module (SPM).

A prompt generator holds a bank of N learned components and a router. From a decoder feature it
computes router probabilities ``s = softmax(W GAP(F) + b)`` and mixes the bank with weights:

- dense (PromptIR): all of ``s``;
- sparse (SPM, as in the authors' released code): ``s`` with all but the top-k entries zeroed and
  **not renormalised**, so with k = 1 the chosen component is scaled by its probability; that
  scale is what trains the router.

The sparse mix is a masked dense mix (a weighted sum over every component), so every parameter
stays in the graph on every step: DDP and DeepSpeed hang or fail when a rank leaves a parameter
without a gradient, which a gather of only the chosen components would.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .blocks import TransformerBlock, in_layout_of


@dataclass
class Routing:
    """One prompt site's routing for a batch."""

    probabilities: torch.Tensor  # (B, N) router softmax
    weights: torch.Tensor  # (B, N) mixing weights used (top-k masked for the sparse variant)

    @property
    def choice(self) -> torch.Tensor:
        """(B,) the component with the largest weight, per sample."""
        return self.weights.argmax(dim=1)


class PromptGenerator(nn.Module):
    def __init__(self, feature_channels: int, prompt_channels: int, size: int, components: int,
                 top_k: int | None) -> None:
        super().__init__()
        self.top_k = top_k  # None: the dense PromptIR mix
        # U[0, 1) initialisation, as PromptIR and the CPL code do.
        self.bank = nn.Parameter(torch.rand(components, prompt_channels, size, size))
        self.router = nn.Linear(feature_channels, components)
        self.conv = nn.Conv2d(prompt_channels, prompt_channels, 3, padding=1, bias=False)

    def route(self, feature: torch.Tensor) -> Routing:
        probabilities = self.router(feature.mean(dim=(2, 3))).softmax(dim=-1)
        if self.top_k is None:
            return Routing(probabilities, probabilities)
        keep = torch.zeros_like(probabilities).scatter_(1, probabilities.topk(self.top_k, dim=1).indices, 1.0)
        return Routing(probabilities, probabilities * keep)

    def forward(self, feature: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        mix = torch.einsum("bn,nchw->bchw", weights.to(self.bank.dtype), self.bank)  # (B, Cp, S, S)
        mix = in_layout_of(feature, mix)
        mix = F.interpolate(mix, size=feature.shape[-2:], mode="bilinear", align_corners=False)
        return self.conv(mix)  # (B, Cp, H, W)


class PromptSite(nn.Module):
    """Where a prompt enters the decoder: generate it, fuse [feature, prompt] with a transformer
    block, and reduce back to ``out_channels`` with a 1x1 convolution (PromptIR's interaction module)."""

    def __init__(self, in_channels: int, out_channels: int, prompt_channels: int, size: int, components: int,
                 top_k: int | None, heads: int, expansion: float) -> None:
        super().__init__()
        self.generator = PromptGenerator(in_channels, prompt_channels, size, components, top_k)
        self.fuse = TransformerBlock(in_channels + prompt_channels, heads, expansion)
        self.reduce = nn.Conv2d(in_channels + prompt_channels, out_channels, 1, bias=False)

    def forward(self, feature: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        prompt = self.generator(feature, weights)
        return self.reduce(self.fuse(torch.cat([feature, prompt], dim=1)))
