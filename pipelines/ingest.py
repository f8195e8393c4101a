"""Import a real paired training set in its release layout as a versioned, sharded dataset (see --help).

    cpl-ingest --layout <rain100l|ots|its|gopro|lol|cdd11|clean|paired> --source <folder|s3://...>
               --out <folder|s3://...> --name <dataset> [--seed N] [--dry-run]
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as `python pipelines/ingest.py` (how `ray job submit` runs it)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipelines.core.cli import Command, Options  # noqa: E402
from pipelines.data import ingestion  # noqa: E402
from pipelines.data.ingestion import IngestConfig  # noqa: E402


def parser() -> Command:
    """The command line: each flag sets a config key."""
    cli = Command("cpl-ingest", IngestConfig, ingestion.HELP, plan=ingestion.dry_run_plan)
    cli.flag("--layout", "ingest.layout", "the set's release layout (see above)")
    cli.flag("--source", "source", "the set as downloaded: a folder or an s3:// prefix")
    cli.flag("--out", "output.uri", "where datasets live (folder or s3:// prefix)")
    cli.flag("--name", "output.name", "dataset name: versions go to <out>/<name>/v=<version>/")
    cli.flag("--seed", "ingest.seed", "salts the split by content: another seed holds out other images", type=int)
    cli.flag("--task", "ingest.task", "the task label of every pair (default: the layout's)")
    return cli


def ingest(config: IngestConfig, options: Options) -> int:
    """The work behind the command line."""
    return ingestion.run(config)


def main(argv: list[str] | None = None) -> int:
    """Run the command line ``argv`` (default: ``sys.argv[1:]``); returns the exit status."""
    return parser().main(argv, ingest)


if __name__ == "__main__":
    sys.exit(main())
