"""Running a recipe on an image, and replaying the record it returns."""

from __future__ import annotations

from typing import Any

import numpy as np

from .image import check_rgb_uint8, to_float, to_uint8
from .kinds import DegradationKind
from .ops import OPS
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
    recipe = get_recipe(recipe)
    if not isinstance(rng, np.random.Generator):
        raise ValueError(f"rng must be a numpy Generator (see degradation_synth.rng_for), got {type(rng).__name__}")
    image = to_float(clean)
    steps = []
    for step in recipe.steps:
        params = OPS[step.kind].sample(rng, step.spec)
        image = _apply(step.kind, image, params, depth)
        # vars(), not dataclasses.asdict: params hold only scalars and tuples, and asdict's deep
        # copy costs a tenth of a 128² composite.
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
            fields = {key: tuple(value) if isinstance(value, list) else value for key, value in step["params"].items()}
            params = OPS[kind].params(**fields)
        except (KeyError, TypeError, ValueError) as err:
            raise ValueError(f"record step {index} is malformed: {err}") from None
        image = _apply(kind, image, params, depth)
    return to_uint8(image)
