"""ReActNet's per-channel shifts in the kernel: the packing of sign(x + shift) (RSign folded into a
binary conv's packing), RPReLU in the epilogue, and a dual output's bits of y + shift (the next
layer's RSign), each bit for bit the separate torch ops, on every instruction-set path this CPU has."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from service.kernel import InferenceConv, available_isas, pack_activations, pack_weights, sign, use_isa
from tests.bits import same_bits


def _channel(v: torch.Tensor) -> torch.Tensor:
    return v.view(1, -1, 1, 1)


def _with_edge_values(x: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Sums that are exactly zero (of both signs) and NaN, where the sign convention shows."""
    x = x.clone()
    x[0, :, 0, 0] = -shift
    edge = torch.tensor([float("nan"), -0.0])
    flat = x.view(-1)[1:3]
    flat.copy_(edge[: flat.numel()])
    return x


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    n=st.integers(1, 2),
    c=st.sampled_from([1, 17, 64, 65, 130]),
    h=st.integers(1, 6),
    w=st.integers(1, 9),
    padding=st.integers(0, 2),
    channels_last=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_shifted_packing_is_the_sign_of_the_sum(n, c, h, w, padding, channels_last, seed):
    g = torch.Generator().manual_seed(seed)
    shift = torch.randn(c, generator=g)
    shift[0] = -0.0
    x = _with_edge_values(torch.randn(n, c, h, w, generator=g), shift)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    want = pack_activations(sign(x + _channel(shift)), padding).words()
    for isa in available_isas():
        with use_isa(isa):
            assert (pack_activations(x, padding, shift).words() == want).all(), isa


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    n=st.integers(1, 2),
    c=st.sampled_from([1, 32, 65]),
    o=st.sampled_from([1, 16, 17, 70]),
    k=st.sampled_from([1, 3]),
    stride=st.integers(1, 2),
    out_padding=st.integers(0, 1),
    residual=st.booleans(),
    rprelu=st.booleans(),
    out_shift=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_input_shift_rprelu_and_shifted_dual_equal_the_separate_ops(
    n, c, o, k, stride, out_padding, residual, rprelu, out_shift, seed
):
    g = torch.Generator().manual_seed(seed)
    padding = k // 2
    w = pack_weights(torch.randn(o, c, k, k, generator=g))
    scale, bias = torch.rand(o, generator=g) + 0.5, torch.randn(o, generator=g)
    conv = InferenceConv(w, stride, padding, scale=scale, bias=bias)
    t_in = torch.randn(c, generator=g)
    x = _with_edge_values(torch.randn(n, c, 7, 6, generator=g), t_in).contiguous(memory_format=torch.channels_last)
    plain = conv(sign(x + _channel(t_in)))  # the unfused graph: rsign, then the conv
    r = torch.randn(plain.shape, generator=g).round() if residual else None  # integers: exact zero sums
    si, a, so = (torch.randn(o, generator=g) for _ in range(3))
    want = plain if r is None else torch.add(plain, r)
    fused = conv.with_input_shift(t_in)
    if rprelu:
        want = F.prelu(want + _channel(si), a) + _channel(so)
        fused = fused.with_rprelu(si, a, so)
    t_out = torch.randn(o, generator=g) if out_shift else None
    want_bits = pack_activations(want if t_out is None else sign(want + _channel(t_out)), out_padding).words()
    for isa in available_isas():
        with use_isa(isa):
            assert same_bits(fused(x, r), want), isa
            floats, bits = fused.dual(x, out_padding, r, t_out)
            assert same_bits(floats, want), isa
            assert (bits.words() == want_bits).all(), isa


def test_shifts_check_their_arguments():
    w = pack_weights(torch.randn(4, 8, 3, 3))
    conv = InferenceConv(w, padding=1)
    x = torch.randn(1, 8, 5, 5)
    with pytest.raises(ValueError, match="input shift must be a 1-D tensor of 8 values"):
        conv.with_input_shift(torch.zeros(4))
    with pytest.raises(ValueError, match="shift_in must be a 1-D tensor of 4 values"):
        conv.with_rprelu(torch.zeros(8), torch.zeros(4), torch.zeros(4))
    with pytest.raises(ValueError, match="out_shift must be a 1-D tensor of 4 values"):
        conv.dual(x, 1, out_shift=torch.zeros(8))
    with pytest.raises(ValueError, match="give it floats, not packed input"):
        conv.with_input_shift(torch.zeros(8))(pack_activations(x, 1))
    with pytest.raises(ValueError, match="use dual"):
        conv.with_rprelu(torch.zeros(4), torch.zeros(4), torch.zeros(4)).sign_packed(x)
    with pytest.raises(ValueError, match="shift must be a 1-D tensor of 8 values"):
        pack_activations(x, 1, torch.zeros(3))
    with pytest.raises(ValueError, match="float32"):
        pack_activations(x.double(), 1, torch.zeros(8))
