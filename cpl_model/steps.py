"""One training step and the router's statistics, in plain torch (the pipelines wrap them).

A batch is a mapping with ``degraded`` and ``clean``, (B, 3, H, W) float in [0, 1], and optionally
``task``, a sequence of B task labels (e.g. ``"noise"``, ``"low_light+haze+rain"``).
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .losses import LossConfig, RestorationLoss
from .network import RestorationOutput
from .prompts import Routing


def training_step(model: nn.Module, batch: Mapping[str, Any], loss: LossConfig | RestorationLoss, *,
                  step: int = 0, generator: torch.Generator | None = None) -> tuple[torch.Tensor, dict[str, float]]:
    """Forward the batch and compute the objective; the caller runs backward and the optimiser.

    Args:
        model: a network from ``build_model`` (or an engine/DDP wrapper whose forward passes keywords on).
        batch: see the module docstring.
        loss: the objective, or its config (then built here; build it once for VGG features).
        step: the optimiser step, for CPR's warm-up (``cpr.start_step``).
        generator: draws the negatives' prompt components; seed it per step for reproducible runs
            (``None``: a generator seeded with ``step``).

    Returns:
        ``(loss, metrics)``: the scalar to backpropagate, and floats ``loss``, ``l1`` (the batch's L1,
        whichever reconstruction form is minimised), ``cpr`` (0 while
        inactive), ``router_entropy`` (mean over prompt sites, in nats), ``usage/<site>/<component>``
        (fraction of samples whose top component it is) and, with task labels,
        ``usage/<site>/<task>/<component>``.
    """
    objective = loss if isinstance(loss, RestorationLoss) else RestorationLoss(loss)
    degraded, clean = batch["degraded"], batch["clean"]
    use_cpr = objective.cpr_active(step)
    cpr_config = objective.config.cpr
    if use_cpr and generator is None:
        generator = torch.Generator().manual_seed(step)
    output: RestorationOutput = model(
        degraded, aux=True, negatives=cpr_config.negatives if use_cpr else 0, generator=generator,
        negative_weight=cpr_config.negative_weight, detach_negatives=cpr_config.detach_negatives)
    restored, clean = output.image.float(), clean.float()
    reconstruction = objective.reconstruction(restored, clean)
    l1 = reconstruction.detach() if objective.config.reconstruction == "l1" else F.l1_loss(restored.detach(), clean)
    total = objective.config.l1_weight * reconstruction
    cpr = torch.zeros((), device=l1.device)
    if use_cpr:
        cpr = objective.cpr(output.image, clean, output.negatives)
        total = total + cpr_config.weight * cpr
    metrics = {"loss": total.item(), "l1": l1.item(), "cpr": cpr.item()}
    metrics.update(routing_metrics(output.routing, batch.get("task")))
    return total, metrics


SITE_NAMES = ("latent", "level3", "level2")


def routing_metrics(routing: Sequence[Routing], tasks: Sequence[str] | None = None) -> dict[str, float]:
    """Router entropy and component usage per prompt site (and per task when labels are given)."""
    if not routing:
        return {}
    metrics: dict[str, float] = {}
    entropies = []
    for name, site in zip(SITE_NAMES, routing):
        p = site.probabilities.detach().float()
        entropies.append(-(p * p.clamp_min(1e-12).log()).sum(dim=1).mean())
        choice = site.choice.tolist()
        components = p.shape[1]
        for component in range(components):
            metrics[f"usage/{name}/{component}"] = choice.count(component) / len(choice)
        if tasks is not None:
            by_task: dict[str, list[int]] = defaultdict(list)
            for task, chosen in zip(tasks, choice):
                by_task[task].append(chosen)
            for task, chosen in by_task.items():
                for component in range(components):
                    metrics[f"usage/{name}/{task}/{component}"] = chosen.count(component) / len(chosen)
    metrics["router_entropy"] = torch.stack(entropies).mean().item()
    return metrics
