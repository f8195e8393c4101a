"""Evaluate a model on a frozen benchmark: per-task PSNR/SSIM, with the degraded input as baseline (see --help).

    cpl-evaluate --model models:/cpl-restore@champion --data samples
    cpl-evaluate --model models:/cpl-restore/3 --data s3://bucket/datasets/five_task --out report/
    cpl-evaluate --model outputs/runs/<run>/step-00000200 --data ~/benchmarks/ --no-log
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as `python pipelines/evaluate.py` (how `ray job submit` runs it)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipelines.core.cli import Command, Options  # noqa: E402
from pipelines.evaluation import config  # noqa: E402


def parser() -> Command:
    """The command line: each flag sets a config key."""
    cli = Command("cpl-evaluate", config.EvaluateConfig, config.HELP, plan=config.plan)
    cli.flag("--model", "model", "model reference (see above)")
    config.add_benchmark_flags(cli)
    cli.flag("--out", "out", "report folder (none: outputs/evaluations/<time>)")
    cli.flag("--experiment", "experiment", "MLflow experiment of the evaluation run")
    cli.flag("--no-log", "log", "write the report only; no MLflow run", action="store_const", const=False)
    return cli


def evaluate(settings: config.EvaluateConfig, options: Options) -> int:
    """The work behind the command line."""
    from pipelines.evaluation import command  # torch and MLflow load only past the config check

    return command.run(settings)


def main(argv: list[str] | None = None) -> int:
    """Run the command line ``argv`` (default: ``sys.argv[1:]``); returns the exit status."""
    return parser().main(argv, evaluate)


if __name__ == "__main__":
    sys.exit(main())
