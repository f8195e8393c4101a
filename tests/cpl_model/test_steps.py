"""``training_step`` and ``routing_metrics``: gradients everywhere, what CPR does to a toy problem, the
metric keys, and the warm-up."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cpl_model import (
    CPRConfig,
    CPRLoss,
    LossConfig,
    RestorationLoss,
    build_model,
    psnr,
    routing_metrics,
    training_step,
)
from cpl_model.prompts import Routing
from cpl_model.steps import SITE_NAMES

FORMS = ("ratio", "negative_only", "infonce")


class Spy(nn.Module):
    """A wrapper (like DDP's) that records the keywords each forward call receives."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.calls: list[dict] = []
        self.outputs: list = []

    def forward(self, x, **kwargs):
        self.calls.append(kwargs)
        self.outputs.append(self.model(x, **kwargs))
        return self.outputs[-1]


# --- every parameter trains ------------------------------------------------------------------------

def assert_every_parameter_has_a_gradient(model: nn.Module) -> None:
    missing = [name for name, p in model.named_parameters() if p.grad is None]
    assert not missing, f"no gradient for {missing}"
    broken = [name for name, p in model.named_parameters() if not torch.isfinite(p.grad).all()]
    assert not broken, f"non-finite gradient for {broken}"


@pytest.mark.parametrize("prompt", ["dense", "sparse"])
@pytest.mark.parametrize("form", FORMS)
def test_every_parameter_gets_a_gradient_with_cpr(prompt, form, make_batch):
    model = build_model("tiny", prompt).train()
    loss, metrics = training_step(model, make_batch(2, 24, 20), LossConfig(cpr=CPRConfig(form=form)),
                                  generator=torch.Generator().manual_seed(0))
    loss.backward()
    assert_every_parameter_has_a_gradient(model)
    assert metrics["cpr"] != 0
    for site in model.prompt_sites:  # the router learns (through the kept probability's scale)
        assert site.generator.router.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("top_k", [1, 2])
def test_every_parameter_gets_a_gradient_with_detached_negatives(top_k, make_batch):
    model = build_model("tiny", "sparse", top_k=top_k).train()
    loss, _ = training_step(model, make_batch(2, 16, 16), LossConfig(cpr=CPRConfig(detach_negatives=True)))
    loss.backward()
    assert_every_parameter_has_a_gradient(model)


def test_every_parameter_of_the_baseline_gets_a_gradient(make_batch):
    model = build_model("tiny", "none").train()
    loss, metrics = training_step(model, make_batch(2, 16, 16), LossConfig(cpr=CPRConfig(enabled=False)))
    loss.backward()
    assert_every_parameter_has_a_gradient(model)
    assert set(metrics) == {"loss", "l1", "cpr"}  # no prompts, so no routing metrics


def test_cpr_on_a_model_without_prompts_raises(make_batch):
    with pytest.raises(ValueError, match="prompt"):
        training_step(build_model("tiny", "none"), make_batch(1, 8, 8), LossConfig())


# --- detached negatives: CPR's gradient only through the anchor -----------------------------------

def cpr_gradients(detach: bool, manual: bool, batch) -> dict[str, torch.Tensor]:
    model = build_model("tiny", "sparse", seed=2).train()
    config = LossConfig(l1_weight=0.0, cpr=CPRConfig(detach_negatives=detach))
    if manual:  # the anchor with gradients, the same negatives computed without any
        anchor = model(batch["degraded"])
        with torch.no_grad():
            negatives = model(batch["degraded"], aux=True, negatives=1,
                              generator=torch.Generator().manual_seed(5)).negatives
        loss = config.cpr.weight * CPRLoss(config.cpr)(anchor, batch["clean"], negatives)
    else:
        loss, _ = training_step(model, batch, config, generator=torch.Generator().manual_seed(5))
    loss.backward()
    return {name: p.grad.clone() for name, p in model.named_parameters()}


def test_detached_negatives_pass_gradient_only_through_the_anchor(make_batch):
    batch = make_batch(2, 16, 16)
    detached = cpr_gradients(detach=True, manual=False, batch=batch)
    anchor_only = cpr_gradients(detach=False, manual=True, batch=batch)
    attached = cpr_gradients(detach=False, manual=False, batch=batch)
    for name in detached:
        torch.testing.assert_close(detached[name], anchor_only[name], rtol=1e-4, atol=1e-6, msg=name)
    assert any(not torch.allclose(attached[n], anchor_only[n], rtol=1e-3, atol=1e-6) for n in attached)


@pytest.mark.parametrize("detach", [True, False])
def test_only_negatives_with_gradient_train_the_components_the_router_did_not_choose(detach, make_batch):
    """What ``detach_negatives`` decides: with gradients, CPR also moves the prompt components that no
    sample chose (it can lower its ratio by making them restore badly); detached, it leaves them alone."""
    batch = make_batch(4, 16, 16)
    model = build_model("tiny", "sparse", seed=2).train()
    with torch.no_grad():
        chosen = [set(site.choice.tolist()) for site in model(batch["degraded"], aux=True).routing]
    config = LossConfig(l1_weight=0.0, cpr=CPRConfig(detach_negatives=detach))
    loss, _ = training_step(model, batch, config, generator=torch.Generator().manual_seed(5))
    loss.backward()
    unchosen_moved = False
    for site, picked in zip(model.prompt_sites, chosen, strict=True):
        per_component = site.generator.bank.grad.abs().flatten(1).sum(dim=1)
        assert all(per_component[c] > 0 for c in picked)
        unchosen = [c for c in range(len(per_component)) if c not in picked]
        unchosen_moved |= any(per_component[c] > 0 for c in unchosen)
        if detach:
            assert all(per_component[c] == 0 for c in unchosen)
    assert unchosen_moved != detach


# --- what one CPR step does on a toy problem -------------------------------------------------------

def distances(model: nn.Module, batch, seed: int) -> tuple[float, float]:
    """(L1 of the restoration to the clean image, L1 between the restoration and its negative)."""
    with torch.no_grad():
        out = model(batch["degraded"], aux=True, negatives=1, generator=torch.Generator().manual_seed(seed))
    return F.l1_loss(out.image, batch["clean"]).item(), F.l1_loss(out.image, out.negatives[0]).item()


def one_step(model: nn.Module, batch, config: LossConfig, seed: int) -> None:
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-4)
    loss, _ = training_step(model, batch, config, generator=torch.Generator().manual_seed(seed))
    optimiser.zero_grad()
    loss.backward()
    optimiser.step()


