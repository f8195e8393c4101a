"""The restoration network: a PromptIR-style Restormer U-Net with prompts in the decoder.

    input (B, 3, H, W) -> reflect-pad to a multiple of 8
    encoder   L1 dim @H -> L2 2dim @H/2 -> L3 4dim @H/4 -> latent 8dim @H/8
    decoder   [prompt site: latent] -> up -> L3 -> [prompt site: L3] -> up -> L2
              -> [prompt site: L2] -> up -> L1 (concat skip, 2dim) -> refinement
    output    3x3 conv + global residual, cropped back to H x W

With ``prompt="none"`` the prompt sites are replaced by the 1x1 reduction the latent needs, giving a
Restormer-like baseline on the same backbone.

For Contrastive Prompt Regularization the same ``forward`` call can also produce *negatives*:
restorations of the same input whose decoder prompts use components the router did not choose.
Only the decoder is re-run; the encoder features are shared. Producing them inside ``forward``
keeps one forward call per step, which DDP and DeepSpeed rely on.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from .blocks import Downsample, Upsample, transformer_stage
from .config import ModelConfig
from .prompts import PromptSite, Routing

MULTIPLE = 8  # three 2x downsamplings
NEGATIVE_WEIGHTS = ("selected", "router")


@dataclass
class RestorationOutput:
    image: torch.Tensor  # (B, 3, H, W)
    routing: list[Routing] = field(default_factory=list)  # per prompt site: latent, level 3, level 2
    negatives: list[torch.Tensor] = field(default_factory=list)  # each (B, 3, H, W)


@dataclass
class _Encoded:
    level1: torch.Tensor
    level2: torch.Tensor
    level3: torch.Tensor
    latent: torch.Tensor


class CPLNet(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        d, e, blocks, heads = config.dim, config.ffn_expansion, config.blocks, config.heads
        self.patch_embed = nn.Conv2d(3, d, 3, padding=1, bias=False)
        self.encoder1 = transformer_stage(d, heads[0], e, blocks[0])
        self.down1 = Downsample(d)
        self.encoder2 = transformer_stage(2 * d, heads[1], e, blocks[1])
        self.down2 = Downsample(2 * d)
        self.encoder3 = transformer_stage(4 * d, heads[2], e, blocks[2])
        self.down3 = Downsample(4 * d)
        self.latent = transformer_stage(8 * d, heads[3], e, blocks[3])

        if config.prompt == "none":
            self.prompt_sites = None
            self.latent_reduce = nn.Conv2d(8 * d, 4 * d, 1, bias=False)
        else:
            top_k = config.top_k if config.prompt == "sparse" else None
            # In decoding order: latent (8d -> 4d), level 3 (4d), level 2 (2d); prompt_dims and
            # prompt_sizes list them from level 2 up.
            self.prompt_sites = nn.ModuleList([
                PromptSite(channels, out, config.prompt_dims[i], config.prompt_sizes[i], config.prompt_components,
                           top_k, heads[2], e)
                for channels, out, i in ((8 * d, 4 * d, 2), (4 * d, 4 * d, 1), (2 * d, 2 * d, 0))
            ])

        self.up3 = Upsample(4 * d)  # -> 2d @H/4
        self.reduce3 = nn.Conv2d(6 * d, 4 * d, 1, bias=False)
        self.decoder3 = transformer_stage(4 * d, heads[2], e, blocks[2])
        self.up2 = Upsample(4 * d)  # -> 2d @H/2
        self.reduce2 = nn.Conv2d(4 * d, 2 * d, 1, bias=False)
        self.decoder2 = transformer_stage(2 * d, heads[1], e, blocks[1])
        self.up1 = Upsample(2 * d)  # -> d @H
        self.decoder1 = transformer_stage(2 * d, heads[0], e, blocks[0])
        self.refinement = transformer_stage(2 * d, heads[0], e, config.refinement_blocks)
        self.output = nn.Conv2d(2 * d, 3, 3, padding=1, bias=False)
        # Every feature map is channels-last: convolutions keep their input's format, so converting the
        # 3-channel input in forward is enough. The blocks are written for it (see blocks.py); outputs go
        # back to the standard layout. The weights stay contiguous: DeepSpeed views each parameter's
        # storage as bytes to broadcast it, which a channels-last weight refuses.
        self.memory_format = torch.channels_last

    def forward(self, x: torch.Tensor, *, aux: bool = False, negatives: int = 0,
                generator: torch.Generator | None = None, negative_weight: str = "selected",
                detach_negatives: bool = False) -> torch.Tensor | RestorationOutput:
        """Restore ``x`` (B, 3, H, W) in [0, 1], any H and W.

        Returns the restored (B, 3, H, W) tensor, or with ``aux=True`` a ``RestorationOutput`` that adds
        the routing of every prompt site and ``negatives`` restorations with mismatched prompts.
        Negatives draw the replacement component uniformly among those the router did not choose,
        independently per site and sample, from ``generator``; ``negative_weight`` scales it by the
        chosen components' weight ("selected") or by its own router probability ("router").
        """
        if negatives and not aux:
            raise ValueError("negatives need aux=True")
        if negatives and self.prompt_sites is None:
            raise ValueError("negatives need prompts; this model was built with prompt='none'")
        if negative_weight not in NEGATIVE_WEIGHTS:
            raise ValueError(f"negative_weight must be one of {', '.join(NEGATIVE_WEIGHTS)}, got {negative_weight!r}")
        height, width = x.shape[-2:]
        padded = pad_to_multiple(x, MULTIPLE).contiguous(memory_format=self.memory_format)
        encoded = self._encode(padded)
        image, routing = self._decode(encoded, padded)
        if not aux:
            return image[..., :height, :width].contiguous()
        outputs = []
        for _ in range(negatives):
            weights = [_mismatched(r, generator, negative_weight) for r in routing]
            with torch.set_grad_enabled(torch.is_grad_enabled() and not detach_negatives):
                outputs.append(self._decode(encoded, padded, weights)[0][..., :height, :width].contiguous())
        return RestorationOutput(image[..., :height, :width].contiguous(), routing, outputs)

    def _encode(self, x: torch.Tensor) -> _Encoded:
        level1 = self.encoder1(self.patch_embed(x))
        level2 = self.encoder2(self.down1(level1))
        level3 = self.encoder3(self.down2(level2))
        return _Encoded(level1, level2, level3, self.latent(self.down3(level3)))

    def _decode(self, encoded: _Encoded, x: torch.Tensor,
                weights: list[torch.Tensor] | None = None) -> tuple[torch.Tensor, list[Routing]]:
        """Decode; with ``weights`` the prompt sites use them instead of routing."""
        routing: list[Routing] = []

        def prompt(site: int, feature: torch.Tensor) -> torch.Tensor:
            module = self.prompt_sites[site]
            if weights is None:
                routing.append(module.generator.route(feature))
                return module(feature, routing[-1].weights)
            return module(feature, weights[site])

        if self.prompt_sites is None:
            latent = self.latent_reduce(encoded.latent)
        else:
            latent = prompt(0, encoded.latent)
        level3 = self.decoder3(self.reduce3(torch.cat([self.up3(latent), encoded.level3], dim=1)))
        if self.prompt_sites is not None:
            level3 = prompt(1, level3)
        level2 = self.decoder2(self.reduce2(torch.cat([self.up2(level3), encoded.level2], dim=1)))
        if self.prompt_sites is not None:
            level2 = prompt(2, level2)
        level1 = self.decoder1(torch.cat([self.up1(level2), encoded.level1], dim=1))
        return self.output(self.refinement(level1)) + x, routing


def _mismatched(routing: Routing, generator: torch.Generator | None, negative_weight: str) -> torch.Tensor:
    """Mixing weights (B, N) that put all mass on one component the router did not choose."""
    chosen = routing.weights > 0
    if routing.weights is routing.probabilities:  # dense: only the argmax counts as chosen
        chosen = torch.zeros_like(chosen).scatter_(1, routing.probabilities.argmax(1, keepdim=True), True)
    if bool(chosen.all(dim=1).any()):
        raise ValueError("no unchosen prompt component to build a negative from (top_k == prompt_components)")
    scores = torch.rand(chosen.shape, generator=generator, device=generator.device if generator else None)
    replacement = scores.to(chosen.device).masked_fill(chosen, -1.0).argmax(dim=1, keepdim=True)
    if negative_weight == "selected":
        scale = (routing.probabilities * chosen).sum(dim=1, keepdim=True)
    else:
        scale = routing.probabilities.gather(1, replacement)
    return torch.zeros_like(routing.probabilities).scatter(1, replacement, scale)


def pad_to_multiple(x: torch.Tensor, multiple: int) -> torch.Tensor:
    """Pad the bottom and right edges to a multiple, by reflection where the image is large enough."""
    height, width = x.shape[-2:]
    pad_h, pad_w = -height % multiple, -width % multiple
    if not pad_h and not pad_w:
        return x
    mode = "reflect" if pad_h < height and pad_w < width else "replicate"
    return F.pad(x, (0, pad_w, 0, pad_h), mode=mode)
