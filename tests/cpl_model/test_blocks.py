"""The channel LayerNorm's hand-derived backward is exact and bf16-safe; the attention's rewrite of the
cosine similarity is Restormer's arithmetic."""

import torch
import torch.nn.functional as F

from cpl_model.blocks import Attention, LayerNorm2d, _ChannelNorm


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


def test_channel_norm_of_a_large_offset_keeps_its_precision():
    """Two passes (mean, then squared deviations), not E[x²] - E[x]², which cancels catastrophically."""
    x = torch.randn(2, 16, 4, 4, generator=torch.Generator().manual_seed(4)) + 1e4
    expected = F.layer_norm(x.double().permute(0, 2, 3, 1), (16,), eps=1e-5).permute(0, 3, 1, 2)
    torch.testing.assert_close(LayerNorm2d(16)(x).double(), expected, rtol=0, atol=2e-3)


def restormer_attention(attention: Attention, x: torch.Tensor) -> torch.Tensor:
    """MDTA as Restormer writes it: L2-normalise the full-size q and k, then multiply."""
    b, c, h, w = x.shape
    q, k, v = (t.reshape(b, attention.heads, -1, h * w) for t in attention.qkv_dwconv(attention.qkv(x)).chunk(3, 1))
    q, k = F.normalize(q, dim=-1), F.normalize(k, dim=-1)
    attn = ((q @ k.transpose(-2, -1)) * attention.temperature).softmax(dim=-1)
    return attention.project_out((attn @ v).reshape(b, c, h, w))


def test_attention_equals_restormer_s_normalise_then_multiply_in_value_and_gradient():
    torch.manual_seed(5)  # the module's initialisation
    attention = Attention(12, heads=3).double()
    with torch.no_grad():
        attention.temperature.uniform_(0.5, 2.0)
    x = torch.randn(2, 12, 5, 6, dtype=torch.double, requires_grad=True)
    ours, theirs = attention(x), restormer_attention(attention, x)
    torch.testing.assert_close(ours, theirs, rtol=1e-10, atol=1e-10)
    grads = [torch.autograd.grad(y.square().sum(), [x, *attention.parameters()]) for y in (ours, theirs)]
    for mine, reference in zip(*grads, strict=True):
        torch.testing.assert_close(mine, reference, rtol=1e-9, atol=1e-9)
