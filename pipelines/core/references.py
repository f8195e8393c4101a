"""Model references: which model a command means, and its weights loaded safely.

A reference is one of

- ``models:/<name>@<alias>`` or ``models:/<name>/<version>``: a registered model version;
- ``models:/<model id>`` or ``runs:/<run id>/model``: a logged model that may not be registered;
- a checkpoint file (``model.pt``) or a Ray Train checkpoint folder holding one, local or ``s3://``.

Weights are read with ``cpl_model.load_checkpoint`` (``torch.load(weights_only=True)``), never by
running the pyfunc's logged code, so evaluating or restoring with a model from elsewhere cannot run
code from it.
"""

from __future__ import annotations

import os
import re
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from . import storage
from .errors import DataError, PipelineError
from .runtime import TRACKING_STORE_KEY

_REGISTERED = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/]+)|/(?P<version>\d+))$")


class ModelNotFound(PipelineError, ValueError):
    """The reference names nothing: no such registered model, alias, version, run or file."""


@dataclass(frozen=True)
class ModelRef:
    """What a reference resolved to. ``version`` and ``name`` are set for registered models."""

    reference: str
    uri: str  # where the weights are downloaded from: pinned to a version, never to a moving alias
    name: str | None = None
    version: str | None = None
    run_id: str | None = None
    model_id: str | None = None  # MLflow 3's logged model, which evaluation metrics are linked to

    @property
    def label(self) -> str:
        return f"{self.name} v{self.version}" if self.version else self.reference

    def as_dict(self) -> dict[str, str | None]:
        return asdict(self)


def is_mlflow(reference: str) -> bool:
    return reference.startswith(("models:/", "runs:/"))


def read_by_actors(ref: ModelRef, tracking_uri: str) -> dict[str, str]:
    """What Ray actors that load ``ref`` read, by key (for ``runtime.check_locations``): the checkpoint, or
    the tracking store a models:/ or runs:/ reference resolves in."""
    return {TRACKING_STORE_KEY: tracking_uri} if is_mlflow(ref.reference) else {"model": ref.uri}


def resolve(reference: str, tracking_uri: str) -> ModelRef:
    """Pin ``reference`` to what it names now (an alias to its version).

    Raises:
        ModelNotFound: naming the reference and what is missing.
    """
    if not is_mlflow(reference):
        from cpl_model import WEIGHTS  # here, not at the top: torch loads only once a command runs

        # Absolute: Ray actors that load it have other working directories.
        path = storage.absolute(reference if reference.endswith(".pt") else storage.join(reference, WEIGHTS))
        if not storage.exists(path):
            raise ModelNotFound(f"{reference}: no checkpoint ({WEIGHTS}) there")
        return ModelRef(reference, path)
    match = _REGISTERED.match(reference)
    if match is None:
        return ModelRef(reference, reference)  # models:/<model id>, runs:/...: MLflow resolves them on download
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    client = MlflowClient(tracking_uri)
    name, alias = match["name"], match["alias"]
    try:
        client.get_registered_model(name)
    except MlflowException:
        raise ModelNotFound(f"{reference}: no registered model {name!r} at {tracking_uri}") from None
    try:
        found = (client.get_model_version_by_alias(name, alias) if alias
                 else client.get_model_version(name, match["version"]))
    except MlflowException:
        missing = f"alias {alias!r}" if alias else f"version {match['version']}"
        raise ModelNotFound(f"{reference}: registered model {name!r} has no {missing}") from None
    logged = found.model_id or (found.source.removeprefix("models:/") if found.source.startswith("models:/m-")
                                else None)
    return ModelRef(reference, f"models:/{name}/{found.version}", name, str(found.version), found.run_id, logged)


def load(ref: ModelRef, tracking_uri: str, device: str = "cpu"):
    """The network behind ``ref`` in eval mode, from its weights-only checkpoint.

    Raises:
        ModelNotFound: the MLflow model or its weights cannot be found.
        DataError: the file is not one of our checkpoints (a ValueError, as before).
    """
    import cpl_model

    with tempfile.TemporaryDirectory(prefix="cpl-model-") as scratch:
        local = Path(scratch) / cpl_model.WEIGHTS
        if is_mlflow(ref.uri):
            local = _download_weights(ref, tracking_uri, Path(scratch))
        elif storage.is_s3(ref.uri):
            local.write_bytes(storage.read_bytes(ref.uri))
        else:
            local = Path(ref.uri)
        try:
            model, _ = cpl_model.load_checkpoint(local, map_location=device)
        except ValueError as err:  # not a checkpoint, or not ours: the user pointed at the wrong file
            raise DataError(f"{ref.reference}: {err}") from None
    return model


class ModelActor:
    """Base of a Ray actor (``runtime.map_with_actors``) that holds the model behind a reference, loaded
    once when the actor starts, on its GPU with ``use_gpu``."""

    def __init__(self, ref: dict[str, Any], tracking_uri: str, use_gpu: bool) -> None:
        self.device = "cuda" if use_gpu else "cpu"
        self.model = load(ModelRef(**ref), tracking_uri, self.device)


def _artifact_location(ref: ModelRef, tracking_uri: str) -> str:
    """Where the model's files are. Resolved through our client: ``download_artifacts`` would resolve
    ``models:/`` URIs against MLflow's default registry, not ``tracking_uri``."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri, registry_uri=tracking_uri)
    if ref.version:
        return client.get_model_version_download_uri(ref.name, ref.version)
    if ref.uri.startswith("models:/"):
        return client.get_logged_model(ref.uri.removeprefix("models:/")).artifact_location
    return ref.uri  # runs:/<id>/<path>: resolved with tracking_uri


def _download_weights(ref: ModelRef, tracking_uri: str, scratch: Path) -> Path:
    import mlflow
    from mlflow.exceptions import MlflowException
    from mlflow.models import Model

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # one bar per file is noise here
    try:
        location = _artifact_location(ref, tracking_uri).rstrip("/")
        # Two files, not the whole model folder: the weights and the MLmodel that names them.
        mlmodel = mlflow.artifacts.download_artifacts(artifact_uri=f"{location}/MLmodel", dst_path=str(scratch),
                                                      tracking_uri=tracking_uri)
        flavor = Model.load(mlmodel).flavors.get("python_function", {})
        weights = flavor.get("artifacts", {}).get("weights", {}).get("path")
        if not weights:
            raise ModelNotFound(f"{ref.reference}: not a cpl-restore model (no 'weights' artifact in its MLmodel)")
        return Path(mlflow.artifacts.download_artifacts(artifact_uri=f"{location}/{weights}", dst_path=str(scratch),
                                                        tracking_uri=tracking_uri))
    except (MlflowException, OSError) as err:
        raise ModelNotFound(f"{ref.reference}: cannot download the model from {tracking_uri}: "
                            f"{str(err).splitlines()[0]}") from None
