"""Evaluation reports: the files under ``--out``, the worst/best grid, and the MLflow evaluation run.

    report, run_id = run(reference, BenchmarkChoice(data=...), out)    # evaluate, write, log
    write_report(report, out)                                     # report.json, .md, cases.jsonl, grid.png
    log_evaluation(report, files, tracking_uri)                   # an MLflow evaluation run
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

import cpl_model

from ..core import grid as sheets
from ..core import references, storage, tracking
from . import benchmarks, protocols, suites
from .benchmarks import Benchmark, Case
from .config import EXPERIMENT, BenchmarkChoice, EvalSettings
from .scoring import evaluate


def markdown(report: dict[str, Any]) -> str:
    """The report as Markdown: a suite's paper table first; then input -> model, per task, recipe and overall,
    and the protocol."""
    label = references.ModelRef(**report["model"]).label
    lines = [f"# Evaluation of {label} on {report['data']['label']}", ""]
    if "table" in report:
        lines += [suites.table_markdown(report["table"], label), "## Per task", ""]
    lines += ["| task | pairs | input PSNR | PSNR | gain | input SSIM | SSIM | input PSNR-Y | PSNR-Y | SSIM-Y |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    groups = list(report["tasks"].items()) + [(f"{k} (recipe)", v) for k, v in report["recipes"].items()]
    for name, s in groups + [("**all**", report["all"])]:
        i, m = s["input"], s["model"]
        lines.append(f"| {name} | {s['count']} | {i['psnr']:.2f} | {m['psnr']:.2f} | {s['gain_psnr']:+.2f} | "
                     f"{i['ssim']:.4f} | {m['ssim']:.4f} | {i['psnr_y']:.2f} | {m['psnr_y']:.2f} | {m['ssim_y']:.4f} |")
    skipped = report["data"]["skipped"]
    if skipped:
        lines += ["", "Skipped: " + "; ".join(f"{reason}: {', '.join(ids)}" for reason, ids in skipped.items())]
    protocols_used = report["protocol"].get("benchmarks", {"": report["protocol"]})
    for name, protocol in protocols_used.items():
        lines += ["", f"Protocol{' of ' + name if name else ''}: {protocol['name']}: {protocol['geometry']}; "
                  f"{protocol['inference']}; output {protocol['output']}; PSNR/SSIM {protocol['psnr/ssim']}; "
                  f"PSNR-Y/SSIM-Y {protocol['psnr_y/ssim_y']}; the paper reports {' and '.join(protocol['headline'])}."]
    return "\n".join(lines) + "\n"


def grid(model: torch.nn.Module, benchmark: Benchmark, report: dict[str, Any], settings: EvalSettings) -> np.ndarray:
    """The report's worst and best cases as a contact sheet (RGB uint8): per case a row degraded | restored |
    clean, labelled with its rank, id, task and the PSNR of the input and of the output (as in ``cases.jsonl``)."""
    ranks: dict[str, list[str]] = {}
    for which in ("worst", "best"):
        for place, case_id in enumerate(report[which], 1):
            ranks.setdefault(case_id, []).append(f"{which} {place}")
    found = {}
    for unit in benchmark.units:
        for item in benchmark.cases(unit):
            if isinstance(item, Case) and item.id in ranks:
                found[item.id] = item
        if len(found) == len(ranks):
            break
    scores = {row["id"]: row for row in report["cases"]}
    protocol = protocols.PROTOCOLS[settings.protocol]
    rows = []
    for case_id, places in ranks.items():
        case, score = protocols.fit(found[case_id], protocol), scores[case_id]
        with torch.inference_mode():
            restored = protocols.restore(model, cpl_model.to_tensor(case.degraded), protocol, settings.tile)
        rows.append(sheets.restoration_row(f"{', '.join(places)}: {case_id} ({case.task})", case.degraded,
                                           cpl_model.to_uint8(restored)[0], case.clean, score["input_psnr"],
                                           score["psnr"]))
    return sheets.contact_sheet(rows, sheets.RESTORATION_COLUMNS)


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

    ref = references.ModelRef(**report["model"])
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
        mlflow.log_params({"data": data["label"], "split": data["split"] or "", "tile": report["protocol"]["tile"],
                           "protocol": report["protocol"]["name"]})
        mlflow.log_metrics(metrics, model_id=ref.model_id)
        for name, path in files.items():  # "<benchmark>/report.md" for a suite's parts
            folder = str(Path(name).parent)
            mlflow.log_artifact(str(path), artifact_path=None if folder == "." else folder)
    return run.info.run_id


def run(reference: str, choice: BenchmarkChoice, out: Path, log: bool = True,
        experiment: str = EXPERIMENT) -> tuple[dict[str, Any], str | None]:
    """Evaluate ``reference`` on the benchmark or suite ``choice`` names: the report written under ``out`` and,
    with ``log``, an MLflow evaluation run. Returns ``(report, evaluation run id or None)``.

    Raises:
        TrackingUnreachable, ModelNotFound, StorageError, DataError, ConfigError: naming the URI, reference,
            file or key at fault.
    """
    uri = tracking.resolve_tracking_uri()
    if log or references.is_mlflow(reference):
        tracking.check_reachable(uri)
    ref = references.resolve(reference, uri)
    return evaluate_and_record(ref, open_target(choice), choice.evaluation, uri, out, log, experiment)


def open_target(choice: BenchmarkChoice) -> Benchmark | suites.OpenSuite:
    """The benchmark, or the suite of benchmarks, that ``choice`` names, paired once."""
    if choice.suite is not None:
        return suites.open_suite(choice.suite, choice.roots)
    return benchmarks.open_benchmark(choice.data, choice.split, choice.benchmark, tuple(choice.sigma))


def evaluate_and_record(ref: references.ModelRef, target: Benchmark | suites.OpenSuite, settings: EvalSettings,
                        tracking_uri: str, out: Path, log: bool = True,
                        experiment: str = EXPERIMENT) -> tuple[dict[str, Any], str | None]:
    """``evaluate``, then the report and grid under ``out`` (a suite: each benchmark's under
    ``out/<benchmark>``, the joined report beside them) and, with ``log``, the MLflow evaluation run."""
    model = references.load(ref, tracking_uri)
    if isinstance(target, suites.OpenSuite):
        parts, files = {}, {}
        for name, benchmark in target.benchmarks.items():
            parts[name], written = _evaluate_and_write(ref, model, benchmark, settings, tracking_uri, out / name)
            files |= {f"{name}/{key}": path for key, path in written.items()}
        report = suites.join_reports(ref, target, parts, settings.grid_cases)
        files |= write_report(report, out)
    else:
        report, files = _evaluate_and_write(ref, model, target, settings, tracking_uri, out)
    run_id = log_evaluation(report, files, tracking_uri, experiment) if log else None
    return report, run_id


def _evaluate_and_write(ref, model, benchmark: Benchmark, settings: EvalSettings, tracking_uri: str,
                        out: Path) -> tuple[dict[str, Any], dict[str, Path]]:
    settings = settings.resolved(benchmark.layout)
    report = evaluate(ref, benchmark, settings, tracking_uri, model)
    return report, write_report(report, out, grid(model.to("cpu"), benchmark, report, settings))
