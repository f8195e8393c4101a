"""Where each degradation parameter is drawn from.

A *spec* is a frozen dataclass per degradation kind whose every field is a distribution:
``Fixed``, ``Uniform``, ``LogUniform`` or ``Choice``. Specs are what recipes and YAML
configure; ``sample_*`` functions draw concrete parameters from them.

In YAML (and in ``Spec.from_config``) a field is written as::

    sigma: 25                     # Fixed
    beta: [0.6, 1.8]              # Uniform on the closed range
    shot: {log_uniform: [1e-4, 1.2e-2]}
    kernel: {choice: [motion, defocus]}
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np


@dataclass(frozen=True)
class Fixed:
    value: Any

    def draw(self, rng: np.random.Generator, integer: bool = False) -> Any:
        return int(self.value) if integer else self.value

    def support(self) -> tuple:
        return (self.value,)

    def to_config(self) -> Any:
        return self.value


@dataclass(frozen=True)
class Uniform:
    low: float
    high: float

    def __post_init__(self) -> None:
        if not self.low <= self.high:
            raise ValueError(f"uniform range [{self.low}, {self.high}] has low > high")

    def draw(self, rng: np.random.Generator, integer: bool = False) -> Any:
        if integer:
            return int(rng.integers(math.ceil(self.low), math.floor(self.high) + 1))
        return float(rng.uniform(self.low, self.high))

    def support(self) -> tuple:
        return (self.low, self.high)

    def to_config(self) -> Any:
        return [self.low, self.high]


@dataclass(frozen=True)
class LogUniform:
    low: float
    high: float

    def __post_init__(self) -> None:
        if not 0 < self.low <= self.high:
            raise ValueError(f"log-uniform range [{self.low}, {self.high}] needs 0 < low <= high")

    def draw(self, rng: np.random.Generator, integer: bool = False) -> Any:
        value = math.exp(rng.uniform(math.log(self.low), math.log(self.high)))
        if integer:  # rounding must not step outside the range
            return min(max(round(value), math.ceil(self.low)), math.floor(self.high))
        return float(value)

    def support(self) -> tuple:
        return (self.low, self.high)

    def to_config(self) -> Any:
        return {"log_uniform": [self.low, self.high]}


@dataclass(frozen=True)
class Choice:
    values: tuple

    def __post_init__(self) -> None:
        if not self.values:
            raise ValueError("choice needs at least one value")
        object.__setattr__(self, "values", tuple(self.values))

    def draw(self, rng: np.random.Generator, integer: bool = False) -> Any:
        value = self.values[int(rng.integers(len(self.values)))]
        return int(value) if integer else value

    def support(self) -> tuple:
        return self.values

    def to_config(self) -> Any:
        return {"choice": list(self.values)}


Dist = Fixed | Uniform | LogUniform | Choice

_DIST_KEYS = {"fixed": Fixed, "uniform": Uniform, "log_uniform": LogUniform, "choice": Choice}


def parse_dist(value: Any, where: str) -> Dist:
    """Turn a config value (see module docstring) into a distribution; ``where`` names it in errors."""
    if isinstance(value, (Fixed, Uniform, LogUniform, Choice)):
        return value
    try:
        if isinstance(value, (int, float, str)) and not isinstance(value, bool):
            return Fixed(value)
        if isinstance(value, (list, tuple)) and len(value) == 2:
            return Uniform(float(value[0]), float(value[1]))
        if isinstance(value, dict) and len(value) == 1:
            (key, arg), = value.items()
            if key == "fixed":
                return Fixed(arg)
            if key == "choice" and isinstance(arg, (list, tuple)):
                return Choice(tuple(arg))
            if key in ("uniform", "log_uniform") and isinstance(arg, (list, tuple)) and len(arg) == 2:
                return _DIST_KEYS[key](float(arg[0]), float(arg[1]))
    except (TypeError, ValueError) as err:
        raise ValueError(f"{where}: {err}") from None
    raise ValueError(
        f"{where}: cannot read {value!r} as a distribution; use a number, [low, high], "
        "{log_uniform: [low, high]} or {choice: [...]}"
    )


def param(default: Dist, *, low: float | None = None, high: float | None = None,
          integer: bool = False, options: tuple[str, ...] | None = None) -> Any:
    """Declare a spec field: its default distribution and the values it may ever take."""
    return field(default=default, metadata={"low": low, "high": high, "integer": integer, "options": options})


@dataclass(frozen=True)
class Spec:
    """Base of the per-kind specs. Subclasses declare fields with ``param``."""

    kind: ClassVar[str]

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            where = f"{self.kind}.{f.name}"
            dist = parse_dist(getattr(self, f.name), where)
            _check_support(dist, f.metadata, where)
            object.__setattr__(self, f.name, dist)

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> "Spec":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(config) - known)
        if unknown:
            raise ValueError(
                f"{cls.kind}: unknown parameter {unknown[0]!r}; known: {', '.join(sorted(known))}"
            )
        return cls(**config)

    def to_config(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name).to_config() for f in dataclasses.fields(self)}

    def draw(self, name: str, rng: np.random.Generator) -> Any:
        """Draw field ``name``: ints for integer fields, Python floats otherwise (exact in JSON)."""
        return getattr(self, name).draw(rng, integer=self.__dataclass_fields__[name].metadata["integer"])

    def draw_all(self, rng: np.random.Generator) -> dict[str, Any]:
        """Draw every field, in declaration order."""
        return {f.name: self.draw(f.name, rng) for f in dataclasses.fields(self)}


def _check_support(dist: Dist, meta: Any, where: str) -> None:
    if meta.get("integer"):
        if isinstance(dist, (Uniform, LogUniform)) and math.ceil(dist.low) > math.floor(dist.high):
            raise ValueError(f"{where}: [{dist.low}, {dist.high}] holds no integer")
        if isinstance(dist, (Fixed, Choice)) and not all(_is_integral(value) for value in dist.support()):
            raise ValueError(f"{where}: expected whole numbers, got {list(dist.support())}")
    options = meta.get("options")
    for value in dist.support():
        if options is not None:
            if value not in options:
                raise ValueError(f"{where}: {value!r} is not one of {', '.join(options)}")
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"{where}: expected a number, got {value!r}")
        low, high = meta.get("low"), meta.get("high")
        if (low is not None and value < low) or (high is not None and value > high) or math.isnan(value):
            raise ValueError(f"{where}: {value} is outside the allowed range [{low}, {high}]")


def _is_integral(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and float(value).is_integer()


def check_option(value: Any, spec: type[Spec], name: str) -> None:
    """Raise ``ValueError`` unless ``value`` is one of the options of ``spec``'s field ``name``."""
    options = spec.__dataclass_fields__[name].metadata["options"]
    if value not in options:
        raise ValueError(f"{spec.kind}.{name}: {value!r} is not one of {', '.join(options)}")
