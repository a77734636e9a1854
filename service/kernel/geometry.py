"""Convolution geometry: the one parser of stride, padding, dilation, pad value and groups.

The kernel, the model runtime, the exporter and ``POST /conv`` all describe a convolution with a
:class:`ConvGeometry` and compute its output size with :meth:`ConvGeometry.output_size`; an
int-or-pair argument is parsed only by :func:`pair`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

IntPair = int | tuple[int, int]
PAD_VALUES = (-1, 0, 1)


def pair(value: Any, name: str, minimum: int, maximum: int | None = None) -> tuple[int, int]:
    """``value`` (an int, or a pair of ints as a tuple or list) as a checked ``(height, width)``.

    Raises TypeError for a non-integer (booleans included) and ValueError for a wrong length or a
    value below ``minimum`` (or above ``maximum``); the message names ``name`` and the value.
    """
    if isinstance(value, (list, tuple)):
        if len(value) != 2:
            raise ValueError(f"{name} must be an int or a pair of ints, got {value!r}")
        items: Sequence[Any] = value
    else:
        items = (value, value)
    for v in items:
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
            raise TypeError(f"{name} must be an int or a pair of ints, got {value!r}")
        if maximum is not None and not minimum <= v <= maximum:
            raise ValueError(f"{name} must be between {minimum} and {maximum}, got {value!r}")
        if v < minimum:
            raise ValueError(f"{name} must be >= {minimum}, got {value!r}")
    return int(items[0]), int(items[1])


def parse_pad_value(value: Any) -> int:
    """The value the border holds: -1, 0 (zero padding, as F.conv2d) or +1."""
    if isinstance(value, bool) or value not in PAD_VALUES:
        raise ValueError(f"pad_value must be -1, 0 or 1, got {value!r}")
    return int(value)


def count(value: Any, name: str, minimum: int = 1) -> int:
    """A single integer >= ``minimum`` (booleans refused)."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def conv_output_size(size: int, kernel: int, stride: int, padding: int, dilation: int) -> int:
    """Output length along one axis: floor((size + 2p - d(k-1) - 1) / s) + 1."""
    return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


@dataclass(frozen=True, slots=True)
class ConvGeometry:
    """How a kernel slides over its input: everything about a convolution but its weights.

    Build one with :meth:`parse` (which checks every field); the fields are then always pairs of
    ints in range.
    """

    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int] = (0, 0)
    dilation: tuple[int, int] = (1, 1)
    pad_value: int = 0
    groups: int = 1

    @classmethod
    def parse(
        cls,
        stride: Any = 1,
        padding: Any = 0,
        dilation: Any = 1,
        pad_value: Any = 0,
        groups: Any = 1,
        *,
        maximum: int | None = None,
    ) -> ConvGeometry:
        """Checked geometry from ints or pairs; ``None`` takes the default. ``maximum`` bounds
        stride, padding and dilation (``POST /conv`` refuses absurd ones before any work)."""
        return cls(
            pair(1 if stride is None else stride, "stride", 1, maximum),
            pair(0 if padding is None else padding, "padding", 0, maximum),
            pair(1 if dilation is None else dilation, "dilation", 1, maximum),
            parse_pad_value(0 if pad_value is None else pad_value),
            count(1 if groups is None else groups, "groups"),
        )

    def output_size(self, height: int, width: int, kernel_size: tuple[int, int]) -> tuple[int, int]:
        """Output height and width for an input of ``height`` x ``width`` (either may be < 1)."""
        kh, kw = kernel_size
        return (
            conv_output_size(height, kh, self.stride[0], self.padding[0], self.dilation[0]),
            conv_output_size(width, kw, self.stride[1], self.padding[1], self.dilation[1]),
        )

    def check_fits(self, height: int, width: int, kernel_size: tuple[int, int]) -> tuple[int, int]:
        """:meth:`output_size`, or ValueError when the dilated kernel does not fit the padded input."""
        oh, ow = self.output_size(height, width, kernel_size)
        if oh < 1 or ow < 1:
            kh, kw = kernel_size
            raise ValueError(
                f"output size would be {oh}x{ow}: kernel {kh}x{kw} with dilation {self.dilation} does not fit "
                f"input {height}x{width} with padding {self.padding}"
            )
        return oh, ow

    def reach(self, kernel_size: tuple[int, int]) -> tuple[int, int]:
        """How far the dilated kernel reaches past its first tap, ``dilation x (kernel - 1)`` per
        axis: padding beyond it only adds outputs that see nothing but the constant border."""
        return self.dilation[0] * (kernel_size[0] - 1), self.dilation[1] * (kernel_size[1] - 1)
