"""Starting or joining Ray, the same way for every pipeline."""

from __future__ import annotations

import os

from pydantic import Field

from .config import Frozen

# For a local instance: let worker processes keep freed memory instead of page-faulting image-sized
# buffers in again (slow on VMs with costly page faults; docs/benchmarks.md). On a cluster, set
# these in the job's runtime_env or the node image instead.
LOCAL_WORKER_ENV = {"MALLOC_MMAP_THRESHOLD_": str(256 << 20), "MALLOC_TRIM_THRESHOLD_": str(256 << 20)}


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

    ``log_to_driver``: show what workers print (training progress) on the driver's console.
    ``dashboard``: a local instance serves its dashboard on 127.0.0.1 (Ray Train needs it to watch its
    controller; without it, it logs a failed state query every second).
    """
    import ray
    from ray.data import DataContext

    local = is_local(config)
    ray.init(address=config.address, num_cpus=local_cpus(config) if local else None,
             include_dashboard=dashboard and local, dashboard_host="127.0.0.1",
             log_to_driver=log_to_driver, ignore_reinit_error=True,
             runtime_env={"env_vars": LOCAL_WORKER_ENV} if local else None)
    DataContext.get_current().enable_progress_bars = config.progress_bars
