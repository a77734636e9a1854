"""The binary convolution equals the float reference exactly, on every dispatch path."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from service import kernel
from service.kernel import binary_conv2d, pack_weights, packed_bits, sign, unpack_weights

ISAS = kernel.available_isas()


def reference(x, w, stride=1, padding=0, dilation=1, pad_value=0, groups=1):
    """F.conv2d on the ±1 values; a non-zero pad value is applied by F.pad first."""
    sx, sw = sign(x), sign(w)
    ph, pw = (padding, padding) if isinstance(padding, int) else padding
    if pad_value != 0:
        sx = F.pad(sx, (pw, pw, ph, ph), value=float(pad_value))
        ph = pw = 0
    return F.conv2d(sx, sw, stride=stride, padding=(ph, pw), dilation=dilation, groups=groups)


@st.composite
def conv_cases(draw):
    n = draw(st.integers(1, 3))
    c = draw(st.sampled_from([1, 2, 3, 7, 31, 63, 64, 65, 100, 127, 128, 129, 200]))
    o = draw(st.integers(1, 40))
    kh, kw = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    sh, sw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    dh, dw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    ph, pw = draw(st.integers(0, 3)), draw(st.integers(0, 3))
    min_h = max(1, dh * (kh - 1) + 1 - 2 * ph)
    min_w = max(1, dw * (kw - 1) + 1 - 2 * pw)
    h = draw(st.integers(min_h, min_h + 10))
    w = draw(st.integers(min_w, min_w + 10))
    pad_value = draw(st.sampled_from([0, 1, -1]))
    layout = draw(st.sampled_from(["nchw", "channels_last", "strided"]))
    as_int = draw(st.booleans())
    geometry = (sh, sw), (ph, pw), (dh, dw)
    if as_int and sh == sw and ph == pw and dh == dw:
        geometry = sh, ph, dh
    return (n, c, h, w), (o, c, kh, kw), geometry, pad_value, layout, draw(st.integers(0, 2**31 - 1))


def make_input(shape, layout, seed):
    g = torch.Generator().manual_seed(seed)
    n, c, h, w = shape
    if layout == "strided":  # a non-contiguous view: every other column of a wider tensor
        return torch.randn(n, c, h, 2 * w, generator=g)[..., ::2]
    x = torch.randn(shape, generator=g)
    # Exact zeros must binarise to +1.
    x[x.abs() < 0.05] = 0.0
    return x.to(memory_format=torch.channels_last) if layout == "channels_last" else x


@pytest.mark.parametrize("isa", ISAS)
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=conv_cases())
def test_matches_reference_on_every_path(isa, case):
    xshape, wshape, (stride, padding, dilation), pad_value, layout, seed = case
    x = make_input(xshape, layout, seed)
    w = torch.randn(wshape, generator=torch.Generator().manual_seed(seed + 1))
    expected = reference(x, w, stride, padding, dilation, pad_value)
    with kernel.use_isa(isa):
        got = binary_conv2d(x, w, stride, padding, dilation, pad_value)
        got_packed = binary_conv2d(x, pack_weights(w), stride, padding, dilation, pad_value)
    assert got.dtype == torch.float32 and got.shape == expected.shape
    assert torch.equal(got, expected)
    assert torch.equal(got_packed, expected)


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("c", [1, 63, 64, 65, 127, 128, 129, 191, 256, 257, 513])
def test_channel_tail_bits(isa, c):
    x, w = torch.randn(2, c, 5, 6), torch.randn(17, c, 3, 3)
    with kernel.use_isa(isa):
        assert torch.equal(binary_conv2d(x, w, padding=1), reference(x, w, padding=1))


@pytest.mark.parametrize("isa", ISAS)
def test_degenerate_shapes(isa):
    with kernel.use_isa(isa):
        x, w = torch.randn(1, 3, 1, 1), torch.randn(5, 3, 1, 1)  # 1x1 everything
        assert torch.equal(binary_conv2d(x, w), reference(x, w))
        x, w = torch.randn(2, 9, 4, 6), torch.randn(4, 9, 4, 6)  # kernel = input size
        assert torch.equal(binary_conv2d(x, w), reference(x, w))
        x, w = torch.randn(1, 70, 2, 3), torch.randn(33, 70, 5, 5)  # kernel larger than input, padded
        for pv in (0, 1, -1):
            assert torch.equal(binary_conv2d(x, w, padding=2, pad_value=pv), reference(x, w, padding=2, pad_value=pv))


@pytest.mark.parametrize("isa", ISAS)
def test_sign_convention(isa):
    # sign(0) = sign(-0.0) = +1, sign(x < 0) = -1, NaN -> -1, +inf -> +1, -inf -> -1.
    values = torch.tensor([0.0, -0.0, 1e-30, -1e-30, float("nan"), float("inf"), float("-inf"), -2.0])
    x = values.view(1, -1, 1, 1)
    w = torch.ones(1, values.numel(), 1, 1)
    expected = torch.tensor([1, 1, 1, -1, -1, 1, -1, -1], dtype=torch.float32)
    with kernel.use_isa(isa):
        for i in range(values.numel()):
            one_hot = torch.full_like(w, 0.0)
            one_hot[0, i] = 1.0
            # Isolate channel i: sign(w) = +1 everywhere, so subtract the other channels' contribution.
            others = sign(torch.cat([values[:i], values[i + 1 :]])).sum()
            assert binary_conv2d(x, w).item() - others.item() == expected[i].item()


def test_float64_tiny_negatives_stay_negative():
    x = torch.full((1, 4, 3, 3), -1e-300, dtype=torch.float64)
    w = torch.ones(2, 4, 1, 1, dtype=torch.float64)
    assert torch.equal(binary_conv2d(x, w), torch.full((1, 2, 3, 3), -4.0))


@pytest.mark.parametrize("groups", [2, 4])
def test_groups_and_depthwise(groups):
    x, w = torch.randn(2, 8, 7, 7), torch.randn(8, 8 // groups, 3, 3)
    assert torch.equal(binary_conv2d(x, w, padding=1, groups=groups), reference(x, w, padding=1, groups=groups))
    wd = torch.randn(8, 1, 3, 3)
    assert torch.equal(binary_conv2d(x, wd, padding=1, groups=8), reference(x, wd, padding=1, groups=8))


def test_fused_scale_and_bias():
    x, w = torch.randn(2, 70, 6, 6), torch.randn(20, 70, 3, 3)
    scale, bias = torch.rand(20) + 0.5, torch.randn(20)
    got = binary_conv2d(x, w, padding=1, scale=scale, bias=bias)
    expected = reference(x, w, padding=1) * scale.view(1, -1, 1, 1) + bias.view(1, -1, 1, 1)
    assert torch.equal(got, expected)


def test_packed_bits_round_trip():
    w = torch.randn(19, 70, 3, 2)
    packed = pack_weights(w)
    bits = packed_bits(packed)
    assert bits.dtype == torch.uint8 and tuple(bits.shape) == (19, 3, 2, 16)
    assert (packed.out_channels, packed.in_channels, packed.kernel_size) == (19, 70, (3, 2))
    again = unpack_weights(bits, 70)
    x = torch.randn(1, 70, 5, 5)
    assert torch.equal(binary_conv2d(x, again), reference(x, w))
    bad = bits.clone()
    bad[0, 0, 0, 15] |= 0x80  # a bit beyond in_channels=70
    with pytest.raises(ValueError, match="beyond in_channels"):
        unpack_weights(bad, 70)
    with pytest.raises(ValueError, match="words per tap"):
        unpack_weights(bits, 200)


@pytest.fixture(params=["openmp", "own"])
def thread_pool(request):
    """Each thread pool the kernel can run on (torch's OpenMP team is loaded in every test process)."""
    previous = kernel.thread_pool()
    kernel.set_thread_pool(request.param)
    yield request.param
    kernel.set_thread_pool(previous)


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_thread_count_is_respected_and_exact(threads, thread_pool):
    previous = kernel.get_num_threads()
    try:
        kernel.set_num_threads(threads)
        assert kernel.get_num_threads() == threads and kernel.thread_pool() == thread_pool
        x, w = torch.randn(3, 65, 13, 11), torch.randn(37, 65, 3, 3)
        assert torch.equal(binary_conv2d(x, w, padding=1), reference(x, w, padding=1))
        xl = x.contiguous(memory_format=torch.channels_last)
        assert torch.equal(binary_conv2d(xl, w, padding=1), reference(x, w, padding=1))
    finally:
        kernel.set_num_threads(previous)


def test_concurrent_callers_get_their_own_answers(thread_pool):
    from concurrent.futures import ThreadPoolExecutor

    previous = kernel.get_num_threads()
    kernel.set_num_threads(2)
    try:
        cases = [(torch.randn(1, 64, 9, 9), torch.randn(32, 64, 3, 3)) for _ in range(8)]
        with ThreadPoolExecutor(4) as pool:
            results = list(pool.map(lambda c: binary_conv2d(c[0], c[1], padding=1), cases * 4))
        for (x, w), got in zip(cases * 4, results):
            assert torch.equal(got, reference(x, w, padding=1))
    finally:
        kernel.set_num_threads(previous)


def test_thread_pool_choices():
    """auto is torch's OpenMP team when one is loaded (torch's wheels bring libgomp); a bad name
    is refused and changes nothing; configure() and the settings choose it."""
    from pydantic import ValidationError

    from service import _core
    from service.settings import Settings, configure

    assert _core.openmp_loaded()
    previous = kernel.thread_pool()
    try:
        kernel.set_thread_pool("own")
        with pytest.raises(ValueError, match="unknown thread pool"):
            kernel.set_thread_pool("gomp")
        with pytest.raises(ValueError, match="unknown thread pool"):
            kernel.configure(pool="tbb")
        assert kernel.thread_pool() == "own"
        kernel.set_thread_pool("auto")
        assert kernel.thread_pool() == "openmp"
        configure(Settings(kernel_pool="OWN", kernel_threads=2))
        assert kernel.thread_pool() == "own" and kernel.get_num_threads() == 2
        configure(Settings(kernel_threads=2))
        assert kernel.thread_pool() == "openmp" and kernel.get_num_threads() == 2
        with pytest.raises(ValidationError, match="kernel_pool"):
            Settings(kernel_pool="tbb")
    finally:
        kernel.set_thread_pool(previous)


def test_default_thread_pool_is_torchs_openmp_team():
    """A program that never configures the kernel runs it on torch's OpenMP team; with the own
    pool, the process has the kernel's workers besides torch's threads."""
    import subprocess
    import sys

    code = (
        "import threading, torch; torch.set_num_threads(3); from service import kernel;"
        "x, w = torch.randn(1, 64, 32, 32), torch.randn(64, 64, 3, 3);"
        "kernel.binary_conv2d(x, w, padding=1); torch.nn.functional.conv2d(x, w, padding=1);"
        "import os; print(kernel.thread_pool(), len(os.listdir('/proc/self/task')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    pool, tasks = out.stdout.split()
    own = code.replace("kernel.binary_conv2d(x", "kernel.set_thread_pool('own'); kernel.binary_conv2d(x")
    out_own = subprocess.run([sys.executable, "-c", own], capture_output=True, text=True, check=True)
    pool_own, tasks_own = out_own.stdout.split()
    assert (pool, pool_own) == ("openmp", "own")
    assert int(tasks_own) == int(tasks) + 2  # the own pool's two workers; openmp adds none


def test_dispatch_reports_and_forces_paths():
    assert kernel.active_isa() in ISAS
    assert ISAS[-1] == "portable"
    for isa in ISAS:
        with kernel.use_isa(isa):
            assert kernel.active_isa() == isa
    with pytest.raises(ValueError, match="unknown instruction set"):
        kernel.set_isa("sse9")


def test_settings_choose_the_path_when_configured(monkeypatch):
    from pydantic import ValidationError

    from service.settings import Settings, configure

    best = kernel.available_isas()[0]
    try:
        for isa in ISAS:
            monkeypatch.setenv("BNN_KERNEL_ISA", isa)
            configure(Settings())
            assert kernel.active_isa() == isa
        monkeypatch.setenv("BNN_KERNEL_ISA", "auto")
        configure(Settings())
        assert kernel.active_isa() == best
        missing = [isa for isa in ("avx512", "avx2", "portable") if isa not in ISAS]
        for isa in missing:
            with pytest.raises(ValueError, match="not supported here"):
                kernel.configure(isa=isa)
        monkeypatch.setenv("BNN_KERNEL_ISA", "bogus")
        with pytest.raises(ValidationError, match="kernel_isa"):
            Settings()
    finally:
        kernel.set_isa(best)


def test_import_reads_no_environment():
    """Nothing is chosen at import: bad settings in the environment only fail when read."""
    import subprocess
    import sys

    env = {"BNN_KERNEL_ISA": "bogus", "BNN_KERNEL_THREADS": "0", "PATH": ""}
    out = subprocess.run(
        [sys.executable, "-c", "from service import kernel, settings, api, model; print(kernel.active_isa())"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip() == kernel.available_isas()[0]
    bad = subprocess.run(
        [sys.executable, "-c", "from service.settings import Settings; Settings()"],
        env=env,
        capture_output=True,
        text=True,
    )
    assert bad.returncode != 0 and "kernel_isa" in bad.stderr and "kernel_threads" in bad.stderr


def _is_channels_last(t):
    return t.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("pad_value", [0, 1, -1])
@pytest.mark.parametrize(
    "shape, wshape, geometry",
    [
        ((2, 64, 9, 13), (33, 64, 3, 3), dict(stride=1, padding=1)),
        ((1, 130, 11, 70), (17, 130, 3, 3), dict(stride=2, padding=(1, 2), dilation=(1, 2))),
        ((3, 7, 6, 5), (5, 7, 1, 1), dict()),
        ((1, 1, 8, 8), (1, 1, 3, 3), dict(padding=2)),
    ],
)
def test_channels_last_in_gives_channels_last_out(isa, pad_value, shape, wshape, geometry):
    """torch's rule: channels_last in -> channels_last out (the kernel writes NHWC), NCHW otherwise;
    the values are the same either way, scale/bias included."""
    g = torch.Generator().manual_seed(sum(shape) + pad_value)
    x = torch.randn(shape, generator=g)
    x[x.abs() < 0.05] = 0.0
    w = torch.randn(wshape, generator=g)
    scale, bias = torch.randn(wshape[0], generator=g), torch.randn(wshape[0], generator=g)
    xc = x.contiguous(memory_format=torch.channels_last)
    ref = reference(x, w, pad_value=pad_value, **geometry)
    ref_cl = F.conv2d(sign(xc), sign(w), **geometry) if pad_value == 0 else None
    with kernel.use_isa(isa):
        for packed in (False, True):
            weight = pack_weights(w) if packed else w
            out_n = binary_conv2d(x, weight, pad_value=pad_value, **geometry)
            out_c = binary_conv2d(xc, weight, pad_value=pad_value, **geometry)
            assert out_n.is_contiguous()
            assert _is_channels_last(out_c)
            assert out_c.shape == ref.shape
            if ref_cl is not None:  # the same layout torch's own conv2d gives
                assert out_c.stride() == ref_cl.stride() and out_n.stride() == ref.stride()
            assert torch.equal(out_n, ref) and torch.equal(out_c, ref)
            sb_n = binary_conv2d(x, weight, pad_value=pad_value, scale=scale, bias=bias, **geometry)
            sb_c = binary_conv2d(xc, weight, pad_value=pad_value, scale=scale, bias=bias, **geometry)
            want = ref * scale.view(1, -1, 1, 1) + bias.view(1, -1, 1, 1)
            assert _is_channels_last(sb_c) and torch.equal(sb_c, want) and torch.equal(sb_n, want)


@pytest.mark.parametrize("isa", ISAS)
def test_channels_last_layer_and_groups(isa):
    """The eval-mode layer (packed weights, fused scale/bias) and grouped convs keep channels_last."""
    torch.manual_seed(5)
    layer = kernel.BinaryConv2d(32, 48, 3, padding=1, scale=True, bias=True, pad_value=-1).eval()
    x = torch.randn(2, 32, 10, 12)
    xc = x.contiguous(memory_format=torch.channels_last)
    with kernel.use_isa(isa), torch.no_grad():
        a, b = layer(x), layer(xc)
        assert a.is_contiguous() and _is_channels_last(b) and torch.equal(a, b)
        w = torch.randn(48, 16, 3, 3)
        ga = binary_conv2d(x, w, padding=1, groups=2)
        gb = binary_conv2d(xc, w, padding=1, groups=2)
        assert torch.equal(ga, gb) and torch.equal(ga, reference(x, w, padding=1, groups=2))
