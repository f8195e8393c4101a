"""Frozen feature spaces in which Contrastive Prompt Regularization compares restorations.

- ``vgg16`` and ``vgg19``: VGG's convolutional trunk, read at relu1_1 ... relu5_1 with weights
  1/32 ... 1 (the layers of the group's PCL work), on ImageNet-normalised input. It needs pretrained
  weights from a local file: a state dict with torchvision's key names (``features.0.weight`` ...),
  loaded with ``torch.load(weights_only=True)``, which refuses arbitrary pickled objects. Nothing is
  downloaded (docs/model.md says where to get the file; the pipelines also fetch it from ``s3://``).
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

FEATURES = ("pyramid", "vgg16", "vgg19")

# Channels of VGG's conv layers, "M" for max-pooling (torchvision's "D" and "E" configurations), and the
# indices in ``features`` just after relu1_1, relu2_1, relu3_1, relu4_1 and relu5_1.
_VGG = {
    "vgg16": ((64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512), (1, 6, 11, 18, 25)),
    "vgg19": ((64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512),
              (1, 6, 11, 20, 29)),
}
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


class VGGFeatures(FeatureSpace):
    layer_weights = _VGG_WEIGHTS

    def __init__(self, name: str, weights: str | Path) -> None:
        super().__init__()
        self.name = name
        config, self.taps = _VGG[name]
        layers: list[nn.Module] = []
        channels = 3
        for item in config:
            if item == "M":
                layers.append(nn.MaxPool2d(2))
            else:
                layers += [nn.Conv2d(channels, item, 3, padding=1), nn.ReLU()]
                channels = item
        self.features = nn.Sequential(*layers)
        self.register_buffer("mean", torch.tensor(_IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(_IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self._load(Path(weights))
        self.requires_grad_(False)

    def _load(self, path: Path) -> None:
        state = load_weights_only(path)
        if not isinstance(state, dict):
            raise ValueError(f"{self.name} weights in {path} must be a state dict, got {type(state).__name__}")
        expected = self.state_dict()
        state = {k: v for k, v in state.items() if k in expected}
        # Shapes first: another VGG depth shares some key names and lacks others, and the missing names
        # alone would blame the naming.
        for key, tensor in state.items():
            if tensor.shape != expected[key].shape:
                raise ValueError(f"{self.name} weights in {path}: {key} has shape {tuple(tensor.shape)}, "
                                 f"expected {tuple(expected[key].shape)} (a different VGG depth?)")
        missing = sorted(set(expected) - set(state))
        if missing:
            raise ValueError(f"{self.name} weights in {path} lack {missing[0]} (expected torchvision key names)")
        self.load_state_dict(state, strict=False)

    def forward(self, image: torch.Tensor) -> list[torch.Tensor]:
        x = (image - self.mean) / self.std
        features = []
        for index, layer in enumerate(self.features):
            x = layer(x)
            if index in self.taps:
                features.append(x)
        return features


def build_features(name: str, weights: str | Path | None = None) -> FeatureSpace:
    """The named feature space. Raises ``ValueError`` for unknown names or missing VGG weights."""
    if name == "pyramid":
        return PyramidFeatures()
    if name in _VGG:
        if weights is None:
            raise ValueError(f"cpr.features {name!r} needs cpr.vgg_weights: a local file of {name} weights")
        return VGGFeatures(name, weights)
    raise ValueError(f"cpr.features must be one of {', '.join(FEATURES)}, got {name!r}")
