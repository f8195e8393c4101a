"""Train CPL with Ray Train + DeepSpeed, track it in MLflow, and register the model (see --help).

    cpl-train                                       # the embedded default: a few minutes on CPU
    cpl-train --smoke                               # the same path, a few steps (CI, first checks)
    cpl-train --config configs/train_five_task.yaml [--set optim.lr=1e-4 ...] [--name RUN]
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as `python pipelines/train.py` (how `ray job submit` runs it)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipelines.core.cli import Command, Options  # noqa: E402
from pipelines.training.config import HELP, SMOKE, TrainConfig  # noqa: E402


def parser() -> Command:
    """The command line: each flag sets a config key."""
    cli = Command("cpl-train", TrainConfig, HELP, plan=plan)
    cli.flag("--name", "run.name", "run name; reusing one resumes that run")
    cli.preset("--smoke", SMOKE, "a few steps on one CPU worker, same code path (applied before the flags)")
    return cli


def plan(config: TrainConfig, options: Options) -> dict:
    """What ``--dry-run`` prints beside the config."""
    from pipelines.training import driver  # Ray and MLflow load only past the config check

    return {"plan": driver.plan(config)}


def train(config: TrainConfig, options: Options) -> int:
    """The work behind the command line: train, then print the summary."""
    from pipelines.training import driver

    print("\n".join(driver.train(config, verbose=options.verbose).lines()))
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run the command line ``argv`` (default: ``sys.argv[1:]``); returns the exit status."""
    return parser().main(argv, train)


if __name__ == "__main__":
    sys.exit(main())
