"""What ``promote.py`` does with a validated config: gate a challenger and apply the decision, or roll back."""

from __future__ import annotations

import tempfile
from pathlib import Path

from ..core.runtime import check_local_gpu
from . import promotion
from .config import PromoteConfig

PROMOTED, REFUSED = 0, 1


def run(config: PromoteConfig, dry_run: bool = False) -> int:
    """Gate ``config.model`` against the champion and move the aliases when it passes, or roll back
    ``config.name``; print the outcome. A ``dry_run`` evaluates and prints the decision but changes nothing
    (a rollback does nothing at all).

    Returns:
        The exit status: 0 when the gate passes or the rollback is done, 1 when the gate refuses.

    Raises:
        PipelineError: naming what is wrong (``PromotionError`` when the champion moved meanwhile).
    """
    with tempfile.TemporaryDirectory(prefix="cpl-promote-") as scratch:
        out = config.out or Path(scratch)
        if config.rollback:
            if dry_run:
                return PROMOTED
            record = promotion.rollback(config.name, config.reason, out)
            print(f"{config.name}: champion v{record['champion_before']} -> v{record['champion']}; "
                  f"previous-champion: {record['previous_champion'] or 'none'}")
            return PROMOTED
        check_local_gpu(config.evaluation.use_gpu, config.evaluation.workers)
        decision = promotion.propose(config.model, config, config.gate, out)
        print(decision.markdown(), end="")
        if dry_run:
            print("dry run: the registry is unchanged")
            return PROMOTED if decision.promote else REFUSED
        promotion.apply(decision, out)
    if decision.promote:
        print(f"{decision.name}: champion is now v{decision.challenger}"
              + (f" (previous-champion: v{decision.champion})" if decision.champion else ""))
    return PROMOTED if decision.promote else REFUSED
