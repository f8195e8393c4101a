"""Built-in recipes and sets, resolving names, YAML recipes, and the ranges sampled parameters stay in."""

from __future__ import annotations

import numpy as np
import pytest
import yaml

import degradation_synth as ds
from degradation_synth import BUILTIN_RECIPES, RECIPE_SETS, RECIPES, DegradationKind, Recipe, Step
from degradation_synth.ops import OPS
from degradation_synth.ops.haze import HazeSpec
from degradation_synth.ops.noise import NoiseSpec
from degradation_synth.spec import Choice, Fixed, LogUniform, Uniform

FIVE_TASK = ("noise15", "noise25", "noise50", "haze", "rain", "blur", "low_light")
CDD11_CLASSES = ("low", "haze", "rain", "snow", "low_haze", "low_rain", "low_snow", "haze_rain", "haze_snow",
                 "low_haze_rain", "low_haze_snow")
PART_KIND = {"low": DegradationKind.LOW_LIGHT, "haze": DegradationKind.HAZE, "rain": DegradationKind.RAIN,
             "snow": DegradationKind.SNOW}
CDD_ORDER = ("low", "rain", "snow", "haze")
PHYSICAL_ORDER = ("haze", "rain", "snow", "low")


def kinds(recipe: str | Recipe) -> list[str]:
    return [step.kind.value for step in ds.get_recipe(recipe).steps]


# --- the built-in catalogue ----------------------------------------------------------------------

def test_builtin_recipes_include_the_benchmark_tasks_snow_and_jpeg():
    assert set(FIVE_TASK) | {"snow", "jpeg"} <= set(RECIPES)
    assert set(RECIPE_SETS["five_task"]) == set(FIVE_TASK)
    assert set(RECIPE_SETS["three_task"]) == {"noise15", "noise25", "noise50", "haze", "rain"}


def test_cdd11_and_physical_hold_all_eleven_classes_in_cdd11_order():
    assert RECIPE_SETS["cdd11"] == tuple(f"cdd11/{cls}" for cls in CDD11_CLASSES)
    assert RECIPE_SETS["physical"] == tuple(f"physical/{cls}" for cls in CDD11_CLASSES)
    assert [name for name in RECIPES if name.startswith("cdd11/")] == list(RECIPE_SETS["cdd11"])
    assert [name for name in RECIPES if name.startswith("physical/")] == list(RECIPE_SETS["physical"])


def test_recipe_names_are_unique_and_match_their_recipes():
    assert len(set(RECIPES)) == len(RECIPES)
    assert all(BUILTIN_RECIPES[name].name == name for name in RECIPES)


@pytest.mark.parametrize("name", ["noise15", "noise25", "noise50"])
def test_fixed_sigma_noise_recipes_draw_their_sigma(name):
    step, = BUILTIN_RECIPES[name].steps
    rng = ds.rng_for(0)
    assert {OPS[step.kind].sample(rng, step.spec).sigma for _ in range(20)} == {float(name[5:])}


def test_noise_recipe_draws_each_benchmark_sigma():
    step, = BUILTIN_RECIPES["noise"].steps
    rng = ds.rng_for(0)
    assert {OPS[step.kind].sample(rng, step.spec).sigma for _ in range(100)} == {15.0, 25.0, 50.0}


@pytest.mark.parametrize("name", FIVE_TASK + ("snow", "jpeg"))
def test_single_task_recipes_have_one_step_of_their_kind(name):
    expected = "noise" if name.startswith("noise") else name
    assert kinds(name) == [expected]
    assert BUILTIN_RECIPES[name].task == expected


@pytest.mark.parametrize("cls", CDD11_CLASSES)
def test_composites_apply_their_kinds_in_their_declared_orders(cls):
    parts = cls.split("_")
    assert kinds(f"cdd11/{cls}") == [PART_KIND[p].value for p in CDD_ORDER if p in parts]
    assert kinds(f"physical/{cls}") == [PART_KIND[p].value for p in PHYSICAL_ORDER if p in parts]


def test_low_haze_rain_orders():
    assert kinds("cdd11/low_haze_rain") == ["low_light", "rain", "haze"]
    assert kinds("physical/low_haze_rain") == ["haze", "rain", "low_light"]


