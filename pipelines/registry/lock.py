"""The registry lock: a registered model ``<name>.promotion-lock`` that only one process can create (the
tracking store enforces unique names), held while a promotion or rollback moves aliases."""

from __future__ import annotations

import contextlib
import getpass
import os
import socket
import time
from typing import Iterator

from ..core.errors import PipelineError

LOCK_SUFFIX = ".promotion-lock"
LOCK_WAIT_S = 60.0  # the critical section takes well under a second; waiting longer means trouble
LOCK_STALE_S = 600.0  # a lock this old was left by a killed process


class PromotionError(PipelineError, RuntimeError):
    """The registry was not changed (or is exactly as before); the message says why."""


def who() -> str:
    """Who decides, for the audit trail: user@host."""
    return f"{getpass.getuser()}@{socket.gethostname()}"


@contextlib.contextmanager
def registry_lock(client, name: str, wait_s: float = LOCK_WAIT_S) -> Iterator[None]:
    """Hold ``<name>.promotion-lock``: a registered model whose creation only one process can win.

    Raises:
        PromotionError: the lock stayed held for ``wait_s`` seconds (naming holder and how to clear it).
    """
    from mlflow.exceptions import MlflowException

    lock = name + LOCK_SUFFIX
    holder = f"{who()} pid {os.getpid()}"
    deadline = time.monotonic() + wait_s
    while True:
        try:
            client.create_registered_model(lock, description=f"held by {holder} while moving aliases of {name}; "
                                                            "delete it if no promotion is running")
            break
        except MlflowException as err:
            if err.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
        held = _lock_holder(client, lock)
        if held is not None and time.time() - held.creation_timestamp / 1000 > LOCK_STALE_S:
            _break_stale(client, lock, held.creation_timestamp)
            continue
        if time.monotonic() > deadline:
            since = time.strftime("%H:%M:%S UTC", time.gmtime(held.creation_timestamp / 1000)) if held else "?"
            raise PromotionError(f"registry lock {lock!r} has been held since {since} "
                                 f"({held.description if held else 'holder unknown'})")
        time.sleep(0.2)
    try:
        yield
    finally:
        client.delete_registered_model(lock)


def _lock_holder(client, lock: str):
    from mlflow.exceptions import MlflowException

    try:
        return client.get_registered_model(lock)
    except MlflowException:
        return None  # released between our attempt and this read


def _break_stale(client, lock: str, created_ms: int) -> None:
    """Delete a lock left by a killed process, unless it was re-created since we looked."""
    from mlflow.exceptions import MlflowException

    held = _lock_holder(client, lock)
    if held is not None and held.creation_timestamp == created_ms:
        with contextlib.suppress(MlflowException):
            client.delete_registered_model(lock)
