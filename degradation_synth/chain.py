"""Running a recipe on an image, and replaying the record it returns."""

from __future__ import annotations

import typing
from typing import Any

import numpy as np

from .image import check_rgb_uint8, to_float, to_uint8
from .kinds import DegradationKind
from .ops import OPS
from .ops.haze import check_depth
from .recipes import Recipe, get_recipe

RECORD_FORMAT = 1


def _apply(kind: DegradationKind, image: np.ndarray, params: Any, depth: np.ndarray | None) -> np.ndarray:
    if kind is DegradationKind.HAZE:
        return OPS[kind].apply(image, params, depth=depth)
    return OPS[kind].apply(image, params)


def degrade(clean: np.ndarray, recipe: str | Recipe, rng: np.random.Generator, *,
            depth: np.ndarray | None = None) -> tuple[np.ndarray, dict[str, Any]]:
    """Degrade ``clean`` with ``recipe``, drawing every parameter from ``rng``.

    Args:
        clean: (H, W, 3) uint8 RGB, C-contiguous, at least 32x32.
        recipe: a built-in recipe name (see ``RECIPES``) or a ``Recipe``.
        rng: the only source of randomness, e.g. ``rng_for(seed, image_id, crop, recipe)``.
        depth: optional (H, W) relative depth in [0, 1] (0 near, 1 far) used by haze steps
            instead of the colour-attenuation proxy.

    Returns:
        ``(degraded, record)``: degraded (H, W, 3) uint8 RGB, and a JSON-serialisable record of
        the recipe name, task label and every step's kind and sampled parameters, in order.

    Raises:
        ValueError: for a bad image, depth map or unknown recipe name.
    """
    check_rgb_uint8(clean, "clean")
    if depth is not None:
        depth = check_depth(depth, clean.shape)
    recipe = get_recipe(recipe)
    if not isinstance(rng, np.random.Generator):
        raise ValueError(f"rng must be a numpy Generator (see degradation_synth.rng_for), got {type(rng).__name__}")
    image = to_float(clean)
    steps = []
    for step in recipe.steps:
        params = OPS[step.kind].sample(rng, step.spec)
        image = _apply(step.kind, image, params, depth)
        # vars(), not dataclasses.asdict: params hold only scalars and tuples, and asdict's deep
        # copy is a noticeable share of a small composite (docs/benchmarks.md).
        steps.append({"kind": step.kind.value, "params": dict(vars(params))})
    record = {"format": RECORD_FORMAT, "recipe": recipe.name, "task": recipe.task, "steps": steps}
    return to_uint8(image), record


def replay(clean: np.ndarray, record: dict[str, Any], *, depth: np.ndarray | None = None) -> np.ndarray:
    """Re-apply a ``degrade`` record to the same clean image: byte-identical output.

    Raises:
        ValueError: for a bad image or a record that is malformed or of another format.
    """
    check_rgb_uint8(clean, "clean")
    if not isinstance(record, dict) or record.get("format") != RECORD_FORMAT or not isinstance(record.get("steps"), list):
        raise ValueError(f"not a degradation record of format {RECORD_FORMAT}")
    image = to_float(clean)
    for index, step in enumerate(record["steps"]):
        try:
            kind = DegradationKind(step["kind"])
            params = _params_from_record(OPS[kind].params, step["params"])
        except (KeyError, TypeError, ValueError) as err:
            raise ValueError(f"record step {index} is malformed: {err}") from None
        image = _apply(kind, image, params, depth)
    return to_uint8(image)


def _params_from_record(params_type: type, fields: Any) -> Any:
    """Rebuild a params dataclass from its JSON form, checking every value's type."""
    if not isinstance(fields, dict):
        raise ValueError(f"params must be a mapping, got {type(fields).__name__}")
    hints = typing.get_type_hints(params_type)
    unknown = sorted(set(fields) - set(hints))
    if unknown:
        raise ValueError(f"unknown parameter {unknown[0]!r}")
    return params_type(**{name: _checked(name, value, hints[name]) for name, value in fields.items()})


_ACCEPTED = {float: (int, float), int: (int,), str: (str,)}


def _checked(name: str, value: Any, expected: Any) -> Any:
    if typing.get_origin(expected) is tuple:  # fixed-length tuples are lists in JSON
        items = typing.get_args(expected)
        if not isinstance(value, (list, tuple)) or len(value) != len(items):
            raise ValueError(f"{name} must be a list of {len(items)} values, got {value!r}")
        return tuple(_checked(name, item, item_type) for item, item_type in zip(value, items))
    if isinstance(value, bool) or not isinstance(value, _ACCEPTED[expected]):
        raise ValueError(f"{name} must be {expected.__name__}, got {value!r}")
    return value
