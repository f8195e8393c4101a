"""The model's typed configuration and its presets."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

PROMPT_VARIANTS = ("none", "dense", "sparse")


@dataclass(frozen=True)
class ModelConfig:
    """A PromptIR-style U-Net (Restormer blocks, 4 levels) with prompts in the decoder.

    Channel widths are ``dim``, ``2 dim``, ``4 dim``, ``8 dim`` from level 1 to the latent.
    ``blocks`` and ``heads`` list the four levels; the decoder mirrors the encoder.
    The three decoder prompt sites (latent, level 3, level 2) use ``prompt_dims`` channels and
    ``prompt_sizes``² learned maps, ``prompt_components`` components each, of which the sparse
    variant keeps the ``top_k`` largest router weights.
    """

    dim: int = 48
    blocks: tuple[int, int, int, int] = (4, 6, 6, 8)
    refinement_blocks: int = 4
    heads: tuple[int, int, int, int] = (1, 2, 4, 8)
    ffn_expansion: float = 2.66
    prompt: str = "sparse"
    prompt_dims: tuple[int, int, int] = (64, 128, 320)  # level 2, level 3, latent
    prompt_sizes: tuple[int, int, int] = (64, 32, 16)
    prompt_components: int = 5
    top_k: int = 1

    def __post_init__(self) -> None:
        for name in ("blocks", "heads", "prompt_dims", "prompt_sizes"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        _require(self.dim > 0, "dim", "must be positive")
        _require(len(self.blocks) == 4 and min(self.blocks) >= 1, "blocks", "must be 4 counts >= 1")
        _require(self.refinement_blocks >= 0, "refinement_blocks", "must be >= 0")
        _require(len(self.heads) == 4 and min(self.heads) >= 1, "heads", "must be 4 counts >= 1")
        for level, heads in enumerate(self.heads):
            _require(self.dim * 2**level % heads == 0, "heads",
                     f"level {level + 1} has {self.dim * 2**level} channels, not divisible by {heads} heads")
        _require(self.dim * 2 % self.heads[0] == 0, "heads", "decoder level 1 channels not divisible by heads[0]")
        _require(self.ffn_expansion > 0, "ffn_expansion", "must be positive")
        _require(self.prompt in PROMPT_VARIANTS, "prompt", f"must be one of {', '.join(PROMPT_VARIANTS)}")
        _require(len(self.prompt_dims) == 3 and min(self.prompt_dims) >= 1, "prompt_dims", "must be 3 sizes >= 1")
        _require(len(self.prompt_sizes) == 3 and min(self.prompt_sizes) >= 1, "prompt_sizes", "must be 3 sizes >= 1")
        _require(self.prompt_components >= 1, "prompt_components", "must be >= 1")
        _require(1 <= self.top_k <= self.prompt_components, "top_k",
                 f"must be between 1 and prompt_components ({self.prompt_components}), got {self.top_k}")
        if self.prompt != "none":
            for site, width in enumerate(self.fusion_widths):
                _require(width % self.heads[2] == 0, "prompt_dims",
                         f"prompt site {site} fuses {width} channels, not divisible by heads[2]={self.heads[2]}")

    @property
    def fusion_widths(self) -> tuple[int, int, int]:
        """Channels entering each prompt fusion block: feature + prompt (level 2, level 3, latent)."""
        return tuple(self.dim * 2 ** (level + 1) + p for level, p in enumerate(self.prompt_dims))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "ModelConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"model config: unknown key {unknown[0]!r}; known: {', '.join(sorted(known))}")
        return cls(**values)


def _require(condition: bool, field: str, message: str) -> None:
    if not condition:
        raise ValueError(f"model config: {field} {message}")


PRESETS: dict[str, ModelConfig] = {
    # ~1.3 M parameters: unit tests and CI.
    "tiny": ModelConfig(dim=16, blocks=(1, 1, 1, 1), refinement_blocks=1, heads=(1, 2, 2, 4),
                        prompt_dims=(16, 32, 64), prompt_sizes=(16, 8, 4)),
    # ~5.5 M parameters: CPU experiments and smoke training.
    "small": ModelConfig(dim=24, blocks=(2, 2, 2, 4), refinement_blocks=2, heads=(1, 2, 4, 8),
                         prompt_dims=(32, 64, 160), prompt_sizes=(32, 16, 8)),
    # The paper's model (PromptIR backbone + CPL): ~35.38 M parameters.
    "full": ModelConfig(),
}


def preset(name: str, **overrides: Any) -> ModelConfig:
    """A preset's config with ``overrides`` applied. Raises ``ValueError`` for unknown names or keys."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; known: {', '.join(PRESETS)}")
    return ModelConfig.from_dict({**PRESETS[name].to_dict(), **overrides})