@pytest.mark.parametrize("cls", CDD11_CLASSES)
def test_both_orders_of_a_class_share_one_task_label(cls):
    assert BUILTIN_RECIPES[f"cdd11/{cls}"].task == BUILTIN_RECIPES[f"physical/{cls}"].task
    assert BUILTIN_RECIPES[f"cdd11/{cls}"].task == "+".join(PART_KIND[p].value for p in cls.split("_"))


def test_task_label_of_low_haze_rain():
    assert BUILTIN_RECIPES["cdd11/low_haze_rain"].task == "low_light+haze+rain"
    assert BUILTIN_RECIPES["physical/low_haze_rain"].task == "low_light+haze+rain"


# --- resolving names -------------------------------------------------------------------------------

def test_get_recipe_by_name_and_passthrough():
    recipe = ds.get_recipe("haze")
    assert isinstance(recipe, Recipe) and recipe.name == "haze"
    custom = Recipe("custom", (Step.of(NoiseSpec(sigma=5.0)),))
    assert ds.get_recipe(custom) is custom


@pytest.mark.parametrize("name", ["nope", "Noise15", "cdd11", "", None, 3])
def test_get_recipe_rejects_unknown_names_listing_the_known_ones(name):
    with pytest.raises(ValueError) as err:
        ds.get_recipe(name)
    assert "noise15" in str(err.value) and "cdd11/low_haze_rain" in str(err.value)


def test_resolve_recipes_reads_a_comma_separated_string():
    assert [r.name for r in ds.resolve_recipes("noise15, haze,,rain ")] == ["noise15", "haze", "rain"]


def test_resolve_recipes_reads_a_list_and_expands_sets_in_order():
    resolved = [r.name for r in ds.resolve_recipes(["jpeg", "three_task", "snow"])]
    assert resolved == ["jpeg", *RECIPE_SETS["three_task"], "snow"]


@pytest.mark.parametrize("set_name", list(RECIPE_SETS))
def test_every_recipe_set_resolves_to_its_members(set_name):
    resolved = ds.resolve_recipes(set_name)
    assert [r.name for r in resolved] == list(RECIPE_SETS[set_name])
    assert all(r is BUILTIN_RECIPES[r.name] for r in resolved)


@pytest.mark.parametrize("names", ["noise15,bogus", ["haze", "bogus"]])
def test_resolve_recipes_rejects_unknown_names(names):
    with pytest.raises(ValueError, match="bogus") as err:
        ds.resolve_recipes(names)
    assert "five_task" in str(err.value) and "noise15" in str(err.value)


# --- Recipe and Step -------------------------------------------------------------------------------

def test_step_rejects_a_spec_of_another_kind():
    with pytest.raises(ValueError, match="HazeSpec"):
        Step(DegradationKind.NOISE, HazeSpec())


def test_step_of_infers_the_kind_from_the_spec():
    assert Step.of(HazeSpec()).kind is DegradationKind.HAZE


@pytest.mark.parametrize("name", ["", None])
def test_recipe_needs_a_name(name):
    with pytest.raises(ValueError, match="name"):
        Recipe(name, (Step.of(NoiseSpec()),))


def test_recipe_needs_steps():
    with pytest.raises(ValueError, match="no steps"):
        Recipe("empty", ())


def test_recipe_steps_are_stored_as_a_tuple():
    recipe = Recipe("r", [Step.of(NoiseSpec()), Step.of(HazeSpec())])
    assert isinstance(recipe.steps, tuple) and kinds(recipe) == ["noise", "haze"]


# --- config / YAML ---------------------------------------------------------------------------------

@pytest.mark.parametrize("name", RECIPES)
def test_builtin_recipes_round_trip_through_their_config(name):
    recipe = BUILTIN_RECIPES[name]
    rebuilt = Recipe.from_config(recipe.to_config())
    assert rebuilt == recipe
    image = np.full((48, 40, 3), 90, np.uint8)
    image[10:30, 5:25] = (200, 120, 40)
    out_a, rec_a = ds.degrade(image, recipe, ds.rng_for(5, name))
    out_b, rec_b = ds.degrade(image, rebuilt, ds.rng_for(5, name))
    np.testing.assert_array_equal(out_a, out_b)
    assert rec_a == rec_b


def test_all_builtin_recipes_round_trip_through_a_yaml_file(tmp_path):
    path = tmp_path / "all.yaml"
    path.write_text(yaml.safe_dump({"recipes": [BUILTIN_RECIPES[name].to_config() for name in RECIPES]}))
    loaded = ds.load_recipes(path)
    assert list(loaded) == list(RECIPES)
    assert all(loaded[name] == BUILTIN_RECIPES[name] for name in RECIPES)


