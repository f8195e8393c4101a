"""The training job on the driver: data, the MLflow run, the Ray Train fit, and the registered model.

    train(config) -> Summary

1. Everything that can fail fast does, before Ray starts: config (already validated), tracking server,
   checkpoint storage, dataset manifest or clean-image source, the objective (VGG weights, if any), and the
   model to start from (``model.init``: resolved, pinned, loaded and checked against the configured network).
2. The driver creates the MLflow run (or finds it, when the run name is reused) and freezes the
   validation pairs; Ray Train workers run ``loop.train_loop`` on a DeepSpeed engine, and rank 0 sends
   its progress to the driver (``progress``).
3. The best checkpoint by ``checkpoint.select`` (by default the best mean validation PSNR; or the one whose
   worst task gains most over its degraded input) becomes a new version of the registered model, logged as a
   pyfunc (``pipelines/registry/pyfunc.py``) with a signature, an input example, a model card and an
   image grid.

Re-running with the same ``run.name`` resumes: Ray Train restarts from the run's latest checkpoint under
``run.storage`` and the same MLflow run continues; a run's own checkpoint wins over ``model.init``. A worker
lost with its node is replaced the same way, up to ``run.max_failures`` times, once the cluster has room
again within ``run.capacity_wait_s``; past that the run fails, and resumes when submitted again.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

import cpl_model

from ..core import console, provenance, storage, tracking
from ..core.config import ConfigError
from ..core.errors import SetupError
from ..core.runtime import TRACKING_STORE_KEY, init_ray, is_local, local_cpus
from ..data import job, online, patches, shards, sources, synthesis, versions
from ..data.sources import SAMPLES
from .config import TrainConfig, tracking_uri
from .initial import InitialWeights, resolve_init
from .loop import build_objective, train_loop
from .progress import ProgressChannel
from .validation import validate


class NoCapacity(SetupError):
    """The cluster had no room for the worker group within ``run.capacity_wait_s``."""


@dataclass
class Summary:
    run_name: str
    run_id: str
    tracking_uri: str
    model_uri: str | None
    model_version: str | None
    dataset: str
    checkpoint: str
    steps: int
    per_task: dict[str, dict[str, float]]  # task -> {"input_psnr", "psnr", "ssim", ...}
    init: str | None = None  # the pinned model.init; None: trained from scratch

    def lines(self) -> list[str]:
        rows = [f"run {self.run_name} ({self.run_id}) at {self.tracking_uri}",
                f"  model:      {self.model_uri or 'not registered'}"
                + (f" (version {self.model_version})" if self.model_version else ""),
                *([f"  init:       {self.init}"] if self.init else []),
                f"  data:       {self.dataset}", f"  checkpoint: {self.checkpoint} (step {self.steps})",
                "  validation PSNR (dB), degraded input -> restored:"]
        for task, values in self.per_task.items():
            rows.append(f"    {task:<28} {values['input_psnr']:6.2f} -> {values['psnr']:6.2f}"
                        f"  ({values['psnr'] - values['input_psnr']:+.2f})")
        return rows


def new_run_name() -> str:
    return time.strftime("cpl-%Y%m%d-%H%M%S", time.gmtime())


def plan(config: TrainConfig) -> dict[str, Any]:
    """What a run would do, checking nothing remote (``--dry-run``)."""
    samples_per_step = config.data.batch_size * config.optim.accumulation * config.scaling.workers
    return {"run": config.run.name or "<new>", "tracking_uri": tracking_uri(config),
            "checkpoints": storage.join(config.run.storage, config.run.name or "<new>"),
            "data": describe_data(config),
            "model": f"{config.model.preset}/{config.model.prompt}",
            "init": config.model.init or "none (from scratch)", "steps": config.optim.max_steps,
            "samples_per_step": samples_per_step, "samples": samples_per_step * config.optim.max_steps,
            "workers": config.scaling.workers, "gpu": config.scaling.use_gpu}


def describe_data(config: TrainConfig) -> str:
    data = config.data
    if data.datasets:
        return (f"{data.patch}px patches of " + ", ".join(f"{entry.uri} ({entry.version}) x{entry.repeat}"
                                                          for entry in data.datasets))
    if data.dataset:
        return f"published {data.dataset} ({data.version})"
    return f"online synthesis from {data.source} ({data.synthesis.recipes})"


def preflight(config: TrainConfig) -> InitialWeights | None:
    """Fail before any work when a location or the model to start from is unusable, or the local CPUs cannot
    host the job.

    Returns:
        the weights ``model.init`` names, pinned and checked against the configured network; None without it.
    Raises:
        TrackingUnreachable, StorageError, ConfigError, ModelNotFound, DataError: naming the URI, key or
            reference at fault.
    """
    tracking.check_reachable(tracking_uri(config))
    storage.check_writable(config.run.storage)
    build_objective(config.loss)  # as the workers will: VGG weights fetched and loaded once
    if config.data.datasets:
        patches.open_mix(config.data.datasets, patch=config.data.patch)
    elif config.data.dataset:
        versions.read_manifest(config.data.dataset, config.data.version, verify=False)
    elif config.data.source != SAMPLES:
        sources.source_units(config.data.source)
    if is_local(config.ray) and not config.scaling.use_gpu:
        cpus = local_cpus(config.ray)
        needed = config.scaling.workers * config.scaling.cpus_per_worker
        if needed > cpus - 1:
            # Training workers holding every CPU leave Ray Data none: the job would hang, not fail.
            raise ConfigError(f"scaling: {config.scaling.workers} workers x {config.scaling.cpus_per_worker} CPU "
                              f"leave none of the {cpus} local CPUs for the data pipeline; lower "
                              "scaling.cpus_per_worker (fractions are fine) or raise ray.num_cpus")
    return resolve_init(config, tracking_uri(config))  # last: it may download a model


def train(config: TrainConfig, verbose: bool = False) -> Summary:
    """Run (or resume) the training job described by ``config``; see the module docstring.

    ``verbose``: the entry point's ``--verbose``, asking for the libraries' own output as well as ours.
    """
    import ray

    init = preflight(config)
    run_name = config.run.name or new_run_name()
    uri = tracking_uri(config)
    source = sources.sample_photos() if not config.data.dataset and config.data.source == SAMPLES \
        else storage.absolute(config.data.source)  # Ray workers do not share the driver's working directory
    resolved = config.model_dump(mode="json")
    resolved["run"]["name"] = run_name
    if config.loss.cpr.get("vgg_weights"):  # as the source: workers do not share the driver's working directory
        resolved["loss"]["cpr"]["vgg_weights"] = storage.absolute(config.loss.cpr["vgg_weights"])
    if init is not None:  # pinned: the params, the workers and every checkpoint name the version, not an alias
        resolved["model"]["init"] = init.pinned

    # The console shows our progress line (progress.py); the workers' output, and Ray Data's bars for
    # the validation pairs, only when verbose.
    init_ray(config.ray.model_copy(update={"progress_bars": config.ray.progress_bars and verbose}),
             log_to_driver=verbose, dashboard=True, locations=read_by_workers(config, source, uri))
    mix = None
    if config.data.datasets:
        mix = patches.open_mix(config.data.datasets, mix_versions(config, uri, run_name), config.data.patch)
        dataset_label = "mix:" + ",".join(part.label for part in mix)
        dataset_tags = {"dataset": dataset_label, "dataset.version": ",".join(part.version for part in mix),
                        **{f"dataset.{i}": part.uri for i, part in enumerate(mix)},
                        **{f"dataset.{i}.version": part.version for i, part in enumerate(mix)},
                        **{f"data.pass.{task}": str(n) for task, n in patches.pass_counts(mix).items()}}
        validation = patches.validation_patches(mix, config.data.patch, config.run.seed, config.validation.max_pairs)
    elif config.data.dataset:
        manifest = versions.read_manifest(config.data.dataset, dataset_version(config, uri, run_name))
        dataset_label = f"{config.data.dataset}@{manifest['version']}"
        dataset_tags = {"dataset": config.data.dataset, "dataset.version": manifest["version"],
                        "dataset.manifest_sha256": versions.manifest_digest(manifest)}
        validation = published_validation(config, manifest["version"])
    else:
        dataset_label = f"online:{source}"
        dataset_tags = {"dataset": dataset_label, "dataset.version": f"online-seed-{config.data.synthesis.seed}"}
        validation = synthesis.validation_pairs(source, config.data.synthesis, config.validation.crops_per_recipe)
    run_id, resumed = tracking.start_or_resume_run(
        uri, config.tracking.experiment, run_name, tracking.flatten(resolved),
        {**dataset_tags, "code_version": provenance.code_version(),
         "synthesis_code_version": provenance.synthesis_code_version(), "cpl.preset": config.model.preset,
         **(init.tags if init is not None else {})})
    if resumed and tracking.run_tag(uri, run_id, tracking.MODEL_VERSION_TAG):
        tracking.finish_run(uri, run_id)  # as it was: resuming marked it running
        raise ConfigError(f"run {run_name!r} already finished and registered its model; choose a new run.name")

    if mix is not None:
        counts = patches.pass_counts(mix)
        print(f"data: a pass is {sum(counts.values())} patches ({', '.join(f'{t}: {n}' for t, n in counts.items())})",
              flush=True)
    start = f" from {init.pinned}" if init is not None else ""
    print(f"run {run_name}: {'resuming' if resumed else 'starting'} ({config.model.preset}/{config.model.prompt}"
          f"{start}, {config.optim.max_steps} steps, {config.scaling.workers} worker(s)); tracking at {uri}",
          flush=True)
    try:
        try:
            result = _fit(config, resolved, run_name, run_id, uri, source, validation,
                          manifest["version"] if config.data.dataset else None, init, mix, verbose)
        finally:
            ray.shutdown()  # also flushes the workers' last log lines before the summary
        return _register(config, resolved, result, run_name, run_id, uri, dataset_label, validation, verbose)
    except BaseException:
        tracking.finish_run(uri, run_id, "FAILED")
        raise


def read_by_workers(config: TrainConfig, source: str, tracking: str) -> dict[str, str | None]:
    """The locations Ray workers read or write, by key (for ``runtime.check_locations``); the sample photos
    ship with every node's environment."""
    return {"run.storage": config.run.storage, f"{TRACKING_STORE_KEY} (or tracking.uri)": tracking,
            "data.dataset": config.data.dataset,
            **{f"data.datasets.{i}.uri": entry.uri for i, entry in enumerate(config.data.datasets)},
            "data.source": None if config.data.dataset or config.data.datasets or config.data.source == SAMPLES
            else source,
            "loss.cpr.vgg_weights": config.loss.cpr.get("vgg_weights")}


