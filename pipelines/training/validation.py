"""Validation during and after training: metrics per task and recipe, and the picture logged for people."""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import Any

import numpy as np
import torch

import cpl_model
from cpl_model.prompts import Routing

from ..core import grid, tracking

# checkpoint.select -> the validation metric by which checkpoints are ranked (higher is better).
SCORES = {"worst_task_gain": "val/worst_task_gain", "mean_psnr": "val/psnr"}


@torch.no_grad()
def validate(model: torch.nn.Module, pairs: dict[str, Any], device: torch.device, dtype: torch.dtype,
             batch_size: int = 16) -> dict[str, float]:
    """Mean PSNR/SSIM (RGB and Y) per task, per recipe (``val/recipe/<name>/``, where finer than the task)
    and overall, for the model and the degraded input, the router's component usage per task, and
    ``val/worst_task_gain``: the least PSNR gain over the input of any task (tasks, not recipes)."""
    model.eval()
    sums: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    routing: list[list[Routing]] = []
    tasks = list(pairs["task"])
    for first in range(0, len(tasks), batch_size):
        chunk = slice(first, first + batch_size)
        degraded, clean = cpl_model.to_tensor(pairs["degraded"][chunk]), cpl_model.to_tensor(pairs["clean"][chunk])
        output = model(degraded.to(device, dtype), aux=True)
        scores = cpl_model.restoration_metrics(output.image.float().cpu(), degraded, clean)
        recipes = pairs.get("recipe", tasks)[chunk]
        for i, (task, recipe) in enumerate(zip(tasks[chunk], recipes, strict=True)):
            # Per recipe too where it is finer than the task (noise15/25/50 are all "noise").
            for scope in {"all", task, f"recipe/{recipe}"} - {f"recipe/{task}"}:
                sums[scope]["count"] += 1
                for name, values in scores.items():
                    sums[scope][name] += values[i].item()
        routing.append(output.routing)
    model.train()
    metrics = {}
    for scope, values in sums.items():
        prefix = "val/" if scope == "all" else f"val/{tracking.metric_name(scope)}/"
        metrics.update({prefix + name: total / values["count"] for name, total in values.items() if name != "count"})
    metrics["val/worst_task_gain"] = min(metrics[f"val/{name}/psnr"] - metrics[f"val/{name}/input_psnr"]
                                         for name in map(tracking.metric_name, set(tasks)))
    if routing and routing[0]:
        sites = [Routing(torch.cat([r[i].probabilities for r in routing]), torch.cat([r[i].weights for r in routing]))
                 for i in range(len(routing[0]))]
        for key, value in cpl_model.routing_metrics(sites, tasks).items():
            parts = key.split("/")  # usage/<site>/<task>/<component> for per-task entries
            if len(parts) == 4:
                parts[2] = tracking.metric_name(parts[2])
            metrics["val/" + "/".join(parts)] = value
    return metrics


def grid_pairs(validation: dict[str, Any], rows: int) -> list[int]:
    """Indices of the pairs a grid shows: one per task (in name order, at most ``rows``), each taken from the
    photo, then the crop, shown least so far, so that the rows show different photos where the set has them.

    Photos and crops are read from ``sample_id`` (``<photo>#<crop>[/<recipe>]``); without it every pair
    counts as its own photo.
    """
    tasks = list(validation["task"])
    ids = validation.get("sample_id")
    ids = [f"{index}#0" for index in range(len(tasks))] if ids is None else [str(sample) for sample in ids]
    photo_of = [sample.partition("#")[0] for sample in ids]
    crop_of = [sample.split("/")[0] for sample in ids]
    by_task: dict[str, list[int]] = defaultdict(list)
    for index, task in enumerate(tasks):
        by_task[task].append(index)
    photos: Counter[str] = Counter()
    crops: Counter[str] = Counter()
    chosen = []
    for task in sorted(by_task)[:rows]:
        index = min(by_task[task], key=lambda i: (photos[photo_of[i]], crops[crop_of[i]], i))
        photos[photo_of[index]] += 1
        crops[crop_of[index]] += 1
        chosen.append(index)
    return chosen


def image_grid(model: torch.nn.Module, validation: dict[str, Any], rows: int) -> np.ndarray:
    """The validation grid logged with a model (RGB uint8): per task a row degraded | restored | clean of one
    pair (``grid_pairs``), labelled with the task, the recipe and the PSNR of the input and of the output."""
    sheet_rows = []
    recipes = validation.get("recipe")
    recipes = validation["task"] if recipes is None else recipes
    for index in grid_pairs(validation, rows):
        degraded, clean = validation["degraded"][index], validation["clean"][index]
        with torch.inference_mode():
            restored = cpl_model.restore(model, cpl_model.to_tensor(degraded))
        scores = cpl_model.restoration_metrics(restored, cpl_model.to_tensor(degraded), cpl_model.to_tensor(clean))
        task, recipe = validation["task"][index], recipes[index]
        sheet_rows.append(grid.restoration_row(task if recipe == task else f"{task} ({recipe})", degraded,
                                               cpl_model.to_uint8(restored)[0], clean,
                                               float(scores["input_psnr"][0]), float(scores["psnr"][0])))
    return grid.contact_sheet(sheet_rows, grid.RESTORATION_COLUMNS)