FOGGY_NIGHT = """\
name: foggy_night
steps:
  - kind: haze
    beta: [1.0, 2.0]
    airlight: 0.8
  - kind: low_light
    model: retinex
    gamma: {log_uniform: [2.0, 3.0]}
  - kind: blur
    kernel: {choice: [gaussian, defocus]}
"""


def test_load_recipes_reads_a_file_with_one_recipe(tmp_path):
    path = tmp_path / "one.yaml"
    path.write_text(FOGGY_NIGHT)
    recipes = ds.load_recipes(path)
    assert list(recipes) == ["foggy_night"]
    recipe = recipes["foggy_night"]
    assert kinds(recipe) == ["haze", "low_light", "blur"]
    haze, low, blur = (step.spec for step in recipe.steps)
    assert haze.beta == Uniform(1.0, 2.0) and haze.airlight == Fixed(0.8)
    assert haze.max_depth == HazeSpec().max_depth  # unspecified fields keep their defaults
    assert low.model == Fixed("retinex") and low.gamma == LogUniform(2.0, 3.0)
    assert blur.kernel == Choice(("gaussian", "defocus"))
    assert recipe.task == "low_light+haze+blur"


def test_load_recipes_reads_a_recipes_list(tmp_path):
    path = tmp_path / "many.yaml"
    path.write_text(
        "recipes:\n"
        "  - name: light_noise\n"
        "    steps: [{kind: noise, sigma: 5}]\n"
        "  - name: jpeg_then_noise\n"
        "    steps:\n"
        "      - {kind: jpeg, quality: [20, 40]}\n"
        "      - {kind: noise, model: poisson_gaussian}\n"
    )
    recipes = ds.load_recipes(path)
    assert list(recipes) == ["light_noise", "jpeg_then_noise"]
    assert recipes["light_noise"].steps[0].spec.sigma == Fixed(5)
    assert kinds(recipes["jpeg_then_noise"]) == ["jpeg", "noise"]
    out, record = ds.degrade(np.full((40, 40, 3), 128, np.uint8), recipes["jpeg_then_noise"], ds.rng_for(0))
    assert 20 <= record["steps"][0]["params"]["quality"] <= 40 and out.shape == (40, 40, 3)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("name: r\nsteps:\n  - kind: noise\n    sigmaa: 5\n", "'sigmaa'"),  # unknown key in a step
        ("name: r\nsteps:\n  - kind: fog\n", "'fog'"),  # unknown kind
        ("name: r\nsteps:\n  - sigma: 5\n", "kind"),  # step without a kind
        ("name: r\nsteps:\n  - kind: noise\n    sigma: 300\n", "noise.sigma"),  # out of range
        ("name: r\nsteps:\n  - kind: blur\n    kernel: box\n", "blur.kernel"),  # unknown option
        ("name: r\nsteps:\n  - kind: haze\n    beta: [1, 2, 3]\n", "haze.beta"),  # bad distribution
        ("name: r\nsteps: []\n", "steps"),
        ("name: r\n", "steps"),
        ("name: r\nsteps: [{kind: noise}]\nextra: 1\n", "'extra'"),  # unknown recipe key
        ("steps: [{kind: noise}]\n", "name"),
        ("recipes: {name: r}\n", "list"),
        ("- 1\n- 2\n", "mapping"),
        ("", "mapping"),
        ("name: [unclosed\n", "cannot read"),  # not YAML
    ],
    ids=lambda x: repr(x[:30]),
)
def test_load_recipes_rejects_bad_files_naming_the_problem(tmp_path, text, fragment):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ValueError) as err:
        ds.load_recipes(path)
    assert fragment in str(err.value)


