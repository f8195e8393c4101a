"""Evaluating a model on a frozen benchmark: per-task PSNR/SSIM against the degraded-input baseline.

    report = evaluate(ref, benchmark, EvalSettings(), tracking_uri)      # scores + summary
    write_report(report, out)                                            # report.json, .md, cases.jsonl
    log_evaluation(report, out, tracking_uri)                            # an MLflow evaluation run

Every pair is restored with ``cpl_model.restore`` (tiled above ``tile`` pixels) and scored with
``cpl_model.image_metrics``: PSNR and SSIM on RGB in [0, 1] (PromptIR / AdaIR protocol) and on the
BT.601 luma channel (BasicSR protocol, the one deraining benchmarks report). Pairs of equal size are
batched. With ``workers`` > 0 the benchmark's units are spread over Ray actors, each holding the model
once; the rows, and so the report, are the same either way.
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator

import cv2
import numpy as np
import torch

import cpl_model

from . import benchmarks, models, provenance, storage, tracking
from .benchmarks import Benchmark, Case, Skip

METRICS = ("psnr", "ssim", "psnr_y", "ssim_y")
PSNR_CAP = 100.0  # identical images have infinite PSNR; cap it so means stay finite
EXPERIMENT = "cpl-evaluation"
GRID_PANEL = 192


@dataclass(frozen=True)
class EvalSettings:
    tile: int | None = 512  # pixels; larger images are restored in overlapping tiles
    batch_size: int = 8  # pairs of equal size restored together
    workers: int = 0  # Ray actors; 0: in this process
    use_gpu: bool = False
    grid_cases: int = 4  # worst and best cases (by gain over the input) shown in grid.png


def score(model: torch.nn.Module, items: Iterable[Case | Skip], settings: EvalSettings,
          device: str = "cpu") -> Iterator[dict[str, Any]]:
    """One row per pair (``id``, ``task``, ``recipe``, size, model and ``input_`` metrics) or per skip."""
    pending: list[Case] = []
    for item in items:
        if isinstance(item, Skip):
            yield {"skip": item.reason, "id": item.id}
            continue
        if pending and (item.degraded.shape != pending[0].degraded.shape or len(pending) == settings.batch_size):
            yield from _score_batch(model, pending, settings, device)
            pending = []
        pending.append(item)
    if pending:
        yield from _score_batch(model, pending, settings, device)


def _to_tensor(images: list[np.ndarray], device: str) -> torch.Tensor:
    return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float().div(255).to(device)


def _score_batch(model, cases: list[Case], settings: EvalSettings, device: str) -> Iterator[dict[str, Any]]:
    degraded = _to_tensor([c.degraded for c in cases], device)
    clean = _to_tensor([c.clean for c in cases], device)
    with torch.inference_mode():
        restored = cpl_model.restore(model, degraded, tile=settings.tile)
    ours, baseline = cpl_model.image_metrics(restored, clean), cpl_model.image_metrics(degraded, clean)
    for i, case in enumerate(cases):
        row = {"id": case.id, "task": case.task, "recipe": case.recipe, "height": case.degraded.shape[0],
               "width": case.degraded.shape[1]}
        for name in METRICS:
            row[name] = min(float(ours[name][i]), PSNR_CAP)
            row[f"input_{name}"] = min(float(baseline[name][i]), PSNR_CAP)
        yield row


def evaluate(ref: models.ModelRef, benchmark: Benchmark, settings: EvalSettings, tracking_uri: str,
             model: torch.nn.Module | None = None) -> dict[str, Any]:
    """Score every pair of ``benchmark`` with the model ``ref`` names (``model``, when already loaded);
    returns the report (see ``summarize``)."""
    started = time.monotonic()
    if settings.workers > 0:
        rows = _score_with_ray(ref, benchmark, settings, tracking_uri)
    else:
        device = "cuda" if settings.use_gpu else "cpu"
        model = (model or models.load(ref, tracking_uri)).to(device)  # Ray actors load their own copy
        rows = list(score(model, (item for unit in benchmark.units for item in benchmark.cases(unit)), settings,
                          device))
    rows.sort(key=lambda row: row["id"])  # Ray actors finish in any order; the report must not depend on it
    if not any("skip" not in row for row in rows):
        raise ValueError(f"{benchmark.label}: no pair could be evaluated (skipped: {_skips(benchmark, rows)})")
    return summarize(ref, benchmark, settings, rows, time.monotonic() - started)


class _RayScorer:
    """A Ray actor: loads the model once, scores whole units."""

    def __init__(self, ref: dict, tracking_uri: str, spec: dict, settings: EvalSettings) -> None:
        self.device = "cuda" if settings.use_gpu else "cpu"
        self.model = models.load(models.ModelRef(**ref), tracking_uri, self.device)
        self.benchmark, self.settings = benchmarks.reopen(spec), settings

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, list[str]]:
        rows = []
        for unit in batch["unit"]:
            rows += score(self.model, self.benchmark.cases(json.loads(unit)), self.settings, self.device)
        return {"row": [json.dumps(row) for row in rows]}


def _score_with_ray(ref, benchmark, settings, tracking_uri) -> list[dict[str, Any]]:
    import ray.data

    from .runtime import RayConfig, init_ray

    init_ray(RayConfig(progress_bars=False))
    units = ray.data.from_items([{"unit": json.dumps(unit)} for unit in benchmark.units])
    scored = units.map_batches(
        _RayScorer, fn_constructor_kwargs={"ref": ref.as_dict(), "tracking_uri": tracking_uri,
                                           "spec": benchmark.spec(), "settings": settings},
        batch_size=1, concurrency=settings.workers, num_gpus=1 if settings.use_gpu else 0, num_cpus=1)
    return [json.loads(row["row"]) for row in scored.take_all()]


def _skips(benchmark: Benchmark, rows: list[dict[str, Any]]) -> dict[str, list[str]]:
    skipped = defaultdict(list, {reason: list(ids) for reason, ids in benchmark.skipped.items()})
    for row in rows:
        if "skip" in row:
            skipped[row["skip"]].append(row["id"])
    return {reason: sorted(ids) for reason, ids in sorted(skipped.items())}


def _means(rows: list[dict[str, Any]]) -> dict[str, Any]:
    summary = {"count": len(rows)}
    for prefix, key in (("model", ""), ("input", "input_")):
        summary[prefix] = {name: float(np.mean([row[key + name] for row in rows])) for name in METRICS}
    summary["gain_psnr"] = summary["model"]["psnr"] - summary["input"]["psnr"]
    return summary


def summarize(ref: models.ModelRef, benchmark: Benchmark, settings: EvalSettings, rows: list[dict[str, Any]],
              seconds: float) -> dict[str, Any]:
    """The report: means per task and per recipe (where finer) and overall, skips, worst and best cases.

    ``tasks`` is the unit the promotion gate compares; ``cases`` keeps every row for ``cases.jsonl``.
    """
    scored = [row for row in rows if "skip" not in row]
    by_task, by_recipe = defaultdict(list), defaultdict(list)
    for row in scored:
        by_task[row["task"]].append(row)
        by_recipe[row["recipe"]].append(row)
    ranked = sorted(scored, key=lambda row: (row["psnr"] - row["input_psnr"], row["id"]))
    shown = settings.grid_cases
    return {
        "model": ref.as_dict(),
        "data": benchmark.describe() | {"skipped": _skips(benchmark, rows)},
        "protocol": {"psnr/ssim": "RGB in [0, 1], data_range 1, scikit-image SSIM (7x7, sample covariance)",
                     "psnr_y/ssim_y": "BT.601 luma (16-235), same SSIM", "psnr_cap_db": PSNR_CAP,
                     "tile": settings.tile},
        "tasks": {task: _means(group) for task, group in sorted(by_task.items())},
        "recipes": {recipe: _means(group) for recipe, group in sorted(by_recipe.items()) if recipe not in by_task},
        "all": _means(scored),
        "worst": [row["id"] for row in ranked[:shown]],
        "best": [row["id"] for row in ranked[::-1][:shown]],
        "seconds": round(seconds, 2),
        "code_version": provenance.code_version(),
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "cases": scored,
    }


def markdown(report: dict[str, Any]) -> str:
    """The report as a Markdown table: input -> model, per task, recipe and overall."""
    lines = [f"# Evaluation of {models.ModelRef(**report['model']).label} on {report['data']['label']}", "",
             "| task | pairs | input PSNR | PSNR | gain | input SSIM | SSIM | input PSNR-Y | PSNR-Y | SSIM-Y |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    groups = list(report["tasks"].items()) + [(f"{k} (recipe)", v) for k, v in report["recipes"].items()]
    for name, s in groups + [("**all**", report["all"])]:
        i, m = s["input"], s["model"]
        lines.append(f"| {name} | {s['count']} | {i['psnr']:.2f} | {m['psnr']:.2f} | {s['gain_psnr']:+.2f} | "
                     f"{i['ssim']:.4f} | {m['ssim']:.4f} | {i['psnr_y']:.2f} | {m['psnr_y']:.2f} | {m['ssim_y']:.4f} |")
    skipped = report["data"]["skipped"]
    if skipped:
        lines += ["", "Skipped: " + "; ".join(f"{reason}: {', '.join(ids)}" for reason, ids in skipped.items())]
    return "\n".join(lines) + "\n"


def grid(model: torch.nn.Module, benchmark: Benchmark, ids: list[str], settings: EvalSettings) -> np.ndarray:
    """Rows of degraded | restored | clean (RGB uint8) for the cases ``ids``, in that order."""
    wanted, found = set(ids), {}
    for unit in benchmark.units:
        for item in benchmark.cases(unit):
            if isinstance(item, Case) and item.id in wanted:
                found[item.id] = item
        if len(found) == len(wanted):
            break
    rows = []
    for case_id in ids:
        case = found[case_id]
        with torch.inference_mode():
            restored = cpl_model.restore(model, _to_tensor([case.degraded], "cpu"), tile=settings.tile)
        restored = (restored[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
        rows.append(np.concatenate([_panel(image) for image in (case.degraded, restored, case.clean)], axis=1))
    return np.concatenate(rows) if rows else np.zeros((1, 1, 3), np.uint8)


def _panel(image: np.ndarray) -> np.ndarray:
    """``image`` scaled to fit a GRID_PANEL square, centred on black (sizes differ in real benchmarks)."""
    scale = GRID_PANEL / max(image.shape[:2])
    height, width = max(1, round(image.shape[0] * scale)), max(1, round(image.shape[1] * scale))
    resized = cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC)
    panel = np.zeros((GRID_PANEL, GRID_PANEL, 3), np.uint8)
    top, left = (GRID_PANEL - height) // 2, (GRID_PANEL - width) // 2
    panel[top:top + height, left:left + width] = resized
    return panel


def write_report(report: dict[str, Any], out: Path, grid_image: np.ndarray | None = None) -> dict[str, Path]:
    """``report.json`` (without per-case rows), ``report.md``, ``cases.jsonl`` and ``grid.png`` under ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    files = {"report.json": out / "report.json", "report.md": out / "report.md", "cases.jsonl": out / "cases.jsonl"}
    summary = {key: value for key, value in report.items() if key != "cases"}
    storage.write_bytes(str(files["report.json"]), (json.dumps(summary, indent=2) + "\n").encode())
    storage.write_bytes(str(files["report.md"]), markdown(report).encode())
    storage.write_bytes(str(files["cases.jsonl"]),
                        "".join(json.dumps(row) + "\n" for row in report["cases"]).encode())
    if grid_image is not None:
        files["grid.png"] = out / "grid.png"
        _, encoded = cv2.imencode(".png", cv2.cvtColor(grid_image, cv2.COLOR_RGB2BGR))
        storage.write_bytes(str(files["grid.png"]), encoded.tobytes())
    return files


