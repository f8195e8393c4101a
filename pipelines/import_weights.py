"""Register a published PromptIR or CPLIR checkpoint as a cpl-restore model version (see --help).

    cpl-import-weights --format promptir --checkpoint ckpt/model.ckpt
    cpl-import-weights --format cplir --checkpoint s3://bucket/weights/CPLIR_Weatherbench.pth --name cplir
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as `python pipelines/import_weights.py` (how `ray job submit` runs it)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipelines.core.cli import Command, Options  # noqa: E402
from pipelines.registry import config  # noqa: E402


def parser() -> Command:
    """The command line: each flag sets a config key."""
    cli = Command("cpl-import-weights", config.ImportConfig, config.IMPORT_HELP, plan=config.import_plan)
    cli.flag("--format", "format", "whose checkpoint: promptir (Lightning .ckpt) or cplir (BasicSR .pth)")
    cli.flag("--checkpoint", "checkpoint", "the checkpoint file, local or s3://")
    cli.flag("--name", "name", "registered model that gets the new version")
    cli.flag("--param-key", "param_key", "cplir: which BasicSR entry (auto: params_ema when present)")
    cli.flag("--experiment", "experiment", "MLflow experiment of the import run")
    return cli


def import_weights(settings: config.ImportConfig, options: Options) -> int:
    """The work behind the command line."""
    from pipelines.registry import imports  # torch and MLflow load only past the config check

    return imports.run(settings)


def main(argv: list[str] | None = None) -> int:
    """Run the command line ``argv`` (default: ``sys.argv[1:]``); returns the exit status."""
    return parser().main(argv, import_weights)


if __name__ == "__main__":
    sys.exit(main())
