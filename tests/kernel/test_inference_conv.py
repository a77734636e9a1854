"""InferenceConv (the graph executor's fixed-weight conv) equals binary_conv2d and checks its input."""

from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from service.kernel import InferenceConv, binary_conv2d, pack_weights


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