def log_evaluation(report: dict[str, Any], files: dict[str, Path], tracking_uri: str,
                   experiment: str = EXPERIMENT) -> str:
    """An MLflow run in ``experiment`` holding the report; linked to the model version by tags and, for
    MLflow 3 logged models, by ``model_id`` (the metrics show on the model's page). Returns its run id."""
    import mlflow

    ref = models.ModelRef(**report["model"])
    data = report["data"]
    tags = {"cpl.kind": "evaluation", "cpl.model": ref.reference, "cpl.model_uri": ref.uri,
            "cpl.data": data["label"], "cpl.data_digest": data["digest"]}
    tags |= {f"cpl.model_{key}": value for key, value in
             (("name", ref.name), ("version", ref.version), ("run_id", ref.run_id)) if value}
    metrics = {}
    for group, summary in [*report["tasks"].items(), *report["recipes"].items(), ("all", report["all"])]:
        prefix = tracking.metric_name(group)
        metrics |= {f"{prefix}/{name}": value for name, value in summary["model"].items()}
        metrics |= {f"{prefix}/input_{name}": value for name, value in summary["input"].items()}
        metrics[f"{prefix}/gain_psnr"] = summary["gain_psnr"]
    mlflow.set_tracking_uri(tracking_uri)
    experiment_id = tracking.ensure_experiment(tracking_uri, experiment)
    with mlflow.start_run(experiment_id=experiment_id, run_name=f"eval {ref.label} on {data['label']}",
                          tags=tags) as run:
        mlflow.log_params({"data": data["label"], "split": data["split"] or "", "tile": report["protocol"]["tile"]})
        mlflow.log_metrics(metrics, model_id=ref.model_id)
        for path in files.values():
            mlflow.log_artifact(str(path))
    return run.info.run_id


