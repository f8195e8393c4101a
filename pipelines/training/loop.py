"""The per-worker training loop: a DeepSpeed engine fed by a Ray Data shard, checkpointed through Ray Train.

Runs inside each Ray Train worker (``train_loop``). Every rank steps the same number of times and
reports a checkpoint at the same steps, so collectives and ``ray.train.report`` never wait on a rank
that went elsewhere. Rank 0's extra work (validation, MLflow, the driver's progress line) lives in one
place, ``RankZeroReporter``; the other ranks hold a plain ``Reporter``, whose calls do nothing, so the
loop reads the same on every rank.

Metrics are logged exactly once per step even across restarts: rank 0 buffers them, the buffer rides
in the checkpoint, and it is flushed to MLflow only after the checkpoint is reported, skipping steps
MLflow already holds. A restart therefore replays, but never re-logs, the steps after the last checkpoint.

Every rank starts from the same weights before DeepSpeed wraps the model: ``model.init``'s, which the driver
pinned and put in the object store, or fresh ones seeded by ``run.seed`` (``initial.py``). A checkpoint of
the run wins over both, and the optimiser always starts afresh at step 0 unless a checkpoint says otherwise.

With ``optim.ema_decay`` every rank keeps the same average of the weights (the weights are the same on every
rank under ZeRO stages 0-2); it rides in the checkpoint, and it is what is validated, scored and saved as
``model.pt``.
"""

from __future__ import annotations

import dataclasses
import math
import posixpath
import tempfile
import time
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ray.data.collate_fn import NumpyBatchCollateFn

import cpl_model
from degradation_synth import rng_for

from ..core import storage, tracking
from ..core.config import ConfigError
from ..core.errors import DataError, SetupError
from ..data import shards
from .config import LossSection, TrainConfig
from .initial import initial_model
from .progress import Started, Stepped, send
from .validation import SCORES, validate

DS_TAG = "ds"  # DeepSpeed's tag inside every checkpoint directory


@dataclass
class Progress:
    """What a checkpoint carries besides the engine state."""

    step: int = 0
    samples: int = 0
    best_val_psnr: float = -math.inf
    pending: list[tuple[int, dict[str, float]]] = field(default_factory=list)  # metrics not yet in MLflow


class Reporter:
    """What a rank other than 0 reports: nothing beyond what every rank reports to Ray Train."""

    def started(self, progress: Progress, placement: list[tuple[str, str]]) -> None:
        pass

    def stepped(self, progress: Progress, sums: dict[str, float], lr: float, seconds: float, waited: float,
                samples: int) -> None:
        pass

    def validate(self, model: torch.nn.Module, progress: Progress) -> dict[str, float]:
        """The metrics this rank passes to ``ray.train.report``; Ray Train scores checkpoints by rank 0's."""
        return {"step": progress.step, "val_psnr": math.nan, "score": math.nan}

    def add_weights(self, model: torch.nn.Module, directory: Path, progress: Progress, val_psnr: float) -> None:
        pass

    def checkpointed(self, progress: Progress) -> None:
        pass


