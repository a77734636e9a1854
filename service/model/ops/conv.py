"""Convolutions: ``conv2d`` (float, F.conv2d) and ``binary_conv2d`` (the XNOR-popcount kernel)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import model_validator
from torch import nn

from service.kernel import BinaryConv2d, ConvGeometry, InferenceConv

from .binary import binary_export_params, binary_params, unpacked
from .norm import fold_into_epilogue, fold_into_weight
from .registry import (
    Attrs,
    BinaryLayer,
    Build,
    Built,
    Count,
    Exported,
    ExportError,
    NonNegativePair,
    OpSpec,
    PadValue,
    Param,
    PositivePair,
    as_float,
    register,
)

F32 = torch.float32


def channels_last(y: torch.Tensor) -> torch.Tensor:
    """The executor runs channels-last; torch's conv keeps the input's format except where it is
    ambiguous (C = 1), so make sure."""
    return y.contiguous(memory_format=torch.channels_last) if y.dim() == 4 else y


# ---- conv2d ------------------------------------------------------------------------------


class _ConvAttrs(Attrs):
    """What every 2-D convolution declares: channels, kernel and how it slides."""

    in_channels: Count
    out_channels: Count
    kernel_size: PositivePair
    stride: PositivePair = (1, 1)
    padding: NonNegativePair = (0, 0)
    dilation: PositivePair = (1, 1)


class Conv2dAttrs(_ConvAttrs):
    groups: Count = 1

    @model_validator(mode="after")
    def _groups_divide(self) -> Conv2dAttrs:
        if self.in_channels % self.groups or self.out_channels % self.groups:
            raise ValueError(
                f"groups={self.groups} must divide in_channels={self.in_channels} and out_channels={self.out_channels}"
            )
        return self

    def geometry(self) -> ConvGeometry:
        return ConvGeometry.parse(self.stride, self.padding, self.dilation, 0, self.groups)


def _build_conv2d(b: Build[Conv2dAttrs]) -> Built:
    w, bias, g = b.params["weight"], b.params.get("bias"), b.attrs.geometry()
    return Built(lambda x: channels_last(F.conv2d(x, w, bias, g.stride, g.padding, g.dilation, g.groups)))


def _export_conv2d(m: nn.Conv2d) -> Exported:
    if m.padding_mode != "zeros" or isinstance(m.padding, str):
        raise ExportError(f"only zero padding given as numbers is supported (got {m.padding_mode}, {m.padding!r})")
    params = {"weight": as_float(m.weight)}
    if m.bias is not None:
        params["bias"] = as_float(m.bias)
    attrs = Conv2dAttrs.parse(
        in_channels=m.in_channels,
        out_channels=m.out_channels,
        kernel_size=m.kernel_size,
        stride=m.stride,
        padding=m.padding,
        dilation=m.dilation,
        groups=m.groups,
    )
    return Exported(attrs, params)


register(
    OpSpec(
        "conv2d",
        Conv2dAttrs,
        _build_conv2d,
        params=(
            Param("weight", F32, lambda a: (a.out_channels, a.in_channels // a.groups, *a.kernel_size)),
            Param("bias", F32, lambda a: (a.out_channels,), optional=True),
        ),
        modules={nn.Conv2d: _export_conv2d},
        absorb_affine=fold_into_weight,
    )
)


# ---- binary_conv2d -----------------------------------------------------------------------


class BinaryConv2dAttrs(_ConvAttrs):
    pad_value: PadValue = 0

    def geometry(self) -> ConvGeometry:
        return ConvGeometry.parse(self.stride, self.padding, self.dilation, self.pad_value)


def _build_binary_conv2d(b: Build[BinaryConv2dAttrs]) -> Built:
    packed, g = unpacked(b, b.attrs.in_channels), b.attrs.geometry()
    scale, bias = b.params.get("scale"), b.params.get("bias")
    layer = BinaryLayer(b.name, b.op, packed, g, scale, bias)
    return Built(InferenceConv.with_geometry(packed, g, scale=scale, bias=bias), layer)


def _export_binary_conv2d(m: BinaryConv2d) -> Exported:
    if m.groups != 1:
        raise ExportError("grouped binary convolutions are not supported")
    g = m.geometry
    attrs = BinaryConv2dAttrs.parse(
        in_channels=m.in_channels,
        out_channels=m.out_channels,
        kernel_size=m.kernel_size,
        stride=g.stride,
        padding=g.padding,
        dilation=g.dilation,
        pad_value=g.pad_value,
    )
    return Exported(attrs, binary_export_params(m.weight, m.channel_scale(), m.bias))


register(
    OpSpec(
        "binary_conv2d",
        BinaryConv2dAttrs,
        _build_binary_conv2d,
        params=binary_params(lambda a: (a.out_channels, a.in_channels, a.kernel_size)),
        binary=True,
        modules={BinaryConv2d: _export_binary_conv2d},
        absorb_affine=fold_into_epilogue,
    )
)
