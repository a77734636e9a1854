"""A clamp in the epilogue (ReLU, hardtanh, ReLU6: ``InferenceConv.with_clamp``) and a conv writing
its channels of a wider tensor (``InferenceConv.write_into``: a channel concat built in place), each
bit for bit the separate torch ops, on every instruction-set path this CPU has."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from service.kernel import InferenceConv, available_isas, pack_activations, pack_weights, use_isa
from tests.bits import same_bits

BOUNDS = st.sampled_from(
    [
        (0.0, float("inf")),  # relu
        (-1.0, 1.0),  # hardtanh's default
        (0.0, 6.0),  # relu6
        (-0.0, 6.0),  # a -0.0 bound is written as -0.0
        (0.1, 0.7),  # not float32 values: torch rounds the bounds to float32 first
        (-0.5, -0.5),
        (float("-inf"), 0.0),
    ]
)


def _edge_residual(shape: tuple[int, ...], y: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """A residual that makes some sums exactly +0 and -0, NaN and +-inf, and the rest integers
    (exact sums that land on the bounds)."""
    r = torch.randn(shape, generator=g).round()
    flat, yflat = r.view(-1), y.reshape(-1)
    flat[0] = -yflat[0]  # y + (-y) = +0.0
    if flat.numel() > 4:
        flat[1], flat[2], flat[3] = float("nan"), float("inf"), float("-inf")
    return r.contiguous(memory_format=torch.channels_last)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    n=st.integers(1, 2),
    c=st.sampled_from([1, 32, 65]),
    o=st.sampled_from([1, 8, 16, 17, 40]),
    k=st.sampled_from([1, 3]),
    stride=st.integers(1, 2),
    bounds=BOUNDS,
    residual=st.booleans(),
    out_padding=st.integers(0, 1),
    seed=st.integers(0, 2**16),
)
def test_clamp_equals_torch_clamp(n, c, o, k, stride, bounds, residual, out_padding, seed):
    g = torch.Generator().manual_seed(seed)
    lo, hi = bounds
    w = pack_weights(torch.randn(o, c, k, k, generator=g))
    conv = InferenceConv(w, stride, k // 2, scale=torch.rand(o, generator=g) + 0.5, bias=torch.randn(o, generator=g))
    x = torch.randn(n, c, 7, 6, generator=g).contiguous(memory_format=torch.channels_last)
    plain = conv(x)
    r = _edge_residual(plain.shape, plain, g) if residual else None
    want = F.hardtanh(plain if r is None else plain + r, lo, hi)
    if lo == 0.0 and hi == float("inf"):
        assert same_bits(want, F.relu(plain if r is None else plain + r))
    want_bits = pack_activations(want, out_padding).words()
    fused = conv.with_clamp(lo, hi)
    assert fused.has_activation and not conv.has_activation
    for isa in available_isas():
        with use_isa(isa):
            assert same_bits(fused(x, r), want), isa
            floats, bits = fused.dual(x, out_padding, r)
            assert same_bits(floats, want), isa
            assert (bits.words() == want_bits).all(), isa


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    n=st.integers(1, 2),
    o=st.sampled_from([1, 16, 17, 33]),
    before=st.sampled_from([0, 1, 16, 20]),
    after=st.sampled_from([0, 3, 16]),
    residual=st.booleans(),
    packed=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_write_into_fills_its_channels_only(n, o, before, after, residual, packed, seed):
    g = torch.Generator().manual_seed(seed)
    w = pack_weights(torch.randn(o, 24, 3, 3, generator=g))
    conv = InferenceConv(w, 1, 1, scale=torch.rand(o, generator=g), bias=torch.randn(o, generator=g))
    si, a, so = (torch.randn(o, generator=g) for _ in range(3))
    conv = conv.with_rprelu(si, a, so)
    x = torch.randn(n, 24, 5, 9, generator=g)
    r = torch.randn(n, o, 5, 9, generator=g).contiguous(memory_format=torch.channels_last) if residual else None
    want = conv(x, r)
    total = before + o + after
    for isa in available_isas():
        with use_isa(isa):
            out = torch.full((n, total, 5, 9), 7.5).contiguous(memory_format=torch.channels_last)
            conv.write_into(pack_activations(x, 1) if packed else x, out, before, r)
            assert same_bits(out[:, before : before + o], want), isa
            assert (out[:, :before] == 7.5).all() and (out[:, before + o :] == 7.5).all(), isa


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    n=st.integers(1, 2),
    widths=st.sampled_from([(16, 16), (16, 5), (32, 16, 3), (64, 1), (48, 80)]),
    out_padding=st.integers(0, 1),
    shifted=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_write_into_with_bits_builds_a_concat_and_its_packing(n, widths, out_padding, shifted, seed):
    """Parts write their floats and their packed signs into one concat: the same floats and bits
    as torch.cat of the parts, then pack_activations(·, out_padding, shift)."""
    g = torch.Generator().manual_seed(seed)
    total = sum(widths)
    convs = [
        InferenceConv(pack_weights(torch.randn(o, 24, 3, 3, generator=g)), 2, 1, bias=torch.randn(o, generator=g))
        for o in widths
    ]
    convs = [c.with_rprelu(*(torch.randn(o, generator=g) for _ in range(3))) for c, o in zip(convs, widths)]
    x = torch.randn(n, 24, 9, 8, generator=g)
    shift = torch.randn(total, generator=g) if shifted else None
    want = torch.cat([c(x) for c in convs], dim=1)
    want_bits = pack_activations(want, out_padding, shift).words()
    from service.kernel import PackedActivations

    for isa in available_isas():
        with use_isa(isa):
            out = torch.empty((n, total, 5, 4), memory_format=torch.channels_last)
            bits = PackedActivations.blank(n, total, 5, 4, (out_padding, out_padding))
            at = 0
            for c, o in zip(convs, widths):
                c.write_into(x, out, at, None, bits, None if shift is None else shift[at : at + o])
                at += o
            assert same_bits(out, want), isa
            assert (bits.words() == want_bits).all(), isa


def test_clamp_and_write_into_check_their_arguments():
    conv = InferenceConv(pack_weights(torch.randn(4, 8, 3, 3)), padding=1)
    x = torch.randn(1, 8, 5, 5)
    with pytest.raises(ValueError, match="lo <= hi"):
        conv.with_clamp(1.0, 0.0)
    with pytest.raises(ValueError, match="lo <= hi"):
        conv.with_clamp(float("nan"), 1.0)
    with pytest.raises(ValueError, match="use dual"):
        conv.with_clamp(0.0, 1.0).sign_packed(x)
    cl = torch.channels_last
    with pytest.raises(ValueError, match="channels-last"):
        conv.write_into(x, torch.zeros(1, 8, 5, 5), 0)
    with pytest.raises(ValueError, match="float32"):
        conv.write_into(x, torch.zeros(1, 8, 5, 5, dtype=torch.float64).contiguous(memory_format=cl), 0)
    with pytest.raises(ValueError, match=r"the output is \[1, 4, 5, 5\]"):
        conv.write_into(x, torch.zeros(1, 8, 5, 6).contiguous(memory_format=cl), 0)
    with pytest.raises(ValueError, match="do not fit"):
        conv.write_into(x, torch.zeros(1, 8, 5, 5).contiguous(memory_format=cl), 5)
    with pytest.raises(ValueError, match="do not fit"):
        conv.write_into(x, torch.zeros(1, 8, 5, 5).contiguous(memory_format=cl), -1)
    with pytest.raises(ValueError, match="channels-last"):  # a view that is not one block of memory
        conv.write_into(x, torch.zeros(1, 16, 5, 5).contiguous(memory_format=cl)[:, :8], 0)
    from service.kernel import PackedActivations

    out = torch.zeros(1, 20, 5, 5).contiguous(memory_format=cl)
    with pytest.raises(ValueError, match="give bits too"):
        conv.write_into(x, out, 0, out_shift=torch.zeros(4))
    with pytest.raises(ValueError, match="multiple of 16"):
        conv.write_into(x, out, 8, bits=PackedActivations.blank(1, 20, 5, 5, (0, 0)))
    with pytest.raises(ValueError, match="must be the packed output's last ones"):
        conv.write_into(x, out, 0, bits=PackedActivations.blank(1, 20, 5, 5, (0, 0)))
    with pytest.raises(ValueError, match="bits must have out's 20 channels"):
        conv.write_into(x, out, 16, bits=PackedActivations.blank(1, 24, 5, 5, (0, 0)))
    with pytest.raises(ValueError, match="batch and image size"):
        conv.write_into(x, out, 16, bits=PackedActivations.blank(1, 20, 5, 4, (0, 0)))
    with pytest.raises(ValueError, match="out_shift must be a 1-D tensor of 4 values"):
        conv.write_into(x, out, 16, bits=PackedActivations.blank(1, 20, 5, 5, (0, 0)), out_shift=torch.zeros(20))
    with pytest.raises(ValueError, match="channels must be"):
        PackedActivations.blank(1, 0, 5, 5, (0, 0))


@pytest.mark.parametrize("channels_last", [False, True])
def test_a_scale_without_bias_keeps_the_sign_of_zero(channels_last):
    """count * scale with no bias is torch's ``y * scale``: a count of 0 times a negative scale is
    -0.0 on every path (no +0.0 bias added)."""
    g = torch.Generator().manual_seed(3)
    w = torch.randn(18, 2, 1, 1, generator=g)
    x = torch.randn(2, 2, 5, 7, generator=g)
    x[:, 1] = -x[:, 0]  # with w's two signs equal, the count is 0
    scale = torch.linspace(-1.0, 1.0, 18)
    scale[3], scale[4] = -0.0, 0.0
    want = F.conv2d(torch.sign(x), torch.sign(w)) * scale.view(1, -1, 1, 1)
    assert (want.view(torch.int32) == torch.tensor(-0.0).view(torch.int32)).any()  # the case is there
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    conv = InferenceConv(pack_weights(w), scale=scale)
    for isa in available_isas():
        with use_isa(isa):
            assert same_bits(conv(x), want), isa
            assert same_bits(conv(x, torch.zeros_like(want).contiguous(memory_format=torch.channels_last)), want + 0.0)
