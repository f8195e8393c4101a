"""Logging a trained model into its MLflow run and registering it: pyfunc, grid, model card, config."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
import yaml

import cpl_model

from .training_config import TrainConfig

SERVING_CODE = Path(__file__).with_name("serving.py")
CPL_MODEL_CODE = Path(cpl_model.__file__).parent


def image_grid(model: torch.nn.Module, validation: dict[str, Any], images: int) -> np.ndarray:
    """Rows of degraded | restored | clean for the first validation pair of each task (RGB uint8)."""
    first_of_task: dict[str, int] = {}
    for index, task in enumerate(validation["task"]):
        first_of_task.setdefault(task, index)
    rows = []
    for index in list(first_of_task.values())[:images]:
        degraded = validation["degraded"][index]
        x = torch.from_numpy(degraded).permute(2, 0, 1)[None].float() / 255
        with torch.inference_mode():
            restored = cpl_model.restore(model, x)[0].permute(1, 2, 0).numpy()
        rows.append(np.concatenate([degraded, (restored * 255).round().astype(np.uint8), validation["clean"][index]],
                                   axis=1))
    return np.concatenate(rows, axis=0) if rows else np.zeros((1, 1, 3), np.uint8)


def model_card(config: TrainConfig, run_name: str, dataset: str, per_task: dict[str, dict[str, float]],
               step: int) -> str:
    """A short model card (Mitchell et al. 2019): what it is for, what it saw, how well it does."""
    rows = "\n".join(f"| {task} | {v['input_psnr']:.2f} | {v['psnr']:.2f} | {v['input_ssim']:.4f} | {v['ssim']:.4f} |"
                     for task, v in per_task.items())
    return f"""# cpl-restore: {config.model.preset} / {config.model.prompt} prompts

All-in-one image restoration (noise, haze, rain, blur, low light and their composites) with
Contrastive Prompt Learning (Wu et al., arXiv 2504.09973) on a PromptIR-style network.

- **Intended use:** restoring RGB photographs degraded by the tasks listed below. Input: float32
  (N, 3, H, W) in [0, 1], any size (tiled above 512 px).
- **Training run:** `{run_name}`, {step} optimiser steps, best checkpoint by validation PSNR.
- **Training data:** {dataset}; recipes `{config.data.synthesis.recipes}`, {config.data.synthesis.patch}² patches.
- **Objective:** L1 (weight {config.loss.l1_weight}) + CPR {config.loss.cpr or "(defaults)"}.
- **Known limits:** degradations or severities outside the training recipes, and composites not in
  them, are untested; short CPU runs (the quickstart) are demonstrations, not useful restorers.

## Validation (synthetic pairs from held-out source images)

| task | input PSNR | PSNR | input SSIM | SSIM |
|---|---|---|---|---|
{rows}
"""


def log_and_register(config: TrainConfig, resolved: dict, model: torch.nn.Module, run_id: str, uri: str,
                     run_name: str, dataset: str, per_task: dict[str, dict[str, float]],
                     validation: dict[str, Any], step: int) -> tuple[str, str | None]:
    """Log config, grid, card and the pyfunc model into the run; register it. Returns (model URI, version)."""
    import mlflow
    from mlflow import MlflowClient
    from mlflow.models import ModelSignature
    from mlflow.types import Schema, TensorSpec

    card = model_card(config, run_name, dataset, per_task, step)
    tensor = Schema([TensorSpec(np.dtype(np.float32), (-1, 3, -1, -1))])
    example = np.ascontiguousarray(validation["degraded"][:1].transpose(0, 3, 1, 2), dtype=np.float32) / 255
    mlflow.set_tracking_uri(uri)
    with tempfile.TemporaryDirectory() as scratch, mlflow.start_run(run_id=run_id):
        scratch = Path(scratch)
        weights = cpl_model.save_checkpoint(model, scratch / "model.pt", extra={"config": resolved, "step": step})
        (scratch / "config.yaml").write_text(yaml.safe_dump(resolved, sort_keys=False))
        (scratch / "model_card.md").write_text(card)
        grid = image_grid(model, validation, config.validation.images_in_grid)
        cv2.imwrite(str(scratch / "validation_grid.png"), cv2.cvtColor(grid, cv2.COLOR_RGB2BGR))
        for name in ("config.yaml", "model_card.md", "validation_grid.png"):
            mlflow.log_artifact(str(scratch / name))
        info = mlflow.pyfunc.log_model(
            name="model", python_model=str(SERVING_CODE), artifacts={"weights": str(weights)},
            code_paths=[str(CPL_MODEL_CODE)], signature=ModelSignature(inputs=tensor, outputs=tensor),
            input_example=example, pip_requirements=_requirements(),
            registered_model_name=config.tracking.model_name if config.tracking.register_model else None)
    version = getattr(info, "registered_model_version", None)
    if version is not None:
        MlflowClient(uri).update_model_version(config.tracking.model_name, str(version), description=card)
        return f"models:/{config.tracking.model_name}/{version}", str(version)
    return info.model_uri, None


def _requirements() -> list[str]:
    """Pinned from this environment, without local labels (``2.13.0+cpu`` is not on PyPI)."""
    from importlib.metadata import version

    return [f"{name}=={version(name).split('+')[0]}" for name in ("torch", "numpy", "mlflow")]
