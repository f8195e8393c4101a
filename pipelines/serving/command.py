"""What ``restore.py`` does with a validated config: resolve the model, restore the images, report."""

from __future__ import annotations

import sys

from ..core import references, tracking
from ..core.errors import DataError
from ..core.runtime import check_local_gpu
from . import restoring
from .config import RestoreConfig


def run(config: RestoreConfig) -> int:
    """Restore ``config.input`` into ``config.output``; print the summary, and each skipped file on stderr.

    Returns:
        The exit status: 0 when every readable image was restored.

    Raises:
        PipelineError: nothing could be done (unknown model or alias, unreadable input), or the only
            input, or every one, could not be restored.
    """
    check_local_gpu(config.restore.use_gpu, config.restore.workers)
    uri = tracking.resolve_tracking_uri()
    if references.is_mlflow(config.model):
        tracking.check_reachable(uri)
    summary = restoring.restore_images(references.resolve(config.model, uri), config.input, config.output,
                                       config.restore, uri)
    if len(summary.outcomes) == 1 and summary.skipped and len(next(iter(summary.skipped.values()))) == 1:
        (reason, (name,)), = summary.skipped.items()  # a single input: its failure is the error
        raise DataError(f"{name}: {reason}")
    first, *skips = summary.lines()
    print(first)
    for line in skips:
        print(line, file=sys.stderr)
    if skips and not summary.outcomes.keys() - summary.skipped.keys():
        raise DataError(f"{config.input}: no image could be restored")
    return 0
