"""Logging a trained or imported model into its MLflow run and registering it: weights, pyfunc, card, config,
grid."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
import yaml

import cpl_model

PYFUNC_CODE = Path(__file__).with_name("pyfunc.py")
CPL_MODEL_CODE = Path(cpl_model.__file__).parent


def log_and_register(model: torch.nn.Module, run_id: str, uri: str, *, config: dict[str, Any], card: str,
                     grid: np.ndarray | None, example: np.ndarray, step: int,
                     model_name: str | None) -> tuple[str, str | None]:
    """Log ``config`` (as config.yaml), the model ``card``, the validation ``grid`` (RGB uint8; None: an imported
    model, which has none) and the pyfunc model into run ``run_id``; register it as a new version of
    ``model_name`` unless that is None.

    ``example``: one float32 (1, 3, H, W) input for the pyfunc's signature. Returns (model URI, version).
    """
    import mlflow
    from mlflow import MlflowClient
    from mlflow.models import ModelSignature
    from mlflow.types import Schema, TensorSpec

    tensor = Schema([TensorSpec(np.dtype(np.float32), (-1, 3, -1, -1))])
    mlflow.set_tracking_uri(uri)
    with tempfile.TemporaryDirectory() as scratch, mlflow.start_run(run_id=run_id):
        scratch = Path(scratch)
        weights = cpl_model.save_checkpoint(model, scratch / cpl_model.WEIGHTS, extra={"config": config, "step": step})
        (scratch / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
        (scratch / "model_card.md").write_text(card)
        names = ["config.yaml", "model_card.md"]
        if grid is not None:
            cv2.imwrite(str(scratch / "validation_grid.png"), cv2.cvtColor(grid, cv2.COLOR_RGB2BGR))
            names.append("validation_grid.png")
        for name in names:
            mlflow.log_artifact(str(scratch / name))
        info = mlflow.pyfunc.log_model(
            name="model", python_model=str(PYFUNC_CODE), artifacts={"weights": str(weights)},
            code_paths=[str(CPL_MODEL_CODE)], signature=ModelSignature(inputs=tensor, outputs=tensor),
            input_example=example, pip_requirements=_requirements(), registered_model_name=model_name)
    version = getattr(info, "registered_model_version", None)
    if version is not None:
        MlflowClient(uri).update_model_version(model_name, str(version), description=card)
        return f"models:/{model_name}/{version}", str(version)
    return info.model_uri, None


def _requirements() -> list[str]:
    """Pinned from this environment, without local labels (``2.13.0+cpu`` is not on PyPI)."""
    from importlib.metadata import version

    return [f"{name}=={version(name).split('+')[0]}" for name in ("torch", "numpy", "mlflow")]
