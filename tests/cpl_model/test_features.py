"""Frozen feature spaces for CPR: the weight-free pyramid, and VGG-16/19 from a local torchvision-style file."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from cpl_model import CPRConfig, CPRLoss, build_features
from cpl_model.features import PyramidFeatures, VGGFeatures

# torchvision's vgg16().features and vgg19().features: conv/relu pairs and max-pools, indices 0..30 and 0..36.
VGG16_LAYOUT = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")
VGG19_LAYOUT = (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M")
TAP_CHANNELS = (64, 128, 256, 512, 512)  # relu1_1 ... relu5_1


class Payload:
    """An arbitrary class: a weights-only load must refuse to rebuild it."""

    def __init__(self) -> None:
        self.value = 42


def torchvision_style_vgg(layout: tuple, seed: int = 0) -> dict[str, torch.Tensor]:
    """A randomly initialised VGG state dict with torchvision's key names (features.* plus a classifier)."""
    torch.manual_seed(seed)
    layers: list[nn.Module] = []
    channels = 3
    for item in layout:
        if item == "M":
            layers.append(nn.MaxPool2d(2))
        else:
            layers += [nn.Conv2d(channels, item, 3, padding=1), nn.ReLU(inplace=True)]
            channels = item
    model = nn.Module()
    model.features = nn.Sequential(*layers)
    model.classifier = nn.Sequential(nn.Linear(8, 4), nn.ReLU(), nn.Linear(4, 2))  # small stand-in, ignored
    return model.state_dict()


def saved_vgg(folder, name: str, layout: tuple) -> tuple:
    with torch.random.fork_rng(devices=[]):
        state = torchvision_style_vgg(layout)
    path = folder / f"{name}.pth"
    torch.save(state, path)
    return path, state


@pytest.fixture(scope="module")
def vgg_weights(tmp_path_factory):
    return saved_vgg(tmp_path_factory.mktemp("vgg"), "vgg19", VGG19_LAYOUT)


@pytest.fixture(scope="module")
def vgg16_weights(tmp_path_factory):
    return saved_vgg(tmp_path_factory.mktemp("vgg16"), "vgg16", VGG16_LAYOUT)


def images(batch: int, height: int, width: int) -> torch.Tensor:
    return torch.rand(batch, 3, height, width, generator=torch.Generator().manual_seed(0))


# --- pyramid ---------------------------------------------------------------------------------------

def test_pyramid_is_the_default_and_returns_four_weighted_levels():
    features = build_features("pyramid")
    assert isinstance(features, PyramidFeatures)
    maps = features(images(2, 37, 45))
    assert len(maps) == len(features.layer_weights) == 4
    assert all(m.shape[0] == 2 and m.ndim == 2 for m in maps)
    assert [m.shape[1] for m in maps] == sorted((m.shape[1] for m in maps), reverse=True)  # coarser = fewer
    assert list(features.layer_weights) == sorted(features.layer_weights)  # weighted toward the coarse end


def test_pyramid_sees_colour_and_structure():
    features = PyramidFeatures()
    x = images(1, 32, 32)
    brighter = [a - b for a, b in zip(features(x + 0.1), features(x))]
    assert brighter[0].abs().max() > 0  # a colour shift shows in the image part ...
    flipped = [a - b for a, b in zip(features(x.flip(-1)), features(x))]
    assert all(d.abs().max() > 0 for d in flipped)  # ... and a change of structure at every level


def test_pyramid_has_no_parameters_and_stays_in_eval_mode():
    features = PyramidFeatures()
    assert list(features.parameters()) == []
    assert features.train().training is False


# --- VGG-16 and VGG-19 -----------------------------------------------------------------------------

def test_vgg_loads_torchvision_weights_and_is_frozen(vgg_weights):
    path, state = vgg_weights
    features = build_features("vgg19", path)
    assert isinstance(features, VGGFeatures)
    loaded = features.state_dict()
    assert loaded and all(torch.equal(loaded[k], state[k]) for k in loaded)
    assert all(not p.requires_grad for p in features.parameters())
    assert features.train().training is False


