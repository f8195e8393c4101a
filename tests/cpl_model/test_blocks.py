"""The channel LayerNorm's hand-derived backward is exact and bf16-safe."""

import torch
import torch.nn.functional as F

from cpl_model.blocks import LayerNorm2d, _ChannelNorm


def test_channel_norm_backward_passes_gradcheck():
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(2, 6, 5, 7, dtype=torch.double, generator=generator, requires_grad=True)
    weight = torch.rand(6, dtype=torch.double, generator=generator, requires_grad=True)
    bias = torch.rand(6, dtype=torch.double, generator=generator, requires_grad=True)
    assert torch.autograd.gradcheck(lambda *args: _ChannelNorm.apply(*args, 1e-5), (x, weight, bias))


def test_layer_norm_2d_equals_layer_norm_over_channels():
    generator = torch.Generator().manual_seed(1)
    norm = LayerNorm2d(8)
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5, generator=generator)
        norm.bias.uniform_(-1, 1, generator=generator)
    x = torch.randn(3, 8, 9, 11, generator=generator)
    expected = F.layer_norm(x.permute(0, 2, 3, 1), (8,), norm.weight, norm.bias, 1e-5).permute(0, 3, 1, 2)
    torch.testing.assert_close(norm(x), expected, rtol=1e-5, atol=1e-5)


def test_layer_norm_2d_keeps_bf16_dtypes_and_stays_finite():
    norm = LayerNorm2d(8).bfloat16()
    x = (torch.randn(2, 8, 4, 4, generator=torch.Generator().manual_seed(2)) * 300).bfloat16().requires_grad_()
    y = norm(x)
    y.float().square().sum().backward()
    assert y.dtype == x.grad.dtype == norm.weight.grad.dtype == torch.bfloat16
    assert torch.isfinite(y.float()).all() and torch.isfinite(x.grad.float()).all()
