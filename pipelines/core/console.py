"""What the entry points print: our own lines by default, the libraries' chatter only with ``--verbose``."""

from __future__ import annotations

import logging
import os

# Loggers of the libraries that the pipelines drive; by default they report warnings and errors only.
LIBRARY_LOGGERS = ("ray", "ray.data", "ray.train", "ray.tune", "deepspeed", "mlflow", "alembic", "urllib3", "botocore")


def configure(verbose: bool) -> None:
    """Quiet the libraries' INFO logging unless ``verbose``; called once by every entry point."""
    if verbose:
        return
    for name in LIBRARY_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
