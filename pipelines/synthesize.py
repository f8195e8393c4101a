"""Regenerate a versioned, sharded degraded/clean dataset from clean images, with Ray Data (see --help).

    cpl-synthesize --source <folder|s3://...> --out <folder|s3://...> --name <dataset> [--dry-run]
    cpl-synthesize --pack --source <folder|s3://...> --out <packed table uri>
    cpl-synthesize --clean --out <uri> --name <dataset>   # remove unpublished versions
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as `python pipelines/synthesize.py` (how `ray job submit` runs it)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipelines.core.cli import Command, Options  # noqa: E402
from pipelines.data import command  # noqa: E402
from pipelines.data.job import SynthesizeConfig  # noqa: E402


def parser() -> Command:
    """The command line: each flag sets a config key."""
    cli = Command("cpl-synthesize", SynthesizeConfig, command.HELP, plan=command.plan)
    cli.flag("--source", "source", "clean images: a folder, an s3:// prefix, or a packed table")
    cli.flag("--out", "output.uri", "where datasets live (folder or s3:// prefix); with --pack, the packed table")
    cli.flag("--name", "output.name", "dataset name: versions go to <out>/<name>/v=<version>/")
    cli.flag("--seed", "synthesis.seed", "dataset seed", type=int)
    cli.flag("--recipes", "synthesis.recipes", "comma-separated recipe or set names")
    cli.flag("--patch", "synthesis.patch", "patch side in pixels", type=int)
    cli.flag("--crops-per-image", "synthesis.crops_per_image", "patches per source image", type=int)
    cli.action("--pack", "pack --source into a Parquet table at --out, then exit")
    cli.action("--clean", "delete unpublished versions of --out/--name, then exit")
    return cli


def synthesize(config: SynthesizeConfig, options: Options) -> int:
    """The work behind the command line: synthesize, ``--pack`` or ``--clean``."""
    return command.run(config, options.action)


def main(argv: list[str] | None = None) -> int:
    """Run the command line ``argv`` (default: ``sys.argv[1:]``); returns the exit status."""
    return parser().main(argv, synthesize)


if __name__ == "__main__":
    sys.exit(main())
