"""Exactness of the native kernels on every ISA path, aimed at the micro-kernel edges:
odd/even reduction word counts (Harley-Seal pairing), long reductions (AVX2 byte-counter
flushes), output widths that do not fill a tile or an epilogue chunk, output channels that do
not fill a 16-block, border-correction classes, strides, dilations, batches, channels-last,
and the thread pool. No timing here."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from service import _core

ISAS = list(_core.available_isas())


def _sgn(t):
    return torch.where(t >= 0, 1.0, -1.0)


def _ref(x, w, stride, pad, dil, pad_value):
    xs, ws = _sgn(x).double(), _sgn(w).double()
    if pad_value == 0:
        return F.conv2d(xs, ws, stride=stride, padding=pad, dilation=dil).float()
    xs = F.pad(xs, (pad[1], pad[1], pad[0], pad[0]), value=float(pad_value))
    return F.conv2d(xs, ws, stride=stride, dilation=dil).float()


CASES = [
    # N, C, H, W, O, k, stride, pad, dil
    (1, 64, 9, 13, 16, (3, 3), (1, 1), (1, 1), (1, 1)),    # K = 9 words: odd
    (1, 128, 7, 7, 33, (3, 3), (1, 1), (1, 1), (1, 1)),    # K = 18: even, O tail
    (1, 1024, 5, 6, 17, (3, 3), (1, 1), (1, 1), (1, 1)),   # K = 144: AVX2 flushes (chunks of 15 pairs)
    (1, 64, 7, 8, 16, (5, 6), (1, 1), (2, 2), (1, 1)),     # K = 30: exactly one 15-pair chunk
    (1, 64, 3, 40, 16, (1, 31), (1, 1), (0, 1), (1, 1)),   # K = 31: odd word + 15 pairs, no flush
    (1, 128, 6, 6, 16, (4, 4), (1, 1), (1, 1), (1, 1)),    # K = 32: 16 pairs, one flush
    (1, 64, 9, 11, 16, (7, 9), (1, 1), (3, 4), (1, 1)),    # K = 63: odd, 31 pairs, two flushes
    (1, 4000, 3, 4, 5, (3, 3), (1, 1), (0, 1), (1, 1)),    # K = 567: several flushes, odd
    (2, 65, 11, 70, 31, (3, 3), (2, 2), (1, 1), (1, 1)),   # tail bits, > 64-pixel rows, stride 2
    (1, 200, 12, 61, 48, (1, 1), (1, 1), (0, 0), (1, 1)),  # 1x1
    (3, 70, 10, 10, 20, (3, 3), (1, 1), (2, 2), (2, 2)),   # dilation, wide padding
    (1, 1, 5, 5, 1, (5, 5), (1, 1), (2, 2), (1, 1)),       # single channel, big kernel
    (1, 96, 8, 130, 16, (1, 3), (1, 3), (0, 2), (1, 1)),   # rectangular kernel, odd stride
    (1, 64, 28, 28, 20, (3, 3), (1, 1), (1, 1), (1, 1)),   # NCHW rows at every 16-byte offset:
    (1, 64, 12, 20, 16, (3, 3), (1, 1), (1, 1), (1, 1)),   # AVX-512 short first store group
]


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("pad_value", [0, 1, -1])
def test_exact(isa, case, pad_value):
    N, C, H, W, O, k, stride, pad, dil = case
    g = torch.Generator().manual_seed(hash((case, pad_value)) % (2**31))
    x = torch.randn(N, C, H, W, generator=g)
    x[x.abs() < 0.05] = 0.0  # exact zeros are +1
    w = torch.randn(O, C, *k, generator=g)
    pw = _core.PackedWeights.from_float(w.numpy())
    prev = _core.active_isa()
    _core.set_isa(isa)
    try:
        ref = _ref(x, w, stride, pad, dil, pad_value)
        for cl in (False, True):
            arr = x.permute(0, 2, 3, 1).contiguous().numpy() if cl else x.numpy()
            for threads in (1, 2):
                _core.set_num_threads(threads)
                out = _core.conv2d(arr, cl, pw, stride, pad, dil, pad_value)
                assert torch.equal(torch.from_numpy(out), ref), (isa, case, pad_value, cl, threads)
                # NHWC output [N, OH, OW, O]: the epilogue without the transpose
                out = _core.conv2d(arr, cl, pw, stride, pad, dil, pad_value, channels_last_out=True)
                assert out.shape == (ref.shape[0], ref.shape[2], ref.shape[3], ref.shape[1])
                assert torch.equal(torch.from_numpy(out).permute(0, 3, 1, 2), ref), (isa, case, pad_value, cl, threads)
    finally:
        _core.set_num_threads(1)
        _core.set_isa(prev)


@pytest.mark.parametrize("isa", ISAS)
def test_scale_bias_epilogue(isa):
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, 100, 9, 37, generator=g)
    w = torch.randn(21, 100, 3, 3, generator=g)
    scale, bias = torch.randn(21, generator=g), torch.randn(21, generator=g)
    pw = _core.PackedWeights.from_float(w.numpy())
    prev = _core.active_isa()
    _core.set_isa(isa)
    try:
        out = _core.conv2d(x.numpy(), False, pw, (1, 1), (1, 1), (1, 1), 0, scale=scale.numpy(), bias=bias.numpy())
        packed = _core.pack_activations(x.numpy(), False, (1, 1))
        nhwc = [_core.conv2d_packed(packed, pw, (1, 1), (1, 1), 0, scale=scale.numpy(), bias=bias.numpy(),
                                    channels_last_out=True)]
        nhwc.append(_core.conv2d_packed(packed, pw, (1, 1), (1, 1), 0, scale=scale.numpy(), channels_last_out=True))
        nhwc.append(_core.conv2d_packed(packed, pw, (1, 1), (1, 1), 0, bias=bias.numpy(), channels_last_out=True))
    finally:
        _core.set_isa(prev)
    plain = _ref(x, w, (1, 1), (1, 1), (1, 1), 0)
    ref = plain * scale.view(1, -1, 1, 1) + bias.view(1, -1, 1, 1)
    assert torch.equal(torch.from_numpy(out), ref)
    assert torch.equal(torch.from_numpy(nhwc[0]).permute(0, 3, 1, 2), ref)
    assert torch.equal(torch.from_numpy(nhwc[1]).permute(0, 3, 1, 2), plain * scale.view(1, -1, 1, 1))
    assert torch.equal(torch.from_numpy(nhwc[2]).permute(0, 3, 1, 2), plain + bias.view(1, -1, 1, 1))


def test_popcount_peak_helper():
    assert _core.popcount_peak(1000, 2) > 0
