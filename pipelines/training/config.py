"""The training job's configuration: every section, its defaults, and the checks that run on the driver.

A file under ``configs/`` plus ``--set`` overrides is validated into ``TrainConfig`` before Ray starts,
so an unknown key or a bad value fails at once, naming the key (see ``pipelines.config``).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

import cpl_model

from ..core.config import Frozen
from ..core.runtime import RayConfig
from ..core.tracking import resolve_tracking_uri
from ..data.patches import MixEntry
from ..data.sources import SAMPLES
from ..data.synthesis import QUICKSTART, SynthesisConfig

HELP = """\
Train CPL with Ray Train + DeepSpeed, track it in MLflow, and register the model.

Without --config, the embedded default: local Ray, the sample photos, the tiny preset, a local MLflow
store; a few minutes on CPU. Locations come from config or the environment: RAY_ADDRESS,
MLFLOW_TRACKING_URI (wins over tracking.uri), run.storage and data.dataset/data.source as folders or
s3:// URIs (endpoint and credentials from the standard AWS variables). Re-running with the same run
name resumes it; --set model.init=models:/cpl-restore@champion (any model reference, or a checkpoint)
starts from that model's weights. Config sections: run, model, loss, optim, data, validation,
checkpoint, scaling, tracking, ray (see configs/train_*.yaml). On a cluster:

    ray job submit --working-dir . --runtime-env configs/runtime_env.yaml -- \\
        python pipelines/train.py --config configs/train_five_task.yaml
