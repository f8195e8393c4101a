"""The weights a run starts from (``model.init``), called directly: a registered version pinned by its alias (and
kept pinned when a resumed run's alias moves), checkpoint files and folders (local and S3), references that name
nothing, networks that do not fit, and dense weights under sparse routing. A run from a registered version, end to
end, is in ``test_train.py``.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from mlflow import MlflowClient

import cpl_model
from pipelines.core import references, storage, tracking
from pipelines.core.config import ConfigError
from pipelines.core.errors import DataError, PipelineError
from pipelines.training import initial
from pipelines.training.model_card import model_card

from ..conftest import scaled_model, train_config, unique

NO_TRACKING = "sqlite:///unused.db"  # file references need no tracking server; a new run looks nothing up


def saved(folder: Path, prompt: str = "sparse", preset: str = "tiny", seed: int = 7, **overrides) -> Path:
    """A checkpoint folder holding ``model.pt`` of a freshly seeded network, as a Ray Train checkpoint does."""
    model = cpl_model.build_model(preset, prompt, seed=seed, **overrides)
    cpl_model.save_checkpoint(model, folder / cpl_model.WEIGHTS)
    return folder


def assert_same_weights(model: torch.nn.Module, expected: dict[str, torch.Tensor]) -> None:
    state = model.state_dict()
    assert state.keys() == expected.keys()
    assert all(torch.equal(state[key], expected[key]) for key in expected), "the weights differ"


def test_without_init_a_run_starts_from_fresh_seeded_weights_and_the_identity():
    config = train_config()
    assert initial.resolve_init(config, NO_TRACKING) is None
    fresh = initial.initial_model(config)
    assert_same_weights(initial.initial_model(config), fresh.state_dict())  # seeded: every rank alike
    assert fresh.output.weight.eq(0).all()  # model.identity_init
    assert initial.initial_model(train_config("model.identity_init=false")).output.weight.ne(0).any()


def test_a_registered_version_named_by_its_alias_is_pinned_and_gives_the_initial_model_its_weights(
        mlflow_server, registered_model, brightener):
    name, (identity, trained) = registered_model(0.0, 1.0, prefix="init")
    MlflowClient(mlflow_server).set_registered_model_alias(name, "champion", trained)
    config = train_config(f"model.init=models:/{name}@champion")

    weights = initial.resolve_init(config, mlflow_server)
    assert weights.pinned == f"models:/{name}/{trained}" and weights.reference == f"models:/{name}@champion"
    assert weights.tags == {"model.init": f"models:/{name}/{trained}",
                            "model.init.reference": f"models:/{name}@champion"}
    model = initial.initial_model(config, weights.state_dict)  # what every rank gets, before DeepSpeed
    source = scaled_model(brightener, 1.0)
    assert_same_weights(model, source.state_dict())  # step 0 is the source, identity_init notwithstanding
    x = torch.rand(1, 3, 40, 56, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(model.eval()(x), source(x))


def test_a_resumed_run_keeps_the_version_it_pinned_after_the_alias_moves(mlflow_server, registered_model):
    name, (first, second) = registered_model(1.0, 0.5, prefix="init")
    client = MlflowClient(mlflow_server)
    client.set_registered_model_alias(name, "champion", first)
    experiment, run_name = unique("exp"), unique("run")
    config = train_config(f"model.init=models:/{name}@champion", f"run.name={run_name}",
                          f"tracking.experiment={experiment}")
    started = initial.resolve_init(config, mlflow_server)
    tracking.start_or_resume_run(mlflow_server, experiment, run_name, {}, started.tags)
    client.set_registered_model_alias(name, "champion", second)

    assert initial.resolve_init(config, mlflow_server).pinned == f"models:/{name}/{first}"  # the resumed run
    fresh = config.model_copy(update={"run": config.run.model_copy(update={"name": unique("run")})})
    assert initial.resolve_init(fresh, mlflow_server).pinned == f"models:/{name}/{second}"  # a new run: the alias
    other = train_config(f"model.init=models:/{name}/{second}", f"run.name={run_name}",
                         f"tracking.experiment={experiment}")  # another reference: the run's pin does not apply
    assert initial.resolve_init(other, mlflow_server).pinned == f"models:/{name}/{second}"


@pytest.mark.parametrize("where", ["local", "s3"])
@pytest.mark.parametrize("form", ["folder", "model.pt"])
def test_a_checkpoint_folder_or_file_local_or_in_s3_starts_the_run(request, tmp_path, where, form):
    folder = saved(tmp_path / "step-00000004")
    if where == "s3":
        folder_uri = f"s3://{request.getfixturevalue('bucket')}/runs/r/step-00000004"
        storage.write_bytes(storage.join(folder_uri, cpl_model.WEIGHTS), (folder / cpl_model.WEIGHTS).read_bytes())
    else:
        folder_uri = str(folder)
    reference = folder_uri if form == "folder" else storage.join(folder_uri, cpl_model.WEIGHTS)
    config = train_config(f"model.init={reference}")

    weights = initial.resolve_init(config, NO_TRACKING)
    assert weights.pinned == storage.join(folder_uri, cpl_model.WEIGHTS)
    expected, _ = cpl_model.load_checkpoint(folder / cpl_model.WEIGHTS)
    assert_same_weights(initial.initial_model(config, weights.state_dict), expected.state_dict())


def test_references_that_name_nothing_fail_in_one_line_naming_them(mlflow_server, registered_model, tmp_path):
    name, _ = registered_model(1.0, prefix="init")
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / cpl_model.WEIGHTS).write_text("not a checkpoint")
    cases = {f"models:/{unique('nowhere')}/1": (references.ModelNotFound, "no registered model"),
             f"models:/{name}/99": (references.ModelNotFound, "has no version 99"),
             f"models:/{name}@nowhere": (references.ModelNotFound, "has no alias 'nowhere'"),
             str(tmp_path / "missing"): (references.ModelNotFound, "no checkpoint (model.pt) there"),
             str(tmp_path / "notes"): (DataError, "as a weights-only torch file")}
    for reference, (kind, reason) in cases.items():
        with pytest.raises(kind) as raised:
            initial.resolve_init(train_config(f"model.init={reference}"), mlflow_server)
        message = str(raised.value)
        assert isinstance(raised.value, PipelineError) and "\n" not in message
        assert message.startswith(f"model.init: {reference}: ") and reason in message, message


@pytest.mark.parametrize(("source", "configured", "named"), [
    ({}, ["model.preset=small"], "does not fit model small/sparse: dim is 16 there, 24 here (it is the tiny preset)"),
    ({}, ["model.overrides={prompt_components: 4}"],
     "does not fit model tiny/sparse: prompt_components is 5 there, 4 here "
     "(it is the tiny preset without model.overrides)"),
    ({"prompt_sizes": (8, 8, 4)}, [],
     "does not fit model tiny/sparse: prompt_sizes is [8, 8, 4] there, [16, 8, 4] here"),
    ({"ffn_expansion": 2.0}, [], "does not fit model tiny/sparse: ffn_expansion is 2.0 there, 2.66 here"),
    ({"prompt": "none"}, [], "has prompt 'none', model tiny/sparse has 'sparse': only dense and sparse prompts share"),
    ({"prompt": "dense"}, ["model.prompt=none"], "has prompt 'dense', model tiny/none has 'none'"),
])
def test_a_network_that_does_not_fit_the_configured_one_fails_in_one_line_naming_what_differs(
        tmp_path, source, configured, named):
    folder = saved(tmp_path / "checkpoint", **source)
    with pytest.raises(ConfigError) as raised:
        initial.resolve_init(train_config(f"model.init={folder}", *configured), NO_TRACKING)
    message = str(raised.value)
    assert "\n" not in message and message.startswith(f"config error: model.init: {folder} "), message
    assert named in message, message


def test_what_keeps_every_shape_may_differ(tmp_path):
    """An FFN expansion that rounds to the same hidden widths builds the same parameters: it loads."""
    folder = saved(tmp_path / "checkpoint", ffn_expansion=2.661)
    config = train_config(f"model.init={folder}")
    expected, _ = cpl_model.load_checkpoint(folder / cpl_model.WEIGHTS)
    assert_same_weights(initial.initial_model(config, initial.resolve_init(config, NO_TRACKING).state_dict),
                        expected.state_dict())
    assert expected.config.ffn_expansion != cpl_model.PRESETS["tiny"].ffn_expansion


@pytest.mark.parametrize(("source", "configured"), [
    ("dense", ["model.prompt=sparse"]),  # PromptIR's mix -> CPL's routing: the headline use
    ("sparse", ["model.prompt=dense"]),
    ("sparse", ["model.overrides={top_k: 2}"]),
])
def test_dense_and_sparse_prompts_share_their_weights(tmp_path, source, configured):
    folder = saved(tmp_path / "checkpoint", prompt=source)
    config = train_config(f"model.init={folder}", *configured)
    model = initial.initial_model(config, initial.resolve_init(config, NO_TRACKING).state_dict)
    expected, _ = cpl_model.load_checkpoint(folder / cpl_model.WEIGHTS)
    assert_same_weights(model, expected.state_dict())
    assert model.config.prompt == config.model.prompt and model.config.top_k == config.model.overrides.get("top_k", 1)
    routing = model.eval()(torch.rand(2, 3, 32, 32), aux=True).routing
    mixed = 5 if config.model.prompt == "dense" else model.config.top_k  # components with a non-zero weight
    assert all((site.weights > 0).sum(dim=1).eq(mixed).all() for site in routing)


def test_the_model_card_names_the_pinned_reference_and_the_one_configured():
    config = train_config("model.init=models:/cpl-restore@champion")
    per_task = {"all": {"input_psnr": 20.0, "psnr": 21.0, "input_ssim": 0.5, "ssim": 0.6}}
    card = model_card(config, "run-a", "online:samples", per_task, 4, init="models:/cpl-restore/3")
    assert ("initialised from `models:/cpl-restore/3` (`model.init: models:/cpl-restore@champion`) with a fresh "
            "optimiser, 4 optimiser steps") in card
    assert "trained from scratch (seed 0), 4 optimiser steps" in model_card(train_config(), "run-b", "online:samples",
                                                                           per_task, 4)


def test_an_empty_init_is_a_config_error():
    with pytest.raises(ConfigError, match="model.init"):
        train_config("model.init=''")
