"""Gated promotion in the MLflow registry, rollback, and the audit trail MLflow does not keep.

    decision = propose(challenger, choice, gate, out)   # evaluate challenger and champion on one frozen set
    apply(decision)                                # move the aliases, if the gate passed
    rollback(name, reason)                         # previous-champion becomes champion again

Aliases: ``champion`` serves; ``previous-champion`` is what ``rollback`` restores. Each promoted version
records the champion it replaced (tag ``cpl.promotion.champion_before``), so rollbacks can be repeated
down the chain.

Concurrency: evaluation runs without a lock (it takes minutes). Moving the aliases happens in a short
critical section under a registry lock, a registered model ``<name>.promotion-lock`` that only one
process can create (the tracking store enforces unique names). Inside it the champion is read again;
if it is no longer the one the challenger was measured against, nothing moves and the promotion fails,
asking for a re-run against the new champion. So no update is lost and the aliases always agree.

MLflow keeps no alias history (mlflow#2169): every decision, promotion or refusal, is also a run in
the ``cpl-promotions`` experiment with ``decision.json`` and both evaluation reports.
"""

from __future__ import annotations

import contextlib
import json
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..core import references, tracking
from ..core.errors import DataError
from ..evaluation.config import BenchmarkChoice
from ..evaluation.reports import evaluate_and_record, open_target
from .config import Gate
from .lock import PromotionError, registry_lock, who

CHAMPION, PREVIOUS = "champion", "previous-champion"
EXPERIMENT = "cpl-promotions"
TAG = "cpl.promotion."


@dataclass
class Decision:
    promote: bool
    reason: str
    name: str
    challenger: str  # version
    champion: str | None  # the champion it was measured against (None: first model)
    gate: Gate
    table: dict[str, dict[str, float]]  # task -> input / champion / challenger PSNR and delta
    mean_gain_db: float
    data: dict[str, Any]
    evaluations: dict[str, str | None] = field(default_factory=dict)  # role -> evaluation run id
    at: str = field(default_factory=lambda: time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    by: str = field(default_factory=lambda: who())

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "gate": self.gate.model_dump()}

    def markdown(self) -> str:
        against = f"champion v{self.champion}" if self.champion else "the degraded input (first model)"
        lines = [f"**{'PROMOTE' if self.promote else 'REFUSE'}** {self.name} v{self.challenger} against {against} "
                 f"on {self.data['label']}: {self.reason}", "",
                 "| task | input PSNR | champion PSNR | challenger PSNR | delta |", "|---|---:|---:|---:|---:|"]
        for task, row in self.table.items():
            champion = f"{row['champion']:.2f}" if row.get("champion") is not None else "-"
            lines.append(f"| {task} | {row['input']:.2f} | {champion} | {row['challenger']:.2f} | "
                         f"{row['delta']:+.2f} |")
        lines.append(f"\nGate: mean gain >= {self.gate.margin_db} dB, no task below -{self.gate.tolerance_db} dB "
                     f"(first model: above the input on every task). Decided {self.at} by {self.by}.")
        return "\n".join(lines) + "\n"


def judge(challenger: dict[str, Any], champion: dict[str, Any] | None, gate: Gate) -> tuple[bool, str, dict, float]:
    """The gate on two evaluation reports of the same set: ``(promote, reason, per-task table, mean gain)``."""
    tasks = sorted(challenger["tasks"])
    if champion is not None and sorted(champion["tasks"]) != tasks:
        raise DataError(f"the reports cover different tasks ({tasks} vs {sorted(champion['tasks'])}); "
                         "they must come from the same benchmark")
    table = {}
    for task in tasks:
        ours = challenger["tasks"][task]
        reference = champion["tasks"][task]["model"]["psnr"] if champion else ours["input"]["psnr"]
        table[task] = {"input": ours["input"]["psnr"], "challenger": ours["model"]["psnr"],
                       "champion": champion["tasks"][task]["model"]["psnr"] if champion else None,
                       "delta": ours["model"]["psnr"] - reference}
    mean_gain = sum(row["delta"] for row in table.values()) / len(table)
    worst_task = min(table, key=lambda task: table[task]["delta"])
    worst = table[worst_task]["delta"]
    if champion is None:
        if worst <= 0:
            return False, f"does not beat the degraded input on {worst_task} ({worst:+.2f} dB)", table, mean_gain
        return True, f"beats the degraded input on every task (mean {mean_gain:+.2f} dB)", table, mean_gain
    if worst < -gate.tolerance_db:
        return False, (f"{worst_task} regresses by {-worst:.2f} dB (tolerance {gate.tolerance_db} dB)"), table, \
            mean_gain
    if mean_gain < gate.margin_db:
        return False, f"mean gain {mean_gain:+.2f} dB is below the margin of {gate.margin_db} dB", table, mean_gain
    return True, f"mean gain {mean_gain:+.2f} dB, worst task {worst_task} {worst:+.2f} dB", table, mean_gain


def _client(uri: str):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def alias_version(client, name: str, alias: str) -> str | None:
    from mlflow.exceptions import MlflowException

    try:
        return str(client.get_model_version_by_alias(name, alias).version)
    except MlflowException:
        return None