class RankZeroReporter(Reporter):
    """Rank 0's share of the loop: validation, the metrics bound for MLflow (held in ``progress.pending``
    until their checkpoint is reported), the weights file of each checkpoint, and the driver's progress line
    (events on the queue ``loop_config["progress"]``, see ``progress.py``)."""

    def __init__(self, loop_config: dict[str, Any], config: TrainConfig, device: torch.device) -> None:
        import ray

        self.config, self.device = config, device
        self.queue = loop_config.get("progress")
        self.logger = tracking.RunLogger(loop_config["tracking_uri"], loop_config["run_id"])
        self.validation = ray.get(loop_config["validation"])

    def started(self, progress: Progress, placement: list[tuple[str, str]]) -> None:
        self.logger.flush(progress.pending)  # what a crash between report and flush left behind
        progress.pending = []
        send(self.queue, Started(progress.step, tuple(placement)))

    def stepped(self, progress: Progress, sums: dict[str, float], lr: float, seconds: float, waited: float,
                samples: int) -> None:
        progress.pending.append((progress.step, {
            **{f"train/{name}": value for name, value in sums.items()}, "train/lr": lr,
            "train/samples_per_s": samples / seconds, "train/input_wait": waited / seconds,
            "train/samples": float(progress.samples)}))
        send(self.queue, Stepped(progress.step, sums.get("loss", math.nan), samples / seconds, waited / seconds))

    def validate(self, model: torch.nn.Module, progress: Progress) -> dict[str, float]:
        # The model's own dtype: bf16 for the engine's module on GPU, fp32 for the average of its weights.
        metrics = validate(model, self.validation, self.device, next(model.parameters()).dtype)
        progress.best_val_psnr = max(progress.best_val_psnr, metrics["val/psnr"])
        progress.pending.append((progress.step, {**metrics, "val/best_psnr": progress.best_val_psnr}))
        return {"step": progress.step, "val_psnr": metrics["val/psnr"], "input_psnr": metrics["val/input_psnr"],
                "best_psnr": progress.best_val_psnr, "worst_gain": metrics["val/worst_task_gain"],
                "score": metrics[SCORES[self.config.checkpoint.select]]}

    def add_weights(self, model: torch.nn.Module, directory: Path, progress: Progress, val_psnr: float) -> None:
        """Beside DeepSpeed's shards: fp32 weights + config, loadable without DeepSpeed."""
        cpl_model.save_checkpoint(model, directory / cpl_model.WEIGHTS, extra={
            "config": self.config.model_dump(mode="json"), "step": progress.step, "val_psnr": val_psnr})

    def checkpointed(self, progress: Progress) -> None:
        self.logger.flush(progress.pending)
        progress.pending = []


def warmup_cosine(warmup: int, total: int, floor: float) -> Any:
    """LR multiplier: linear warm-up to 1 over ``warmup`` steps, then cosine decay to ``floor``."""

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))

    return factor


def deepspeed_config(config: TrainConfig, world_size: int, on_gpu: bool) -> dict[str, Any]:
    optim = config.optim
    bf16 = optim.precision == "bf16" or (optim.precision == "auto" and on_gpu)
    return {
        "train_micro_batch_size_per_gpu": config.data.batch_size,
        "gradient_accumulation_steps": optim.accumulation,
        "train_batch_size": config.data.batch_size * optim.accumulation * world_size,
        "gradient_clipping": optim.grad_clip,
        "zero_optimization": {"stage": optim.zero_stage},
        "bf16": {"enabled": bf16},
        "steps_per_print": 10**9,  # we log ourselves
        "wall_clock_breakdown": False,
    }


def build_objective(loss: LossSection) -> cpl_model.RestorationLoss:
    """The training objective. ``loss.cpr.vgg_weights`` may be a local file or an ``s3://`` URI, fetched into a
    temporary file first (``cpl_model`` reads local files only).

    Raises:
        ConfigError: naming ``loss.cpr.vgg_weights`` and the file, when it is missing or not the weights of
            the VGG that ``loss.cpr.features`` names.
        StorageError: when the URI cannot be read.
    """
    config = loss.build()
    uri = config.cpr.vgg_weights
    if uri is None:
        return cpl_model.RestorationLoss(config)
    if not storage.is_file(uri):
        raise ConfigError(f"config error: loss.cpr.vgg_weights: {uri}: no such file")
    with tempfile.TemporaryDirectory() as folder:
        local = uri
        if storage.is_s3(uri):
            local = str(Path(folder, posixpath.basename(uri)))
            Path(local).write_bytes(storage.read_bytes(uri))
        try:
            return cpl_model.RestorationLoss(
                dataclasses.replace(config, cpr=dataclasses.replace(config.cpr, vgg_weights=local)))
        except ValueError as err:  # the message names the file: the URI given, not the temporary copy
            raise ConfigError(f"config error: loss.cpr.vgg_weights: {str(err).replace(local, uri)}") from None


