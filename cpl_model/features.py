"""Frozen feature spaces in which Contrastive Prompt Regularization compares restorations.

- ``vgg19``: VGG-19's convolutional trunk, read at relu1_1 ... relu5_1 with weights 1/32 ... 1 (the
  layers of the group's PCL work), on ImageNet-normalised input. It needs pretrained weights from a
  local file: a state dict with torchvision's key names (``features.0.weight`` ...), loaded with
  ``torch.load(weights_only=True)``, which refuses arbitrary pickled objects. Nothing is downloaded.
- ``pyramid`` (the default, needs no weights): the image and its horizontal and vertical gradients at
  four scales (1, 1/2, 1/4, 1/8), weighted like the VGG levels toward the coarse end. It compares
  structure and colour without a pretrained network.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .checkpoint import load_weights_only

FEATURES = ("pyramid", "vgg19")

# Channels of VGG-19's conv layers, "M" for max-pooling (torchvision's "E" configuration).
_VGG19 = (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512)
_VGG_TAPS = (1, 6, 11, 20, 29)  # indices in ``features`` just after relu1_1, relu2_1, relu3_1, relu4_1, relu5_1
_VGG_WEIGHTS = (1 / 32, 1 / 16, 1 / 8, 1 / 4, 1.0)
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


class FeatureSpace(nn.Module):
    """Maps images (B, 3, H, W) in [0, 1] to a list of feature maps; ``layer_weights`` weight them."""

    layer_weights: tuple[float, ...]

    def train(self, mode: bool = True) -> "FeatureSpace":
        return super().train(False)  # always frozen: no dropout/batch-norm state to switch


class PyramidFeatures(FeatureSpace):
    layer_weights = (1 / 8, 1 / 4, 1 / 2, 1.0)

    def forward(self, image: torch.Tensor) -> list[torch.Tensor]:
        features = []
        for level in range(len(self.layer_weights)):
            scaled = F.avg_pool2d(image, 2**level) if level else image
            dx = scaled[..., :, 1:] - scaled[..., :, :-1]
            dy = scaled[..., 1:, :] - scaled[..., :-1, :]
            features.append(torch.cat([scaled.flatten(1), dx.flatten(1), dy.flatten(1)], dim=1))
        return features


class VGG19Features(FeatureSpace):
    layer_weights = _VGG_WEIGHTS

    def __init__(self, weights: str | Path) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels = 3
        for item in _VGG19:
            if item == "M":
                layers.append(nn.MaxPool2d(2))
            else:
                layers += [nn.Conv2d(channels, item, 3, padding=1), nn.ReLU()]
                channels = item
        self.features = nn.Sequential(*layers[: _VGG_TAPS[-1] + 1])
        self.register_buffer("mean", torch.tensor(_IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(_IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self._load(Path(weights))
        self.requires_grad_(False)

    def _load(self, path: Path) -> None:
        state = load_weights_only(path)
        if not isinstance(state, dict):
            raise ValueError(f"VGG-19 weights in {path} must be a state dict, got {type(state).__name__}")
        wanted = {k for k in self.state_dict() if k.startswith("features.")}
        state = {k: v for k, v in state.items() if k in wanted}
        missing = sorted(wanted - set(state))
        if missing:
            raise ValueError(f"VGG-19 weights in {path} lack {missing[0]} (expected torchvision key names)")
        self.load_state_dict(state, strict=False)

    def forward(self, image: torch.Tensor) -> list[torch.Tensor]:
        x = (image - self.mean) / self.std
        features = []
        for index, layer in enumerate(self.features):
            x = layer(x)
            if index in _VGG_TAPS:
                features.append(x)
        return features


def build_features(name: str, weights: str | Path | None = None) -> FeatureSpace:
    """The named feature space. Raises ``ValueError`` for unknown names or missing VGG weights."""
    if name == "pyramid":
        return PyramidFeatures()
    if name == "vgg19":
        if weights is None:
            raise ValueError("cpr.features 'vgg19' needs cpr.vgg_weights: a local file of VGG-19 weights")
        return VGG19Features(weights)
    raise ValueError(f"cpr.features must be one of {', '.join(FEATURES)}, got {name!r}")
