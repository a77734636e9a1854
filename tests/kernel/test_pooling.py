"""kernel.max_pool2d: the same bits as F.max_pool2d (after F.relu), special values included."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from service import kernel

SPECIALS = torch.tensor([0.0, -0.0, float("nan"), -float("nan"), float("inf"), -float("inf"), -1e-45, 1e-45])


def bits(t: torch.Tensor) -> torch.Tensor:
    """The float32 bit patterns: equal bits, not just equal values (±0 and NaNs count)."""
    return t.contiguous().view(torch.int32)


def expected(x, k, s, p, d, ceil_mode, relu):
    return F.max_pool2d(F.relu(x) if relu else x, k, s, p, d, ceil_mode)


def sample(n, c, h, w, g, specials):
    x = torch.randn(n, c, h, w, generator=g).round(decimals=1)  # ties (and ±0.0) are common
    if specials:
        mask = torch.rand(n, c, h, w, generator=g) < 0.15
        pick = torch.randint(len(SPECIALS), (n, c, h, w), generator=g)
        x = torch.where(mask, SPECIALS[pick], x)
    return x.contiguous(memory_format=torch.channels_last)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    n=st.integers(1, 2),
    c=st.sampled_from([1, 3, 8, 17, 64]),
    h=st.integers(1, 13),
    w=st.integers(1, 13),
    k=st.tuples(st.integers(1, 4), st.integers(1, 4)),
    s=st.tuples(st.integers(1, 3), st.integers(1, 3)),
    d=st.tuples(st.integers(1, 2), st.integers(1, 2)),
    pad=st.tuples(st.integers(0, 2), st.integers(0, 2)),
    ceil_mode=st.booleans(),
    relu=st.booleans(),
    specials=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_matches_torch_bit_for_bit(n, c, h, w, k, s, d, pad, ceil_mode, relu, specials, seed):
    x = sample(n, c, h, w, torch.Generator().manual_seed(seed), specials)
    try:
        want = expected(x, k, s, pad, d, ceil_mode, relu)
    except RuntimeError as e:  # torch refuses the geometry: so must we, with a ValueError
        with pytest.raises(ValueError):
            kernel.max_pool2d(x, k, s, pad, d, ceil_mode, relu=relu)
        assert str(e)
        return
    got = kernel.max_pool2d(x, k, s, pad, d, ceil_mode, relu=relu)
    assert got.shape == want.shape
    assert got.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(bits(got), bits(want))


@pytest.mark.parametrize("pool", ["openmp", "own"])
@pytest.mark.parametrize("threads", [1, 2, 3])
def test_every_thread_count_and_pool(pool, threads):
    previous = (kernel.thread_pool(), kernel.get_num_threads())
    try:
        kernel.set_thread_pool(pool)
        kernel.set_num_threads(threads)
        x = sample(3, 64, 57, 45, torch.Generator().manual_seed(threads), True)
        for relu in (False, True):
            got = kernel.max_pool2d(x, 3, 2, 1, relu=relu)
            assert torch.equal(bits(got), bits(expected(x, (3, 3), (2, 2), (1, 1), (1, 1), False, relu)))
    finally:
        kernel.set_thread_pool(previous[0])
        kernel.set_num_threads(previous[1])


def test_other_layouts_and_dtypes_are_torchs():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 5, 9, 9, generator=g)  # NCHW
    assert torch.equal(kernel.max_pool2d(x, 3, relu=True), F.max_pool2d(F.relu(x), 3))
    x64 = x.double().contiguous(memory_format=torch.channels_last)
    assert torch.equal(kernel.max_pool2d(x64, 2), F.max_pool2d(x64, 2))
    xg = x.contiguous(memory_format=torch.channels_last).requires_grad_()
    y = kernel.max_pool2d(xg, 2, relu=True)
    y.sum().backward()  # autograd goes through torch's ops
    assert xg.grad is not None and xg.grad.abs().sum() > 0


def test_bad_geometry_is_a_clear_error():
    x = torch.randn(1, 4, 8, 8).contiguous(memory_format=torch.channels_last)
    with pytest.raises(ValueError, match=r"padding height .* at most half the kernel size"):
        kernel.max_pool2d(x, 3, 1, (2, 0))
    with pytest.raises(ValueError, match="larger than the padded input"):
        kernel.max_pool2d(x, 9)
    with pytest.raises(ValueError, match="stride"):
        kernel.max_pool2d(x, 2, 0)
    with pytest.raises(TypeError, match="kernel_size"):
        kernel.max_pool2d(x, 2.5)


def test_a_cancelled_token_stops_the_pooling():
    x = torch.randn(2, 64, 64, 64).contiguous(memory_format=torch.channels_last)
    token = kernel.CancelToken()
    token.cancel()
    with kernel.cancellable(token), pytest.raises(kernel.Cancelled):
        kernel.max_pool2d(x, 3, 2, 1, relu=True)
