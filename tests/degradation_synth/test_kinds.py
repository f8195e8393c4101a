"""Task labels: one label per set of kinds, whatever order a recipe applies them in."""

from __future__ import annotations

import itertools

import pytest

from degradation_synth import DegradationKind, task_label

K = DegradationKind


@pytest.mark.parametrize(
    ("kinds", "label"),
    [
        ([K.NOISE], "noise"),
        ([K.RAIN, K.LOW_LIGHT, K.HAZE], "low_light+haze+rain"),
        ([K.HAZE, K.SNOW, K.LOW_LIGHT], "low_light+haze+snow"),
        ([K.JPEG, K.NOISE, K.BLUR], "blur+noise+jpeg"),
        ([K.HAZE, K.HAZE], "haze"),
    ],
)
def test_task_label_lists_kinds_in_the_canonical_order(kinds, label):
    assert task_label(kinds) == label


def test_task_label_does_not_depend_on_order():
    kinds = [K.LOW_LIGHT, K.HAZE, K.RAIN, K.BLUR]
    labels = {task_label(order) for order in itertools.permutations(kinds)}
    assert labels == {"low_light+haze+rain+blur"}


def test_every_kind_appears_in_labels():
    assert set(task_label(list(K)).split("+")) == {k.value for k in K}


def test_task_label_accepts_a_generator_and_plain_strings_compare_equal():
    assert task_label(k for k in (K.SNOW, K.LOW_LIGHT)) == "low_light+snow"
    assert K.LOW_LIGHT == "low_light"
