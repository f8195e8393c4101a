"""Promote a registered model version to `champion` if it beats the current one; or roll back (see --help).

    cpl-promote --model models:/cpl-restore/4                  # gate, then move aliases
    cpl-promote --model models:/cpl-restore/4 --dry-run        # print the decision only
    cpl-promote --rollback --reason "artifacts on night shots"  # previous-champion -> champion
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as `python pipelines/promote.py` (how `ray job submit` runs it)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipelines.core.cli import Command, Options  # noqa: E402
from pipelines.evaluation.config import add_benchmark_flags  # noqa: E402
from pipelines.registry import config  # noqa: E402


def parser() -> Command:
    """The command line: each flag sets a config key."""
    cli = Command("cpl-promote", config.PromoteConfig, config.HELP, plan=config.plan, dry_run_runs=True,
                  dry_run_help="print the resolved config, then evaluate and print the decision; change nothing")
    cli.flag("--model", "model", "the challenger: models:/<name>/<version> or models:/<name>@<alias>")
    cli.flag("--rollback", "rollback", "make previous-champion the champion again", action="store_true")
    cli.flag("--name", "name", "registered model to roll back")
    cli.flag("--reason", "reason", "why (recorded with a rollback)")
    cli.flag("--margin", "gate.margin_db", "least mean PSNR gain in dB", type=float)
    cli.flag("--tolerance", "gate.tolerance_db", "largest PSNR loss in dB allowed on any task", type=float)
    cli.flag("--out", "out", "folder for the reports (none: a temporary one)")
    add_benchmark_flags(cli)
    return cli


def promote(settings: config.PromoteConfig, options: Options) -> int:
    """The work behind the command line; a dry run decides but changes nothing."""
    from pipelines.registry import command  # torch and MLflow load only past the config check

    return command.run(settings, dry_run=options.dry_run)


def main(argv: list[str] | None = None) -> int:
    """Run the command line ``argv`` (default: ``sys.argv[1:]``); returns the exit status."""
    return parser().main(argv, promote)


if __name__ == "__main__":
    sys.exit(main())
