"""What an evaluation runs with: the scoring settings (shared with the promotion gate) and the config of
``evaluate.py``, validated before torch or MLflow load."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, get_args

from pydantic import Field

from ..core.config import Frozen, Tile
from ..core.tracking import resolve_tracking_uri

EXPERIMENT = "cpl-evaluation"
Split = Literal["train", "val", "test"]
# The published benchmarks read in their own layouts (pipelines/evaluation/layouts.py, which pairs them).
Layout = Literal["rain100l", "sots-outdoor", "gopro", "lol", "cdd11"]

HELP = """\
Evaluate a model on a frozen benchmark: per-task PSNR/SSIM, with the degraded input as baseline.

--model: models:/<name>@<alias>, models:/<name>/<version>, models:/<model id>, runs:/<run id>/model,
or a checkpoint (model.pt, or a Ray Train checkpoint folder), local or s3://.
--data: a dataset published by synthesize.py (its LATEST, or .../v=<version>; the --split, default
test), a folder of paired benchmarks (<task>/input/ and <task>/target/, paired by file name; see
docs/evaluation.md), or "samples" (the five tasks on the bundled photos the quickstart holds out).

Writes report.json, report.md, cases.jsonl and grid.png (worst and best cases) under --out and logs them
as an MLflow evaluation run linked to the model version. Tracking: MLFLOW_TRACKING_URI, else the local
store outputs/mlflow.db.
"""


class EvalSettings(Frozen):
    """How a benchmark is scored."""

    tile: Tile = 512  # larger images are restored in overlapping tiles of this side; 0: whole images
    batch_size: int = Field(8, ge=1)  # pairs of equal size restored together
    workers: int = Field(0, ge=0)  # Ray actors; 0: in this process
    use_gpu: bool = False
    grid_cases: int = Field(4, ge=0)  # worst and best cases (by gain over the input) shown in grid.png
    progress: bool = True  # a progress bar on stderr (Ray Data's, with workers)


class EvaluateConfig(Frozen):
    """``evaluate.py``: which model, on which benchmark, and where the report goes."""

    model: str  # a model reference (see HELP)
    data: str = "samples"
    split: Split = "test"  # of a published dataset
    benchmark: Layout | None = None  # data is a folder of this published benchmark, in its own layout
    out: Path | None = None  # None: outputs/evaluations/<UTC time>
    log: bool = True  # an MLflow evaluation run beside the report files
    experiment: str = EXPERIMENT
    evaluation: EvalSettings = EvalSettings()


def plan(config: EvaluateConfig, options: Any = None) -> dict[str, Any]:
    """What ``--dry-run`` shows beside the config: where the report goes and which tracking store is used."""
    return {"plan": {"out": str(config.out or "outputs/evaluations/<UTC time>"), "log": config.log,
                     "tracking_uri": resolve_tracking_uri()}}


def add_benchmark_flags(command: Any) -> None:
    """Add to ``command`` (a ``core.cli.Command``) the flags of ``evaluate.py`` and ``promote.py`` alike:
    the benchmark and how it is scored."""
    command.flag("--data", "data", "benchmark: a published dataset URI, a paired folder, or samples")
    command.flag("--split", "split", "split of a published dataset: train, val or test")
    command.flag("--benchmark", "benchmark", "--data is this published benchmark in its own layout: "
                 + ", ".join(get_args(Layout)))
    command.flag("--tile", "evaluation.tile", "tile size in pixels for large images; 0: whole images", type=int)
    command.flag("--batch-size", "evaluation.batch_size", "pairs of equal size per forward pass", type=int)
    command.flag("--workers", "evaluation.workers", "Ray actors to spread the set over (0: in process)", type=int)
    command.flag("--gpu", "evaluation.use_gpu", "one GPU per worker (or for this process)", action="store_true")