@pytest.mark.parametrize("model_seed", [0, 1])
def test_one_cpr_step_pulls_toward_the_clean_image_and_pushes_from_the_negative(model_seed, make_batch):
    batch = make_batch(4, 32, 32, seed=1)
    cpr_model = build_model("tiny", "sparse", seed=model_seed).train()
    l1_model = build_model("tiny", "sparse", seed=model_seed).train()
    positive_before, negative_before = distances(cpr_model, batch, seed=7)

    one_step(cpr_model, batch, LossConfig(cpr=CPRConfig(form="ratio", weight=0.1)), seed=7)
    one_step(l1_model, batch, LossConfig(cpr=CPRConfig(enabled=False)), seed=7)

    positive_after, negative_after = distances(cpr_model, batch, seed=7)
    _, negative_l1_only = distances(l1_model, batch, seed=7)
    assert positive_after < positive_before
    assert negative_after > negative_before
    # The push comes from CPR, not from L1 alone moving the anchor.
    assert negative_after > negative_l1_only


# --- metrics and warm-up --------------------------------------------------------------------------

def test_training_step_reports_the_documented_metrics(make_batch):
    model = build_model("tiny", "sparse").train()
    batch = make_batch(4, 16, 16)
    batch["task"] = ["noise", "haze", "noise", "low_light+haze"]
    loss, metrics = training_step(model, batch, LossConfig())
    components = model.config.prompt_components
    expected = {"loss", "l1", "cpr", "router_entropy"}
    expected |= {f"usage/{site}/{c}" for site in SITE_NAMES for c in range(components)}
    expected |= {f"usage/{site}/{task}/{c}" for site in SITE_NAMES for task in set(batch["task"])
                 for c in range(components)}
    assert set(metrics) == expected
    assert all(isinstance(v, float) for v in metrics.values())
    assert metrics["loss"] == pytest.approx(loss.item())
    assert metrics["loss"] == pytest.approx(metrics["l1"] + 0.1 * metrics["cpr"], rel=1e-5)
    assert 0 <= metrics["router_entropy"] <= math.log(components) + 1e-6
    for site in SITE_NAMES:
        assert sum(metrics[f"usage/{site}/{c}"] for c in range(components)) == pytest.approx(1.0)
        for task in set(batch["task"]):
            assert sum(metrics[f"usage/{site}/{task}/{c}"] for c in range(components)) == pytest.approx(1.0)


