"""Promote a registered model version to `champion` if it beats the current one; or roll back.

    python pipelines/promote.py --model models:/cpl-restore/4                  # gate, then move aliases
    python pipelines/promote.py --model models:/cpl-restore/4 --dry-run        # print the decision only
    python pipelines/promote.py --model models:/cpl-restore/4 --data s3://bucket/datasets/five_task
    python pipelines/promote.py --rollback --reason "artifacts on night shots"  # previous-champion -> champion

The challenger and the current champion are evaluated on the same frozen set (--data; default
"samples", see pipelines/evaluate.py). The gate passes when the mean PSNR gain over the champion across
tasks is at least --margin dB and no task loses more than --tolerance dB; the first model passes when it
beats the degraded input on every task. Passing moves `champion` to the challenger and the old champion
to `previous-champion`. Every decision is recorded in version tags, the version description and a run
in the MLflow experiment cpl-promotions. Tracking: MLFLOW_TRACKING_URI, else outputs/mlflow.db.

Exit status: 0 when the gate passes (or the rollback is done); 1 when the gate refuses; 2 on an error
(one line on stderr), including a champion that changed while the challenger was being evaluated.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

if __package__ in (None, ""):  # run as `python pipelines/promote.py` (how `ray job submit` runs it)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipelines.core import storage  # noqa: E402
from pipelines.core.cli import positive_int, tile_size  # noqa: E402

REFUSED, ERROR = 1, 2


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python pipelines/promote.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument("--model", help="the challenger: models:/<name>/<version> or models:/<name>@<alias>")
    action.add_argument("--rollback", action="store_true", help="make previous-champion the champion again")
    parser.add_argument("--name", default="cpl-restore", help="registered model to roll back (default: cpl-restore)")
    parser.add_argument("--reason", default="", help="why (recorded with a rollback)")
    parser.add_argument("--data", default="samples", help="frozen benchmark: dataset URI, paired folder, or samples")
    parser.add_argument("--split", default="test", choices=("train", "val", "test"),
                        help="split of a published dataset (default: test)")
    parser.add_argument("--margin", type=float, default=0.05, help="least mean PSNR gain in dB (default: 0.05)")
    parser.add_argument("--tolerance", type=float, default=0.10,
                        help="largest PSNR loss in dB allowed on any task (default: 0.10)")
    parser.add_argument("--dry-run", action="store_true", help="evaluate and print the decision; change nothing")
    parser.add_argument("--out", type=Path, help="folder for the reports (default: a temporary one)")
    parser.add_argument("--tile", type=tile_size, default=512, help="tile size for large images; 0: whole")
    parser.add_argument("--batch-size", type=positive_int, default=8, help="pairs of equal size per forward pass")
    parser.add_argument("--workers", type=int, default=0, help="Ray actors per evaluation (0: in process)")
    parser.add_argument("--gpu", action="store_true", help="evaluate on GPU")
    args = parser.parse_args(argv)
    if args.margin < 0 or args.tolerance < 0:
        parser.error("--margin and --tolerance must be non-negative")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="cpl-promote-") as scratch:
        out = args.out or Path(scratch)
        try:
            from pipelines.evaluation import scoring as evaluation
            from pipelines.registry import promotion  # torch and MLflow load only past the argument check

            if args.rollback:
                record = promotion.rollback(args.name, args.reason, out)
                print(f"{args.name}: champion v{record['champion_before']} -> v{record['champion']}; "
                      f"previous-champion: {record['previous_champion'] or 'none'}")
                return 0
            settings = evaluation.EvalSettings(tile=args.tile, batch_size=args.batch_size, workers=args.workers,
                                               use_gpu=args.gpu)
            decision = promotion.propose(args.model, args.data, promotion.Gate(args.margin, args.tolerance),
                                         settings, out, args.split)
            print(decision.markdown(), end="")
            if not args.dry_run:
                promotion.apply(decision, out)
        except (ValueError, ConnectionError, RuntimeError, storage.StorageError) as err:
            print(f"error: {err}", file=sys.stderr)
            return ERROR
    if args.dry_run:
        print("dry run: the registry is unchanged")
    elif decision.promote:
        print(f"{decision.name}: champion is now v{decision.challenger}"
              + (f" (previous-champion: v{decision.champion})" if decision.champion else ""))
    return 0 if decision.promote else REFUSED


if __name__ == "__main__":
    sys.exit(main())
