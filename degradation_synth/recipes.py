"""Recipes: named, ordered chains of degradation steps, each with the spec it samples from.

Built-in recipes:

- the single tasks of the all-in-one benchmarks (PromptIR's 3-task and 5-task settings):
  ``noise15``, ``noise25``, ``noise50``, ``noise`` (sigma drawn from {15, 25, 50}), ``haze``,
  ``rain``, ``blur``, ``low_light``; and ``noise_realistic``, ``snow``, ``jpeg``;
- the 11 CDD-11 classes in CDD-11's own order (low light -> rain -> snow -> haze), named
  ``cdd11/<class>``, and the same classes in a physically motivated order (scene: haze, then the
  rain or snow in front of it -> exposure and sensor noise), named ``physical/<class>``.

Recipe sets (``RECIPE_SETS``) name groups of recipes: ``three_task``, ``five_task``, ``cdd11``,
``physical``.

YAML form of a recipe (a file may hold one recipe or a list under ``recipes:``)::

    name: foggy_night
    steps:
      - kind: haze
        beta: [1.0, 2.0]
      - kind: low_light
        gamma: [2.0, 3.0]
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import yaml

from .kinds import DegradationKind, task_label
from .ops import OPS
from .ops.blur import BlurSpec
from .ops.haze import HazeSpec
from .ops.jpeg import JpegSpec
from .ops.low_light import LowLightSpec
from .ops.noise import NoiseSpec
from .ops.rain import RainSpec
from .ops.snow import SnowSpec
from .spec import Choice, Fixed, Spec, Uniform


@dataclass(frozen=True)
class Step:
    kind: DegradationKind
    spec: Spec

    def __post_init__(self) -> None:
        expected = OPS[self.kind].spec
        if type(self.spec) is not expected:
            raise ValueError(f"step {self.kind.value}: spec must be {expected.__name__}, got {type(self.spec).__name__}")

    @classmethod
    def of(cls, spec: Spec) -> "Step":
        return cls(DegradationKind(spec.kind), spec)


@dataclass(frozen=True)
class Recipe:
    name: str
    steps: tuple[Step, ...]

    def __post_init__(self) -> None:
        if not self.name or not isinstance(self.name, str):
            raise ValueError("recipe name must be a non-empty string")
        if not self.steps:
            raise ValueError(f"recipe {self.name!r} has no steps")
        object.__setattr__(self, "steps", tuple(self.steps))

    @property
    def task(self) -> str:
        return task_label(step.kind for step in self.steps)

    def to_config(self) -> dict[str, Any]:
        return {"name": self.name, "steps": [{"kind": s.kind.value, **s.spec.to_config()} for s in self.steps]}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> "Recipe":
        """Build a recipe from its YAML/dict form. Raises ``ValueError`` naming the bad key."""
        if not isinstance(config, dict):
            raise ValueError(f"a recipe must be a mapping with 'name' and 'steps', got {type(config).__name__}")
        unknown = sorted(set(config) - {"name", "steps"})
        if unknown:
            raise ValueError(f"recipe: unknown key {unknown[0]!r}; known: name, steps")
        name = config.get("name")
        steps = config.get("steps")
        if not isinstance(steps, list) or not steps:
            raise ValueError(f"recipe {name!r}: 'steps' must be a non-empty list")
        return cls(name=name, steps=tuple(_step_from_config(step, name, i) for i, step in enumerate(steps)))


def _step_from_config(config: Any, recipe: str, index: int) -> Step:
    where = f"recipe {recipe!r} step {index}"
    if not isinstance(config, dict) or "kind" not in config:
        raise ValueError(f"{where}: a step must be a mapping with a 'kind'")
    fields = dict(config)
    kind = fields.pop("kind")
    try:
        kind = DegradationKind(kind)
    except ValueError:
        raise ValueError(f"{where}: unknown kind {kind!r}; known: {', '.join(k.value for k in DegradationKind)}") from None
    try:
        return Step(kind, OPS[kind].spec.from_config(fields))
    except ValueError as err:
        raise ValueError(f"{where}: {err}") from None


def load_recipes(path: str | Path) -> dict[str, Recipe]:
    """Recipes from a YAML file holding one recipe or ``recipes: [...]``, by name."""
    path = Path(path)
    try:
        document = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as err:
        raise ValueError(f"cannot read recipes from {path}: {err}") from None
    configs = document.get("recipes") if isinstance(document, dict) and "recipes" in document else [document]
    if not isinstance(configs, list):
        raise ValueError(f"{path}: 'recipes' must be a list")
    recipes = [Recipe.from_config(config) for config in configs]
    return {recipe.name: recipe for recipe in recipes}


# --- built-in recipes -------------------------------------------------------------------------

def _single(name: str, spec: Spec) -> Recipe:
    return Recipe(name, (Step.of(spec),))


# CDD-11 (OneRestore's syn_data.py): gamma in [2, 3] with sigma in [0.03, 0.08] for low light,
# beta in [1, 2] with grey airlight in [0.6, 0.9] and depth capped at 0.7 for haze, additive rain.
_CDD_STEPS = {
    "low": Step.of(LowLightSpec(model="retinex", gamma=Uniform(2.0, 3.0), sigma=Uniform(7.65, 20.4))),
    "haze": Step.of(HazeSpec(beta=Uniform(1.0, 2.0), airlight=Uniform(0.6, 0.9), tint=Fixed(0.0), max_depth=0.7)),
    "rain": Step.of(RainSpec(blend="add", veil=Fixed(0.0))),
    "snow": Step.of(SnowSpec(veil=Fixed(0.0))),
}
_CDD_CLASSES = ("low", "haze", "rain", "snow", "low_haze", "low_rain", "low_snow", "haze_rain", "haze_snow",
                "low_haze_rain", "low_haze_snow")
_CDD_ORDER = ("low", "rain", "snow", "haze")  # as OneRestore applies them
_PHYSICAL_ORDER = ("haze", "rain", "snow", "low")  # scene (haze, then particles in front) -> exposure


def _composite(prefix: str, cls: str, order: tuple[str, ...]) -> Recipe:
    parts = cls.split("_")
    return Recipe(f"{prefix}/{cls}", tuple(_CDD_STEPS[part] for part in order if part in parts))


_BUILTIN: list[Recipe] = [
    _single("noise15", NoiseSpec(sigma=15.0)),
    _single("noise25", NoiseSpec(sigma=25.0)),
    _single("noise50", NoiseSpec(sigma=50.0)),
    _single("noise", NoiseSpec(sigma=Choice((15.0, 25.0, 50.0)))),
    _single("noise_realistic", NoiseSpec(model="poisson_gaussian")),
    _single("haze", HazeSpec()),
    _single("rain", RainSpec()),
    _single("blur", BlurSpec()),
    _single("low_light", LowLightSpec()),
    _single("snow", SnowSpec()),
    _single("jpeg", JpegSpec()),
    *(_composite("cdd11", cls, _CDD_ORDER) for cls in _CDD_CLASSES),
    *(_composite("physical", cls, _PHYSICAL_ORDER) for cls in _CDD_CLASSES),
]

BUILTIN_RECIPES: dict[str, Recipe] = {recipe.name: recipe for recipe in _BUILTIN}
RECIPES: tuple[str, ...] = tuple(BUILTIN_RECIPES)
"""Names of the built-in recipes."""

RECIPE_SETS: dict[str, tuple[str, ...]] = {
    "three_task": ("noise15", "noise25", "noise50", "haze", "rain"),
    "five_task": ("noise15", "noise25", "noise50", "haze", "rain", "blur", "low_light"),
    "cdd11": tuple(f"cdd11/{cls}" for cls in _CDD_CLASSES),
    "physical": tuple(f"physical/{cls}" for cls in _CDD_CLASSES),
}


def get_recipe(recipe: str | Recipe) -> Recipe:
    """A built-in recipe by name (a ``Recipe`` passes through). Raises ``ValueError`` listing names."""
    if isinstance(recipe, Recipe):
        return recipe
    if isinstance(recipe, str) and recipe in BUILTIN_RECIPES:
        return BUILTIN_RECIPES[recipe]
    raise ValueError(f"unknown recipe {recipe!r}; known: {', '.join(RECIPES)}")


def resolve_recipes(names: str | Iterable[str]) -> list[Recipe]:
    """Expand recipe names and set names (comma-separated or a list) into recipes, in order."""
    if isinstance(names, str):
        names = [part.strip() for part in names.split(",") if part.strip()]
    recipes: list[Recipe] = []
    for name in names:
        for member in RECIPE_SETS.get(name, (name,)):
            if member not in RECIPE_SETS and member not in BUILTIN_RECIPES:
                raise ValueError(
                    f"unknown recipe or set {member!r}; sets: {', '.join(RECIPE_SETS)}; recipes: {', '.join(RECIPES)}"
                )
            recipes.append(BUILTIN_RECIPES[member])
    return recipes