@pytest.mark.parametrize(("name", "weights"), [("vgg16", "vgg16_weights"), ("vgg19", "vgg_weights")])
def test_vgg_returns_the_five_relu_taps(request, name, weights):
    features = build_features(name, request.getfixturevalue(weights)[0])
    maps = features(images(2, 32, 48))
    assert len(maps) == len(features.layer_weights) == 5
    for level, (feature, channels) in enumerate(zip(maps, TAP_CHANNELS)):
        assert feature.shape == (2, channels, 32 // 2**level, 48 // 2**level)
        assert (feature >= 0).all()  # read after the ReLU


@pytest.mark.parametrize(("name", "weights", "layout", "taps"), [
    ("vgg16", "vgg16_weights", VGG16_LAYOUT, (1, 6, 11, 18, 25)),
    ("vgg19", "vgg_weights", VGG19_LAYOUT, (1, 6, 11, 20, 29)),
])
def test_vgg_taps_match_a_plain_torchvision_style_forward(request, name, weights, layout, taps):
    """relu1_1 ... relu5_1 are these indices of torchvision's ``features``."""
    path, state = request.getfixturevalue(weights)
    reference = nn.Sequential()
    channels = 3
    for item in layout:
        if item == "M":
            reference.append(nn.MaxPool2d(2))
        else:
            reference.extend([nn.Conv2d(channels, item, 3, padding=1), nn.ReLU()])
            channels = item
    reference.load_state_dict({k.removeprefix("features."): v for k, v in state.items() if k.startswith("features.")})
    x = images(1, 32, 32)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    h, found = (x - mean) / std, []
    for index, layer in enumerate(reference):
        h = layer(h)
        if index in taps:
            found.append(h)
    for ours, expected in zip(build_features(name, path)(x), found, strict=True):
        torch.testing.assert_close(ours, expected)


def test_vgg_cpr_trains_the_restoration_not_the_features(vgg_weights):
    features = build_features("vgg19", vgg_weights[0])
    cpr = CPRLoss(CPRConfig(features="vgg19", vgg_weights=str(vgg_weights[0])), features)
    anchor = images(1, 32, 32).requires_grad_(True)
    loss = cpr(anchor, images(1, 32, 32).flip(-1), [(anchor.detach() * 0.9)])
    loss.backward()
    assert torch.isfinite(loss) and anchor.grad is not None and anchor.grad.abs().sum() > 0
    assert all(p.grad is None for p in features.parameters())


def test_vgg_without_weights_raises_naming_the_setting():
    with pytest.raises(ValueError, match="vgg_weights"):
        build_features("vgg19")


def test_unknown_feature_space_raises():
    with pytest.raises(ValueError, match="lpips"):
        build_features("lpips")


def test_vgg_weights_missing_keys_raise(tmp_path, vgg_weights):
    _, state = vgg_weights
    partial = {k: v for k, v in state.items() if not k.startswith("features.28.")}  # drop conv5_1
    torch.save(partial, tmp_path / "partial.pth")
    with pytest.raises(ValueError, match="features.28"):
        build_features("vgg19", tmp_path / "partial.pth")


def test_vgg_weights_with_other_key_names_raise(tmp_path, vgg_weights):
    _, state = vgg_weights
    torch.save({f"module.{k}": v for k, v in state.items()}, tmp_path / "wrapped.pth")
    with pytest.raises(ValueError, match="torchvision"):
        build_features("vgg19", tmp_path / "wrapped.pth")


@pytest.mark.parametrize(("name", "other"), [("vgg19", "vgg16_weights"), ("vgg16", "vgg_weights")])
def test_weights_of_the_other_vgg_depth_raise_a_shape_error_naming_the_file(request, name, other):
    path, _ = request.getfixturevalue(other)
    with pytest.raises(ValueError, match=rf"{name} weights in .*{path.name}: features\.19\.weight has shape"):
        build_features(name, path)


def test_missing_vgg_weights_file_raises(tmp_path):
    with pytest.raises(ValueError, match="nothing.pth"):
        build_features("vgg19", tmp_path / "nothing.pth")


def test_pickled_objects_in_a_weights_file_are_refused_with_value_error(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"x": Payload()}, path)
    with pytest.raises(ValueError, match="evil.pth"):
        build_features("vgg19", path)


@pytest.mark.parametrize("content", [torch.zeros(3), [torch.zeros(3)]], ids=["tensor", "list"])
def test_vgg_weights_file_that_is_not_a_state_dict_raises_value_error(tmp_path, content):
    torch.save(content, tmp_path / "odd.pth")
    with pytest.raises(ValueError, match="odd.pth"):
        build_features("vgg19", tmp_path / "odd.pth")
