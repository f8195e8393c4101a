"""Configuration for every pipeline: a YAML file plus ``--set a.b=c`` overrides, validated into a
frozen pydantic model on the driver, before any worker starts.

An unknown key or a bad value fails with one line naming the key, e.g.
``config error: source.patch: Input should be greater than or equal to 32 (got 8)``.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Annotated, Any, Mapping, TypeVar

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, ValidationError

from .errors import PipelineError

Model = TypeVar("Model", bound=BaseModel)

# cpl_model.restore blends tiles over a 32-pixel border on each side; a tile keeps an interior beyond both.
MIN_TILE = 96


class ConfigError(PipelineError, ValueError):
    """A configuration that cannot be used; the message names the file, key or value."""


class Frozen(BaseModel):
    """Base of every config section: unknown keys are errors and values are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def _tile(value: int | None) -> int | None:
    if not value:
        return None
    if value < MIN_TILE:
        raise ValueError(f"must be 0 (whole images) or at least {MIN_TILE}")
    return value


# A tile size for tiled inference, in pixels: larger images are restored in overlapping tiles of this
# side; 0 or null means whole images.
Tile = Annotated[int | None, AfterValidator(_tile)]


def parse_override(item: str) -> tuple[list[str], Any]:
    """``"a.b=3"`` -> (["a", "b"], 3); the value is read as YAML (numbers, lists, null...)."""
    key, sep, raw = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set expects key=value, got {item!r}")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key.strip().split("."), value


def _apply(tree: dict[str, Any], path: list[str], value: Any) -> None:
    """Set ``path`` in ``tree``; a number indexes a list (``data.datasets.0.uri``)."""
    node: Any = tree
    for depth, part in enumerate(path[:-1]):
        child = node[_index(node, part, path, depth)] if isinstance(node, list) else node.setdefault(part, {})
        if not isinstance(child, (dict, list)):
            raise ConfigError(f"--set {'.'.join(path)}: {part} is not a section")
        node = child
    if isinstance(node, list):
        node[_index(node, path[-1], path, len(path) - 1)] = value
    else:
        node[path[-1]] = value


def _index(items: list, part: str, path: list[str], depth: int) -> int:
    if not part.isdigit() or int(part) >= len(items):
        raise ConfigError(f"--set {'.'.join(path)}: {path[depth - 1]} has {len(items)} entries, "
                          f"numbered from 0; got {part!r}")
    return int(part)


def load_config(model: type[Model], path: str | Path | None = None, overrides: list[str] = (),
                defaults: dict[str, Any] | None = None, flags: Mapping[str, str] | None = None) -> Model:
    """Build ``model`` from ``defaults`` (default: the model's own), then the YAML file at ``path``,
    then ``overrides``. ``flags`` maps dotted keys to the command-line flags that set them, which an
    error about such a key names too.

    Raises:
        ConfigError: for an unreadable file, a malformed override, an unknown key or a bad value.
    """
    # Start from the model's own defaults, so that overriding one key of a section whose default is a
    # customised instance (e.g. data.synthesis.patch) keeps that instance's other values.
    tree: dict[str, Any] = copy.deepcopy(defaults) if defaults is not None else model_defaults(model)
    if path is not None:
        try:
            loaded = yaml.safe_load(Path(path).read_text()) or {}
        except (OSError, yaml.YAMLError) as err:
            raise ConfigError(f"cannot read config {path}: {err}") from None
        if not isinstance(loaded, dict):
            raise ConfigError(f"config {path} must be a mapping of sections, got {type(loaded).__name__}")
        for key, value in loaded.items():
            _merge(tree, key, value)
    for item in overrides:
        _apply(tree, *parse_override(item))
    try:
        return model.model_validate(tree)
    except ValidationError as err:
        first = err.errors()[0]
        key = ".".join(str(part) for part in first["loc"]) or "(top level)"
        if flags and key in flags:
            key = f"{key} ({flags[key]})"
        message = "unknown key" if first["type"] == "extra_forbidden" else first["msg"].removeprefix("Value error, ")
        shown = first["type"] not in ("extra_forbidden", "value_error", "missing") and "input" in first  # not a section
        got = f" (got {first['input']!r})" if shown else ""
        raise ConfigError(f"config error: {key}: {message}{got}") from None


def model_defaults(model: type[BaseModel]) -> dict[str, Any]:
    """The model's default values as a plain tree (required fields left out)."""
    tree: dict[str, Any] = {}
    for name, field in model.model_fields.items():
        if not field.is_required():
            value = field.get_default(call_default_factory=True)
            tree[name] = value.model_dump(mode="json") if isinstance(value, BaseModel) else copy.deepcopy(value)
    return tree


def _merge(tree: dict[str, Any], key: str, value: Any) -> None:
    if isinstance(value, dict) and isinstance(tree.get(key), dict):
        for sub_key, sub_value in value.items():
            _merge(tree[key], sub_key, sub_value)
    else:
        tree[key] = value