"""

# --smoke: the whole path (data, DeepSpeed, checkpoint, validation, registration) on a budget of steps.
SMOKE = ["optim.max_steps=4", "optim.warmup_steps=1", "checkpoint.every=2", "loss.cpr.enabled=true",
         "loss.cpr.start_step=2", "scaling.workers=1", "scaling.use_gpu=false", "validation.crops_per_recipe=1"]


class RunSection(Frozen):
    name: str | None = Field(None, pattern=r"^[A-Za-z0-9_.-]+$")  # None: a fresh name; a used name resumes
    seed: int = Field(0, ge=0)
    storage: str = "outputs/runs"  # Ray Train storage_path for checkpoints: a folder or s3://bucket/prefix
    max_failures: int = Field(2, ge=-1)  # worker-group restarts from the last checkpoint; -1: unlimited
    # How long a worker group waits for room on the cluster, at the start and after a node is lost, before the
    # run fails (submitted again under its name, it resumes). Minutes: an autoscaler takes that to add a node.
    capacity_wait_s: float = Field(600, gt=0)


class ModelSection(Frozen):
    preset: str = "tiny"
    prompt: str = "sparse"
    overrides: dict[str, Any] = {}  # ModelConfig fields, e.g. {top_k: 2}
    # Zero the output projection, so training starts from the identity (the global residual): a model
    # is never worse than its input at step 0, which short runs feel most. A start from scratch only.
    identity_init: bool = True
    # Start from a model's weights instead: models:/<name>@<alias>, models:/<name>/<version>, runs:/<run>/model,
    # or a model.pt or checkpoint folder (local or s3://). None: from scratch. Its network must be the one
    # preset, prompt and overrides build; dense and sparse prompts may differ (training/initial.py).
    init: str | None = Field(None, min_length=1)

    @model_validator(mode="after")
    def _buildable(self) -> "ModelSection":
        cpl_model.preset(self.preset, prompt=self.prompt, **self.overrides)  # raises ValueError naming the field
        return self


class LossSection(Frozen):
    l1_weight: float = Field(1.0, ge=0)  # the weight of the reconstruction term, whichever its form
    # The paper's L1, or minus each image's PSNR (cpl_model.losses). The quickstart's: PSNR, which weighs
    # the tasks whose inputs are already close to the target (blur) as much as the others.
    reconstruction: Literal["l1", "psnr"] = "psnr"
    # cpl_model.CPRConfig fields (enabled, weight, form, negatives, start_step, ...). Off in the quickstart:
    # at its scale every CPR setting measured lowers held-out PSNR (docs/training.md).
    cpr: dict[str, Any] = {"enabled": False}

    def build(self) -> cpl_model.LossConfig:
        return cpl_model.LossConfig.from_dict({"l1_weight": self.l1_weight, "reconstruction": self.reconstruction,
                                               "cpr": self.cpr})

    @model_validator(mode="after")
    def _valid(self) -> "LossSection":
        self.build()
        return self


class OptimSection(Frozen):
    lr: float = Field(2e-3, gt=0)  # the quickstart's tiny model; the paper's protocol uses 2e-4 (configs/)
    min_lr: float = Field(0.0, ge=0)  # the cosine schedule's floor
    weight_decay: float = Field(0.01, ge=0)
    betas: tuple[float, float] = (0.9, 0.999)
    warmup_steps: int = Field(15, ge=0)
    max_steps: int = Field(1000, ge=1)  # optimiser steps
    grad_clip: float = Field(1.0, ge=0)  # 0: off
    accumulation: int = Field(1, ge=1)  # micro-batches per optimiser step
    zero_stage: Literal[0, 1, 2] = 1
    precision: Literal["auto", "fp32", "bf16"] = "auto"  # auto: bf16 on GPU, fp32 on CPU
    # An EMA of the weights, which then is what is validated, checkpoint-scored and registered. 0: off; the
    # authors' config uses 0.999; a decay d averages about the last 1 / (1 - d) steps (the quickstart's: 100).
    ema_decay: float = Field(0.99, ge=0, lt=1)


class DataSection(Frozen):
    dataset: str | None = None  # a dataset published by synthesize.py (<out>/<name>); None: online synthesis
    version: str = "LATEST"
    # Published datasets mixed per pass, each {uri, repeat, version, sigmas} (ingest.py's or synthesize.py's):
    # fresh random crops, flips and rotations every pass, online noise for clean images (data/patches.py).
    datasets: list[MixEntry] = []
    patch: int = Field(128, ge=16)  # the side of the patches cut from data.datasets
    source: str = SAMPLES  # online synthesis: clean images (folder, s3:// prefix, packed table or "samples")
    synthesis: SynthesisConfig = QUICKSTART
    batch_size: int = Field(4, ge=1)  # per worker and micro-batch
    shuffle_buffer: int = Field(256, ge=0)  # rows; 0: no local shuffle
    prefetch_batches: int = Field(2, ge=0)

    @model_validator(mode="after")
    def _one_kind(self) -> "DataSection":
        if self.dataset and self.datasets:
            raise ValueError("set data.dataset or data.datasets, not both")
        return self


class ValidationSection(Frozen):
    crops_per_recipe: int = Field(6, ge=1)  # online mode: crops of each val source, each under every recipe
    max_pairs: int = Field(512, ge=1)  # published mode: the first pairs of the val split, by sample id (a mix: of each)
    images_in_grid: int = Field(8, ge=0)  # rows of validation_grid.png, one task each


class CheckpointSection(Frozen):
    every: int = Field(50, ge=1)  # steps between checkpoint + validation (and the final step)
    keep: int = Field(2, ge=1)  # best by the select rule, plus always the latest
    # The checkpoint registered: the one whose worst task gains most over its degraded input (the promotion
    # gate's test for a first champion), or the best mean PSNR (`mean_psnr`, the literature's rule). The
    # former keeps a regression on one task out of the registry, but on a run too short to learn every task
    # it picks an early, nearly-identity checkpoint.
    select: Literal["worst_task_gain", "mean_psnr"] = "worst_task_gain"


class ScalingSection(Frozen):
    # The quickstart's: two single-threaded CPU workers train faster than one with two threads
    # (docs/benchmarks.md), and half a CPU each leaves the data pipeline room on two cores.
    workers: int = Field(2, ge=1)
    use_gpu: bool = False
    cpus_per_worker: float = Field(0.5, gt=0)
    gpus_per_worker: float = Field(1.0, gt=0)


class TrackingSection(Frozen):
    uri: str | None = None  # MLFLOW_TRACKING_URI wins; None and unset: a local store (see tracking_uri)
    experiment: str = "cpl-restore"
    model_name: str = "cpl-restore"
    register_model: bool = True


class TrainConfig(Frozen):
    run: RunSection = RunSection()
    model: ModelSection = ModelSection()
    loss: LossSection = LossSection()
    optim: OptimSection = OptimSection()
    data: DataSection = DataSection()
    validation: ValidationSection = ValidationSection()
    checkpoint: CheckpointSection = CheckpointSection()
    scaling: ScalingSection = ScalingSection()
    tracking: TrackingSection = TrackingSection()
    ray: RayConfig = RayConfig(progress_bars=False)

    @field_validator("optim")
    @classmethod
    def _warmup_fits(cls, optim: OptimSection) -> OptimSection:
        if optim.warmup_steps >= optim.max_steps:
            raise ValueError(f"warmup_steps ({optim.warmup_steps}) must be below max_steps ({optim.max_steps})")
        return optim


def tracking_uri(config: TrainConfig) -> str:
    """``MLFLOW_TRACKING_URI`` when set (the standard variable), else the config, else a local store."""
    return resolve_tracking_uri(config.tracking.uri)
