"""An exponential moving average (EMA) of a model's weights, the copy that validation and export use.

The authors' released training options keep one (decay 0.999) and evaluate with it. This wraps
``torch.optim.swa_utils.AveragedModel``: after each optimiser step ``update(model)`` moves every
parameter and buffer of the copy toward the model's, ``ema = decay * ema + (1 - decay) * current``;
the first update copies the weights. An EMA with decay ``d`` averages over roughly ``1 / (1 - d)``
steps, so a short run wants a smaller decay than the paper's 300k-step protocol.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn


def _ema_in_own_dtype(decay: float) -> Callable[[list[torch.Tensor], list[torch.Tensor], torch.Tensor], None]:
    """``get_ema_multi_avg_fn(decay)`` with the model's tensors first cast to the average's dtype, so that a
    model trained in bf16 (DeepSpeed) can have an fp32 average: in bf16, steps of ``1 - decay`` round away."""
    ema = get_ema_multi_avg_fn(decay)

    def update(averaged: list[torch.Tensor], current: list[torch.Tensor], count: torch.Tensor) -> None:
        ema(averaged, [c.to(a.dtype) for a, c in zip(averaged, current, strict=True)], count)

    return update


class WeightAverage(nn.Module):
    """``module`` is the averaged copy of the model given at construction (which it deep-copies, dtype
    included); ``update`` takes the model in any floating dtype, e.g. bf16 under DeepSpeed."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        super().__init__()
        if not 0.0 < decay < 1.0:
            raise ValueError(f"EMA decay must be in (0, 1), got {decay}")
        self.decay = decay
        self.averaged = AveragedModel(model, multi_avg_fn=_ema_in_own_dtype(decay), use_buffers=True)
        self.averaged.requires_grad_(False)

    @property
    def module(self) -> nn.Module:
        return self.averaged.module

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.averaged.update_parameters(model)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return self.module(*args, **kwargs)