def to_tensors(batch: dict[str, np.ndarray]) -> dict[str, Any]:
    """Pair rows (encoded as raw uint8 bytes, see ``shards.SHARD_SCHEMA``) -> float (B, 3, H, W) in [0, 1]."""
    return {"degraded": cpl_model.to_tensor(shards.pair_images(batch, "degraded")),
            "clean": cpl_model.to_tensor(shards.pair_images(batch, "clean")), "task": [str(t) for t in batch["task"]]}


class PairCollate(NumpyBatchCollateFn):
    """``iter_torch_batches``' collate step: pair rows -> tensors (``to_tensors``)."""

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, Any]:
        return to_tensors(batch)


def endless_batches(shard: Any, config: TrainConfig, rank: int) -> Iterator[dict[str, Any]]:
    """Epoch after epoch over this worker's shard; a freshly seeded local shuffle each epoch."""
    epoch = 0
    while True:
        yielded = False
        for batch in shard.iter_torch_batches(
                batch_size=config.data.batch_size, collate_fn=PairCollate(), drop_last=True,
                prefetch_batches=config.data.prefetch_batches,
                local_shuffle_buffer_size=config.data.shuffle_buffer or None,
                local_shuffle_seed=(config.run.seed * 100_003 + epoch * 1_009 + rank) if config.data.shuffle_buffer
                else None):
            yielded = True
            yield batch
        if not yielded:
            raise DataError("the training data yields no full batch; lower data.batch_size or add data")
        epoch += 1


