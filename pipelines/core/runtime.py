"""Starting or joining Ray, and spreading work over Ray actors, the same way for every pipeline."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pydantic import Field

from .config import ConfigError, Frozen
from .errors import PipelineError, SetupError

# For a local instance: let worker processes keep freed memory instead of page-faulting image-sized
# buffers in again (slow on VMs with costly page faults; docs/benchmarks.md). On a cluster, set
# these in the job's runtime_env or the node image instead.
LOCAL_WORKER_ENV = {"MALLOC_MMAP_THRESHOLD_": str(256 << 20), "MALLOC_TRIM_THRESHOLD_": str(256 << 20)}

# Folders every node of a cluster mounts at the same path (an NFS or FSx mount), separated by os.pathsep:
# local paths under them are accepted on a cluster that spans machines.
SHARED_PATHS_VARIABLE = "CPL_SHARED_PATHS"
# The key under which callers pass the tracking store to ``check_locations``: a refused one is told to use a
# tracking server, not object storage.
TRACKING_STORE_KEY = "MLFLOW_TRACKING_URI"


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


def init_ray(config: RayConfig, log_to_driver: bool = False, dashboard: bool = False,
             locations: dict[str, str | None] | None = None) -> None:
    """Join ``config.address`` / ``RAY_ADDRESS``, or start a local instance; then check ``locations``.

    With no address a local instance is started even when Ray's record of the machine's current cluster
    names one (a head stopped without ``ray stop`` leaves it behind).
    ``log_to_driver``: show what workers and actors print on the driver's console (``--verbose``).
    ``dashboard``: a local instance serves its dashboard on 127.0.0.1 (Ray Train needs it to watch its
    controller; without it, it logs a failed state query every second).
    ``locations``: config key -> URI that the job's Ray workers read or write (see ``check_locations``).

    Raises:
        RayUnreachable: naming the configured address.
        ConfigError: a location that only one machine of the cluster can see.
    """
    import ray
    from ray.data import DataContext

    local = is_local(config)
    address = None if local else config.address or os.environ["RAY_ADDRESS"]
    if address is not None:
        check_reachable(address)
    try:
        ray.init(address="local" if local else config.address, num_cpus=local_cpus(config) if local else None,
                 include_dashboard=dashboard and local, dashboard_host="127.0.0.1",
                 log_to_driver=log_to_driver, ignore_reinit_error=True,
                 runtime_env={"env_vars": LOCAL_WORKER_ENV} if local else None)
    except ConnectionError as err:
        if local:  # a local instance that fails to start is not a setting to fix
            raise
        raise _unreachable(address, str(err)) from None
    DataContext.get_current().enable_progress_bars = config.progress_bars
    check_locations(locations or {})


def check_reachable(address: str, timeout: float = 10.0) -> None:
    """Fail in ``timeout`` seconds, naming ``address``, when nothing listens there: Ray itself retries for
    minutes. ``auto`` is the address Ray's record of this machine's cluster names.

    Raises:
        RayUnreachable: naming the address and where it was configured.
    """
    import socket

    target = address
    if address == "auto":
        from ray._private.utils import read_ray_address

        target = read_ray_address() or address  # no record: Ray says so itself, at once
    host, _, port = target.removeprefix("ray://").rpartition(":")
    if not port.isdigit():
        return  # not host:port; Ray names what is wrong with it
    try:
        socket.create_connection((host, int(port)), timeout).close()
    except OSError as err:
        raise _unreachable(address, f"nothing answers at {host}:{port} ({err.strerror or err})") from None


def _unreachable(address: str, why: str) -> RayUnreachable:
    return RayUnreachable(f"cannot join the Ray cluster at {address} (ray.address or RAY_ADDRESS): {why}")


def cluster_nodes() -> int:
    """How many machines the joined Ray cluster's work may land on: its live nodes, or 2 when it is one node
    that offers no CPU (a head that runs no work, whose autoscaler adds the nodes that will)."""
    import ray

    nodes = [node for node in ray.nodes() if node["Alive"]]
    if len(nodes) == 1 and not nodes[0]["Resources"].get("CPU"):
        return 2
    return len(nodes)


def node_local_path(uri: str) -> str | None:
    """The local file or folder ``uri`` names (a path, ``file:``, or a ``sqlite:///`` store); None for a URI
    every machine reaches (``s3://``, ``http(s)://``, a database server)."""
    for prefix in ("sqlite:///", "file://", "file:"):
        if uri.startswith(prefix):
            return "/" + uri.removeprefix(prefix).lstrip("/")
    return None if "://" in uri else uri


def shared_paths() -> list[Path]:
    return [Path(p).resolve() for p in os.environ.get(SHARED_PATHS_VARIABLE, "").split(os.pathsep) if p]


def check_locations(locations: dict[str, str | None]) -> None:
    """On a Ray cluster that spans machines, refuse each location only one machine can see: a local path is
    a different disk on each node, so its data would be missing, or lost, without an error.

    Paths under a folder named in ``CPL_SHARED_PATHS`` are accepted. Call after ``init_ray``.

    Raises:
        ConfigError: naming the first such key and what to use instead.
    """
    paths = {key: node_local_path(uri) for key, uri in locations.items() if uri}
    named = {key: (locations[key], Path(path).resolve()) for key, path in paths.items() if path is not None}
    if not named or (nodes := cluster_nodes()) <= 1:
        return
    shared = shared_paths()
    for key, (uri, path) in named.items():
        if any(path == root or root in path.parents for root in shared):
            continue
        instead = "an HTTP tracking server (http://…)" if key.startswith(TRACKING_STORE_KEY) else "s3://…"
        raise ConfigError(f"{key}: {uri} is on this machine only, and the Ray cluster spans {nodes} nodes; use "
                          f"{instead}, or list a folder every node mounts in {SHARED_PATHS_VARIABLE}")


def map_with_actors(rows: list[dict[str, Any]], actor: type, actor_kwargs: dict[str, Any], *, workers: int,
                    use_gpu: bool, progress: bool = False,
                    locations: dict[str, str | None] | None = None) -> list[dict[str, Any]]:
    """Send ``rows`` one at a time through ``workers`` Ray actors, and collect what they return.

    Each actor is built once as ``actor(**actor_kwargs)`` (where it loads its model) and then called with
    batches of one row, as columns (``{"key": array of one value}``); it returns columns of any length.
    An actor takes one CPU, and one GPU with ``use_gpu``. Starts or joins Ray first (``init_ray``), which
    checks the ``locations`` the actors read and write.

    Returns:
        The rows the actors returned, in no set order.
    """
    import ray.data

    init_ray(RayConfig(progress_bars=progress), locations=locations)
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