def dataset_version(config: TrainConfig, uri: str, run_name: str) -> str:
    """The version of ``config.data.dataset`` that run ``run_name`` trains on, resolved once per run.

    A resumed run keeps the version it started with even when LATEST has moved since, so that its
    remaining steps do not switch data while its tags still name the first version.
    """
    if config.data.version == versions.LATEST:
        started = tracking.find_run(uri, config.tracking.experiment, run_name)
        if started is not None and started.data.tags.get("dataset") == config.data.dataset:
            return started.data.tags["dataset.version"]
    return versions.resolve_version(config.data.dataset, config.data.version)


def _fit(config: TrainConfig, resolved: dict, run_name: str, run_id: str, uri: str, source: str,
         validation: dict[str, Any], version: str | None, init: InitialWeights | None,
         mix: list[patches.MixPart] | None, verbose: bool = False):
    """``version``: the published dataset version to train on; ``mix``: the datasets to cut patches from; both
    None for the online stream. ``init``: the weights every rank starts from, unless Ray Train hands it a
    checkpoint of this run."""
    import ray
    from ray.train import CheckpointConfig, ControllerError, DataConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.v2._internal.constants import WORKER_GROUP_START_TIMEOUT_S_ENV_VAR
    from ray.train.v2._internal.exceptions import WorkerGroupStartupTimeoutError

    scaling = config.scaling
    fs, storage_path = storage.filesystem(config.run.storage)
    samples_per_step = config.data.batch_size * config.optim.accumulation * scaling.workers
    resume_step = latest_checkpoint_step(config.run.storage, run_name)
    if mix is not None:
        train_data = mix_training_stream(mix, config, samples_per_step, resume_step)
    elif config.data.dataset:
        train_data = versions.open_dataset(config.data.dataset, "train", version, verify=False)
    else:
        train_data = online_training_stream(source, config, samples_per_step, resume_step)
    threads = None
    if is_local(config.ray) and not scaling.use_gpu:
        threads = max(1, local_cpus(config.ray) // scaling.workers)  # the data pipeline is light next to training
    channel = ProgressChannel(config.optim.max_steps, verbose)
    resources = {"CPU": scaling.cpus_per_worker, **({"GPU": scaling.gpus_per_worker} if scaling.use_gpu else {})}
    # Read by Ray Train's controller, which takes it from the driver's environment.
    os.environ[WORKER_GROUP_START_TIMEOUT_S_ENV_VAR] = str(config.run.capacity_wait_s)
    trainer = trainer_class()(
        train_loop,
        train_loop_config={"config": resolved, "run_id": run_id, "tracking_uri": uri,
                           "validation": ray.put(validation), "torch_threads": threads, "progress": channel.queue,
                           "init": ray.put(init.state_dict) if init is not None else None},
        scaling_config=ScalingConfig(num_workers=scaling.workers, use_gpu=scaling.use_gpu,
                                     resources_per_worker=resources),
        run_config=RunConfig(
            name=run_name, storage_path=storage_path, storage_filesystem=fs, callbacks=[channel.relay()],
            # A worker group that found no room within capacity_wait_s fails the run (no controller retries).
            failure_config=FailureConfig(max_failures=config.run.max_failures, controller_failure_limit=0),
            checkpoint_config=CheckpointConfig(num_to_keep=config.checkpoint.keep,
                                               checkpoint_score_attribute="score",
                                               checkpoint_score_order="max")),
        datasets={"train": train_data},
        dataset_config=DataConfig(datasets_to_split=["train"]),
    )
    with console.without_lines(console.RAYLET_NOTICES, enabled=not verbose, stream="stdout"), channel:
        try:
            return trainer.fit()
        except ControllerError as err:
            if not isinstance(err.controller_failure, WorkerGroupStartupTimeoutError):
                raise
            step = latest_checkpoint_step(config.run.storage, run_name)
            raise NoCapacity(
                f"the Ray cluster had no room for {scaling.workers} worker(s) x {resources} within "
                f"run.capacity_wait_s ({config.run.capacity_wait_s:g} s); "
                f"{f'the last checkpoint is at step {step}' if step else 'no checkpoint yet'}: submit again with "
                f"--name {run_name} to resume") from None


def trainer_class() -> type:
    """Ray Train's ``TorchTrainer`` without its placement-group cleaner.

    The cleaner is a detached actor that removes the worker group's placement group once it believes the
    controller dead. It asks the state API of whichever cluster the machine's record of the latest Ray cluster
    names (``ray_current_cluster``), not of its own: on a machine with a second Ray instance it found no
    controller there and removed a live run's placement group, killing its workers. Without it nothing leaks,
    since Ray removes a job's placement groups when the job ends.
    """
    from ray.train.torch import TorchTrainer
    from ray.train.v2._internal.callbacks.placement_group_callback import PlacementGroupCleanerCallback

    class Trainer(TorchTrainer):
        def _create_default_callbacks(self):
            return [callback for callback in super()._create_default_callbacks()
                    if not isinstance(callback, PlacementGroupCleanerCallback)]

    return Trainer


def online_training_stream(source: str, config: TrainConfig, samples_per_step: int, resume_step: int):
    """An online stream long enough for the run; a resumed run starts about where the last checkpoint was."""
    synthesis = config.data.synthesis
    train_fraction = 1 - synthesis.val_fraction - synthesis.test_fraction
    images = job.plan(source, synthesis)["sources"]
    pairs_per_pass = max(1, round(images * train_fraction) * synthesis.crops_per_image)
    passes_needed = math.ceil(config.optim.max_steps * samples_per_step / pairs_per_pass) + 1
    first_pass = resume_step * samples_per_step // pairs_per_pass
    return online.online_dataset(source, synthesis, "train", passes=max(1, passes_needed - first_pass),
                                   first_pass=first_pass)


def mix_training_stream(mix: list[patches.MixPart], config: TrainConfig, samples_per_step: int, resume_step: int):
    """Passes of the mix enough for the run; a resumed run starts at the pass its last checkpoint was in."""
    per_pass = max(1, sum(patches.pass_counts(mix).values()))
    passes_needed = math.ceil(config.optim.max_steps * samples_per_step / per_pass) + 1
    first_pass = resume_step * samples_per_step // per_pass
    return patches.training_patches(mix, config.data.patch, config.run.seed, max(1, passes_needed - first_pass),
                                    first_pass)


def mix_versions(config: TrainConfig, uri: str, run_name: str) -> list[str | None]:
    """The versions of ``data.datasets`` that a resumed run started with (None where it names another dataset or
    none was recorded), so that a moved LATEST does not switch its data; all None for a new run."""
    started = tracking.find_run(uri, config.tracking.experiment, run_name)
    tags = started.data.tags if started is not None else {}
    return [tags.get(f"dataset.{i}.version")
            if entry.version == versions.LATEST and tags.get(f"dataset.{i}") == storage.absolute(entry.uri) else None
            for i, entry in enumerate(config.data.datasets)]


def latest_checkpoint_step(storage_uri: str, run_name: str) -> int:
    """The step of the newest checkpoint folder (``step-<N>``) of ``run_name``; 0 for a new run."""
    run_uri = storage.join(storage_uri, run_name)
    folders = {storage.relative(info.uri, run_uri).split("/", 1)[0] for info in storage.list_files(run_uri)}
    return max((int(name[5:]) for name in folders if name.startswith("step-") and name[5:].isdigit()), default=0)


def published_validation(config: TrainConfig, version: str) -> dict[str, Any]:
    """The first ``validation.max_pairs`` pairs (by sample id) of a published version's val split.

    The driver first reads the ids alone (a column projection), then the images of the chosen pairs,
    so a large val split never has to fit in its memory.
    """
    import pyarrow as pa
    import ray
    from ray.data.expressions import col

    val = versions.open_dataset(config.data.dataset, "val", version, verify=False)
    ids = sorted(row["sample_id"] for row in val.select_columns(["sample_id"]).take_all())
    last = ids[min(config.validation.max_pairs, len(ids)) - 1]
    chosen = val.filter(expr=col("sample_id") <= last).to_arrow_refs()
    rows = pa.concat_tables(ray.get(chosen)).sort_by("sample_id").to_pydict()
    return {"degraded": shards.pair_images(rows, "degraded"), "clean": shards.pair_images(rows, "clean"),
            "task": rows["task"], "recipe": rows["recipe"], "sample_id": rows["sample_id"]}


def _register(config: TrainConfig, resolved: dict, result: Any, run_name: str, run_id: str, uri: str,
              dataset_label: str, validation: dict[str, Any], verbose: bool = False) -> Summary:
    """Evaluate the best checkpoint (by ``checkpoint.select``; its weights are the EMA's when that is on) on the
    validation set and log + register it."""
    from ..registry.registration import log_and_register
    from .model_card import model_card
    from .validation import image_grid

    best = result.get_best_checkpoint("score", "max") if result.best_checkpoints else result.checkpoint
    if best is None:
        raise RuntimeError(f"run {run_name}: training reported no checkpoint")
    with best.as_directory() as directory:
        model, extra = cpl_model.load_checkpoint(Path(directory) / cpl_model.WEIGHTS)
    metrics = validate(model, validation, torch.device("cpu"), torch.float32)
    per_task = {}
    for task in sorted(set(validation["task"])):
        prefix = f"val/{tracking.metric_name(task)}/"
        per_task[task] = {name: metrics[prefix + name] for name in ("psnr", "ssim", "input_psnr", "input_ssim")}
    per_task["all"] = {name: metrics[f"val/{name}"] for name in ("psnr", "ssim", "input_psnr", "input_ssim")}
    step = extra.get("step", 0)
    example = cpl_model.to_tensor(validation["degraded"][:1]).contiguous().numpy()  # pyfunc input: (1, 3, H, W)
    with console.without_lines(console.REGISTRY_NOTICES, enabled=not verbose):
        model_uri, version = log_and_register(
            model, run_id, uri, config=resolved,
            card=model_card(config, run_name, dataset_label, per_task, step, init=resolved["model"]["init"]),
            grid=image_grid(model, validation, config.validation.images_in_grid), example=example, step=step,
            model_name=config.tracking.model_name if config.tracking.register_model else None)
    # Ray reports the path inside the storage filesystem (no s3:// scheme); record the URI users can pass on.
    checkpoint = storage.uri_of(best.path, config.run.storage)
    tracking.finish_run(uri, run_id, tags={tracking.MODEL_VERSION_TAG: version or "", "best_checkpoint": checkpoint})
    return Summary(run_name, run_id, uri, model_uri, version, dataset_label, checkpoint, extra.get("step", 0),
                   per_task, resolved["model"]["init"])

