"""The weight average: the first update copies, later ones move by 1 - decay; buffers too; state round trip."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import cpl_model
from cpl_model import WeightAverage


def small_model() -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))


def shift(model: nn.Module, by: float) -> None:
    with torch.no_grad():
        for tensor in model.state_dict().values():
            if tensor.is_floating_point():
                tensor.add_(by)


def test_the_first_update_copies_the_model_and_later_ones_move_by_one_minus_decay():
    model = small_model()
    average = WeightAverage(model, decay=0.9)
    shift(model, 1.0)
    average.update(model)
    torch.testing.assert_close(average.module[0].weight, model[0].weight)
    copied = average.module[0].weight.clone()
    shift(model, 1.0)
    average.update(model)
    torch.testing.assert_close(average.module[0].weight, 0.9 * copied + 0.1 * model[0].weight)
    torch.testing.assert_close(average.module[0].weight, copied + 0.1)


def test_buffers_are_averaged_like_parameters():
    model = small_model()
    average = WeightAverage(model, decay=0.5)
    average.update(model)
    model.train()
    model(torch.rand(2, 3, 8, 8) + 3.0)  # moves batch-norm's running mean
    average.update(model)
    before = small_model()[1].running_mean
    torch.testing.assert_close(average.module[1].running_mean, 0.5 * before + 0.5 * model[1].running_mean)
    assert not torch.equal(average.module[1].running_mean, before)


def test_the_average_is_frozen_and_serves_forward():
    model = small_model().eval()
    average = WeightAverage(model, decay=0.99)
    assert not any(p.requires_grad for p in average.parameters())
    x = torch.rand(1, 3, 8, 8)
    average.eval()
    torch.testing.assert_close(average(x), model(x))


def test_a_state_dict_round_trip_continues_the_average_exactly():
    model = small_model()
    original = WeightAverage(model, decay=0.9)
    for _ in range(3):
        shift(model, 0.5)
        original.update(model)
    restored = WeightAverage(small_model(), decay=0.9)  # a fresh copy, as a resumed run builds it
    restored.load_state_dict(original.state_dict())
    shift(model, 0.5)
    original.update(model)
    restored.update(model)  # not a first update: the count came with the state
    for name, tensor in original.state_dict().items():
        torch.testing.assert_close(restored.state_dict()[name], tensor, msg=name)


def test_a_bf16_model_updates_an_fp32_average_without_rounding_the_steps_away():
    model = small_model()
    average = WeightAverage(model, decay=0.999)  # built from the fp32 model, as before DeepSpeed casts it
    model.to(torch.bfloat16)
    average.update(model)
    first = average.module[0].weight.clone()
    shift(model, 1.0)
    average.update(model)
    assert average.module[0].weight.dtype == torch.float32
    torch.testing.assert_close(average.module[0].weight, 0.999 * first + 0.001 * model[0].weight.float())
    assert not torch.equal(average.module[0].weight, first)


@pytest.mark.parametrize("decay", [0.0, 1.0, -0.1, 1.5])
def test_a_decay_outside_zero_to_one_is_refused(decay):
    with pytest.raises(ValueError, match="decay"):
        WeightAverage(small_model(), decay)


def test_the_package_exports_it():
    assert cpl_model.WeightAverage is WeightAverage and "WeightAverage" in cpl_model.__all__
