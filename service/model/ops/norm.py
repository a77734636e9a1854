"""Normalisation: ``batch_norm`` (inference BatchNorm, stored as y = x * scale + shift per
channel), and how the exporter folds it into the layer before it."""

from __future__ import annotations

import torch
from torch import nn

from .registry import Attrs, Build, Built, Count, Exported, ExportError, OpSpec, Param, as_float, register

F32 = torch.float32


def channel_view(v: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """A per-channel vector shaped to broadcast over ``x``'s dim 1."""
    return v.view(1, -1, *([1] * (x.dim() - 2)))


def fold_into_weight(params: dict[str, torch.Tensor], scale: torch.Tensor, shift: torch.Tensor) -> bool:
    """A float layer absorbs y = out * scale + shift into its weight and bias."""
    w = params["weight"]
    if scale.shape[0] != w.shape[0]:
        return False
    params["weight"] = w * scale.view(-1, *([1] * (w.dim() - 1)))
    params["bias"] = params.get("bias", torch.zeros(w.shape[0])) * scale + shift
    return True


def fold_into_epilogue(params: dict[str, torch.Tensor], scale: torch.Tensor, shift: torch.Tensor) -> bool:
    """A binary layer absorbs it into the kernel's fused epilogue, y = conv * scale + bias."""
    out_channels = params["weight"].shape[0]
    if scale.shape[0] != out_channels:
        return False
    params["scale"] = params.get("scale", torch.ones(out_channels)) * scale
    params["bias"] = params.get("bias", torch.zeros(out_channels)) * scale + shift
    return True


class BatchNormAttrs(Attrs):
    num_features: Count


def _build_batch_norm(b: Build[BatchNormAttrs]) -> Built:
    scale, shift = b.params["scale"], b.params["shift"]
    return Built(lambda x: torch.addcmul(channel_view(shift, x), x, channel_view(scale, x)))


def _export_batch_norm(bn: nn.modules.batchnorm._BatchNorm) -> Exported:
    if bn.running_mean is None or bn.running_var is None:
        raise ExportError("BatchNorm without running statistics (track_running_stats=False) cannot be exported")
    std = torch.sqrt(bn.running_var.double() + bn.eps)
    gamma = bn.weight.double() if bn.weight is not None else torch.ones_like(std)
    beta = bn.bias.double() if bn.bias is not None else torch.zeros_like(std)
    scale = gamma / std
    shift = beta - bn.running_mean.double() * scale
    return Exported(BatchNormAttrs(num_features=bn.num_features), {"scale": as_float(scale), "shift": as_float(shift)})


register(
    OpSpec(
        "batch_norm",
        BatchNormAttrs,
        _build_batch_norm,
        params=(
            Param("scale", F32, lambda a: (a.num_features,)),
            Param("shift", F32, lambda a: (a.num_features,)),
        ),
        modules={nn.BatchNorm1d: _export_batch_norm, nn.BatchNorm2d: _export_batch_norm},
        channel_affine=True,
    )
)
