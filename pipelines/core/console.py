"""What the entry points print: our own lines by default, the libraries' chatter only with ``--verbose``.

    console.configure(verbose)                  # once, first thing in every entry point
    for item in console.progress_bar(items, desc="restoring", unit="image", total=len(items)):
        ...                                     # one tqdm bar on stderr
    with console.without_lines(REGISTRY_NOTICES):
        mlflow.pyfunc.log_model(...)            # its notices on stderr are dropped, everything else passes

By default the libraries keep their warnings and errors and lose their INFO lines. Ray and MLflow set
the level of their top loggers (``ray``, ``mlflow``) when imported, after ``configure`` has run, so the
levels go on the loggers below them, which they leave alone, and MLflow also reads its level from
``MLFLOW_LOGGING_LEVEL``. Ray Data's progress stays (on a terminal a bar, otherwise lines on its logger).
Workers' output is a separate matter: the training job starts Ray with ``log_to_driver`` only when
verbose.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import re
import sys
from collections.abc import Iterable, Iterator
from typing import TextIO, TypeVar

# Loggers whose INFO lines are chatter: the loggers below Ray's top one, and the other libraries'.
LIBRARY_LOGGERS = ("ray._private", "ray.air", "ray.autoscaler", "ray.dashboard", "ray.data._internal", "ray.train",
                   "ray.tune", "ray.util", "deepspeed", "mlflow", "alembic", "urllib3", "botocore")
# Environment read by the libraries (also by local Ray workers, which inherit it) when not verbose.
QUIET_ENVIRONMENT = {
    "MLFLOW_LOGGING_LEVEL": "WARNING",
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",  # tqdm bars of every artifact download
    "RAY_TRAIN_ENABLE_V2_MIGRATION_WARNINGS": "0",  # advice on APIs we do not use
}
Item = TypeVar("Item")

# What MLflow prints on stderr, outside its loggers, when it registers a model; the summary says it.
REGISTRY_NOTICES = ("Successfully registered model", "Registered model", "Created version")
# What MLflow prints when a run on a tracking server ends; the driver names the run itself.
RUN_LINKS = ("🏃 View run", "🧪 View experiment")
# What Ray's raylet pushes to the driver's stdout about workers that died, whatever ``log_to_driver``
# says; the training driver reports a failed worker group in its own words.
RAYLET_NOTICES = ("(raylet",)  # "(raylet)", or "(raylet, ip=…)" from another node
ANSI_CODES = re.compile(r"\x1b\[[0-9;]*m")
# Ray Data's progress: a bar on a terminal, and otherwise lines on this logger, kept at INFO by default.
RAY_DATA_PROGRESS = "ray.data._internal.progress"
# Notices logged without being about the job, by logger: dropped by default; the loggers' other lines pass.
NOTICES = {
    "ray._private.authentication.authentication_token_setup": ("Token authentication is enabled",),
    RAY_DATA_PROGRESS: ("Progress bars disabled", "Progress bars for operators disabled", "Progress will be logged",
                        "[dataset]: A new progress UI"),
}


class _NoticeFilter(logging.Filter):
    def __init__(self, prefixes: tuple[str, ...]) -> None:
        super().__init__()
        self.prefixes = prefixes

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.prefixes)


def configure(verbose: bool) -> None:
    """Quiet the libraries' INFO logging and notices unless ``verbose``; called once by every entry point."""
    if verbose:
        return
    for name in LIBRARY_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    for name, value in QUIET_ENVIRONMENT.items():
        os.environ.setdefault(name, value)
    logging.getLogger(RAY_DATA_PROGRESS).setLevel(logging.INFO)
    for name, prefixes in NOTICES.items():
        logger = logging.getLogger(name)
        if not any(isinstance(existing, _NoticeFilter) for existing in logger.filters):
            logger.addFilter(_NoticeFilter(prefixes))


def progress_bar(items: Iterable[Item], *, desc: str, unit: str, total: int | None = None,
                 enabled: bool = True) -> Iterable[Item]:
    """``items``, counted by one tqdm bar on stderr as they are consumed (``desc``: the work, ``unit``: what
    is counted, ``total``: how many, when known); ``items`` untouched when not ``enabled`` or when there is
    nothing to count (``total`` 0), so that an error about empty input stays the only line."""
    if not enabled or total == 0:
        return items
    from tqdm import tqdm

    return tqdm(items, desc=desc, unit=unit, total=total)


@contextlib.contextmanager
def without_lines(prefixes: tuple[str, ...], enabled: bool = True, stream: str = "stderr") -> Iterator[None]:
    """Drop the lines written to ``sys.stderr`` (or ``sys.stdout``) that start with one of ``prefixes``, colour
    codes aside, while inside; pass the rest.

    For a library's notices printed outside any logger. ``enabled`` False (verbose) keeps them all.
    """
    if not enabled:
        yield
        return
    original = getattr(sys, stream)
    filtered = _LineFilter(original, prefixes)
    setattr(sys, stream, filtered)
    try:
        yield
    finally:
        filtered.flush_pending()
        setattr(sys, stream, original)


class _LineFilter(io.TextIOBase):
    """A text stream that forwards whole lines to ``target`` unless they start with one of ``prefixes``, or
    continue such a line (blank or indented lines right after it: Ray prints a node's log tail that way)."""

    def __init__(self, target: TextIO, prefixes: tuple[str, ...]) -> None:
        self.target, self.prefixes, self.pending, self.dropping = target, prefixes, "", False

    def write(self, text: str) -> int:
        self.pending += text
        *lines, self.pending = self.pending.split("\n")
        for line in lines:
            if not self._dropped(line):
                self.target.write(line + "\n")
        return len(text)

    def _dropped(self, line: str) -> bool:
        plain = ANSI_CODES.sub("", line)
        continues = self.dropping and (not plain.strip() or plain[0].isspace())
        self.dropping = continues or plain.startswith(self.prefixes)
        return self.dropping

    def isatty(self) -> bool:
        return self.target.isatty()

    def flush(self) -> None:
        self.target.flush()

    def flush_pending(self) -> None:
        if self.pending and not self._dropped(self.pending):
            self.target.write(self.pending)
        self.pending = ""
        self.target.flush()
