"""Every file under configs/ is loaded and validated by the model its entry point uses, so a shipped config
with a stale or misspelt key fails here rather than on a cluster."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted((REPO_ROOT / "configs").glob("*.yaml"))


def validator(name: str):
    """The config model a file is for, by its name's prefix; a file that fits none is an error."""
    from pipelines.data.job import SynthesizeConfig
    from pipelines.evaluation.config import EvaluateConfig
    from pipelines.registry.config import PromoteConfig
    from pipelines.serving.config import RestoreConfig
    from pipelines.training.config import TrainConfig

    models = {"train_": TrainConfig, "synthesize_": SynthesizeConfig, "evaluate_": EvaluateConfig,
              "promote_": PromoteConfig, "restore_": RestoreConfig}
    for prefix, model in models.items():
        if name.startswith(prefix):
            return model
    return None


def test_configs_are_there():
    assert len(CONFIGS) >= 7


@pytest.mark.parametrize("path", CONFIGS, ids=lambda path: path.name)
def test_every_shipped_config_loads_and_validates(path):
    from pipelines.core.config import load_config

    if path.name == "runtime_env.yaml":
        from ray.runtime_env import RuntimeEnv

        fields = yaml.safe_load(path.read_text())
        unknown = set(fields) - set(RuntimeEnv.known_fields)  # Ray would take them for plugins
        assert not unknown, f"configs/{path.name}: unknown runtime_env fields {sorted(unknown)}"
        RuntimeEnv(**fields)  # checks the values of the fields it knows
        return
    model = validator(path.name)
    assert model is not None, f"configs/{path.name}: no entry point's config model is known for this name"
    load_config(model, path)
