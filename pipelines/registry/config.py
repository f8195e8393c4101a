"""What a promotion runs with: the gate, and the config of ``promote.py``; and the config of
``import_weights.py``. Both are validated before torch or MLflow load."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

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


IMPORT_HELP = """\
Register a published checkpoint as a version of a cpl-restore model, the way training registers one.

--format promptir: PromptIR's PyTorch Lightning checkpoint (va1shn9v/PromptIR, its model.ckpt); the
network under `state_dict` with keys `net.*`. It becomes our network with dense prompts.
--format cplir: CPLIR's BasicSR checkpoint (Aitical/CPLIR, SparsePromptIR); `params_ema` when present,
else `params` (--param-key picks one). It becomes our network with sparse prompts (top-1).

The file is read with torch.load(weights_only=True), local or s3://, and must fit our network key by key
and shape by shape; the first mismatch is named in one line and nothing is registered. The version gets
the pyfunc, the weights and a model card naming the source, its license and the key mapping.
Tracking: MLFLOW_TRACKING_URI, else outputs/mlflow.db.
"""

WeightsFormat = Literal["promptir", "cplir"]


class ImportConfig(Frozen):
    """``import_weights.py``: which published checkpoint, in which authors' format, registered under which name."""

    format: WeightsFormat
    checkpoint: str  # a local path or s3:// URI
    name: str = "cpl-restore"  # the registered model that gets the new version
    param_key: Literal["auto", "params", "params_ema"] = "auto"  # cplir: auto is params_ema when present
    experiment: str = "cpl-imports"  # the MLflow experiment of the import run

    @model_validator(mode="after")
    def _param_key_is_basicsr_s(self) -> "ImportConfig":
        if self.param_key != "auto" and self.format != "cplir":
            raise ValueError(f"param_key (--param-key) is a BasicSR entry; a {self.format} checkpoint has none")
        return self


def import_plan(config: ImportConfig, options: Any = None) -> dict[str, Any]:
    """What ``--dry-run`` shows beside the config: what the checkpoint becomes, and where it is registered."""
    network = "dense prompts (PromptIR)" if config.format == "promptir" else "sparse prompts, top-1 (CPLIR's SPM)"
    return {"plan": {"network": network, "registered_model": config.name, "tracking_uri": resolve_tracking_uri()}}
