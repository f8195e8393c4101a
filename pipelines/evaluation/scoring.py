"""Scoring a model on a frozen benchmark: per-pair PSNR/SSIM against the degraded-input baseline, summarized
per task and recipe.

    report = evaluate(ref, benchmark, EvalSettings(), tracking_uri)      # scores + summary

Every pair is fitted, restored and quantized as its protocol says (``protocols``; tiled above ``tile``
pixels, whole when ``tile`` is None) and scored with ``cpl_model.restoration_metrics``, as in training
validation: PSNR and SSIM on RGB in [0, 1] (PromptIR / AdaIR) and on the BT.601 luma channel (BasicSR,
as CPLIR and the deraining papers report), PSNR capped at ``cpl_model.PSNR_CAP``. ``evaluate`` resolves the
settings' tile and protocol for the benchmark (``EvalSettings.resolved``). Pairs of equal size are
batched. With ``workers`` > 0 the
benchmark's units are spread over Ray actors, each holding the model once; the rows, and so the report,
are the same either way.
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from typing import Any, Iterable, Iterator

import numpy as np
import torch

import cpl_model
from cpl_model import METRICS

from ..core import console, provenance, references
from ..core.errors import DataError
from ..core.runtime import map_with_actors
from . import benchmarks, protocols
from .benchmarks import Benchmark, Case, Skip
from .config import EvalSettings


def score(model: torch.nn.Module, items: Iterable[Case | Skip], settings: EvalSettings,
          device: str = "cpu") -> Iterator[dict[str, Any]]:
    """One row per pair (``id``, ``task``, ``recipe``, size, model and ``input_`` metrics) or per skip."""
    protocol = protocols.PROTOCOLS[settings.protocol]
    pending: list[Case] = []
    for item in items:
        if isinstance(item, Skip):
            yield {"skip": item.reason, "id": item.id}
            continue
        item = protocols.fit(item, protocol)
        if pending and (item.degraded.shape != pending[0].degraded.shape or len(pending) == settings.batch_size):
            yield from _score_batch(model, pending, protocol, settings.tile, device)
            pending = []
        pending.append(item)
    if pending:
        yield from _score_batch(model, pending, protocol, settings.tile, device)


def _score_batch(model, cases: list[Case], protocol: protocols.Protocol, tile: int | None,
                 device: str) -> Iterator[dict[str, Any]]:
    degraded = cpl_model.to_tensor([c.degraded for c in cases], device)
    clean = cpl_model.to_tensor([c.clean for c in cases], device)
    with torch.inference_mode():
        restored = protocols.restore(model, degraded, protocol, tile)
    scores = cpl_model.restoration_metrics(restored, degraded, clean)
    for i, case in enumerate(cases):
        row = {"id": case.id, "task": case.task, "recipe": case.recipe, "height": case.degraded.shape[0],
               "width": case.degraded.shape[1]}
        yield row | {name: float(values[i]) for name, values in scores.items()}


def evaluate(ref: references.ModelRef, benchmark: Benchmark, settings: EvalSettings, tracking_uri: str,
             model: torch.nn.Module | None = None) -> dict[str, Any]:
    """Score every pair of ``benchmark`` with the model ``ref`` names (``model``, when already loaded);
    returns the report (see ``summarize``)."""
    started = time.monotonic()
    settings = settings.resolved(benchmark.layout)
    if settings.workers > 0:
        rows = _score_with_ray(ref, benchmark, settings, tracking_uri)
    else:
        device = "cuda" if settings.use_gpu else "cpu"
        model = (model or references.load(ref, tracking_uri)).to(device)  # Ray actors load their own copy
        rows = list(console.progress_bar(
            score(model, (item for unit in benchmark.units for item in benchmark.cases(unit)), settings, device),
            desc="evaluating", unit="pair", total=benchmark.pairs(), enabled=settings.progress))
    rows.sort(key=lambda row: row["id"])  # Ray actors finish in any order; the report must not depend on it
    if not any("skip" not in row for row in rows):
        raise DataError(f"{benchmark.label}: no pair could be evaluated (skipped: {_skips(benchmark, rows)})")
    return summarize(ref, benchmark, settings, rows, time.monotonic() - started)


class _RayScorer(references.ModelActor):
    """A Ray actor: holds the model, scores whole units."""

    def __init__(self, ref: dict, tracking_uri: str, spec: dict, settings: EvalSettings) -> None:
        super().__init__(ref, tracking_uri, settings.use_gpu)
        self.benchmark, self.settings = benchmarks.reopen(spec), settings

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, list[str]]:
        rows = []
        for unit in batch["unit"]:
            rows += score(self.model, self.benchmark.cases(json.loads(unit)), self.settings, self.device)
        return {"row": [json.dumps(row) for row in rows]}  # as JSON: skip rows have other columns


def _score_with_ray(ref, benchmark, settings, tracking_uri) -> list[dict[str, Any]]:
    scored = map_with_actors([{"unit": json.dumps(unit)} for unit in benchmark.units], _RayScorer,
                             {"ref": ref.as_dict(), "tracking_uri": tracking_uri, "spec": benchmark.spec(),
                              "settings": settings}, workers=settings.workers, use_gpu=settings.use_gpu,
                             progress=settings.progress,
                             locations={"data": benchmark.uri if benchmark.kind != "samples" else None,
                                        **references.read_by_actors(ref, tracking_uri)})
    return [json.loads(row["row"]) for row in scored]


def _skips(benchmark: Benchmark, rows: list[dict[str, Any]]) -> dict[str, list[str]]:
    skipped = defaultdict(list, {reason: list(ids) for reason, ids in benchmark.skipped.items()})
    for row in rows:
        if "skip" in row:
            skipped[row["skip"]].append(row["id"])
    return {reason: sorted(ids) for reason, ids in sorted(skipped.items())}


def means(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The mean of every metric over ``rows``, for the model and its input, and the PSNR gain."""
    summary = {"count": len(rows)}
    for prefix, key in (("model", ""), ("input", "input_")):
        summary[prefix] = {name: float(np.mean([row[key + name] for row in rows])) for name in METRICS}
    summary["gain_psnr"] = summary["model"]["psnr"] - summary["input"]["psnr"]
    return summary