def test_step_errors_name_the_recipe_and_step(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("name: wet\nsteps:\n  - kind: rain\n  - kind: noise\n    sigmaa: 5\n")
    with pytest.raises(ValueError, match=r"recipe 'wet' step 1: noise: unknown parameter 'sigmaa'"):
        ds.load_recipes(path)


def test_load_recipes_of_a_missing_file_raises_value_error(tmp_path):
    with pytest.raises(ValueError, match="cannot read"):
        ds.load_recipes(tmp_path / "missing.yaml")


# --- sampled parameters stay within their specs ------------------------------------------------------

def in_support(value, dist) -> bool:
    if isinstance(dist, (Fixed, Choice)):
        return value in dist.support()
    low, high = dist.support()
    return low <= value <= high


def active_fields(kind: DegradationKind, params) -> dict[str, str]:
    """params field -> spec field, for the fields the sampled model actually drew."""
    if kind is DegradationKind.NOISE:
        drawn = "sigma" if params.model == "gaussian" else "shot"
        return {"model": "model", drawn: drawn}
    if kind is DegradationKind.HAZE:
        return {name: name for name in ("beta", "depth", "max_depth", "horizon")}
    if kind is DegradationKind.BLUR:
        extra = {"motion": {"length": "length"}, "gaussian": {"sigma_x": "sigma", "sigma_y": "sigma", "theta": "theta"},
                 "defocus": {"radius": "radius"}}[params.kernel]
        return {"kernel": "kernel", **extra}
    if kind is DegradationKind.LOW_LIGHT:
        extra = ("alpha", "beta", "shot") if params.model == "lv" else ("sigma",)
        return {name: name for name in ("model", "gamma", *extra)}
    if kind is DegradationKind.RAIN:
        return {name: name for name in ("density", "length", "width", "angle", "intensity", "blur", "blend", "veil",
                                        "veil_light")}
    if kind is DegradationKind.SNOW:
        return {name: name for name in ("density", "size", "angle", "streak", "brightness", "veil")}
    return {"quality": "quality"}


@pytest.mark.parametrize("name", RECIPES)
def test_sampled_parameters_stay_within_the_spec(name):
    rng = ds.rng_for(11, name)
    for step in BUILTIN_RECIPES[name].steps:
        for _ in range(150):
            params = OPS[step.kind].sample(rng, step.spec)
            for param_name, spec_name in active_fields(step.kind, params).items():
                value = getattr(params, param_name)
                assert in_support(value, getattr(step.spec, spec_name)), (step.kind, param_name, value)
            if step.kind is DegradationKind.HAZE:
                low = step.spec.airlight.support()[0] + min(step.spec.tint.support())
                high = step.spec.airlight.support()[-1] + max(step.spec.tint.support())
                assert all(max(low, 0.0) <= a <= min(high, 1.0) for a in params.airlight), params.airlight


def test_cdd11_haze_draws_grey_airlight_and_density_in_cdd11_ranges():
    step, = BUILTIN_RECIPES["cdd11/haze"].steps
    rng = ds.rng_for(0)
    draws = [OPS[step.kind].sample(rng, step.spec) for _ in range(500)]
    betas = np.array([p.beta for p in draws])
    airlights = np.array([p.airlight for p in draws])
    assert betas.min() >= 1.0 and betas.max() <= 2.0 and np.ptp(betas) > 0.9
    assert airlights.min() >= 0.6 and airlights.max() <= 0.9 and np.ptp(airlights) > 0.25
    assert (airlights == airlights[:, :1]).all()  # tint 0: the same level in R, G and B
    assert {p.max_depth for p in draws} == {0.7}


def test_cdd11_low_light_uses_retinex_in_cdd11_ranges():
    step = BUILTIN_RECIPES["cdd11/low"].steps[0]
    rng = ds.rng_for(0)
    draws = [OPS[step.kind].sample(rng, step.spec) for _ in range(500)]
    assert {p.model for p in draws} == {"retinex"}
    assert all(2.0 <= p.gamma <= 3.0 for p in draws)
    assert all(0.03 * 255 <= p.sigma <= 0.08 * 255 for p in draws)


def test_cdd11_rain_and_snow_add_no_veil():
    rng = ds.rng_for(0)
    rain = BUILTIN_RECIPES["cdd11/rain"].steps[0]
    snow = BUILTIN_RECIPES["cdd11/snow"].steps[0]
    assert all(OPS[rain.kind].sample(rng, rain.spec).veil == 0.0 for _ in range(50))
    assert all(OPS[rain.kind].sample(rng, rain.spec).blend == "add" for _ in range(50))
    assert all(OPS[snow.kind].sample(rng, snow.spec).veil == 0.0 for _ in range(50))


def test_every_kind_has_an_op_with_the_matching_spec():
    assert set(OPS) == set(DegradationKind)
    for kind, op in OPS.items():
        assert op.spec.kind == kind.value
        assert isinstance(op.sample(ds.rng_for(0), op.spec()), op.params)
