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


def _sign_epilogues(O, g):
    """(scale, bias) pairs for the binarised output: none, bias only (a threshold), negative and
    zero scales with bias, and NaN scales (their bits must be set, as sign(nan) = -1)."""
    scale = torch.randn(O, generator=g)
    scale[::5] = 0.0
    bias = torch.randn(O, generator=g) * 3
    nan_scale = scale.clone()
    nan_scale[1::3] = float("nan")
    return [(None, None), (None, bias), (scale, bias), (scale, None), (nan_scale, bias)]


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("case", CASES)
def test_sign_output_matches_packing_the_float_output(isa, case):
    """conv2d_packed_sign writes exactly the bits pack_activations makes of the float output, with
    the requested border, on every path, for every epilogue, on 1 and 2 threads."""
    N, C, H, W, O, k, stride, pad, dil = case
    g = torch.Generator().manual_seed(hash(("sign", case)) % (2**31))
    x = torch.randn(N, C, H, W, generator=g)
    w = torch.randn(O, C, *k, generator=g)
    pw = _core.PackedWeights.from_float(w.numpy())
    prev = _core.active_isa()
    _core.set_isa(isa)
    try:
        packed = _core.pack_activations(x.numpy(), False, pad)
        for i, (scale, bias) in enumerate(_sign_epilogues(O, g)):
            extra = {k: v.numpy() for k, v in (("scale", scale), ("bias", bias)) if v is not None}
            pad_value = (0, 1, -1)[i % 3]
            out_pad = ((0, 0), (1, 1), (2, 0))[i % 3]
            ref = _core.pack_activations(_core.conv2d_packed(packed, pw, stride, dil, pad_value, **extra), False, out_pad)
            for threads in (1, 2):
                _core.set_num_threads(threads)
                got = _core.conv2d_packed_sign(packed, pw, stride, dil, pad_value, out_padding=out_pad, **extra)
                assert got.shape == ref.shape and got.padding == out_pad
                assert np.array_equal(got.words(), ref.words()), (isa, case, i, threads)
    finally:
        _core.set_num_threads(1)
        _core.set_isa(prev)


def test_sign_output_feeds_the_next_layer():
    """Two layers chained through packed bits equal the float chain conv -> sign -> conv."""
    g = torch.Generator().manual_seed(11)
    x = torch.randn(2, 70, 12, 13, generator=g)
    w1, w2 = torch.randn(40, 70, 3, 3, generator=g), torch.randn(24, 40, 3, 3, generator=g)
    scale, bias = torch.randn(40, generator=g), torch.randn(40, generator=g)
    p1, p2 = _core.PackedWeights.from_float(w1.numpy()), _core.PackedWeights.from_float(w2.numpy())
    packed = _core.pack_activations(x.numpy(), False, (1, 1))
    bits = _core.conv2d_packed_sign(packed, p1, (1, 1), (1, 1), 0, scale=scale.numpy(), bias=bias.numpy(),
                                    out_padding=(1, 1))
    got = _core.conv2d_packed(bits, p2, (1, 1), (1, 1), 0)
    mid = _ref(x, w1, (1, 1), (1, 1), (1, 1), 0) * scale.view(1, -1, 1, 1) + bias.view(1, -1, 1, 1)
    assert torch.equal(torch.from_numpy(got), _ref(mid, w2, (1, 1), (1, 1), (1, 1), 0))


def test_sign_output_rejects_bad_padding():
    pw = _core.PackedWeights.from_float(np.ones((4, 8, 3, 3), np.float32))
    packed = _core.pack_activations(np.ones((1, 8, 5, 5), np.float32), False, (1, 1))
    with pytest.raises(ValueError, match="output padding"):
        _core.conv2d_packed_sign(packed, pw, (1, 1), (1, 1), 0, out_padding=(-1, 0))
    with pytest.raises(ValueError, match="channel mismatch"):
        _core.conv2d_packed_sign(_core.pack_activations(np.ones((1, 9, 5, 5), np.float32), False, (1, 1)),
                                 pw, (1, 1), (1, 1), 0)
