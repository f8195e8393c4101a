"""The weights a run starts from: fresh ones, or those of any model reference (``model.init``).

    weights = resolve_init(config, tracking_uri)      # the driver, before Ray starts; None: from scratch
    model = initial_model(config, weights.state_dict)  # every rank, before DeepSpeed wraps the model

``model.init`` is a reference as ``pipelines.core.references`` reads it: ``models:/<name>@<alias>``,
``models:/<name>/<version>``, ``runs:/<run>/model``, or a ``model.pt`` / checkpoint folder, local or
``s3://``. The driver resolves it once and pins it (an alias becomes its version), so every rank, and a
worker group that restarts, starts from the same weights; they reach the workers through Ray's object
store. A resumed run keeps what it pinned when it started, even after the alias has moved.

The weights must hold every parameter of the network the config builds, by name and shape, and no other;
our checkpoints carry their model config, so a misfit is named by the first config field that differs
(``dim is 16 there, 24 here``), before any work. What keeps every shape may differ, which is how the
prompt components are *mixed*: dense and sparse prompts (any ``top_k``) hold the same parameters, so
PromptIR's dense weights fine-tune with CPL's sparse routing. A network without prompts has other layers,
and loads into none with them, nor the reverse.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch

import cpl_model

from ..core import references, tracking
from ..core.config import ConfigError
from ..core.errors import DataError
from .config import ModelSection, TrainConfig

INIT_TAG = "model.init"  # the run's tag: the pinned reference it started from
INIT_REFERENCE_TAG = "model.init.reference"  # the reference as configured (an alias, say)
# ModelConfig fields that choose how prompt components are mixed, not which parameters exist.
ROUTING_FIELDS = ("prompt", "top_k")
ROUTED_PROMPTS = ("dense", "sparse")


@dataclass(frozen=True)
class InitialWeights:
    reference: str  # as configured
    pinned: str  # what it named when resolved: a registered version, a logged model, a checkpoint file
    state_dict: dict[str, torch.Tensor]

    @property
    def tags(self) -> dict[str, str]:
        return {INIT_TAG: self.pinned, INIT_REFERENCE_TAG: self.reference}


def resolve_init(config: TrainConfig, tracking_uri: str) -> InitialWeights | None:
    """The weights ``model.init`` names, pinned and checked against the configured network; None without it.

    Raises:
        ModelNotFound: the reference names nothing (no such model, alias, version, run or file).
        DataError: the file is not one of our checkpoints.
        StorageError: an ``s3://`` reference cannot be read.
        ConfigError: its network is not the configured one, naming the first field that differs.
    """
    reference = config.model.init
    if reference is None:
        return None
    try:
        ref = references.resolve(started_with(config, tracking_uri) or reference, tracking_uri)
        model = references.load(ref, tracking_uri)
    except (references.ModelNotFound, DataError) as err:
        raise type(err)(f"model.init: {err}") from None
    state_dict = model.state_dict()
    check_fits(model.config, state_dict, config.model, reference)
    return InitialWeights(reference, ref.uri, state_dict)


def started_with(config: TrainConfig, tracking_uri: str) -> str | None:
    """What run ``run.name`` pinned when it started from this same ``model.init``; None for a new run.

    A resumed run must start (when it has no checkpoint yet) from what it started with, and its params, which
    hold the pinned reference, must not change: as ``driver.dataset_version`` does for ``LATEST``.
    """
    if config.run.name is None:
        return None
    started = tracking.find_run(tracking_uri, config.tracking.experiment, config.run.name)
    if started is None or started.data.tags.get(INIT_REFERENCE_TAG) != config.model.init:
        return None
    return started.data.tags.get(INIT_TAG)


def check_fits(source: cpl_model.ModelConfig, state_dict: dict[str, torch.Tensor], model: ModelSection,
               reference: str) -> None:
    """Raise ``ConfigError`` unless ``state_dict`` (of a network of config ``source``) has exactly the
    parameters, by name and shape, of the network ``model`` configures; the message names the first config
    field that differs. Dense and sparse prompts, and ``top_k``, never change a parameter."""
    target = cpl_model.preset(model.preset, prompt=model.prompt, **model.overrides)
    with torch.device("meta"):  # shapes only: nothing allocated, nothing initialised
        expected = {key: tuple(value.shape) for key, value in cpl_model.CPLNet(target).state_dict().items()}
    if expected == {key: tuple(value.shape) for key, value in state_dict.items()}:
        return
    configured = f"model {model.preset}/{model.prompt}"
    if source.prompt != target.prompt and not {source.prompt, target.prompt} <= set(ROUTED_PROMPTS):
        raise ConfigError(f"config error: model.init: {reference} has prompt {source.prompt!r}, {configured} has "
                          f"{target.prompt!r}: only dense and sparse prompts share their parameters")
    found = preset_of(source)
    hint = (f" (it is the {found} preset)" if found and found != model.preset
            else f" (it is the {found} preset without model.overrides)" if found else "")
    for field in dataclasses.fields(source):
        theirs, ours = getattr(source, field.name), getattr(target, field.name)
        if field.name not in ROUTING_FIELDS and theirs != ours:
            raise ConfigError(f"config error: model.init: {reference} does not fit {configured}: {field.name} is "
                              f"{_shown(theirs)} there, {_shown(ours)} here{hint}")
    key = next(key for key in sorted(expected.keys() | state_dict.keys())
               if expected.get(key) != (tuple(state_dict[key].shape) if key in state_dict else None))
    raise ConfigError(f"config error: model.init: {reference} does not fit {configured}: parameter {key} is "
                      f"{_shape(state_dict.get(key))} there, {_shape(expected.get(key))} here")


def preset_of(config: cpl_model.ModelConfig) -> str | None:
    """The preset whose network (routing aside) ``config`` is, or None."""
    return next((name for name, candidate in cpl_model.PRESETS.items()
                 if _architecture(candidate) == _architecture(config)), None)


def initial_model(config: TrainConfig, state_dict: dict[str, torch.Tensor] | None = None) -> cpl_model.CPLNet:
    """The network a rank starts from, before DeepSpeed wraps it.

    With ``state_dict`` (``model.init``'s weights): those weights, loaded strictly (every name, every shape),
    and ``model.identity_init`` does not apply. Without: fresh weights seeded by ``run.seed``, the output
    projection zeroed with ``model.identity_init``.

    Raises:
        RuntimeError: ``state_dict`` does not fit the network (``check_fits`` keeps the driver from sending one).
    """
    model = cpl_model.build_model(config.model.preset, config.model.prompt, seed=config.run.seed,
                                  **config.model.overrides)
    if state_dict is not None:
        model.load_state_dict(state_dict, strict=True)
    elif config.model.identity_init:
        torch.nn.init.zeros_(model.output.weight)
    return model


def _architecture(config: cpl_model.ModelConfig) -> dict[str, Any]:
    return {name: value for name, value in config.to_dict().items() if name not in ROUTING_FIELDS}


def _shown(value: Any) -> str:
    return str(list(value)) if isinstance(value, tuple) else str(value)


def _shape(value: Any) -> str:
    return "absent" if value is None else str(list(getattr(value, "shape", value)))
