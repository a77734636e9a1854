"""Binary weights, shared by the binary ops: how they are stored (bit-packed, 1 bit per weight,
whole 64-bit words of input channels per kernel tap), unpacked and exported."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from service.kernel import PackedWeights, unpack_weights

from .registry import A, Build, Param, as_float

# (out_channels, in_channels, kernel_size) of a binary layer, from its attributes
BinaryShape = Callable[[A], tuple[int, int, tuple[int, int]]]


def packed_bytes(in_channels: int) -> int:
    """Bytes per kernel tap in a packed weight tensor."""
    return math.ceil(in_channels / 64) * 8


def binary_params(shape: BinaryShape[A]) -> tuple[Param[A], ...]:
    """``weight`` (bits, [O, KH, KW, bytes]), ``scale`` and ``bias`` (optional, [O]): the fused
    epilogue y = conv * scale + bias."""

    def weight(a: A) -> tuple[int, ...]:
        out, cin, k = shape(a)
        return (out, *k, packed_bytes(cin))

    return (
        Param("weight", torch.uint8, weight, bits=True),
        Param("scale", torch.float32, lambda a: (shape(a)[0],), optional=True),
        Param("bias", torch.float32, lambda a: (shape(a)[0],), optional=True),
    )


def unpacked(b: Build[A], in_channels: int) -> PackedWeights:
    """The node's ``weight`` bits as the kernel's packed weights."""
    try:
        return unpack_weights(b.params["weight"], in_channels)
    except Exception as e:  # noqa: BLE001 - the kernel's own validation, reworded
        raise b.fail(f"packed weights do not unpack: {e}") from None


def binary_export_params(
    weight: torch.Tensor, scale: torch.Tensor | None, bias: torch.Tensor | None
) -> dict[str, torch.Tensor]:
    """A binary layer's parameters as the exporter takes them: float, ``weight`` [O, C, KH, KW]
    (packed when written)."""
    params = {"weight": as_float(weight)}
    if scale is not None:
        params["scale"] = as_float(scale)
    if bias is not None:
        params["bias"] = as_float(bias)
    return params
