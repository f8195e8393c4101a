"""Evaluate a model on a frozen benchmark: per-task PSNR/SSIM, with the degraded input as baseline.

    python pipelines/evaluate.py --model models:/cpl-restore@champion --data samples
    python pipelines/evaluate.py --model models:/cpl-restore/3 --data s3://bucket/datasets/five_task --out report/
    python pipelines/evaluate.py --model outputs/checkpoints/run/checkpoint_x --data ~/benchmarks/ --no-log

--model: models:/<name>@<alias>, models:/<name>/<version>, models:/<model id>, runs:/<run id>/model,
or a checkpoint (model.pt, or a Ray Train checkpoint folder), local or s3://.
--data: a dataset published by synthesize.py (its LATEST, or .../v=<version>; the --split, default
test), a folder of paired benchmarks (<task>/input/ and <task>/target/, paired by file name; see
docs/evaluation.md), or "samples" (the five tasks on the bundled photos the quickstart holds out).

Writes report.json, report.md, cases.jsonl and grid.png (worst and best cases) under --out and logs them
as an MLflow evaluation run linked to the model version. Tracking: MLFLOW_TRACKING_URI, else the local
store outputs/mlflow.db. Exit status 0, or 2 with one line on stderr naming what is at fault.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as `python pipelines/evaluate.py` (how `ray job submit` runs it)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipelines.core import storage  # noqa: E402
from pipelines.core.cli import positive_int, tile_size  # noqa: E402


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python pipelines/evaluate.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="model reference (see above)")
    parser.add_argument("--data", default="samples", help="benchmark: dataset URI, paired folder, or samples")
    parser.add_argument("--split", default="test", choices=("train", "val", "test"),
                        help="split of a published dataset (default: test)")
    parser.add_argument("--out", type=Path, help="report folder (default: outputs/evaluations/<time>)")
    parser.add_argument("--tile", type=tile_size, default=512, help="tile size in pixels for large images; 0: whole")
    parser.add_argument("--batch-size", type=positive_int, default=8, help="pairs of equal size per forward pass")
    parser.add_argument("--workers", type=int, default=0, help="Ray actors to spread the set over (0: in process)")
    parser.add_argument("--gpu", action="store_true", help="one GPU per worker (or for this process)")
    parser.add_argument("--experiment", default="cpl-evaluation", help="MLflow experiment of the evaluation run")
    parser.add_argument("--no-log", action="store_true", help="write the report only; no MLflow run")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    out = args.out or Path("outputs/evaluations") / time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    try:
        from pipelines.evaluation import reports as evaluation  # torch and MLflow load only past the argument check

        settings = evaluation.EvalSettings(tile=args.tile, batch_size=args.batch_size, workers=args.workers,
                                           use_gpu=args.gpu)
        report, run_id = evaluation.run(args.model, args.data, out, settings, args.split, not args.no_log,
                                        args.experiment)
    except (ValueError, ConnectionError, RuntimeError, storage.StorageError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(evaluation.markdown(report), end="")
    print(f"report: {out / 'report.json'}" + (f"\nMLflow evaluation run: {run_id}" if run_id else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
