"""Seeded synthesis of degraded/clean image pairs for all-in-one restoration.

Pure numpy + OpenCV. The contract other packages rely on:

- ``degrade(clean, recipe, rng) -> (degraded, record)``
- ``replay(clean, record) -> degraded`` (byte-identical)
- ``rng_for(seed, *ids) -> np.random.Generator`` (a pure function of its arguments)
- ``RECIPES`` (built-in recipe names) and ``RECIPE_SETS``
"""

from .chain import degrade, replay
from .image import MIN_SIDE, as_rgb_uint8
from .kinds import DegradationKind, task_label
from .recipes import BUILTIN_RECIPES, RECIPE_SETS, RECIPES, Recipe, Step, get_recipe, load_recipes, resolve_recipes
from .seeding import rng_for

__all__ = [
    "BUILTIN_RECIPES", "DegradationKind", "MIN_SIDE", "RECIPES", "RECIPE_SETS", "Recipe", "Step", "as_rgb_uint8",
    "degrade", "get_recipe", "load_recipes", "replay", "resolve_recipes", "rng_for", "task_label",
]
