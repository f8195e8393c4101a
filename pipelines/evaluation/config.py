"""What an evaluation runs with: the scoring settings (shared with the promotion gate) and the config of
``evaluate.py``, validated before torch or MLflow load."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal, get_args

from pydantic import Field, PlainValidator, TypeAdapter, ValidationError, model_validator

from ..core.config import Frozen, Tile
from ..core.tracking import resolve_tracking_uri

EXPERIMENT = "cpl-evaluation"
Split = Literal["train", "val", "test"]
# The published benchmarks read in their own layouts (pipelines/data/layouts.py, which pairs them).
Layout = Literal["cbsd68", "rain100l", "sots-outdoor", "sots-indoor", "gopro", "lol", "cdd11", "weatherbench"]
# How the literature scores them (pipelines/evaluation/protocols.py).
ProtocolName = Literal["promptir", "basicsr"]
Sigma = Annotated[int, Field(ge=1, le=255)]

HELP = """\
Evaluate a model on a frozen benchmark: per-task PSNR/SSIM, with the degraded input as baseline.

--model: models:/<name>@<alias>, models:/<name>/<version>, models:/<model id>, runs:/<run id>/model,
or a checkpoint (model.pt, or a Ray Train checkpoint folder), local or s3://.
--data: a dataset published by synthesize.py (its LATEST, or .../v=<version>; the --split, default
test), a folder of paired benchmarks (<task>/input/ and <task>/target/, paired by file name; see
docs/evaluation.md), or "samples" (the five tasks on the bundled photos the quickstart holds out).
--benchmark NAME: --data is that published benchmark as downloaded (cbsd68, rain100l, sots-outdoor,
sots-indoor, gopro, lol, cdd11, weatherbench), restored whole and scored by its paper's protocol.
--suite FILE: a paper's table in one command (configs/benchmarks/*.yaml; roots set with
--set roots.<benchmark>=<folder or s3://...>).

Writes report.json, report.md, cases.jsonl and grid.png (worst and best cases) under --out and logs them
as an MLflow evaluation run linked to the model version. Tracking: MLFLOW_TRACKING_URI, else the local
store outputs/mlflow.db.
"""


AUTO_TILE = 512


def _tile_or_auto(value: Any) -> int | str | None:
    if value == "auto":
        return value
    try:
        return TypeAdapter(Tile).validate_python(value)
    except ValidationError as err:
        raise ValueError(err.errors()[0]["msg"].removeprefix("Value error, ")) from None


TileOrAuto = Annotated[int | Literal["auto"] | None, PlainValidator(_tile_or_auto)]


class EvalSettings(Frozen):
    """How a benchmark is scored."""

    # Larger images are restored in overlapping tiles of this side; 0: whole images; auto: whole images for
    # a published benchmark (its paper's protocol), tiles of AUTO_TILE for other data.
    tile: TileOrAuto = "auto"
    protocol: ProtocolName | None = None  # None: the benchmark's own (basicsr for weatherbench), else promptir
    batch_size: int = Field(8, ge=1)  # pairs of equal size restored together
    workers: int = Field(0, ge=0)  # Ray actors; 0: in this process
    use_gpu: bool = False
    grid_cases: int = Field(4, ge=0)  # worst and best cases (by gain over the input) shown in grid.png
    progress: bool = True  # a progress bar on stderr (Ray Data's, with workers)

    def resolved(self, layout: str | None) -> "EvalSettings":
        """These settings with ``tile`` and ``protocol`` decided for a benchmark of ``layout`` (None: other data)."""
        from .protocols import for_benchmark

        tile = (None if layout else AUTO_TILE) if self.tile == "auto" else self.tile
        return self.model_copy(update={"tile": tile, "protocol": self.protocol or for_benchmark(layout)})


class BenchmarkChoice(Frozen):
    """What ``evaluate.py`` and ``promote.py`` measure on, and how it is scored."""

    data: str = "samples"
    split: Split = "test"  # of a published dataset
    benchmark: Layout | None = None  # data is a folder of this published benchmark, in its own layout
    sigma: list[Sigma] = [15, 25, 50]  # CBSD68's noise levels, one task each
    suite: Path | None = None  # a paper's table: configs/benchmarks/*.yaml, instead of data
    roots: dict[Layout, str] = {}  # where the suite's benchmarks are, over the suite file's roots
    evaluation: EvalSettings = EvalSettings()

    @model_validator(mode="after")
    def _suite_or_data(self) -> "BenchmarkChoice":
        if self.suite is not None and (self.benchmark is not None or self.data != "samples"):
            raise ValueError("suite (--suite) names its own benchmarks; it excludes data (--data) and "
                             "benchmark (--benchmark)")
        if self.roots and self.suite is None:
            raise ValueError("roots is for a suite (--suite); give one benchmark with --data")
        return self


class EvaluateConfig(BenchmarkChoice):
    """``evaluate.py``: which model, on which benchmark, and where the report goes."""

    model: str  # a model reference (see HELP)
    out: Path | None = None  # None: outputs/evaluations/<UTC time>
    log: bool = True  # an MLflow evaluation run beside the report files
    experiment: str = EXPERIMENT


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
    command.flag("--sigma", "sigma", "cbsd68's noise levels", type=int, nargs="+")
    command.flag("--suite", "suite", "a paper's table: a suite file (configs/benchmarks/*.yaml)")
    command.flag("--protocol", "evaluation.protocol", "scoring protocol: promptir or basicsr "
                 "(default: the benchmark's own)")
    command.flag("--tile", "evaluation.tile", "tile size in pixels for large images; 0: whole images; "
                 "auto: whole for --benchmark/--suite, else 512")
    command.flag("--batch-size", "evaluation.batch_size", "pairs of equal size per forward pass", type=int)
    command.flag("--workers", "evaluation.workers", "Ray actors to spread the set over (0: in process)", type=int)
    command.flag("--gpu", "evaluation.use_gpu", "one GPU per worker (or for this process)", action="store_true")
