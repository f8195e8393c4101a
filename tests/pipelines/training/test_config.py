"""The shipped training configs: the quickstart's spells out the defaults, the paper-protocol ones follow
PromptIR's recipe.
"""

from __future__ import annotations

import pytest

from pipelines.core.config import load_config
from pipelines.training.config import TrainConfig

from ..conftest import REPO_ROOT


def test_the_quickstart_config_spells_out_exactly_the_defaults():
    assert load_config(TrainConfig, REPO_ROOT / "configs" / "train_quickstart.yaml") == TrainConfig()


@pytest.mark.parametrize("name", ["train_three_task", "train_five_task", "train_cdd11"])
def test_every_shipped_training_config_is_valid_and_follows_the_promptir_recipe(name):
    config = load_config(TrainConfig, REPO_ROOT / "configs" / f"{name}.yaml")
    assert config.optim.lr == 2e-4 and config.data.batch_size * config.scaling.workers == 32
    assert config.scaling.use_gpu and config.model.preset == "full"
    assert 0 < config.optim.warmup_steps < config.optim.max_steps
