"""Bad arguments raise clear Python exceptions — never a crash, never silent garbage."""

from __future__ import annotations

import re
import resource
import subprocess
import sys
import time

import pytest
import torch

from service import _core
from service.kernel import (
    BinaryConv2d,
    BinaryConv2dForward,
    InferenceConv,
    binary_conv2d,
    pack_activations,
    pack_weights,
    set_num_threads,
)


@pytest.mark.parametrize(
    ("x", "w", "kwargs", "error", "match"),
    [
        (torch.randn(3, 5, 5), torch.randn(2, 3, 3, 3), {}, ValueError, "input must be 4-D"),
        (torch.randn(1, 3, 5, 5), torch.randn(2, 3, 3), {}, ValueError, "weight must be 4-D"),
        (torch.randn(1, 4, 5, 5), torch.randn(2, 3, 3, 3), {}, ValueError, "channel mismatch"),
        (torch.randn(1, 3, 2, 2), torch.randn(2, 3, 3, 3), {}, ValueError, "output size"),
        (torch.randn(1, 3, 5, 5), torch.randn(2, 3, 3, 3), {"dilation": 3}, ValueError, "output size"),
        (torch.ones(1, 3, 5, 5, dtype=torch.int32), torch.randn(2, 3, 3, 3), {}, TypeError, "floating-point"),
        (torch.randn(1, 3, 5, 5), torch.ones(2, 3, 3, 3, dtype=torch.int64), {}, TypeError, "floating-point"),
        (torch.randn(1, 3, 5, 5), torch.randn(2, 3, 3, 3), {"stride": 0}, ValueError, "stride must be >= 1"),
        (torch.randn(1, 3, 5, 5), torch.randn(2, 3, 3, 3), {"padding": -1}, ValueError, "padding must be >= 0"),
        (torch.randn(1, 3, 5, 5), torch.randn(2, 3, 3, 3), {"stride": (1, 2, 3)}, ValueError, "pair"),
        (torch.randn(1, 3, 5, 5), torch.randn(2, 3, 3, 3), {"stride": 1.5}, TypeError, "int or a pair"),
        (torch.randn(1, 3, 5, 5), torch.randn(2, 3, 3, 3), {"pad_value": 2}, ValueError, "pad_value"),
        (torch.randn(0, 3, 5, 5), torch.randn(2, 3, 3, 3), {}, ValueError, "empty"),
        (torch.randn(1, 3, 5, 5), torch.randn(0, 3, 3, 3), {}, ValueError, "empty"),
        (torch.randn(1, 6, 5, 5), torch.randn(4, 3, 3, 3), {"groups": 4}, ValueError, "groups"),
    ],
)
def test_bad_arguments(x, w, kwargs, error, match):
    with pytest.raises(error, match=match):
        binary_conv2d(x, w, **kwargs)


def test_reduction_beyond_float32_exact_range_is_refused():
    with pytest.raises(ValueError, match="2\\^24"):
        binary_conv2d(torch.randn(1, 1 << 19, 6, 6), torch.randn(1, 1 << 19, 6, 6))


def test_not_a_tensor():
    with pytest.raises(TypeError, match=r"torch\.Tensor"):
        binary_conv2d([[1.0]], torch.randn(1, 1, 1, 1))


def test_threads_setting_validated():
    with pytest.raises(ValueError, match="num_threads"):
        set_num_threads(0)


def test_reference_signature_arguments_are_validated():
    x, w = torch.randn(2, 5, 8, 8), torch.randn(7, 5, 3, 3)
    out = BinaryConv2dForward.apply(x, w, 7, 64, 45, 3, 1, 1, 1, 8)
    assert out.shape == (2, 7, 8, 8)
    with pytest.raises(ValueError, match="m=8 disagrees"):
        BinaryConv2dForward.apply(x, w, 8, 64, 45, 3, 1, 1, 1, 8)
    with pytest.raises(ValueError, match="n=63 disagrees"):
        BinaryConv2dForward.apply(x, w, 7, 63, 45, 3, 1, 1, 1, 8)
    with pytest.raises(ValueError, match="k=44 disagrees"):
        BinaryConv2dForward.apply(x, w, 7, 64, 44, 3, 1, 1, 1, 8)
    with pytest.raises(ValueError, match="output_edge=9 disagrees"):
        BinaryConv2dForward.apply(x, w, 7, 64, 45, 3, 1, 1, 1, 9)
    with pytest.raises(ValueError, match="kernel_size=5 disagrees"):
        BinaryConv2dForward.apply(x, pack_weights(w), 7, 64, 45, 5, 1, 1, 1, 8)


