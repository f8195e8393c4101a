"""Starting or joining Ray, and spreading work over Ray actors, the same way for every pipeline."""

from __future__ import annotations

import os
from typing import Any

from pydantic import Field

from .config import Frozen
from .errors import PipelineError, SetupError

# For a local instance: let worker processes keep freed memory instead of page-faulting image-sized
# buffers in again (slow on VMs with costly page faults; docs/benchmarks.md). On a cluster, set
# these in the job's runtime_env or the node image instead.
LOCAL_WORKER_ENV = {"MALLOC_MMAP_THRESHOLD_": str(256 << 20), "MALLOC_TRIM_THRESHOLD_": str(256 << 20)}


class RayUnreachable(PipelineError, ConnectionError):
    """No Ray cluster answers at the configured address; the message names it."""


class RayConfig(Frozen):
    address: str | None = None  # None: RAY_ADDRESS if set, else a local instance
    num_cpus: int | None = Field(None, ge=1)  # local instance only; None: every core
    progress_bars: bool = True


def is_local(config: RayConfig) -> bool:
    return config.address is None and not os.environ.get("RAY_ADDRESS")


def local_cpus(config: RayConfig) -> int:
    return config.num_cpus or os.cpu_count() or 1


def init_ray(config: RayConfig, log_to_driver: bool = False, dashboard: bool = False) -> None:
    """Join ``config.address`` / ``RAY_ADDRESS``, or start a local instance.

    ``log_to_driver``: show what workers and actors print on the driver's console (``--verbose``).
    ``dashboard``: a local instance serves its dashboard on 127.0.0.1 (Ray Train needs it to watch its
    controller; without it, it logs a failed state query every second).
    """
    import ray
    from ray.data import DataContext

    local = is_local(config)
    try:
        ray.init(address=config.address, num_cpus=local_cpus(config) if local else None,
                 include_dashboard=dashboard and local, dashboard_host="127.0.0.1",
                 log_to_driver=log_to_driver, ignore_reinit_error=True,
                 runtime_env={"env_vars": LOCAL_WORKER_ENV} if local else None)
    except ConnectionError as err:
        if local:  # a local instance that fails to start is not a setting to fix
            raise
        address = config.address or os.environ.get("RAY_ADDRESS")
        raise RayUnreachable(f"cannot join the Ray cluster at {address} (ray.address or RAY_ADDRESS): {err}") from None
    DataContext.get_current().enable_progress_bars = config.progress_bars


def map_with_actors(rows: list[dict[str, Any]], actor: type, actor_kwargs: dict[str, Any], *, workers: int,
                    use_gpu: bool, progress: bool = False) -> list[dict[str, Any]]:
    """Send ``rows`` one at a time through ``workers`` Ray actors, and collect what they return.

    Each actor is built once as ``actor(**actor_kwargs)`` (where it loads its model) and then called with
    batches of one row, as columns (``{"key": array of one value}``); it returns columns of any length.
    An actor takes one CPU, and one GPU with ``use_gpu``. Starts or joins Ray first (``init_ray``).

    Returns:
        The rows the actors returned, in no set order.
    """
    import ray.data

    init_ray(RayConfig(progress_bars=progress))
    # One row a batch: rows are whole files or benchmark units, so actors balance by row.
    mapped = ray.data.from_items(rows).map_batches(
        actor, fn_constructor_kwargs=actor_kwargs, batch_size=1, concurrency=workers,
        num_gpus=1 if use_gpu else 0, num_cpus=1)
    return mapped.take_all()


def check_local_gpu(use_gpu: bool, workers: int) -> None:
    """Fail before loading anything when work done in this process (``workers`` 0) asks for a GPU that
    torch cannot see; Ray workers are checked where they run, which may be other machines.

    Raises:
        SetupError: naming the setting.
    """
    if not use_gpu or workers > 0:
        return
    import torch

    if not torch.cuda.is_available():
        raise SetupError(f"use_gpu (--gpu) is set but torch sees no CUDA device here (torch {torch.__version__}, "
                         f"CUDA {torch.version.cuda})")
