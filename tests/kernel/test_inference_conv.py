"""InferenceConv (the graph executor's fixed-weight conv) equals binary_conv2d and checks its input."""

from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from service.kernel import InferenceConv, binary_conv2d, pack_activations, pack_weights, sign
from tests.bits import same_bits


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    n=st.integers(1, 3), c=st.sampled_from([1, 3, 32, 64, 65, 130]), o=st.integers(1, 40),
    k=st.integers(1, 3), stride=st.integers(1, 2), padding=st.integers(0, 2), pad_value=st.sampled_from([0, 1, -1]),
    channels_last=st.booleans(), epilogue=st.sampled_from(["none", "scale", "bias", "both"]), seed=st.integers(0, 2**16),
)
def test_equals_binary_conv2d(n, c, o, k, stride, padding, pad_value, channels_last, epilogue, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, c, 9, 8, generator=g)
    if channels_last:
        x = x.permute(0, 2, 3, 1).contiguous().permute(0, 3, 1, 2)
    w = pack_weights(torch.randn(o, c, k, k, generator=g))
    scale = torch.rand(o, generator=g) + 0.5 if epilogue in ("scale", "both") else None
    bias = torch.randn(o, generator=g) if epilogue in ("bias", "both") else None
    conv = InferenceConv(w, stride, padding, 1, pad_value, scale=scale, bias=bias)
    got = conv(x)
    want = binary_conv2d(x, w, stride, padding, 1, pad_value, scale=scale, bias=bias)
    assert torch.equal(got, want)
    assert got.is_contiguous(memory_format=torch.channels_last) == want.is_contiguous(memory_format=torch.channels_last)
    assert not got.requires_grad


def test_rejects_bad_construction_and_input():
    w = pack_weights(torch.randn(4, 8, 3, 3))
    with pytest.raises(TypeError, match="PackedWeights"):
        InferenceConv(torch.randn(4, 8, 3, 3))
    with pytest.raises(ValueError, match="scale must be a 1-D tensor of 4 values"):
        InferenceConv(w, scale=torch.ones(5))
    with pytest.raises(ValueError, match="pad_value"):
        InferenceConv(w, pad_value=2)
    conv = InferenceConv(w, padding=1)
    with pytest.raises(ValueError, match="channel mismatch"):
        conv(torch.randn(1, 7, 5, 5))
    with pytest.raises(ValueError, match="4-D"):
        conv(torch.randn(8, 5, 5))
    with pytest.raises(ValueError, match="output size"):
        InferenceConv(w)(torch.randn(1, 8, 2, 2))



