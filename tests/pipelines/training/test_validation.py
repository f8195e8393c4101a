"""Validation metrics per task and recipe, input baselines, router usage and the checkpoint scores, on hand-made
pairs.
"""

from __future__ import annotations

import math
import typing
from collections import defaultdict

import numpy as np
import pytest
import torch

import cpl_model
from pipelines.training import validation
from pipelines.training.config import CheckpointSection

COMPOSITE = "low_light+haze+rain"


def hand_made_pairs(side: int = 32) -> dict:
    """Six real-looking pairs: smooth clean images, noisy degraded ones, three tasks (one composite)."""
    rng = np.random.default_rng(1)
    ramp = np.linspace(0, 1, side)
    clean = []
    for index in range(6):
        image = np.stack([np.outer(ramp, ramp) * (index + 1) / 6, np.outer(1 - ramp, ramp), np.outer(ramp, 1 - ramp)],
                         axis=-1)
        clean.append((image * 255).astype(np.uint8))
    clean = np.stack(clean)
    noise = rng.normal(0, 12 + 4 * np.arange(6)[:, None, None, None], clean.shape)
    degraded = np.clip(clean + noise, 0, 255).astype(np.uint8)
    return {"degraded": degraded, "clean": clean, "task": ["noise", "haze", COMPOSITE, "noise", COMPOSITE, "haze"]}


@pytest.fixture(scope="module")
def validated() -> tuple[torch.nn.Module, dict, dict[str, float]]:
    """The tiny sparse model validated once on the hand-made pairs, in chunks of 4 (so 6 pairs span two)."""
    model, pairs = cpl_model.build_model("tiny"), hand_made_pairs()
    model.eval()
    return model, pairs, validation.validate(model, pairs, torch.device("cpu"), torch.float32, batch_size=4)


def test_validate_reports_overall_and_per_task_metrics_under_mlflow_safe_names(validated):
    _, _, metrics = validated
    for prefix in ("val/", "val/noise/", "val/haze/", "val/low_light-haze-rain/"):
        for name in ("psnr", "ssim", "psnr_y", "ssim_y", "input_psnr", "input_ssim", "input_psnr_y", "input_ssim_y"):
            assert math.isfinite(metrics[prefix + name]), prefix + name
    assert not any("+" in key for key in metrics)
    assert all(isinstance(value, float) and math.isfinite(value) for value in metrics.values())


def test_validate_input_metrics_are_those_of_the_degraded_input_computed_directly(validated):
    _, pairs, metrics = validated
    direct = cpl_model.psnr(cpl_model.to_tensor(pairs["degraded"]), cpl_model.to_tensor(pairs["clean"]))
    assert metrics["val/input_psnr"] == pytest.approx(direct.mean().item(), rel=1e-5)
    rows = [i for i, task in enumerate(pairs["task"]) if task == COMPOSITE]
    assert metrics["val/low_light-haze-rain/input_psnr"] == pytest.approx(direct[rows].mean().item(), rel=1e-5)
    baseline = cpl_model.image_metrics(cpl_model.to_tensor(pairs["degraded"]), cpl_model.to_tensor(pairs["clean"]))
    assert metrics["val/input_ssim_y"] == pytest.approx(baseline["ssim_y"].mean().item(), rel=1e-5)


def test_validate_router_usage_fractions_of_each_site_sum_to_one_overall_and_per_task(validated):
    _, _, metrics = validated
    totals: dict[tuple[str, ...], float] = defaultdict(float)
    for key, value in metrics.items():
        if key.startswith("val/usage/"):
            totals[tuple(key.split("/")[2:-1])] += value  # (site,) or (site, task)
    sites = {group[0] for group in totals}
    assert sites  # the sparse tiny model has prompt sites
    assert set(totals) == {(site,) for site in sites} | {(site, task) for site in sites
                                                         for task in ("noise", "haze", "low_light-haze-rain")}
    assert all(total == pytest.approx(1.0) for total in totals.values()), totals
    assert "val/router_entropy" in metrics


def test_validate_leaves_the_model_in_training_mode(validated):
    model, _, _ = validated
    assert model.training


def test_validate_on_identical_images_with_an_identity_model_reports_finite_psnr():
    model = cpl_model.build_model("tiny")
    torch.nn.init.zeros_(model.output.weight)  # the global residual alone: output == input
    pairs = hand_made_pairs()
    pairs = {**pairs, "degraded": pairs["clean"].copy()}
    metrics = validation.validate(model, pairs, torch.device("cpu"), torch.float32)
    assert all(math.isfinite(value) for value in metrics.values()), metrics
    assert metrics["val/psnr"] == metrics["val/input_psnr"] == cpl_model.PSNR_CAP
    assert metrics["val/ssim"] == pytest.approx(1.0)


def test_worst_task_gain_is_the_least_gain_of_any_task_over_its_input(validated):
    _, _, metrics = validated
    gains = [metrics[f"val/{task}/psnr"] - metrics[f"val/{task}/input_psnr"]
             for task in ("noise", "haze", "low_light-haze-rain")]
    assert metrics["val/worst_task_gain"] == min(gains)


class Scaled(torch.nn.Module):
    """The input times ``factor``, clipped to [0, 1]: the identity at 1; at 2 it undoes halving and ruins the rest."""

    def __init__(self, factor: float) -> None:
        super().__init__()
        self.factor = factor

    def forward(self, image: torch.Tensor, aux: bool = False) -> cpl_model.RestorationOutput:
        return cpl_model.RestorationOutput((image * self.factor).clamp(0, 1))


def dim_and_noisy_pairs() -> dict:
    """Two low-light pairs (the clean image halved) and two noise pairs under two recipes of unequal strength."""
    clean = hand_made_pairs()["clean"][:4] & 0xFE  # even values: halving is exact, so doubling undoes it
    sigma = np.array([0, 0, 4, 16])[:, None, None, None]
    noisy = np.clip(clean + np.random.default_rng(2).normal(0, 1, clean.shape) * sigma, 0, 255).astype(np.uint8)
    return {"degraded": np.concatenate([clean[:2] // 2, noisy[2:]]), "clean": clean,
            "task": ["low_light", "low_light", "noise", "noise"],
            "recipe": ["low_light", "low_light", "noise15", "noise50"]}


def test_worst_task_gain_is_over_tasks_not_recipes():
    metrics = validation.validate(Scaled(2.0), dim_and_noisy_pairs(), torch.device("cpu"), torch.float32)
    noise = metrics["val/noise/psnr"] - metrics["val/noise/input_psnr"]
    recipes = [metrics[f"val/recipe/{name}/psnr"] - metrics[f"val/recipe/{name}/input_psnr"]
               for name in ("noise15", "noise50")]
    assert metrics["val/low_light/psnr"] - metrics["val/low_light/input_psnr"] > 0 > noise
    assert metrics["val/worst_task_gain"] == noise > min(recipes)


@pytest.mark.parametrize(("select", "chosen"), [("worst_task_gain", 1.0), ("mean_psnr", 2.0)])
def test_the_selection_rule_prefers_no_regression_or_the_best_mean(select, chosen):
    """Doubling restores low light perfectly and ruins noise: the better mean, but a task regresses."""
    scores = {factor: validation.validate(Scaled(factor), dim_and_noisy_pairs(), torch.device("cpu"),
                                          torch.float32)[validation.SCORES[select]]
              for factor in (1.0, 2.0)}
    assert max(scores, key=scores.get) == chosen


def test_every_selection_rule_of_the_config_has_a_score():
    assert set(validation.SCORES) == set(typing.get_args(CheckpointSection.model_fields["select"].annotation))
