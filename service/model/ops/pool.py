"""Pooling: ``max_pool2d`` (the kernel's, bit for bit torch's), ``avg_pool2d``, ``adaptive_avg_pool2d``."""

from __future__ import annotations

import torch.nn.functional as F
from torch import nn

from service import kernel

from .registry import (
    Attrs,
    Build,
    Built,
    Call,
    Exported,
    ExportError,
    NonNegativePair,
    OpSpec,
    PositivePair,
    PositivePairOrUnset,
    register,
)

# ---- max_pool2d --------------------------------------------------------------------------


class MaxPool2dAttrs(Attrs):
    kernel_size: PositivePair
    stride: PositivePairOrUnset = None  # unset: the kernel size
    padding: NonNegativePair = (0, 0)
    dilation: PositivePair = (1, 1)
    ceil_mode: bool = False


def _build_max_pool2d(b: Build[MaxPool2dAttrs]) -> Built:
    a = b.attrs
    k, stride, padding, dilation, ceil_mode = (
        a.kernel_size,
        a.stride or a.kernel_size,
        a.padding,
        a.dilation,
        a.ceil_mode,
    )
    # the kernel's pooling: F.max_pool2d's bits, one pass over channels-last memory, on the
    # kernel's threads; with relu=True also F.relu's before it
    return Built(
        lambda x: kernel.max_pool2d(x, k, stride, padding, dilation, ceil_mode),
        after_relu=lambda x: kernel.max_pool2d(x, k, stride, padding, dilation, ceil_mode, relu=True),
    )


def _export_max_pool2d(m: nn.MaxPool2d) -> Exported:
    if m.return_indices:
        raise ExportError("MaxPool2d(return_indices=True) is not supported")
    attrs = MaxPool2dAttrs.parse(
        kernel_size=m.kernel_size,
        stride=m.stride or m.kernel_size,
        padding=m.padding,
        dilation=m.dilation,
        ceil_mode=bool(m.ceil_mode),
    )
    return Exported(attrs)


register(OpSpec("max_pool2d", MaxPool2dAttrs, _build_max_pool2d, modules={nn.MaxPool2d: _export_max_pool2d}))

# ---- avg_pool2d --------------------------------------------------------------------------


class AvgPool2dAttrs(Attrs):
    kernel_size: PositivePair
    stride: PositivePairOrUnset = None  # unset: the kernel size
    padding: NonNegativePair = (0, 0)
    ceil_mode: bool = False
    count_include_pad: bool = True


def _build_avg_pool2d(b: Build[AvgPool2dAttrs]) -> Built:
    a = b.attrs
    k, stride, padding = a.kernel_size, a.stride or a.kernel_size, a.padding
    ceil_mode, include_pad = a.ceil_mode, a.count_include_pad
    return Built(lambda x: F.avg_pool2d(x, k, stride, padding, ceil_mode, include_pad))


def _export_avg_pool2d(m: nn.AvgPool2d) -> Exported:
    if m.divisor_override is not None:
        raise ExportError("AvgPool2d(divisor_override) is not supported")
    attrs = AvgPool2dAttrs.parse(
        kernel_size=m.kernel_size,
        stride=m.stride or m.kernel_size,
        padding=m.padding,
        ceil_mode=bool(m.ceil_mode),
        count_include_pad=bool(m.count_include_pad),
    )
    return Exported(attrs)


register(OpSpec("avg_pool2d", AvgPool2dAttrs, _build_avg_pool2d, modules={nn.AvgPool2d: _export_avg_pool2d}))

# ---- adaptive_avg_pool2d -----------------------------------------------------------------


class AdaptiveAvgPool2dAttrs(Attrs):
    output_size: PositivePair = (1, 1)


def _build_adaptive_avg_pool2d(b: Build[AdaptiveAvgPool2dAttrs]) -> Built:
    size = b.attrs.output_size
    if size == (1, 1):  # global average pooling
        return Built(lambda x: x.mean(dim=(2, 3), keepdim=True))
    return Built(lambda x: F.adaptive_avg_pool2d(x, size))


def _adaptive_avg_pool2d_call(call: Call) -> Exported:
    return Exported(AdaptiveAvgPool2dAttrs.parse(output_size=call.arg(1, "output_size")))


register(
    OpSpec(
        "adaptive_avg_pool2d",
        AdaptiveAvgPool2dAttrs,
        _build_adaptive_avg_pool2d,
        modules={nn.AdaptiveAvgPool2d: lambda m: Exported(AdaptiveAvgPool2dAttrs.parse(output_size=m.output_size))},
        functions=(F.adaptive_avg_pool2d,),
        from_call=_adaptive_avg_pool2d_call,
    )
)