def worst_and_best(rows: list[dict[str, Any]], shown: int) -> dict[str, list[str]]:
    """The ids of the ``shown`` rows with the lowest and the highest PSNR gain over the input (ties by id)."""
    ranked = sorted(rows, key=lambda row: (row["psnr"] - row["input_psnr"], row["id"]))
    return {"worst": [row["id"] for row in ranked[:shown]], "best": [row["id"] for row in ranked[::-1][:shown]]}


def summarize(ref: references.ModelRef, benchmark: Benchmark, settings: EvalSettings, rows: list[dict[str, Any]],
              seconds: float) -> dict[str, Any]:
    """The report: means per task and per recipe (where finer) and overall, skips, worst and best cases.

    ``tasks`` is the unit the promotion gate compares; ``cases`` keeps every row for ``cases.jsonl``.
    """
    scored = [row for row in rows if "skip" not in row]
    by_task, by_recipe = defaultdict(list), defaultdict(list)
    for row in scored:
        by_task[row["task"]].append(row)
        by_recipe[row["recipe"]].append(row)
    return {
        "model": ref.as_dict(),
        "data": benchmark.describe() | {"skipped": _skips(benchmark, rows)},
        "protocol": protocols.PROTOCOLS[settings.protocol].describe(settings.tile),
        "tasks": {task: means(group) for task, group in sorted(by_task.items())},
        "recipes": {recipe: means(group) for recipe, group in sorted(by_recipe.items()) if recipe not in by_task},
        "all": means(scored),
        **worst_and_best(scored, settings.grid_cases),
        "seconds": round(seconds, 2),
        "code_version": provenance.code_version(),
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "cases": scored,
    }
