"""Contrastive Prompt Regularization and the combined objective, on hand-made anchors and negatives."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from cpl_model import CPRConfig, CPRLoss, LossConfig, RestorationLoss
from cpl_model.features import FeatureSpace, PyramidFeatures

FORMS = ("ratio", "negative_only", "infonce")


class PixelFeatures(FeatureSpace):
    """The identity feature space (one level, weight 1): CPR computed directly on pixels."""

    layer_weights = (1.0,)

    def forward(self, image: torch.Tensor) -> list[torch.Tensor]:
        return [image]


def triple(seed: int = 0, batch: int = 2, size: int = 16) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(anchor, positive, direction): a positive, an anchor near it, and a unit-scale perturbation."""
    generator = torch.Generator().manual_seed(seed)
    positive = torch.rand(batch, 3, size, size, generator=generator) * 0.6 + 0.2
    anchor = positive + 0.05 * torch.randn(positive.shape, generator=generator)
    direction = torch.randn(positive.shape, generator=generator)
    return anchor, positive, direction


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("features", [PixelFeatures, PyramidFeatures])
def test_cpr_is_a_finite_scalar(form, features):
    anchor, positive, direction = triple()
    loss = CPRLoss(CPRConfig(form=form), features())(anchor, positive, [anchor + 0.1 * direction])
    assert loss.shape == () and torch.isfinite(loss)


@pytest.mark.parametrize("form", FORMS)
def test_cpr_falls_as_the_negative_moves_away_from_the_anchor(form):
    anchor, positive, direction = triple()
    cpr = CPRLoss(CPRConfig(form=form), PyramidFeatures())
    losses = [cpr(anchor, positive, [anchor + scale * direction]).item() for scale in (0.05, 0.2, 0.8)]
    assert losses[0] > losses[1] > losses[2], losses


def test_ratio_falls_as_the_anchor_approaches_the_positive():
    _, positive, direction = triple()
    negative = positive + 0.3 * direction
    cpr = CPRLoss(CPRConfig(form="ratio"), PyramidFeatures())
    anchors = [positive + scale * direction.flip(-1) for scale in (0.2, 0.1, 0.02)]
    losses = [cpr(a, positive, [negative]).item() for a in anchors]
    assert losses[0] > losses[1] > losses[2], losses


@pytest.mark.parametrize("form", ["ratio", "infonce"])
def test_cpr_is_lower_when_the_anchor_is_nearer_the_positive_than_the_negative(form):
    anchor, _, direction = triple()
    near, far = anchor + 0.05 * direction, anchor - 0.5 * direction.flip(-2)
    cpr = CPRLoss(CPRConfig(form=form), PyramidFeatures())
    assert cpr(anchor, near, [far]) < cpr(anchor, far, [near])


def test_negative_only_form_ignores_the_positive():
    anchor, positive, direction = triple()
    cpr = CPRLoss(CPRConfig(form="negative_only"), PyramidFeatures())
    negative = anchor + 0.2 * direction
    assert torch.equal(cpr(anchor, positive, [negative]), cpr(anchor, positive + 0.1, [negative]))


def test_ratio_is_zero_when_the_anchor_is_the_positive():
    _, positive, direction = triple()
    loss = CPRLoss(CPRConfig(form="ratio"), PyramidFeatures())(positive, positive, [positive + 0.1 * direction])
    assert loss.item() == 0.0


def test_ratio_form_follows_its_definition_in_an_identity_feature_space():
    anchor, positive, direction = triple()
    negatives = [anchor + 0.1 * direction, anchor - 0.3 * direction]
    loss = CPRLoss(CPRConfig(form="ratio"), PixelFeatures())(anchor, positive, negatives)
    away = torch.stack([F.l1_loss(anchor, n) for n in negatives]).mean()
    torch.testing.assert_close(loss, F.l1_loss(anchor, positive) / away, rtol=1e-4, atol=0)


def test_negative_only_form_is_minus_the_mean_distance():
    anchor, positive, direction = triple()
    negatives = [anchor + 0.1 * direction, anchor - 0.3 * direction]
    loss = CPRLoss(CPRConfig(form="negative_only"), PixelFeatures())(anchor, positive, negatives)
    torch.testing.assert_close(loss, -torch.stack([F.l1_loss(anchor, n) for n in negatives]).mean())


def test_infonce_form_is_the_cross_entropy_of_cosine_similarities():
    anchor, positive, direction = triple()
    negatives = [anchor + 0.1 * direction]
    tau = 0.5
    loss = CPRLoss(CPRConfig(form="infonce", tau=tau), PixelFeatures())(anchor, positive, negatives)
    a = anchor.flatten(1)
    logits = torch.stack([F.cosine_similarity(a, positive.flatten(1)),
                          F.cosine_similarity(a, negatives[0].flatten(1))], dim=1) / tau
    torch.testing.assert_close(loss, F.cross_entropy(logits, torch.zeros(len(a), dtype=torch.long)))


@pytest.mark.parametrize("form", ["ratio", "negative_only"])  # infonce adds one logit per negative by design
def test_repeating_a_negative_changes_nothing(form):
    """Negatives are averaged, not summed."""
    anchor, positive, direction = triple()
    cpr = CPRLoss(CPRConfig(form=form), PyramidFeatures())
    negative = anchor + 0.2 * direction
    torch.testing.assert_close(cpr(anchor, positive, [negative]), cpr(anchor, positive, [negative, negative]))


@pytest.mark.parametrize("form", FORMS)
def test_gradients_reach_anchor_and_negatives_but_not_the_positive(form):
    anchor, positive, direction = triple()
    anchor.requires_grad_(True)
    positive.requires_grad_(True)
    negative = (anchor.detach() + 0.2 * direction).requires_grad_(True)
    CPRLoss(CPRConfig(form=form), PyramidFeatures())(anchor, positive, [negative]).backward()
    assert anchor.grad is not None and anchor.grad.abs().sum() > 0
    assert negative.grad is not None and negative.grad.abs().sum() > 0
    assert positive.grad is None  # the ground truth is a fixed target


def test_cpr_without_negatives_raises():
    anchor, positive, _ = triple()
    with pytest.raises(ValueError, match="negative"):
        CPRLoss(CPRConfig(), PyramidFeatures())(anchor, positive, [])


def test_default_feature_space_is_the_pyramid():
    assert isinstance(CPRLoss(CPRConfig()).features, PyramidFeatures)


@pytest.mark.parametrize(("cpr", "step", "active"), [
    (CPRConfig(), 0, True),
    (CPRConfig(start_step=100), 99, False),
    (CPRConfig(start_step=100), 100, True),
    (CPRConfig(weight=0.0), 5, False),
    (CPRConfig(enabled=False), 5, False),
])
def test_cpr_activity_follows_enabled_weight_and_start_step(cpr, step, active):
    objective = RestorationLoss(LossConfig(cpr=cpr))
    assert objective.cpr_active(step) is active
    assert (objective.cpr is None) is (not cpr.enabled)
