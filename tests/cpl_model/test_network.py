"""The network: shapes on any size, determinism, seeding, parameter counts, SPM routing and negatives."""

from __future__ import annotations

import pytest
import torch
from torch.overrides import TorchFunctionMode

from cpl_model import PROMPT_VARIANTS, CPLNet, RestorationOutput, build_model, preset
from cpl_model.network import _mismatched
from cpl_model.prompts import Routing

SIZES = [(1, 37, 45), (3, 8, 8), (2, 5, 67), (1, 17, 9), (1, 1, 1)]


def parameter_count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def images(batch: int, height: int, width: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(batch, 3, height, width, generator=torch.Generator().manual_seed(seed))


# --- forward: shapes, finiteness, determinism -----------------------------------------------------

@pytest.mark.parametrize("prompt", PROMPT_VARIANTS)
@pytest.mark.parametrize(("batch", "height", "width"), SIZES, ids=[f"{b}x{h}x{w}" for b, h, w in SIZES])
def test_tiny_forward_keeps_shape_and_is_finite_on_any_size(prompt, batch, height, width):
    model = build_model("tiny", prompt).eval()
    x = images(batch, height, width)
    with torch.no_grad():
        y = model(x)
    assert y.shape == x.shape and y.dtype == x.dtype
    assert torch.isfinite(y).all()


@pytest.mark.parametrize("name", ["small", "full"])
@pytest.mark.parametrize("prompt", PROMPT_VARIANTS)
def test_larger_presets_build_and_run_on_an_odd_size(name, prompt):
    model = build_model(name, prompt).eval()
    x = images(1, 13, 21)
    with torch.no_grad():
        y = model(x)
    assert y.shape == x.shape and torch.isfinite(y).all()


@pytest.mark.parametrize("prompt", PROMPT_VARIANTS)
def test_eval_forward_is_deterministic(prompt):
    model = build_model("tiny", prompt).eval()
    x = images(2, 37, 45)
    with torch.no_grad():
        assert torch.equal(model(x), model(x))


DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)]


class ConvolutionInputs(TorchFunctionMode):
    """Records the input of every 2-D convolution, through a module or ``F.conv2d`` alike."""

    def __init__(self) -> None:
        super().__init__()
        self.inputs: list[torch.Tensor] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func is torch.conv2d:
            self.inputs.append(args[0])
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("device", DEVICES)
def test_feature_maps_are_channels_last_and_change_no_result(device, monkeypatch):
    """Every convolution sees channels-last maps, down to the lowest level and back (a GPU's pixel
    (un)shuffle returns NCHW, so this is checked at every layer, not only at the ends)."""
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)  # the two layouts may pick other kernels
    model = build_model("tiny", "sparse").to(device).train()
    x = images(2, 21, 30).to(device)
    with ConvolutionInputs() as channels_last:
        y = model(x)
    assert len(channels_last.inputs) > 50
    assert all(feature.is_contiguous(memory_format=torch.channels_last) for feature in channels_last.inputs)
    assert y.is_contiguous()  # the output is back in the standard layout
    assert all(p.is_contiguous() for p in model.parameters())  # DeepSpeed broadcasts them as bytes
    model.memory_format = torch.contiguous_format
    with ConvolutionInputs() as standard:
        torch.testing.assert_close(model(x), y, rtol=1e-5, atol=1e-5)
    assert len(standard.inputs) == len(channels_last.inputs)
    assert all(feature.is_contiguous() for feature in standard.inputs)


