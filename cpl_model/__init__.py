"""Contrastive Prompt Learning (CPL) for all-in-one image restoration, in plain PyTorch.

The network is a PromptIR-style Restormer U-Net whose decoder prompts are routed by the Sparse
Prompt Module; training adds Contrastive Prompt Regularization. No Ray, DeepSpeed or MLflow here.

    model = build_model("tiny", prompt="sparse")
    restored = model(degraded)                        # (B, 3, H, W) in [0, 1], any H, W
    loss, metrics = training_step(model, batch, LossConfig())
    scores = restoration_metrics(restored, degraded, clean)   # per image, PSNR capped at PSNR_CAP
"""

from __future__ import annotations

from typing import Any

import torch

from . import config as _config
from .checkpoint import WEIGHTS, load_checkpoint, save_checkpoint
from .config import PRESETS, PROMPT_VARIANTS, ModelConfig, preset
from .ema import WeightAverage
from .features import build_features
from .images import to_tensor, to_uint8
from .inference import restore
from .losses import CPRConfig, CPRLoss, LossConfig, RestorationLoss
from .metrics import METRICS, PSNR_CAP, image_metrics, psnr, restoration_metrics, rgb_to_y, ssim
from .network import CPLNet, RestorationOutput
from .steps import routing_metrics, training_step


def build_model(preset: str = "tiny", prompt: str = "sparse", *, seed: int = 0, **overrides: Any) -> CPLNet:
    """A freshly initialised network from a preset (``tiny``, ``small``, ``full``) and prompt variant
    (``none``, ``dense``, ``sparse``); ``overrides`` replace config fields (e.g. ``top_k=2``).

    Initialisation draws from a generator seeded with ``seed``, without touching global RNG state.
    Raises ``ValueError`` naming a bad preset, variant or field.
    """
    config = _config.preset(preset, prompt=prompt, **overrides)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return CPLNet(config)


__all__ = [
    "CPLNet", "CPRConfig", "CPRLoss", "LossConfig", "METRICS", "ModelConfig", "PRESETS", "PROMPT_VARIANTS",
    "PSNR_CAP", "RestorationLoss", "RestorationOutput", "WEIGHTS", "WeightAverage", "build_features", "build_model",
    "image_metrics", "load_checkpoint", "preset", "psnr", "restoration_metrics", "restore", "rgb_to_y",
    "routing_metrics", "save_checkpoint", "ssim", "to_tensor", "to_uint8", "training_step",
]