def train_loop(loop_config: dict[str, Any]) -> None:
    """``train_loop_per_worker`` for ``TorchTrainer``. ``loop_config`` carries the resolved config, the
    MLflow run, a reference to the frozen validation pairs and the driver's progress queue (``progress``)."""
    import deepspeed
    import ray.train
    from deepspeed.accelerator import get_accelerator

    # Skip DeepSpeed's JIT build of its shared-memory all-reduce (slow on a fresh machine): only its
    # inference path uses it, and only under its own launcher.
    deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False

    config = TrainConfig.model_validate(loop_config["config"])
    context = ray.train.get_context()
    rank, world_size = context.get_world_rank(), context.get_world_size()
    if loop_config.get("torch_threads"):
        torch.set_num_threads(loop_config["torch_threads"])
    on_gpu = config.scaling.use_gpu
    if on_gpu and not torch.cuda.is_available():  # Ray reserved a GPU; training on the CPU would hide that
        raise SetupError(f"scaling.use_gpu is set but torch sees no CUDA device on {ray.util.get_node_ip_address()} "
                           f"(torch {torch.__version__}, CUDA {torch.version.cuda}: is the driver too old?)")
    if on_gpu:
        torch.cuda.set_device(context.get_local_rank())
    device = torch.device(get_accelerator().device_name(context.get_local_rank()) if on_gpu else "cpu")

    # A checkpoint of this run (a restart, or a resumed run) wins over model.init: it replaces the weights
    # with the optimiser, schedule and step below, so the init weights are not even fetched.
    checkpoint = ray.train.get_checkpoint()
    init = ray.get(loop_config["init"]) if checkpoint is None and loop_config.get("init") is not None else None
    model = initial_model(config, init).to(device)  # the weights every rank starts from, before DeepSpeed
    optim = config.optim
    # Copied before DeepSpeed takes the model: the copy stays fp32 when the engine casts its module to bf16,
    # and it carries none of the engine's forward hooks.
    ema = cpl_model.WeightAverage(model, optim.ema_decay) if optim.ema_decay else None
    objective = build_objective(config.loss).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=optim.lr, betas=optim.betas, weight_decay=optim.weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, warmup_cosine(optim.warmup_steps, optim.max_steps, optim.min_lr / optim.lr))
    engine, _, _, _ = deepspeed.initialize(model=model, optimizer=optimizer, lr_scheduler=schedule,
                                           config=deepspeed_config(config, world_size, on_gpu))
    dtype = torch.bfloat16 if engine.bfloat16_enabled() else torch.float32

    progress = Progress()
    if checkpoint is not None:
        with checkpoint.as_directory() as directory:
            _, client_state = engine.load_checkpoint(directory, tag=DS_TAG)
        progress = Progress(**client_state["progress"])
        if ema is not None:
            ema.load_state_dict(client_state["ema"])

    reporter = RankZeroReporter(loop_config, config, device) if rank == 0 else Reporter()
    reporter.started(progress, rank_placement(world_size))

    batches = endless_batches(ray.train.get_dataset_shard("train"), config, rank)
    samples_per_step = config.data.batch_size * optim.accumulation * world_size
    while progress.step < optim.max_steps:
        started, waited = time.perf_counter(), 0.0
        sums: dict[str, float] = defaultdict(float)
        for micro in range(optim.accumulation):
            wait_started = time.perf_counter()
            batch = next(batches)
            waited += time.perf_counter() - wait_started
            batch["degraded"], batch["clean"] = batch["degraded"].to(device, dtype), batch["clean"].to(device, dtype)
            generator = torch.Generator(device=device).manual_seed(
                int(rng_for(config.run.seed, "negatives", progress.step, micro, rank).integers(2**62)))
            loss, metrics = cpl_model.training_step(engine, batch, objective, step=progress.step, generator=generator)
            engine.backward(loss)
            engine.step()
            for name in ("loss", "l1", "cpr", "router_entropy"):
                if name in metrics:
                    sums[name] += metrics[name] / optim.accumulation
        if ema is not None:
            ema.update(engine.module)
        progress.step += 1
        progress.samples += samples_per_step
        reporter.stepped(progress, sums, schedule.get_last_lr()[0], time.perf_counter() - started, waited,
                         samples_per_step)
        if progress.step % config.checkpoint.every == 0 or progress.step == optim.max_steps:
            report_checkpoint(engine, ema, progress, reporter)


def rank_placement(world_size: int) -> list[tuple[str, str]]:
    """(IP, Ray node id) of every rank, in rank order; every rank must call it (a collective)."""
    import ray
    import torch.distributed as dist

    here = (ray.util.get_node_ip_address(), ray.get_runtime_context().get_node_id())
    if world_size == 1:
        return [here]
    gathered: list[tuple[str, str]] = [here] * world_size
    dist.all_gather_object(gathered, here)
    return gathered


def report_checkpoint(engine: Any, ema: cpl_model.WeightAverage | None, progress: Progress,
                      reporter: Reporter) -> None:
    """Validate (rank 0), save the DeepSpeed checkpoint (every rank), barrier, report, then flush metrics.

    ``ema``, when on, is what is validated and saved as ``model.pt``; its state joins DeepSpeed's.
    """
    import ray.train
    import torch.distributed as dist
    from ray.train import Checkpoint

    model = engine.module if ema is None else ema.module
    metrics = reporter.validate(model, progress)
    client_state: dict[str, Any] = {"progress": vars(progress)}
    if ema is not None:
        client_state["ema"] = ema.state_dict()
    with tempfile.TemporaryDirectory() as directory:
        engine.save_checkpoint(directory, tag=DS_TAG, client_state=client_state)
        reporter.add_weights(model, Path(directory), progress, metrics["val_psnr"])
        if dist.is_available() and dist.is_initialized():
            dist.barrier()
        ray.train.report(metrics, checkpoint=Checkpoint.from_directory(directory),
                         checkpoint_dir_name=f"step-{progress.step:08d}")
    reporter.checkpointed(progress)
