"""Bad arguments raise clear Python exceptions — never a crash, never silent garbage."""

from __future__ import annotations

import pytest
import torch

from service.kernel import BinaryConv2d, BinaryConv2dForward, binary_conv2d, pack_weights, set_num_threads


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
    with pytest.raises(TypeError, match="torch.Tensor"):
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
