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


@pytest.mark.parametrize("name", ["train_three_task_real.yaml", "train_five_task_real.yaml",
                                  "train_cdd11_real.yaml"])
def test_the_real_data_protocols_pass_a_dry_run_with_their_datasets_pointed_elsewhere(name, capsys):
    """What a user runs first: the protocol with each dataset's URI set on the command line."""
    import json

    from pipelines import train

    entries = yaml.safe_load((REPO_ROOT / "configs" / name).read_text())["data"]["datasets"]
    moved = [arg for i in range(len(entries)) for arg in ("--set", f"data.datasets.{i}.uri=s3://bucket/d{i}")]
    assert train.main(["--config", str(REPO_ROOT / "configs" / name), *moved, "--dry-run"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert [entry["uri"] for entry in shown["config"]["data"]["datasets"]] == [f"s3://bucket/d{i}"
                                                                             for i in range(len(entries))]
    assert [entry["repeat"] for entry in shown["config"]["data"]["datasets"]] == [e["repeat"] for e in entries]
    assert shown["config"]["loss"]["reconstruction"] == "l1" and shown["plan"]["gpu"]


def test_set_indexes_a_list_and_names_an_index_out_of_range(tmp_path):
    from pipelines.core.config import ConfigError, load_config
    from pipelines.training.config import TrainConfig

    two = ["data.datasets=[{uri: a}, {uri: b, repeat: 4}]"]
    config = load_config(TrainConfig, None, [*two, "data.datasets.1.uri=s3://x/b"])
    assert [(e.uri, e.repeat) for e in config.data.datasets] == [("a", 1), ("s3://x/b", 4)]
    with pytest.raises(ConfigError, match=r"data.datasets.2.uri: datasets has 2 entries"):
        load_config(TrainConfig, None, [*two, "data.datasets.2.uri=c"])


@pytest.mark.parametrize("path", [path for path in CONFIGS if path.name.startswith("train_")
                                  and path.name != "train_quickstart.yaml"], ids=lambda path: path.name)
def test_every_protocol_config_trains_cpl_as_the_paper_does(path):
    """L1 plus CPR on sparse prompts: a ``cpr`` section merges into the default (CPR off), so a protocol that
    leaves out ``enabled: true`` silently trains without it."""
    from pipelines.core.config import load_config
    from pipelines.training.config import TrainConfig

    loss = load_config(TrainConfig, path).loss.build()
    assert loss.reconstruction == "l1" and loss.cpr.enabled
    assert load_config(TrainConfig, path).model.prompt == "sparse"
