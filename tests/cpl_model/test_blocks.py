"""The blocks are exact and bf16-safe in either memory format: the channel LayerNorm (PyTorch's on the
token view), the attention's hand-derived backward (Restormer's arithmetic on pixel-major tokens) and the
feed-forward's split halves."""

import pytest
import torch
import torch.nn.functional as F

from cpl_model.blocks import (
    Attention,
    Downsample,
    FeedForward,
    LayerNorm2d,
    Upsample,
    _ChannelAttention,
    in_layout_of,
)

FORMATS = {"nchw": torch.contiguous_format, "channels-last": torch.channels_last}


@pytest.mark.parametrize("layout", FORMATS)
def test_layer_norm_2d_passes_gradcheck_and_keeps_the_layout(layout):
    generator = torch.Generator().manual_seed(0)
    norm = LayerNorm2d(6).double()
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5, generator=generator)
        norm.bias.uniform_(-1, 1, generator=generator)
    x = torch.randn(2, 6, 5, 7, dtype=torch.double, generator=generator).contiguous(memory_format=FORMATS[layout])
    assert norm(x).is_contiguous(memory_format=FORMATS[layout])
    assert torch.autograd.gradcheck(norm, (x.requires_grad_(),))


@pytest.mark.parametrize("layout", FORMATS)
def test_layer_norm_2d_normalises_each_pixel_over_the_channels(layout):
    generator = torch.Generator().manual_seed(1)
    norm = LayerNorm2d(8)
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5, generator=generator)
        norm.bias.uniform_(-1, 1, generator=generator)
    x = torch.randn(3, 8, 9, 11, generator=generator, dtype=torch.double)
    mean, var = x.mean(1, keepdim=True), x.var(1, keepdim=True, unbiased=False)
    weight, bias = (p.detach().double()[:, None, None] for p in (norm.weight, norm.bias))
    expected = (x - mean) / torch.sqrt(var + 1e-5) * weight + bias
    torch.testing.assert_close(norm(x.float().contiguous(memory_format=FORMATS[layout])).double(), expected,
                               rtol=1e-5, atol=1e-5)


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


def attention_with_random_temperature(channels: int, heads: int) -> Attention:
    torch.manual_seed(5)  # the module's initialisation
    attention = Attention(channels, heads).double()
    with torch.no_grad():
        attention.temperature.uniform_(0.5, 2.0)
    return attention


def assert_same_value_and_gradients(attention: Attention, x: torch.Tensor, rtol: float = 1e-9) -> None:
    ours, theirs = attention(x), restormer_attention(attention, x)
    torch.testing.assert_close(ours, theirs, rtol=1e-10, atol=1e-10)
    grads = [torch.autograd.grad(y.square().sum(), [x, *attention.parameters()]) for y in (ours, theirs)]
    for mine, reference in zip(*grads, strict=True):
        torch.testing.assert_close(mine, reference, rtol=rtol, atol=1e-9)


@pytest.mark.parametrize("heads", [1, 3])
@pytest.mark.parametrize("memory_format", FORMATS.values(), ids=FORMATS.keys())
def test_attention_equals_restormer_s_normalise_then_multiply_in_value_and_gradient(heads, memory_format):
    attention = attention_with_random_temperature(12, heads).to(memory_format=memory_format)
    x = torch.randn(2, 12, 5, 6, dtype=torch.double).contiguous(memory_format=memory_format).requires_grad_()
    assert_same_value_and_gradients(attention, x)


def test_attention_matches_restormer_where_a_norm_sits_at_its_clamp():
    """A channel of q that is zero everywhere: its norm is clamped, and no gradient flows through it."""
    attention = attention_with_random_temperature(6, 2)
    with torch.no_grad():
        attention.qkv.weight[0] = 0
    x = torch.randn(1, 6, 4, 5, dtype=torch.double, requires_grad=True)
    assert_same_value_and_gradients(attention, x, rtol=1e-7)


