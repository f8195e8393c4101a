"""Losses: L1 reconstruction plus Contrastive Prompt Regularization (CPR).

What follows the authors and what is reconstructed (their training code is unreleased):

- **From the paper's figures and README:** the anchor is the restoration with the router's prompts,
  the positive is the ground truth, and the negatives are restorations of the *same input* with
  mismatched prompts, made by re-running only the decoder. CPR compares them in the feature space of
  a frozen network, pulling the anchor toward the ground truth and away from the negatives.
- **Reconstructed** (the evidence for each default, from the group's earlier PCL and MCL code or our own
  ablation, is in docs/model.md):
  - the loss form. ``ratio`` (default): per layer, L1(anchor, gt) / (mean over negatives of
    L1(anchor, negative) + eps), weighted over layers; ``negative_only`` (MCL): minus the mean L1
    distance to the negatives (unbounded below, keep lambda small); ``infonce``: cross-entropy of
    cosine similarities, the positive against the negatives, at temperature ``tau``;
  - one negative per step, drawn uniformly from the unchosen components at every prompt site and
    scaled like the chosen one (the figure's "randomly select one Neg. Prompt");
  - gradients flow through the negatives by default (detached ones collapsed faster in our ablation);
    ``detach_negatives`` turns that off;
  - lambda = 0.1 (the MCL author's rule of thumb, not a figure from the paper), and an optional
    warm-up of plain reconstruction loss before CPR starts.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .features import FEATURES, FeatureSpace, build_features
from .network import NEGATIVE_WEIGHTS

CPR_FORMS = ("ratio", "negative_only", "infonce")
RECONSTRUCTIONS = ("l1", "psnr")
_RATIO_EPS = 3e-7  # PCL's epsilon
_PSNR_EPS = 1e-8  # HINet's: caps an image's term at -80 dB


def _require(condition: bool, field: str, message: str) -> None:
    if not condition:
        raise ValueError(f"cpr config: {field} {message}")


@dataclass(frozen=True)
class CPRConfig:
    enabled: bool = True
    weight: float = 0.1  # lambda
    form: str = "ratio"
    negatives: int = 1
    negative_weight: str = "selected"  # scale of the mismatched component: the chosen one's, or its own
    detach_negatives: bool = False
    tau: float = 0.07  # infonce temperature
    start_step: int = 0  # plain L1 before this optimiser step
    features: str = "pyramid"
    vgg_weights: str | None = None  # a local file; required for the vgg features

    def __post_init__(self) -> None:
        _require(self.weight >= 0, "weight", f"must be >= 0, got {self.weight}")
        _require(self.form in CPR_FORMS, "form", f"must be one of {', '.join(CPR_FORMS)}, got {self.form!r}")
        _require(self.negatives >= 1, "negatives", f"must be >= 1, got {self.negatives}")
        _require(self.negative_weight in NEGATIVE_WEIGHTS, "negative_weight",
                 f"must be one of {', '.join(NEGATIVE_WEIGHTS)}, got {self.negative_weight!r}")
        _require(self.tau > 0, "tau", f"must be > 0, got {self.tau}")
        _require(self.start_step >= 0, "start_step", f"must be >= 0, got {self.start_step}")
        _require(self.features in FEATURES, "features", f"must be one of {', '.join(FEATURES)}, got {self.features!r}")
        _require(not self.features.startswith("vgg") or self.vgg_weights is not None, "vgg_weights",
                 f"is required when features is {self.features!r}")


@dataclass(frozen=True)
class LossConfig:
    """``l1_weight`` weights the reconstruction term, whose form is ``reconstruction``:

    - ``l1`` (PromptIR's and the paper's): the mean absolute error over the batch;
    - ``psnr`` (HINet's PSNR loss): the mean over images of ``10 log10(MSE)``, i.e. minus each image's
      PSNR. Every image counts by its relative error, so a task whose inputs are already close to the
      target (blur) weighs as much as one far from it (low light), as in a per-task PSNR table.
    """

    l1_weight: float = 1.0
    reconstruction: str = "l1"
    cpr: CPRConfig = CPRConfig()

    def __post_init__(self) -> None:
        if isinstance(self.cpr, dict):
            object.__setattr__(self, "cpr", _from_dict(CPRConfig, self.cpr, "loss.cpr"))
        if self.l1_weight < 0:
            raise ValueError(f"loss config: l1_weight must be >= 0, got {self.l1_weight}")
        if self.reconstruction not in RECONSTRUCTIONS:
            raise ValueError(f"loss config: reconstruction must be one of {', '.join(RECONSTRUCTIONS)}, "
                             f"got {self.reconstruction!r}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "LossConfig":
        return _from_dict(cls, values, "loss")


def _from_dict(cls: type, values: dict[str, Any], where: str) -> Any:
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"{where}: unknown key {unknown[0]!r}; known: {', '.join(sorted(known))}")
    return cls(**values)


class CPRLoss(nn.Module):
    """Contrastive Prompt Regularization on restorations; see the module docstring."""

    def __init__(self, config: CPRConfig, features: FeatureSpace | None = None) -> None:
        super().__init__()
        self.config = config
        self.features = features if features is not None else build_features(config.features, config.vgg_weights)

    def forward(self, anchor: torch.Tensor, positive: torch.Tensor, negatives: list[torch.Tensor]) -> torch.Tensor:
        if not negatives:
            raise ValueError("CPR needs at least one negative")
        anchor_f = self.features(anchor.float())
        with torch.no_grad():
            positive_f = self.features(positive.float())
        negative_f = [self.features(n.float()) for n in negatives]
        total = anchor.new_zeros((), dtype=torch.float32)
        for level, weight in enumerate(self.features.layer_weights):
            a, p = anchor_f[level], positive_f[level]
            ns = [n[level] for n in negative_f]
            total = total + weight * self._layer(a, p, ns)
        return total

    def _layer(self, a: torch.Tensor, p: torch.Tensor, ns: list[torch.Tensor]) -> torch.Tensor:
        form = self.config.form
        if form == "ratio":
            away = torch.stack([F.l1_loss(a, n) for n in ns]).mean()
            return F.l1_loss(a, p) / (away + _RATIO_EPS)
        if form == "negative_only":
            return -torch.stack([F.l1_loss(a, n) for n in ns]).mean()
        a, p = a.flatten(1), p.flatten(1)
        logits = torch.stack([F.cosine_similarity(a, p, dim=1)]
                             + [F.cosine_similarity(a, n.flatten(1), dim=1) for n in ns], dim=1) / self.config.tau
        return F.cross_entropy(logits, torch.zeros(len(a), dtype=torch.long, device=a.device))


class RestorationLoss(nn.Module):
    """``l1_weight * reconstruction + lambda * CPR``, the objective ``training_step`` minimises."""

    def __init__(self, config: LossConfig = LossConfig(), features: FeatureSpace | None = None) -> None:
        super().__init__()
        self.config = config
        self.cpr = CPRLoss(config.cpr, features) if config.cpr.enabled else None

    def reconstruction(self, restored: torch.Tensor, clean: torch.Tensor) -> torch.Tensor:
        if self.config.reconstruction == "l1":
            return F.l1_loss(restored, clean)
        mse = (restored - clean).square().flatten(1).mean(dim=1)
        return 10 * torch.log10(mse + _PSNR_EPS).mean()

    def cpr_active(self, step: int) -> bool:
        return self.cpr is not None and self.config.cpr.weight > 0 and step >= self.config.cpr.start_step
