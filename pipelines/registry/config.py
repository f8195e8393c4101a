"""What a promotion runs with: the gate, and the config of ``promote.py``, validated before torch or MLflow
load."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field, model_validator

from ..core.config import Frozen
from ..core.tracking import resolve_tracking_uri
from ..evaluation.config import BenchmarkChoice

HELP = """\
Promote a registered model version to `champion` if it beats the current one; or roll back.

The challenger and the current champion are evaluated on the same frozen set (--data; default
"samples", see evaluate.py). The gate passes when the mean PSNR gain over the champion across
tasks is at least --margin dB and no task loses more than --tolerance dB; the first model passes when it
beats the degraded input on every task. Passing moves `champion` to the challenger and the old champion
to `previous-champion`. Every decision is recorded in version tags, the version description and a run
in the MLflow experiment cpl-promotions. Tracking: MLFLOW_TRACKING_URI, else outputs/mlflow.db.

Exit status: 0 when the gate passes (or the rollback is done); 1 when the gate refuses; 2 on an error
(one line on stderr), including a champion that changed while the challenger was being evaluated.
"""


class Gate(Frozen):
    """When a challenger replaces the champion. PSNR in dB, per task, on the same frozen set."""

    margin_db: float = Field(0.05, ge=0)  # the mean gain over the champion across tasks must reach this
    tolerance_db: float = Field(0.10, ge=0)  # and no task may lose more than this


class PromoteConfig(BenchmarkChoice):
    """``promote.py``: a challenger to gate (``model``) or a rollback of ``name``."""

    model: str | None = None  # models:/<name>/<version> or models:/<name>@<alias>
    rollback: bool = False  # make previous-champion the champion again
    name: str = "cpl-restore"  # the registered model a rollback acts on
    reason: str = ""  # recorded with a rollback
    out: Path | None = None  # the reports and decision; None: a temporary folder
    gate: Gate = Gate()

    @model_validator(mode="after")
    def _one_action(self) -> "PromoteConfig":
        if self.model is None and not self.rollback:
            raise ValueError("model (--model) or rollback (--rollback) is required")
        if self.model is not None and self.rollback:
            raise ValueError("model (--model) and rollback (--rollback) exclude each other")
        return self


def plan(config: PromoteConfig, options: Any = None) -> dict[str, Any]:
    """What ``--dry-run`` shows beside the config, before a dry run of the gate evaluates anything."""
    action = f"roll back {config.name}" if config.rollback else f"gate {config.model} against the champion"
    return {"plan": {"action": action, "tracking_uri": resolve_tracking_uri(),
                     "registry": "unchanged (dry run)" if options is not None and options.dry_run else "updated"}}

