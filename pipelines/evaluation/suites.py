"""Benchmark suites: a paper's table in one command.

A suite file (``configs/benchmarks/*.yaml``) names the published benchmarks of one table, where each is
(``roots``, overridden with ``--set roots.<benchmark>=...``), and the table's columns::

    title: Five tasks (CPL Table II)
    roots: {cbsd68: benchmarks/CBSD68, rain100l: benchmarks/Rain100L, ...}
    sigma: [25]                       # CBSD68's noise levels
    columns:
      - {label: Noise, benchmark: cbsd68, task: noise_25}
      - {label: Rain, benchmark: rain100l, task: rain}
    published:                        # the paper's rows, shown under ours for comparison
      PromptIR+CPL: ["31.41/.887", ...]

``open_suite`` pairs every benchmark once; ``evaluate_suite`` scores each under its own protocol and
joins the reports into one whose tasks are ``<benchmark>/<task>`` (what the promotion gate compares),
plus ``table``: the columns' PSNR/SSIM (the protocol's headline metrics) and their average.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import Field, model_validator

from ..core import provenance, references
from ..core.config import ConfigError, Frozen, load_config
from ..core.storage import StorageError
from . import benchmarks
from .benchmarks import Benchmark
from .config import Layout, Sigma
from .scoring import means, worst_and_best


class Column(Frozen):
    label: str  # as the paper heads it
    benchmark: Layout
    task: str  # the task of that benchmark's report (cbsd68: noise_<sigma>; cdd11: its class)


class Suite(Frozen):
    """A suite file, validated."""

    title: str
    source: str = ""  # which paper table it mirrors
    roots: dict[Layout, str]
    sigma: list[Sigma] = [15, 25, 50]
    ssim: bool = True  # cells are PSNR/SSIM; False: PSNR only (CDD-11's table)
    columns: list[Column] = Field(min_length=1)
    published: dict[str, list[str]] = {}  # the paper's rows, one cell per column plus the average

    @model_validator(mode="after")
    def _consistent(self) -> "Suite":
        for column in self.columns:
            if column.benchmark not in self.roots:
                raise ValueError(f"column {column.label!r}: no root for benchmark {column.benchmark}")
        for label, cells in self.published.items():
            if len(cells) != len(self.columns) + 1:
                raise ValueError(f"published row {label!r}: {len(cells)} cells for {len(self.columns)} columns "
                                 "and the average")
        return self


@dataclass
class OpenSuite:
    """A suite whose benchmarks are paired: what evaluation and the promotion gate run on."""

    path: str
    suite: Suite
    benchmarks: dict[str, Benchmark]

    @property
    def label(self) -> str:
        return f"suite {Path(self.path).stem}"

    def describe(self) -> dict[str, Any]:
        digest = hashlib.sha256(json.dumps({name: b.digest for name, b in sorted(self.benchmarks.items())})
                                .encode()).hexdigest()
        skipped = {f"{name}: {reason}": ids for name, b in self.benchmarks.items() for reason, ids in b.skipped.items()}
        return {"kind": "suite", "uri": self.path, "label": self.label, "digest": digest, "split": None,
                "version": None, "layout": None, "units": sum(len(b.units) for b in self.benchmarks.values()),
                "skipped": skipped, "benchmarks": {name: b.describe() for name, b in self.benchmarks.items()}}


def load_suite(path: str | Path, roots: dict[str, str] | None = None) -> Suite:
    """The suite file at ``path``, with ``roots`` over its own.

    Raises:
        ConfigError: naming the file and the key at fault.
    """
    overrides = [f"roots.{name}={json.dumps(root)}" for name, root in (roots or {}).items()]
    try:
        return load_config(Suite, path, overrides, defaults={})
    except ConfigError as err:
        raise ConfigError(f"suite {path}: {str(err).removeprefix('config error: ')}") from None


def open_suite(path: str | Path, roots: dict[str, str] | None = None) -> OpenSuite:
    """Load the suite and pair each of its benchmarks (once, however many columns it feeds).

    Raises:
        ConfigError, StorageError, DataError: naming the suite file, root or benchmark at fault.
    """
    suite = load_suite(path, roots)
    opened = {}
    for name in dict.fromkeys(column.benchmark for column in suite.columns):
        try:
            opened[name] = benchmarks.open_benchmark(suite.roots[name], layout=name, sigmas=tuple(suite.sigma))
        except StorageError as err:
            raise StorageError(f"{err} (suite {path}: set {name}'s root with --set roots.{name}=<folder or "
                               "s3://...>)") from None
    return OpenSuite(str(path), suite, opened)


def join_reports(ref: references.ModelRef, suite: OpenSuite, reports: dict[str, dict[str, Any]],
                 shown: int) -> dict[str, Any]:
    """One report of the suite from its benchmarks' reports: tasks and cases prefixed ``<benchmark>/``,
    the ``shown`` worst and best cases, and the paper's ``table``."""
    tasks = {f"{name}/{task}": summary for name, report in reports.items() for task, summary in report["tasks"].items()}
    cases = [row | {"id": f"{name}/{row['id']}", "task": f"{name}/{row['task']}"}
             for name, report in reports.items() for row in report["cases"]]
    headlines = {name: report["protocol"]["headline"] for name, report in reports.items()}
    return {
        "model": ref.as_dict(),
        "data": suite.describe(),
        "protocol": {"name": "per benchmark", "tile": next(iter(reports.values()))["protocol"]["tile"],
                     "benchmarks": {name: report["protocol"] for name, report in reports.items()}},
        "tasks": tasks,
        "recipes": {},
        "all": means(cases),
        "table": table(suite.suite, tasks, headlines),
        **worst_and_best(cases, shown),
        "seconds": round(sum(report["seconds"] for report in reports.values()), 2),
        "code_version": provenance.code_version(),
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "cases": cases,
    }


