"""What ``evaluate.py`` does with a validated config: evaluate, write and log the report, print it."""

from __future__ import annotations

import time
from pathlib import Path

from ..core.runtime import check_local_gpu
from . import reports
from .config import EvaluateConfig


def run(config: EvaluateConfig) -> int:
    """Evaluate ``config.model`` on ``config.data``, then print the report table and where it went.

    Returns:
        The exit status, 0.

    Raises:
        PipelineError: naming the reference, URI or file at fault (see ``reports.run``).
    """
    check_local_gpu(config.evaluation.use_gpu, config.evaluation.workers)
    out = config.out or Path("outputs/evaluations") / time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    report, run_id = reports.run(config.model, config, out, config.log, config.experiment)
    print(reports.markdown(report), end="")
    print(f"report: {out / 'report.json'}" + (f"\nMLflow evaluation run: {run_id}" if run_id else ""))
    return 0