@pytest.mark.parametrize("prompt", PROMPT_VARIANTS)
def test_samples_in_a_batch_do_not_influence_each_other(prompt):
    model = build_model("tiny", prompt).eval()
    x = images(3, 24, 29)
    with torch.no_grad():
        together = model(x)
        alone = torch.cat([model(x[i:i + 1]) for i in range(len(x))])
    torch.testing.assert_close(together, alone, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("prompt", PROMPT_VARIANTS)
@pytest.mark.parametrize(("height", "width"), [(37, 45), (5, 67), (16, 24)])
def test_padding_is_cropped_back_in_place(prompt, height, width):
    """With the output convolution zeroed the network is its global residual: exactly the input, so the
    padding added for the U-Net must be removed from the bottom/right without shifting the image."""
    model = build_model("tiny", prompt).eval()
    with torch.no_grad():
        model.output.weight.zero_()
        x = images(2, height, width)
        assert torch.equal(model(x), x)


@pytest.mark.parametrize("prompt", ["dense", "sparse"])
def test_aux_output_carries_one_routing_per_prompt_site(prompt):
    model = build_model("tiny", prompt).eval()
    x = images(2, 16, 24)
    with torch.no_grad():
        out = model(x, aux=True)
        plain = model(x)
    assert isinstance(out, RestorationOutput)
    assert torch.equal(out.image, plain)
    assert len(out.routing) == 3 and out.negatives == []
    for site in out.routing:
        assert site.probabilities.shape == site.weights.shape == (2, model.config.prompt_components)
        torch.testing.assert_close(site.probabilities.sum(dim=1), torch.ones(2))


def test_model_without_prompts_reports_no_routing():
    out = build_model("tiny", "none")(images(1, 8, 8), aux=True)
    assert out.routing == [] and out.negatives == []


# --- seeding ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("prompt", PROMPT_VARIANTS)
def test_same_seed_gives_identical_weights(prompt):
    a, b = build_model("tiny", prompt, seed=3), build_model("tiny", prompt, seed=3)
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


def test_different_seeds_give_different_weights():
    a, b = build_model("tiny", seed=0).state_dict(), build_model("tiny", seed=1).state_dict()
    assert not torch.equal(a["patch_embed.weight"], b["patch_embed.weight"])
    assert not torch.equal(a["prompt_sites.0.generator.bank"], b["prompt_sites.0.generator.bank"])


def test_build_model_leaves_the_global_rng_untouched():
    torch.manual_seed(1234)
    before = torch.get_rng_state()
    build_model("tiny", "sparse", seed=7)
    assert torch.equal(torch.get_rng_state(), before)
    expected = torch.rand(4, generator=torch.Generator().manual_seed(1234))
    assert torch.equal(torch.rand(4), expected)  # the next global draw is what it would have been


def test_build_model_does_not_depend_on_the_global_rng():
    torch.manual_seed(1)
    a = build_model("tiny", seed=5).state_dict()
    torch.manual_seed(2)
    b = build_model("tiny", seed=5).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


# --- parameter counts ------------------------------------------------------------------------------

@pytest.mark.parametrize(("name", "millions", "tolerance"), [
    ("tiny", 1.29, 0.03),
    ("small", 5.55, 0.03),
    ("full", 35.38, 0.01),
])
def test_preset_parameter_counts(name, millions, tolerance):
    count = parameter_count(build_model(name, "sparse"))
    assert abs(count / 1e6 - millions) <= tolerance * millions, count


@pytest.mark.parametrize("name", ["tiny", "small", "full"])
def test_spm_adds_no_parameters_and_prompts_do(name):
    counts = {prompt: parameter_count(CPLNet(preset(name, prompt=prompt))) for prompt in PROMPT_VARIANTS}
    assert counts["dense"] == counts["sparse"]
    assert counts["none"] < counts["sparse"]


# --- the Sparse Prompt Module ----------------------------------------------------------------------

@pytest.mark.parametrize("top_k", [1, 2, 3])
def test_spm_keeps_exactly_k_router_probabilities_unnormalised(top_k):
    model = build_model("tiny", "sparse", top_k=top_k, prompt_components=5).eval()
    with torch.no_grad():
        routing = model(images(6, 16, 16), aux=True).routing
    for site in routing:
        kept = site.weights != 0
        assert kept.sum(dim=1).tolist() == [top_k] * 6
        top = site.probabilities.topk(top_k, dim=1).indices
        assert torch.equal(kept, torch.zeros_like(kept).scatter_(1, top, True))  # the k most probable
        assert torch.equal(site.weights[kept], site.probabilities[kept])  # not renormalised
        assert (site.weights.sum(dim=1) < 1).all()
        assert torch.equal(site.choice, site.probabilities.argmax(dim=1))


def test_dense_routing_uses_every_probability():
    model = build_model("tiny", "dense").eval()
    with torch.no_grad():
        routing = model(images(3, 16, 16), aux=True).routing
    for site in routing:
        assert torch.equal(site.weights, site.probabilities)
        assert (site.weights > 0).all()


def test_spm_with_k_equal_to_n_is_the_dense_model():
    sparse = build_model("tiny", "sparse", seed=4, prompt_components=4, top_k=4).eval()
    dense = build_model("tiny", "dense", seed=4, prompt_components=4, top_k=4).eval()
    x = images(2, 21, 19)
    with torch.no_grad():
        torch.testing.assert_close(sparse(x), dense(x), rtol=1e-6, atol=1e-6)


def test_spm_with_k_below_n_differs_from_the_dense_model():
    """The mask matters: the comparison above would pass trivially if prompts had no effect."""
    sparse = build_model("tiny", "sparse", seed=4, prompt_components=4, top_k=1).eval()
    dense = build_model("tiny", "dense", seed=4, prompt_components=4, top_k=1).eval()
    x = images(2, 21, 19)
    with torch.no_grad():
        assert not torch.allclose(sparse(x), dense(x), atol=1e-6)


def test_prompt_weights_change_the_restoration():
    model = build_model("tiny", "sparse").eval()
    x = images(2, 16, 16)
    with torch.no_grad():
        out = model(x, aux=True, negatives=1, generator=torch.Generator().manual_seed(0))
    assert not torch.allclose(out.image, out.negatives[0])


# --- negatives: the helper on constructed routings -------------------------------------------------

def sparse_routing(probabilities: torch.Tensor, top_k: int) -> Routing:
    keep = torch.zeros_like(probabilities).scatter_(1, probabilities.topk(top_k, dim=1).indices, 1.0)
    return Routing(probabilities, probabilities * keep)


def random_probabilities(batch: int, components: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(batch, components, generator=torch.Generator().manual_seed(seed)).mul(2).softmax(dim=1)


@pytest.mark.parametrize("top_k", [1, 2, 4])
@pytest.mark.parametrize("negative_weight", ["selected", "router"])
def test_negative_weights_sit_on_one_unchosen_component(top_k, negative_weight):
    probabilities = random_probabilities(64, 5)
    routing = sparse_routing(probabilities, top_k)
    weights = _mismatched(routing, torch.Generator().manual_seed(0), negative_weight)
    assert weights.shape == probabilities.shape
    assert ((weights != 0).sum(dim=1) == 1).all()
    replacement = weights.argmax(dim=1)
    chosen = routing.weights > 0
    assert not chosen.gather(1, replacement[:, None]).any()
    if negative_weight == "selected":
        expected = routing.weights.sum(dim=1)  # scaled like the chosen components
    else:
        expected = probabilities.gather(1, replacement[:, None])[:, 0]  # its own router probability
    torch.testing.assert_close(weights.sum(dim=1), expected)


def test_dense_negatives_avoid_only_the_most_probable_component():
    probabilities = random_probabilities(256, 5, seed=1)
    routing = Routing(probabilities, probabilities)  # the dense variant: weights *are* the probabilities
    weights = _mismatched(routing, torch.Generator().manual_seed(0), "selected")
    replacement = weights.argmax(dim=1)
    assert not (replacement == probabilities.argmax(dim=1)).any()
    torch.testing.assert_close(weights.sum(dim=1), probabilities.max(dim=1).values)
    # Every other component is used, including the second most probable.
    assert (replacement == probabilities.topk(2, dim=1).indices[:, 1]).any()


def test_negative_component_is_drawn_uniformly_from_the_unchosen():
    probabilities = torch.tensor([[0.1, 0.5, 0.1, 0.2, 0.1]]).repeat(4000, 1)
    weights = _mismatched(sparse_routing(probabilities, 1), torch.Generator().manual_seed(0), "selected")
    frequency = torch.bincount(weights.argmax(dim=1), minlength=5).float() / len(weights)
    assert frequency[1] == 0
    assert torch.allclose(frequency[[0, 2, 3, 4]], torch.full((4,), 0.25), atol=0.03), frequency


def test_negatives_need_an_unchosen_component():
    probabilities = random_probabilities(4, 3)
    with pytest.raises(ValueError, match="top_k"):
        _mismatched(sparse_routing(probabilities, 3), None, "selected")


def test_helper_negatives_follow_the_generator_seed():
    routing = sparse_routing(random_probabilities(32, 5), 1)
    draw = lambda seed: _mismatched(routing, torch.Generator().manual_seed(seed), "selected")  # noqa: E731
    assert torch.equal(draw(3), draw(3))
    assert not torch.equal(draw(3).argmax(dim=1), draw(4).argmax(dim=1))


# --- negatives: through the model -----------------------------------------------------------------

@pytest.mark.parametrize("prompt", ["dense", "sparse"])
@pytest.mark.parametrize("count", [1, 3])
def test_model_returns_the_requested_negatives(prompt, count):
    model = build_model("tiny", prompt).eval()
    x = images(2, 19, 27)
    with torch.no_grad():
        out = model(x, aux=True, negatives=count, generator=torch.Generator().manual_seed(0))
    assert len(out.negatives) == count
    for negative in out.negatives:
        assert negative.shape == x.shape and torch.isfinite(negative).all()


def test_negatives_do_not_change_the_anchor():
    model = build_model("tiny", "sparse").eval()
    x = images(2, 16, 16)
    with torch.no_grad():
        plain = model(x, aux=True)
        with_negatives = model(x, aux=True, negatives=2, generator=torch.Generator().manual_seed(0))
    assert torch.equal(plain.image, with_negatives.image)
    for a, b in zip(plain.routing, with_negatives.routing, strict=True):
        assert torch.equal(a.weights, b.weights)


def test_negatives_are_reproducible_per_generator_seed_and_vary_across_seeds():
    model = build_model("tiny", "sparse", prompt_components=5).eval()
    x = images(8, 8, 8)

    def negatives(seed: int) -> torch.Tensor:
        with torch.no_grad():
            return model(x, aux=True, negatives=1, generator=torch.Generator().manual_seed(seed)).negatives[0]

    assert torch.equal(negatives(11), negatives(11))
    first, second = negatives(11), negatives(12)
    per_sample_equal = [torch.equal(first[i], second[i]) for i in range(len(x))]
    assert not all(per_sample_equal)  # at least one sample got a different component somewhere


def test_successive_negatives_draw_fresh_components():
    model = build_model("tiny", "sparse").eval()
    with torch.no_grad():
        out = model(images(8, 8, 8), aux=True, negatives=2, generator=torch.Generator().manual_seed(0))
    assert not torch.equal(out.negatives[0], out.negatives[1])


def test_negatives_of_a_model_without_prompts_raise():
    with pytest.raises(ValueError, match="prompt"):
        build_model("tiny", "none")(images(1, 8, 8), aux=True, negatives=1)


def test_negatives_need_aux():
    with pytest.raises(ValueError, match="aux"):
        build_model("tiny", "sparse")(images(1, 8, 8), negatives=1)


def test_unknown_negative_weight_raises():
    with pytest.raises(ValueError, match="negative_weight"):
        build_model("tiny", "sparse")(images(1, 8, 8), aux=True, negatives=1, negative_weight="uniform")


def test_negatives_with_every_component_kept_raise():
    model = build_model("tiny", "sparse", prompt_components=3, top_k=3)
    with pytest.raises(ValueError, match="top_k"):
        model(images(1, 8, 8), aux=True, negatives=1)


def test_negatives_carry_gradients_unless_detached():
    model = build_model("tiny", "sparse").train()
    x = images(2, 16, 16)
    attached = model(x, aux=True, negatives=2, generator=torch.Generator().manual_seed(0))
    detached = model(x, aux=True, negatives=2, generator=torch.Generator().manual_seed(0), detach_negatives=True)
    assert all(n.requires_grad and n.grad_fn is not None for n in attached.negatives)
    assert all(not n.requires_grad and n.grad_fn is None for n in detached.negatives)
    assert detached.image.requires_grad  # the anchor still trains
    for a, b in zip(attached.negatives, detached.negatives, strict=True):
        torch.testing.assert_close(a.detach(), b)  # the same negatives, only cut from the graph

