"""Restore images with a registered model (default: the champion) or any model reference (see --help).

    cpl-restore --input photo.jpg --output restored/
    cpl-restore --input photos/ --output restored/ --model models:/cpl-restore/3
    cpl-restore --input s3://bucket/in/ --output s3://bucket/out/ --workers 4 --gpu
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as `python pipelines/restore.py` (how `ray job submit` runs it)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipelines.core.cli import Command, Options  # noqa: E402
from pipelines.serving import config  # noqa: E402


def parser() -> Command:
    """The command line: each flag sets a config key."""
    cli = Command("cpl-restore", config.RestoreConfig, config.HELP, plan=config.plan)
    cli.flag("--model", "model", "model reference")
    cli.flag("--input", "input", "image file, folder or s3:// prefix")
    cli.flag("--output", "output", "folder or s3:// prefix (or a file name for one input)")
    cli.flag("--format", "restore.format", "output encoding: png (lossless), jpg, webp or tif")
    cli.flag("--tile", "restore.tile", "tile size in pixels for large images; 0: whole images", type=int)
    cli.flag("--overwrite", "restore.overwrite", "restore again images whose output exists", action="store_true")
    cli.flag("--workers", "restore.workers", "Ray actors for large batches (0: in process)", type=int)
    cli.flag("--gpu", "restore.use_gpu", "one GPU per worker (or for this process)", action="store_true")
    return cli


def restore(settings: config.RestoreConfig, options: Options) -> int:
    """The work behind the command line."""
    from pipelines.serving import command  # torch and MLflow load only past the config check

    return command.run(settings)


def main(argv: list[str] | None = None) -> int:
    """Run the command line ``argv`` (default: ``sys.argv[1:]``); returns the exit status."""
    return parser().main(argv, restore)


if __name__ == "__main__":
    sys.exit(main())
