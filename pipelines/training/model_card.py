"""The model card registered with every trained version (Mitchell et al. 2019)."""

from __future__ import annotations

from .config import TrainConfig

# checkpoint.select, in the card's words
SELECTION = {"worst_task_gain": "the checkpoint whose worst task gains most over its degraded input",
             "mean_psnr": "the checkpoint with the best mean validation PSNR"}


def model_card(config: TrainConfig, run_name: str, dataset: str, per_task: dict[str, dict[str, float]],
               step: int, init: str | None = None) -> str:
    """A short model card (Mitchell et al. 2019): what it is for, what it saw, how well it does.

    ``init``: the pinned reference the run started from (``model.init``); None: from scratch.
    """
    weights = f"an EMA of the weights (decay {config.optim.ema_decay})" if config.optim.ema_decay else "the weights"
    start = f"trained from scratch (seed {config.run.seed})"
    if init:
        given = f" (`model.init: {config.model.init}`)" if config.model.init != init else ""
        start = f"initialised from `{init}`{given} with a fresh optimiser"
    rows = "\n".join(f"| {task} | {v['input_psnr']:.2f} | {v['psnr']:.2f} | {v['input_ssim']:.4f} | {v['ssim']:.4f} |"
                     for task, v in per_task.items())
    return f"""# cpl-restore: {config.model.preset} / {config.model.prompt} prompts

All-in-one image restoration (noise, haze, rain, blur, low light and their composites) with
Contrastive Prompt Learning (Wu et al., arXiv 2504.09973) on a PromptIR-style network.

- **Intended use:** restoring RGB photographs degraded by the tasks listed below. Input: float32
  (N, 3, H, W) in [0, 1], any size (tiled above 512 px).
- **Training run:** `{run_name}`, {start}, {step} optimiser steps; {weights} of
  {SELECTION[config.checkpoint.select]} (`checkpoint.select: {config.checkpoint.select}`).
- **Training data:** {dataset}; recipes `{config.data.synthesis.recipes}`, {config.data.synthesis.patch}² patches.
- **Objective:** L1 (weight {config.loss.l1_weight}) + CPR {config.loss.cpr or "(defaults)"}.
- **Known limits:** degradations or severities outside the training recipes, and composites not in
  them, are untested; short CPU runs (the quickstart) are demonstrations, not useful restorers.

## Validation (synthetic pairs from held-out source images)

| task | input PSNR | PSNR | input SSIM | SSIM |
|---|---|---|---|---|
{rows}
"""