@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    n=st.integers(1, 2), c=st.sampled_from([1, 32, 64, 65]), o=st.sampled_from([1, 15, 16, 17, 64, 70]),
    k=st.integers(1, 3), stride=st.integers(1, 2), padding=st.integers(0, 1), out_padding=st.integers(0, 2),
    pad_value=st.sampled_from([0, 1, -1]), epilogue=st.sampled_from(["none", "scale", "bias", "both"]),
    seed=st.integers(0, 2**16),
)
def test_sign_packed_feeds_the_next_layer(n, c, o, k, stride, padding, out_padding, pad_value, epilogue, seed):
    """sign_packed equals packing sign(conv(x)); a layer fed those bits equals it fed the floats."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, c, 9, 8, generator=g)
    w = pack_weights(torch.randn(o, c, k, k, generator=g))
    scale = torch.randn(o, generator=g) if epilogue in ("scale", "both") else None
    bias = torch.randn(o, generator=g) if epilogue in ("bias", "both") else None
    conv = InferenceConv(w, stride, padding, 1, pad_value, scale=scale, bias=bias)
    y = conv(x)
    bits = conv.sign_packed(x, out_padding)
    assert bits.shape == list(y.shape) and bits.padding == (out_padding, out_padding)
    assert (bits.words() == pack_activations(sign(y), out_padding).words()).all()
    assert (conv.sign_packed(pack_activations(x, padding), out_padding).words() == bits.words()).all()
    nxt = InferenceConv(pack_weights(torch.randn(5, o, 3, 3, generator=g)), 1, out_padding, 1, pad_value)
    if y.shape[2] + 2 * out_padding >= 3 and y.shape[3] + 2 * out_padding >= 3:
        fed_bits = nxt(bits)
        assert torch.equal(fed_bits, nxt(y))
        assert fed_bits.is_contiguous(memory_format=torch.channels_last)


def test_packed_input_must_fit_the_layer():
    w = pack_weights(torch.randn(4, 8, 3, 3))
    conv = InferenceConv(w, padding=1)
    with pytest.raises(ValueError, match="packed input has padding"):
        conv(pack_activations(torch.randn(1, 8, 5, 5), 0))
    with pytest.raises(ValueError, match="channel mismatch"):
        conv(pack_activations(torch.randn(1, 7, 5, 5), 1))
    with pytest.raises(ValueError, match="output size"):
        InferenceConv(w)(pack_activations(torch.randn(1, 8, 2, 2), 0))
    with pytest.raises(ValueError, match="out_padding"):
        conv.sign_packed(torch.randn(1, 8, 5, 5), -1)



@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    n=st.integers(1, 2), c=st.sampled_from([1, 32, 65]), o=st.sampled_from([1, 16, 17, 70]),
    k=st.integers(1, 3), stride=st.integers(1, 2), padding=st.integers(0, 1), out_padding=st.integers(0, 2),
    residual=st.booleans(), prelu=st.sampled_from(["none", "one", "per_channel"]), packed_input=st.booleans(),
    channels_last_residual=st.booleans(), seed=st.integers(0, 2**16),
)
def test_fused_residual_prelu_and_dual_output_equal_the_separate_ops(
    n, c, o, k, stride, padding, out_padding, residual, prelu, packed_input, channels_last_residual, seed
):
    """conv(x, r) with a PReLU epilogue is F.prelu(conv(x) + r, a) bit for bit (zeros of both signs
    included), channels-last; dual() adds exactly pack_activations of that output."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, c, 7, 6, generator=g)
    w = pack_weights(torch.randn(o, c, k, k, generator=g))
    scale, bias = torch.rand(o, generator=g) + 0.5, torch.randn(o, generator=g)
    conv = InferenceConv(w, stride, padding, scale=scale, bias=bias)
    plain = conv(x)
    r = torch.randn(plain.shape, generator=g).round() if residual else None  # integers: exact zero sums
    if r is not None:
        r.view(-1)[:3] = torch.tensor([-0.0, 0.0, float("nan")])
        if channels_last_residual:
            r = r.contiguous(memory_format=torch.channels_last)
    slope = {"none": None, "one": torch.tensor([-0.25]), "per_channel": torch.randn(o, generator=g)}[prelu]
    want = plain if r is None else torch.add(plain, r)
    if slope is not None:
        want = torch.nn.functional.prelu(want, slope)
        conv = conv.with_prelu(slope)
    x_in = pack_activations(x, padding) if packed_input else x
    got = conv(x_in, r)
    assert got.is_contiguous(memory_format=torch.channels_last) or (r is None and slope is None and not packed_input)
    assert same_bits(got, want)
    floats, bits = conv.dual(x_in, out_padding, r)
    assert same_bits(floats, want)
    assert (bits.words() == pack_activations(want, out_padding).words()).all()


def test_fused_epilogue_checks_its_arguments():
    w = pack_weights(torch.randn(4, 8, 3, 3))
    conv = InferenceConv(w, padding=1)
    with pytest.raises(ValueError, match="slope must be a 1-D tensor of 1 or 4 values"):
        conv.with_prelu(torch.ones(3))
    x = torch.randn(2, 8, 5, 5)
    with pytest.raises(ValueError, match="residual must have the output's NHWC shape"):
        conv(x, torch.randn(2, 4, 5, 4))
    with pytest.raises(ValueError, match="float32"):
        conv(x, torch.randn(2, 4, 5, 5, dtype=torch.float64))
    with pytest.raises(ValueError, match="use dual"):
        conv.with_prelu(torch.ones(1)).sign_packed(x)
