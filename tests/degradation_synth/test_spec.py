"""Distributions, their config forms (``parse_dist``) and the per-kind specs' validation."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from degradation_synth import rng_for
from degradation_synth.ops.blur import BlurSpec
from degradation_synth.ops.haze import HazeSpec
from degradation_synth.ops.jpeg import JpegSpec
from degradation_synth.ops.low_light import LowLightSpec
from degradation_synth.ops.noise import NoiseSpec
from degradation_synth.ops.rain import RainSpec
from degradation_synth.ops.snow import SnowSpec
from degradation_synth.spec import Choice, Fixed, LogUniform, Uniform, parse_dist

ALL_SPECS = (NoiseSpec, HazeSpec, RainSpec, BlurSpec, LowLightSpec, SnowSpec, JpegSpec)


# --- parse_dist ----------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (25, Fixed(25)),
        (0.5, Fixed(0.5)),
        ("motion", Fixed("motion")),
        ([0.6, 1.8], Uniform(0.6, 1.8)),
        ((1, 2), Uniform(1.0, 2.0)),
        ([3, 3], Uniform(3.0, 3.0)),
        ({"uniform": [0, 1]}, Uniform(0.0, 1.0)),
        ({"log_uniform": [1e-4, 1.2e-2]}, LogUniform(1e-4, 1.2e-2)),
        ({"choice": ["motion", "defocus"]}, Choice(("motion", "defocus"))),
        ({"choice": [15, 25, 50]}, Choice((15, 25, 50))),
        ({"fixed": 7}, Fixed(7)),
        (Uniform(1.0, 2.0), Uniform(1.0, 2.0)),  # a distribution passes through
    ],
    ids=repr,
)
def test_parse_dist_reads_every_config_form(value, expected):
    assert parse_dist(value, "kind.field") == expected


@pytest.mark.parametrize(
    "value",
    [
        [1, 2, 3],
        [1],
        [],
        [2.0, 1.0],  # low > high
        ["a", "b"],
        {},
        {"uniform": [1]},
        {"uniform": 1},
        {"log_uniform": [0.0, 1.0]},  # needs 0 < low
        {"choice": []},
        {"choice": 5},
        {"gaussian": [0, 1]},
        {"uniform": [0, 1], "choice": [1]},
        True,
        None,
    ],
    ids=repr,
)
def test_parse_dist_rejects_bad_forms_naming_the_field(value):
    with pytest.raises(ValueError, match=r"^haze\.beta: "):
        parse_dist(value, "haze.beta")


# --- drawing ---------------------------------------------------------------------------------------

def test_uniform_draws_stay_in_range_and_cover_it():
    rng = rng_for(0)
    values = np.array([Uniform(2.0, 3.0).draw(rng) for _ in range(2000)])
    assert values.min() >= 2.0 and values.max() <= 3.0
    assert values.min() < 2.05 and values.max() > 2.95
    assert values.mean() == pytest.approx(2.5, abs=0.03)


def test_integer_uniform_draws_every_integer_of_the_closed_range():
    rng = rng_for(0)
    values = [Uniform(1.0, 3.0).draw(rng, integer=True) for _ in range(300)]
    assert all(type(v) is int for v in values)
    assert set(values) == {1, 2, 3}


def test_log_uniform_is_uniform_in_log_space():
    rng = rng_for(0)
    values = np.array([LogUniform(1e-4, 1e-2).draw(rng) for _ in range(4000)])
    assert values.min() >= 1e-4 and values.max() <= 1e-2
    # Half of the mass lies below the geometric mean, a tenth below 10**-3.8.
    assert (values < 1e-3).mean() == pytest.approx(0.5, abs=0.03)
    assert (values < 10**-3.8).mean() == pytest.approx(0.1, abs=0.02)


def test_choice_draws_only_and_all_of_its_values():
    rng = rng_for(0)
    values = [Choice((15.0, 25.0, 50.0)).draw(rng) for _ in range(300)]
    assert set(values) == {15.0, 25.0, 50.0}


def test_fixed_always_draws_its_value_and_consumes_no_randomness():
    rng = rng_for(0)
    assert {Fixed(0.7).draw(rng) for _ in range(10)} == {0.7}
    assert rng.random() == rng_for(0).random()


@pytest.mark.parametrize(
    "quality", [50, [30, 95], {"log_uniform": [10, 90]}, {"choice": [20, 40, 60]}], ids=repr
)
def test_integer_fields_draw_python_ints_within_range(quality):
    spec = JpegSpec(quality=quality)
    support = spec.quality.support()
    rng = rng_for(1)
    values = [spec.draw("quality", rng) for _ in range(200)]
    assert all(type(v) is int for v in values)
    assert min(values) >= min(support) and max(values) <= max(support)


def test_float_fields_draw_python_floats():
    """Parameters go into JSON records: plain floats serialise exactly, numpy scalars may not."""
    spec = HazeSpec()
    rng = rng_for(2)
    assert all(type(spec.draw("beta", rng)) is float for _ in range(20))


def test_integer_field_whose_range_holds_no_integer_is_rejected_naming_the_field():
    """An integer field configured as [50.2, 50.8] can never be drawn: say so, and which field it is.

    Library bug: the spec is accepted, and every later draw fails inside numpy with
    "low >= high", which names neither the field nor the recipe.
    """
    with pytest.raises(ValueError, match=r"jpeg\.quality"):
        spec = JpegSpec(quality=[50.2, 50.8])
        spec.draw("quality", rng_for(0))


def test_draw_all_draws_every_field_in_declaration_order():
    spec = RainSpec()
    drawn = spec.draw_all(rng_for(3))
    assert list(drawn) == [f.name for f in dataclasses.fields(RainSpec)]
    rng = rng_for(3)
    assert drawn == {name: spec.draw(name, rng) for name in drawn}


# --- spec validation -------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("make", "where"),
    [
        (lambda: NoiseSpec(sigma=300), "noise.sigma"),
        (lambda: NoiseSpec(sigma=-1.0), "noise.sigma"),
        (lambda: NoiseSpec(sigma=[10, 300]), "noise.sigma"),
        (lambda: NoiseSpec(sigma={"choice": [15, 25, 999]}), "noise.sigma"),
        (lambda: NoiseSpec(sigma="high"), "noise.sigma"),
        (lambda: NoiseSpec(model="poisson"), "noise.model"),
        (lambda: HazeSpec(beta=-0.5), "haze.beta"),
        (lambda: HazeSpec(airlight=1.5), "haze.airlight"),
        (lambda: HazeSpec(depth="midas"), "haze.depth"),
        (lambda: RainSpec(density=[1, 100]), "rain.density"),
        (lambda: RainSpec(blend="multiply"), "rain.blend"),
        (lambda: BlurSpec(kernel="box"), "blur.kernel"),
        (lambda: BlurSpec(kernel={"choice": ["motion", "box"]}), "blur.kernel"),
        (lambda: BlurSpec(kernel=["motion", "defocus"]), "blur.kernel"),
        (lambda: BlurSpec(length=100.0), "blur.length"),
        (lambda: LowLightSpec(model="lime"), "low_light.model"),
        (lambda: LowLightSpec(gamma=0.5), "low_light.gamma"),
        (lambda: SnowSpec(size=float("nan")), "snow.size"),
        (lambda: SnowSpec(density=float("inf")), "snow.density"),
        (lambda: JpegSpec(quality=0), "jpeg.quality"),
        (lambda: JpegSpec(quality=True), "jpeg.quality"),
    ],
    ids=lambda x: x if isinstance(x, str) else None,
)
def test_out_of_range_or_unknown_values_raise_naming_the_field(make, where):
    with pytest.raises(ValueError, match=rf"^{where.replace('.', '[.]')}: "):
        make()


def test_unknown_option_message_lists_the_options():
    with pytest.raises(ValueError) as err:
        BlurSpec(kernel="box")
    assert "'box'" in str(err.value)
    assert all(option in str(err.value) for option in ("motion", "gaussian", "defocus"))


@pytest.mark.parametrize("spec_type", ALL_SPECS, ids=lambda t: t.kind)
def test_every_field_is_stored_as_a_distribution(spec_type):
    spec = spec_type()
    for f in dataclasses.fields(spec):
        assert isinstance(getattr(spec, f.name), (Fixed, Uniform, LogUniform, Choice)), f.name


@pytest.mark.parametrize("spec_type", ALL_SPECS, ids=lambda t: t.kind)
def test_from_config_rejects_unknown_parameters_naming_them(spec_type):
    with pytest.raises(ValueError, match=rf"{spec_type.kind}: unknown parameter 'bogus'"):
        spec_type.from_config({"bogus": 1})


@pytest.mark.parametrize("spec_type", ALL_SPECS, ids=lambda t: t.kind)
def test_to_config_round_trips_through_from_config(spec_type):
    spec = spec_type()
    assert spec_type.from_config(spec.to_config()) == spec


def test_config_values_become_the_matching_distributions():
    spec = NoiseSpec.from_config({"model": "poisson_gaussian", "sigma": [5, 10], "shot": {"log_uniform": [1e-3, 1e-2]}})
    assert spec.model == Fixed("poisson_gaussian")
    assert spec.sigma == Uniform(5.0, 10.0)
    assert spec.shot == LogUniform(1e-3, 1e-2)
    assert spec == NoiseSpec(model="poisson_gaussian", sigma=Uniform(5.0, 10.0), shot=LogUniform(1e-3, 1e-2))


def test_specs_are_immutable():
    spec = NoiseSpec()
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.sigma = Fixed(1.0)  # type: ignore[misc]


def test_distribution_constructors_validate_their_ranges():
    with pytest.raises(ValueError):
        Uniform(2.0, 1.0)
    with pytest.raises(ValueError):
        LogUniform(0.0, 1.0)
    with pytest.raises(ValueError):
        Choice(())
    assert math.isclose(LogUniform(1.0, 1.0).draw(rng_for(0)), 1.0)
