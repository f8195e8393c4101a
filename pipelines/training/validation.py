"""Validation during and after training: metrics per task and recipe, and the picture logged for people."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import numpy as np
import torch

import cpl_model
from cpl_model.prompts import Routing

from ..core import tracking


@torch.no_grad()
def validate(model: torch.nn.Module, pairs: dict[str, Any], device: torch.device, dtype: torch.dtype,
             batch_size: int = 16) -> dict[str, float]:
    """Mean PSNR/SSIM (RGB and Y) per task, per recipe (``val/recipe/<name>/``, where finer than the task)
    and overall, for the model and the degraded input, plus the router's component usage per task."""
    model.eval()
    sums: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    routing: list[list[Routing]] = []
    tasks = list(pairs["task"])
    for first in range(0, len(tasks), batch_size):
        chunk = slice(first, first + batch_size)
        degraded = torch.from_numpy(pairs["degraded"][chunk]).permute(0, 3, 1, 2).float().div(255)
        clean = torch.from_numpy(pairs["clean"][chunk]).permute(0, 3, 1, 2).float().div(255)
        output = model(degraded.to(device, dtype), aux=True)
        ours = cpl_model.image_metrics(output.image.float().clamp(0, 1).cpu(), clean)
        baseline = cpl_model.image_metrics(degraded, clean)
        recipes = pairs.get("recipe", tasks)[chunk]
        for i, (task, recipe) in enumerate(zip(tasks[chunk], recipes, strict=True)):
            # Per recipe too where it is finer than the task (noise15/25/50 are all "noise").
            for scope in {"all", task, f"recipe/{recipe}"} - {f"recipe/{task}"}:
                sums[scope]["count"] += 1
                for name in ours:
                    sums[scope][name] += min(ours[name][i].item(), 100.0)  # identical images: PSNR is inf
                    sums[scope][f"input_{name}"] += min(baseline[name][i].item(), 100.0)
        routing.append(output.routing)
    model.train()
    metrics = {}
    for scope, values in sums.items():
        prefix = "val/" if scope == "all" else f"val/{tracking.metric_name(scope)}/"
        metrics.update({prefix + name: total / values["count"] for name, total in values.items() if name != "count"})
    if routing and routing[0]:
        sites = [Routing(torch.cat([r[i].probabilities for r in routing]), torch.cat([r[i].weights for r in routing]))
                 for i in range(len(routing[0]))]
        for key, value in cpl_model.routing_metrics(sites, tasks).items():
            parts = key.split("/")  # usage/<site>/<task>/<component> for per-task entries
            if len(parts) == 4:
                parts[2] = tracking.metric_name(parts[2])
            metrics["val/" + "/".join(parts)] = value
    return metrics


def image_grid(model: torch.nn.Module, validation: dict[str, Any], images: int) -> np.ndarray:
    """Rows of degraded | restored | clean for the first validation pair of each task (RGB uint8)."""
    first_of_task: dict[str, int] = {}
    for index, task in enumerate(validation["task"]):
        first_of_task.setdefault(task, index)
    rows = []
    for index in list(first_of_task.values())[:images]:
        degraded = validation["degraded"][index]
        x = torch.from_numpy(degraded).permute(2, 0, 1)[None].float() / 255
        with torch.inference_mode():
            restored = cpl_model.restore(model, x)[0].permute(1, 2, 0).numpy()
        rows.append(np.concatenate([degraded, (restored * 255).round().astype(np.uint8), validation["clean"][index]],
                                   axis=1))
    return np.concatenate(rows, axis=0) if rows else np.zeros((1, 1, 3), np.uint8)
