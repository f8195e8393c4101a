"""A short learning check: a few dozen CPU steps of each prompt variant lower the reconstruction loss on a
batch of a photo the steps never see. Not a benchmark (bench/ablation.py is); it fails when a change breaks
learning outright, e.g. a gradient that no longer reaches the weights. (CPR is left out: at this length it
stalls learning, as the ablation in docs/benchmarks.md shows at 400 steps.)"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import cpl_model
from degradation_synth import degrade, rng_for
from degradation_synth.samples import load_sample_photos

PATCH = 32


def pairs(photo: np.ndarray, count: int, seed: int) -> dict[str, torch.Tensor]:
    degraded, clean = [], []
    for index in range(count):
        rng = rng_for(seed, "learning", index)
        top, left = (int(rng.integers(0, side - PATCH)) for side in photo.shape[:2])
        patch = np.ascontiguousarray(photo[top:top + PATCH, left:left + PATCH])
        degraded.append(degrade(patch, "noise25", rng_for(seed, "learning", index, "noise"))[0])
        clean.append(patch)
    return {"degraded": cpl_model.to_tensor(np.stack(degraded)), "clean": cpl_model.to_tensor(np.stack(clean))}


@pytest.fixture(scope="module")
def photos() -> dict[str, np.ndarray]:
    return load_sample_photos()


@pytest.mark.parametrize("prompt", ["none", "dense", "sparse"])
def test_a_few_dozen_steps_lower_the_held_out_loss(prompt, photos):
    model = cpl_model.build_model("tiny", prompt, seed=0)
    torch.nn.init.zeros_(model.output.weight)  # from the identity, as the pipelines start
    objective = cpl_model.RestorationLoss(cpl_model.LossConfig(cpr=cpl_model.CPRConfig(enabled=False)))
    optimiser = torch.optim.AdamW(model.parameters(), lr=2e-3)
    held_out = pairs(photos["chelsea"], 8, seed=1)

    def held_out_l1() -> float:
        with torch.no_grad():
            return F.l1_loss(model(held_out["degraded"]), held_out["clean"]).item()

    before = held_out_l1()
    for step in range(40):
        loss, _ = cpl_model.training_step(model, pairs(photos["astronaut"], 4, seed=100 + step), objective, step=step)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    assert held_out_l1() < 0.8 * before
