"""Restore images with a registered model (default: the champion) or any model reference.

    python pipelines/restore.py --input photo.jpg --output restored/
    python pipelines/restore.py --input photos/ --output restored/ --model models:/cpl-restore/3
    python pipelines/restore.py --input s3://bucket/in/ --output s3://bucket/out/ --workers 4 --gpu

--input is a file, a folder or an s3:// prefix (JPEG, PNG, WebP, BMP, TIFF; subfolders kept); --output is a
folder or prefix, or a file name for a single input. Large images are restored in overlapping tiles.
Outputs are written atomically; ones already there are kept unless --overwrite, so re-running a killed
job continues it. A corrupt input in a folder is reported and skipped. Tracking (for models:/ references):
MLFLOW_TRACKING_URI, else outputs/mlflow.db.

Exit status 0 when every readable image was restored (skips are listed on stderr); 2 with one line on
stderr when nothing could be done: unknown model or alias, unreadable input, or a single bad file.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as `python pipelines/restore.py` (how `ray job submit` runs it)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipelines.core import storage  # noqa: E402
from pipelines.core.cli import tile_size  # noqa: E402

DEFAULT_MODEL = "models:/cpl-restore@champion"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python pipelines/restore.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=DEFAULT_MODEL, help=f"model reference (default: {DEFAULT_MODEL})")
    parser.add_argument("--input", required=True, help="image file, folder or s3:// prefix")
    parser.add_argument("--output", required=True, help="folder or s3:// prefix (or a file name for one input)")
    parser.add_argument("--format", default="png", choices=("png", "jpg", "webp", "tif"),
                        help="output encoding (default: png, lossless)")
    parser.add_argument("--tile", type=tile_size, default=512, help="tile size in pixels for large images; 0: whole")
    parser.add_argument("--overwrite", action="store_true", help="restore again images whose output exists")
    parser.add_argument("--workers", type=int, default=0, help="Ray actors for large batches (0: in process)")
    parser.add_argument("--gpu", action="store_true", help="one GPU per worker (or for this process)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        from pipelines.core import references as models
        from pipelines.core import tracking
        from pipelines.serving import restoring  # torch and MLflow load only past the argument check

        uri = tracking.resolve_tracking_uri()
        if models.is_mlflow(args.model):
            tracking.check_reachable(uri)
        settings = restoring.RestoreSettings(tile=args.tile, format=args.format, overwrite=args.overwrite,
                                             workers=args.workers, use_gpu=args.gpu)
        summary = restoring.restore_images(models.resolve(args.model, uri), args.input, args.output, settings, uri)
    except (ValueError, ConnectionError, RuntimeError, storage.StorageError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if len(summary.outcomes) == 1 and summary.skipped and len(next(iter(summary.skipped.values()))) == 1:
        (reason, (name,)), = summary.skipped.items()  # a single input: its failure is the error
        print(f"error: {name}: {reason}", file=sys.stderr)
        return 2
    first, *skips = summary.lines()
    print(first)
    for line in skips:
        print(line, file=sys.stderr)
    if skips and not summary.outcomes.keys() - summary.skipped.keys():
        print(f"error: {args.input}: no image could be restored", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
