"""Fully connected layers: ``linear`` (float, F.linear) and ``binary_linear`` (a 1x1 binary
convolution on [N, C] seen as [N, C, 1, 1])."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from service.kernel import ConvGeometry, InferenceConv

from ..layers import BinaryLinear
from .binary import binary_export_params, binary_params, unpacked
from .norm import fold_into_epilogue, fold_into_weight
from .registry import Attrs, BinaryLayer, Build, Built, Count, Exported, OpSpec, Param, as_float, register


class LinearAttrs(Attrs):
    in_features: Count
    out_features: Count


def _build_linear(b: Build[LinearAttrs]) -> Built:
    w, bias = b.params["weight"], b.params.get("bias")
    return Built(lambda x: F.linear(x, w, bias))


def _export_linear(m: nn.Linear) -> Exported:
    params = {"weight": as_float(m.weight)}
    if m.bias is not None:
        params["bias"] = as_float(m.bias)
    return Exported(LinearAttrs(in_features=m.in_features, out_features=m.out_features), params)


register(
    OpSpec(
        "linear",
        LinearAttrs,
        _build_linear,
        params=(
            Param("weight", torch.float32, lambda a: (a.out_features, a.in_features)),
            Param("bias", torch.float32, lambda a: (a.out_features,), optional=True),
        ),
        modules={nn.Linear: _export_linear},
        absorb_affine=fold_into_weight,
    )
)


def _build_binary_linear(b: Build[LinearAttrs]) -> Built:
    cin, cout = b.attrs.in_features, b.attrs.out_features
    packed, g = unpacked(b, cin), ConvGeometry()
    scale, bias = b.params.get("scale"), b.params.get("bias")
    conv = InferenceConv.with_geometry(packed, g, scale=scale, bias=bias)

    def fn(x: torch.Tensor) -> torch.Tensor:
        return conv(x.reshape(x.shape[0], cin, 1, 1)).reshape(x.shape[0], cout)

    return Built(fn, BinaryLayer(b.name, b.op, packed, g, scale, bias))


def _export_binary_linear(m: BinaryLinear) -> Exported:
    weight = m.weight.view(m.out_features, m.in_features, 1, 1)
    attrs = LinearAttrs(in_features=m.in_features, out_features=m.out_features)
    return Exported(attrs, binary_export_params(weight, m.channel_scale(), m.bias))


register(
    OpSpec(
        "binary_linear",
        LinearAttrs,
        _build_binary_linear,
        params=binary_params(lambda a: (a.out_features, a.in_features, (1, 1))),
        binary=True,
        modules={BinaryLinear: _export_binary_linear},
        absorb_affine=fold_into_epilogue,
    )
)