def test_module_rejects_bad_construction():
    with pytest.raises(ValueError, match="groups"):
        BinaryConv2d(6, 4, 3, groups=4)
    with pytest.raises(ValueError, match="pad_value"):
        BinaryConv2d(6, 4, 3, pad_value=5)


# ---- sane bounds: refused before anything is allocated ------------------------------------

LIMIT = _core.MAX_BUFFER_BYTES


def _peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


def _too_large(buffer: str) -> str:
    return rf"{buffer} would need \d+ bytes, over the limit of {LIMIT} bytes"


@pytest.mark.parametrize("padding", [11585, 65536])
def test_padding_that_needs_gigabytes_is_refused_without_allocating(padding):
    """A 1x1 input with padding p asks for a (2p + 1)^2-word packed input: 4.3 GB at p = 11585."""
    x, w = torch.randn(1, 1, 1, 1), torch.randn(1, 1, 1, 1)
    before = _peak_rss_bytes()
    start = time.perf_counter()
    with pytest.raises(ValueError, match=_too_large("padded packed input")) as info:
        binary_conv2d(x, w, padding=padding)
    assert str((2 * padding + 1) ** 2 * 8) in str(info.value)
    with pytest.raises(ValueError, match=_too_large("padded packed input")):
        pack_activations(x, padding)
    assert time.perf_counter() - start < 1.0
    assert _peak_rss_bytes() - before < 64 << 20


def test_just_under_the_limit_is_accepted():
    """Padding 11584 needs 4,294,420,488 bytes: allowed, so the limit is where it says."""
    assert (2 * 11584 + 1) ** 2 * 8 <= LIMIT < (2 * 11585 + 1) ** 2 * 8


def test_float_output_over_the_limit_is_refused():
    # 65536 channels of 513x513 float32: 69 GB, from a 1-pixel input and a 256 KiB weight
    before = _peak_rss_bytes()
    with pytest.raises(ValueError, match=_too_large("float32 output")):
        binary_conv2d(torch.randn(1, 1, 1, 1), torch.randn(65536, 1, 1, 1), padding=256)
    assert _peak_rss_bytes() - before < 64 << 20


def test_packed_output_over_the_limit_is_refused():
    layer = InferenceConv(pack_weights(torch.randn(4, 8, 3, 3)), padding=1)
    x = torch.randn(1, 8, 5, 5)
    with pytest.raises(ValueError, match=_too_large("packed output")):
        layer.sign_packed(x, out_padding=1 << 16)
    with pytest.raises(ValueError, match="output padding height must be <= 1048576"):
        layer.sign_packed(x, out_padding=(1 << 20) + 1)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"padding": (1 << 20) + 1}, "padding must be <= 1048576"),
        ({"stride": (1, 1 << 21)}, "stride width must be <= 1048576"),
        ({"dilation": (1 << 62, 1)}, "dilation height must be <= 1048576"),
    ],
)
def test_geometry_beyond_the_bounds_is_refused(kwargs, match):
    with pytest.raises(ValueError, match=re.escape(match)):
        binary_conv2d(torch.randn(1, 3, 4, 4), torch.randn(2, 3, 1, 1), **kwargs)


def test_failed_allocation_is_a_memory_error():
    """Under the limit but more than the process may map (RLIMIT_AS, in a child process): the
    core's std::bad_alloc reaches Python as MemoryError, and the process lives on."""
    child = """
import resource, torch
from service.kernel import binary_conv2d
vm = int(next(l for l in open("/proc/self/status") if l.startswith("VmSize")).split()[1]) * 1024
resource.setrlimit(resource.RLIMIT_AS, (vm + (1 << 30), vm + (1 << 30)))
try:
    binary_conv2d(torch.randn(1, 1, 1, 1), torch.randn(1, 1, 1, 1), padding=8000)  # 2 GB packed input
except MemoryError:
    print("MemoryError")
print(binary_conv2d(torch.ones(1, 1, 3, 3), torch.ones(1, 1, 3, 3)).item())
"""
    result = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split() == ["MemoryError", "9.0"]