def test_channel_attention_backward_passes_gradcheck():
    generator = torch.Generator().manual_seed(6)
    tokens = torch.randn(2, 7, 3, 2, 3, dtype=torch.double, generator=generator, requires_grad=True)
    temperature = torch.rand(2, 1, 1, dtype=torch.double, generator=generator, requires_grad=True)
    assert torch.autograd.gradcheck(_ChannelAttention.apply, (tokens, temperature))


def test_attention_output_and_input_gradient_stay_channels_last():
    attention = Attention(8, 2).to(memory_format=torch.channels_last)
    x = torch.randn(2, 8, 6, 7).contiguous(memory_format=torch.channels_last).requires_grad_()
    y = attention(x)
    y.sum().backward()
    assert y.is_contiguous(memory_format=torch.channels_last)
    assert x.grad.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("expansion", [2.66, 2.0, 4.0], ids=["hidden 15", "hidden 12", "hidden 24"])
@pytest.mark.parametrize("memory_format", FORMATS.values(), ids=FORMATS)
def test_feed_forward_equals_gdfn_on_the_chunked_output_in_value_and_gradient(memory_format, expansion):
    """Each half through its own weight slices, its width padded to whole channel blocks, is GDFN as
    written: chunk the convolutions' output."""
    torch.manual_seed(9)
    module = FeedForward(6, expansion).double()
    x = torch.randn(2, 6, 5, 7, dtype=torch.double).contiguous(memory_format=memory_format).requires_grad_()
    gate, value = module.dwconv(module.project_in(x)).chunk(2, dim=1)
    expected = module.project_out(F.gelu(gate) * value)
    output = module(x)
    torch.testing.assert_close(output, expected, rtol=1e-12, atol=1e-12)
    upstream = torch.randn_like(expected)
    grads = torch.autograd.grad(output, [x, *module.parameters()], upstream)
    references = torch.autograd.grad(expected, [x, *module.parameters()], upstream)
    for grad, reference in zip(grads, references, strict=True):
        torch.testing.assert_close(grad, reference, rtol=1e-10, atol=1e-12)
    assert output.is_contiguous(memory_format=memory_format)
    assert torch.autograd.gradcheck(module, (x,))


@pytest.mark.parametrize("block", ["attention", "feed-forward"])
def test_blocks_keep_bf16_and_stay_finite(block):
    torch.manual_seed(7)
    module = (Attention(8, 2) if block == "attention" else FeedForward(8, 2.66)).bfloat16()
    x = torch.randn(2, 8, 6, 6).bfloat16().contiguous(memory_format=torch.channels_last).requires_grad_()
    y = module(x)
    y.float().square().sum().backward()
    assert y.dtype == x.grad.dtype == torch.bfloat16
    assert all(p.grad.dtype == torch.bfloat16 for p in module.parameters())
    assert torch.isfinite(x.grad.float()).all()


@pytest.mark.parametrize("block", ["attention", "feed-forward"])
def test_blocks_run_under_autocast(block):
    torch.manual_seed(8)
    module = Attention(8, 2) if block == "attention" else FeedForward(8, 2.66)
    x = torch.randn(2, 8, 6, 6).contiguous(memory_format=torch.channels_last).requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = module(x)
    y.float().sum().backward()
    assert torch.isfinite(x.grad).all()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in module.parameters())


def test_resampling_returns_its_input_s_layout():
    x = torch.rand(2, 8, 6, 10)
    for layout in (torch.channels_last, torch.contiguous_format):
        for block, shape in ((Downsample(8), (2, 16, 3, 5)), (Upsample(8), (2, 4, 12, 20))):
            y = block(x.contiguous(memory_format=layout))
            assert y.shape == shape and y.is_contiguous(memory_format=layout)
    # what CUDA's pixel (un)shuffle does: an NCHW result from a channels-last input
    reference, result = torch.rand(2, 8, 6, 10).contiguous(memory_format=torch.channels_last), torch.rand(2, 4, 6, 10)
    converted = in_layout_of(reference, result)
    assert converted.is_contiguous(memory_format=torch.channels_last) and torch.equal(converted, result)
    assert in_layout_of(reference.contiguous(), converted).is_contiguous()
    assert in_layout_of(reference, converted) is converted  # no copy where the layout already matches