def test_l1_weight_scales_the_reconstruction_term(make_batch):
    batch = make_batch(2, 16, 16)
    config = LossConfig(l1_weight=3.0, cpr=CPRConfig(enabled=False))
    loss, metrics = training_step(build_model("tiny", "sparse"), batch, config)
    assert loss.item() == pytest.approx(3.0 * metrics["l1"], rel=1e-6)


def test_cpr_is_inactive_before_start_step(make_batch):
    config = LossConfig(cpr=CPRConfig(start_step=10, negatives=2))
    batch = make_batch(2, 16, 16)
    spy = Spy(build_model("tiny", "sparse"))
    _, warm_up = training_step(spy, batch, config, step=9)
    assert warm_up["cpr"] == 0.0 and warm_up["loss"] == pytest.approx(warm_up["l1"])
    assert spy.calls[-1]["negatives"] == 0 and spy.outputs[-1].negatives == []

    _, active = training_step(spy, batch, config, step=10)
    assert active["cpr"] > 0 and active["loss"] > active["l1"]
    assert spy.calls[-1]["negatives"] == 2 and len(spy.outputs[-1].negatives) == 2


def test_config_and_prebuilt_objective_give_the_same_step(make_batch):
    batch = make_batch(2, 16, 16)
    config = LossConfig(cpr=CPRConfig(form="infonce"))
    model = build_model("tiny", "sparse")
    from_config, _ = training_step(model, batch, config, step=3)
    prebuilt, _ = training_step(model, batch, RestorationLoss(config), step=3)
    assert torch.equal(from_config, prebuilt)


def test_without_a_generator_negatives_are_seeded_by_the_step(make_batch):
    batch = make_batch(8, 8, 8)
    model = build_model("tiny", "sparse").eval()
    first, _ = training_step(model, batch, LossConfig(), step=4)
    torch.manual_seed(999)  # the global RNG plays no part
    again, _ = training_step(model, batch, LossConfig(), step=4)
    explicit, _ = training_step(model, batch, LossConfig(), step=4, generator=torch.Generator().manual_seed(4))
    assert torch.equal(first, again) and torch.equal(first, explicit)


def test_routing_metrics_count_top_components_per_site_and_task():
    probabilities = torch.tensor([[0.7, 0.2, 0.1], [0.6, 0.3, 0.1], [0.1, 0.1, 0.8], [0.2, 0.5, 0.3]])
    uniform = torch.full((4, 3), 1 / 3)
    routing = [Routing(probabilities, probabilities), Routing(uniform, uniform)]
    metrics = routing_metrics(routing, ["a", "a", "b", "b"])
    assert [metrics[f"usage/latent/{c}"] for c in range(3)] == [0.5, 0.25, 0.25]
    assert [metrics[f"usage/latent/a/{c}"] for c in range(3)] == [1.0, 0.0, 0.0]
    assert [metrics[f"usage/latent/b/{c}"] for c in range(3)] == [0.0, 0.5, 0.5]
    entropy = -(probabilities * probabilities.log()).sum(dim=1).mean()
    assert metrics["router_entropy"] == pytest.approx(((entropy + math.log(3)) / 2).item(), rel=1e-6)
    assert not any(key.startswith("usage/level2") for key in metrics)  # only the sites given
    assert routing_metrics([]) == {}


def test_routing_metrics_use_the_masked_weights_for_usage():
    """Usage counts the component the prompt actually used (the largest kept weight)."""
    probabilities = torch.tensor([[0.5, 0.4, 0.1]])
    metrics = routing_metrics([Routing(probabilities, torch.tensor([[0.0, 0.4, 0.0]]))])
    assert metrics["usage/latent/1"] == 1.0


def test_psnr_reconstruction_is_minus_the_mean_per_image_psnr(make_batch):
    batch = make_batch(3, 16, 16)
    model = build_model("tiny", "sparse").train()
    nn.init.zeros_(model.output.weight)  # restores to the input, inside [0, 1] where ``psnr`` clips nothing
    config = LossConfig(reconstruction="psnr", cpr=CPRConfig(enabled=False))
    loss, metrics = training_step(model, batch, config)
    with torch.no_grad():
        restored = model(batch["degraded"])
    expected = -psnr(restored, batch["clean"]).mean()
    torch.testing.assert_close(loss.detach(), expected, rtol=1e-4, atol=1e-4)
    assert metrics["l1"] == pytest.approx(F.l1_loss(restored, batch["clean"]).item(), rel=1e-4)


def test_an_unknown_reconstruction_is_named():
    with pytest.raises(ValueError, match="reconstruction must be one of l1, psnr"):
        LossConfig(reconstruction="l2")