def run(reference: str, data: str, out: Path, settings: EvalSettings, split: str = "test", log: bool = True,
        experiment: str = EXPERIMENT) -> tuple[dict[str, Any], str | None]:
    """Evaluate ``reference`` on ``data``: the report written under ``out`` and, with ``log``, an MLflow
    evaluation run. Returns ``(report, evaluation run id or None)``.

    Raises:
        ConnectionError, ModelNotFound, StorageError, ValueError: naming the URI, reference or file at fault.
    """
    uri = tracking.resolve_tracking_uri()
    if log or models.is_mlflow(reference):
        tracking.check_reachable(uri)
    return evaluate_and_record(models.resolve(reference, uri), benchmarks.open_benchmark(data, split), settings, uri,
                               out, log, experiment)


def evaluate_and_record(ref: models.ModelRef, benchmark: Benchmark, settings: EvalSettings, tracking_uri: str,
                        out: Path, log: bool = True, experiment: str = EXPERIMENT) -> tuple[dict[str, Any], str | None]:
    """``evaluate``, then the report and grid under ``out`` and, with ``log``, the MLflow evaluation run."""
    model = models.load(ref, tracking_uri)
    report = evaluate(ref, benchmark, settings, tracking_uri, model)
    shown = list(dict.fromkeys(report["worst"] + report["best"]))
    files = write_report(report, out, grid(model.to("cpu"), benchmark, shown, settings))
    run_id = log_evaluation(report, files, tracking_uri, experiment) if log else None
    return report, run_id