def propose(reference: str, choice: BenchmarkChoice, gate: Gate, out: Path) -> Decision:
    """Evaluate the challenger ``reference`` (a registered version) and the current champion on the benchmark
    or suite ``choice`` names.

    Raises:
        ModelNotFound, StorageError, DataError, PromotionError: naming what is wrong; nothing has changed.
    """
    uri = tracking.resolve_tracking_uri()
    tracking.check_reachable(uri)
    challenger = references.resolve(reference, uri)
    if challenger.version is None:
        raise PromotionError(f"{reference}: only a registered model version can be promoted "
                             "(models:/<name>/<version> or models:/<name>@<alias>)")
    client = _client(uri)
    champion_version = alias_version(client, challenger.name, CHAMPION)
    if champion_version == challenger.version:
        raise PromotionError(f"{challenger.name} v{challenger.version} is already {CHAMPION}")
    target = open_target(choice)  # opened once: both models see the same pairs
    refs = {"challenger": challenger}
    if champion_version:
        refs["champion"] = references.resolve(f"models:/{challenger.name}/{champion_version}", uri)
    reports, runs = {}, {}
    for role, ref in refs.items():
        reports[role], runs[role] = evaluate_and_record(ref, target, choice.evaluation, uri, out / role)
    promote, reason, table, mean_gain = judge(reports["challenger"], reports.get("champion"), gate)
    return Decision(promote, reason, challenger.name, challenger.version, champion_version, gate, table, mean_gain,
                    target.describe(), runs)


def apply(decision: Decision, out: Path) -> None:
    """Record ``decision`` and, when it promotes, move the aliases (under the registry lock).

    Raises:
        PromotionError: the champion changed since the challenger was measured against it; nothing moved.
    """
    uri = tracking.resolve_tracking_uri()
    client = _client(uri)
    name, version = decision.name, decision.challenger
    if decision.promote:
        with registry_lock(client, name):
            now = alias_version(client, name, CHAMPION)
            if now != decision.champion:
                decision.promote = False
                decision.reason = (f"{CHAMPION} moved from {_label(decision.champion)} to {_label(now)} while "
                                   f"v{version} was being evaluated; re-run to measure it against v{now}")
            else:
                if decision.champion:
                    client.set_registered_model_alias(name, PREVIOUS, decision.champion)
                client.set_registered_model_alias(name, CHAMPION, version)
                _tag_version(client, decision)  # inside the lock: tags and aliases tell one story
    if not decision.promote:
        _tag_version(client, decision)
    _describe(client, decision)
    _audit(uri, f"{'promote' if decision.promote else 'refuse'} {name} v{version}", decision.as_dict(),
           {"decision.md": decision.markdown()}, out)
    if not decision.promote and decision.reason.startswith(f"{CHAMPION} moved"):
        raise PromotionError(decision.reason)


def rollback(name: str, reason: str, out: Path) -> dict[str, Any]:
    """Make ``previous-champion`` the champion again; the new ``previous-champion`` is the one that version
    had replaced (if recorded). Returns the record logged to the audit trail.

    Raises:
        PromotionError: there is no ``previous-champion`` to roll back to.
    """
    uri = tracking.resolve_tracking_uri()
    tracking.check_reachable(uri)
    client = _client(uri)
    with registry_lock(client, name):
        champion, previous = alias_version(client, name, CHAMPION), alias_version(client, name, PREVIOUS)
        if previous is None:
            raise PromotionError(f"{name}: no {PREVIOUS} alias; nothing to roll back to")
        client.set_registered_model_alias(name, CHAMPION, previous)
        before = client.get_model_version(name, previous).tags.get(TAG + "champion_before")
        if before and before != champion:
            client.set_registered_model_alias(name, PREVIOUS, before)
        else:
            client.delete_registered_model_alias(name, PREVIOUS)
        record = {"name": name, "champion_before": champion, "champion": previous,
                  "previous_champion": before if before and before != champion else None, "reason": reason,
                  "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                  "by": who()}
        if champion:
            for key in ("at", "by", "reason"):
                client.set_model_version_tag(name, champion, f"cpl.rollback.{key}", record[key])
    _audit(uri, f"rollback {name} to v{previous}", record, {}, out)
    return record


def _label(version: str | None) -> str:
    return f"v{version}" if version else "none"


def _tag_version(client, decision: Decision) -> None:
    tags = {"decision": "promoted" if decision.promote else "refused", "reason": decision.reason,
            "champion_before": decision.champion or "", "mean_gain_db": f"{decision.mean_gain_db:.4f}",
            "data": decision.data["label"], "data_digest": decision.data["digest"], "at": decision.at,
            "by": decision.by, "margin_db": str(decision.gate.margin_db),
            "tolerance_db": str(decision.gate.tolerance_db)}
    for key, value in tags.items():
        client.set_model_version_tag(decision.name, decision.challenger, TAG + key, value)


def _describe(client, decision: Decision) -> None:
    """The version description: its model card (set at registration) followed by each gate decision."""
    version = client.get_model_version(decision.name, decision.challenger)
    description = version.description or ""
    if not description and version.run_id:
        with contextlib.suppress(Exception):  # a version registered by other code may have no card
            description = Path(client.download_artifacts(version.run_id, "model_card.md",
                                                         tempfile.mkdtemp())).read_text()
    client.update_model_version(decision.name, decision.challenger,
                                description=f"{description.rstrip()}\n\n## Promotion gate, {decision.at}\n\n"
                                            f"{decision.markdown()}".lstrip())


def _audit(uri: str, title: str, record: dict[str, Any], texts: dict[str, str], out: Path) -> None:
    """One run in the promotions experiment per decision or rollback: tags to search, JSON to read."""
    import mlflow

    files = {"decision.json": json.dumps(record, indent=2) + "\n", **texts}
    out.mkdir(parents=True, exist_ok=True)
    for filename, text in files.items():
        (out / filename).write_text(text)
    mlflow.set_tracking_uri(uri)
    experiment_id = tracking.ensure_experiment(uri, EXPERIMENT)
    tags = {"cpl.kind": "promotion", "cpl.model_name": record["name"]}
    with mlflow.start_run(experiment_id=experiment_id, run_name=title, tags=tags):
        for filename in files:  # the evaluation reports are in their own runs (ids in decision.json)
            mlflow.log_artifact(str(out / filename))