def table(suite: Suite, tasks: dict[str, dict[str, Any]], headlines: dict[str, list[str]]) -> dict[str, Any]:
    """The paper-shaped table: per column the model's and the input's (PSNR, SSIM) in the benchmark's headline
    metrics, and their averages over the columns."""
    rows: dict[str, list[list[float]]] = {"model": [], "input": []}
    for column in suite.columns:
        key = f"{column.benchmark}/{column.task}"
        if key not in tasks:
            present = [k.split("/", 1)[1] for k in tasks if k.startswith(column.benchmark + "/")]
            raise ConfigError(f"suite column {column.label!r}: {column.benchmark} has no task {column.task!r} "
                              f"(it has: {', '.join(present)})")
        psnr, ssim = headlines[column.benchmark]
        for which in rows:
            rows[which].append([tasks[key][which][psnr], tasks[key][which][ssim]])
    return {"title": suite.title, "source": suite.source, "ssim": suite.ssim,
            "columns": [column.label for column in suite.columns],
            "rows": {which: {"cells": cells, "average": np.mean(cells, axis=0).tolist()}
                     for which, cells in rows.items()},
            "published": suite.published}


def _cell(values: list[float], ssim: bool) -> str:
    psnr_text = f"{values[0]:.2f}"
    return f"{psnr_text}/{values[1]:.3f}".replace("/0.", "/.") if ssim else psnr_text


def table_markdown(table: dict[str, Any], model_label: str) -> str:
    """``table`` as the paper prints it: a row for the degraded input, ours, then the paper's rows."""
    lines = [f"## {table['title']}", "", "| | " + " | ".join(table["columns"]) + " | Avg |",
             "|---|" + "---:|" * (len(table["columns"]) + 1)]
    for which, label in (("input", "degraded input"), ("model", model_label)):
        row = table["rows"][which]
        cells = [_cell(values, table["ssim"]) for values in row["cells"] + [row["average"]]]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    for label, cells in table["published"].items():
        lines.append(f"| {label} (published) | " + " | ".join(cells) + " |")
    if table["source"]:
        lines += ["", f"Published rows: {table['source']}."]
    return "\n".join(lines) + "\n"
