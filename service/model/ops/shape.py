"""Reshaping: ``flatten``, ``concat`` (two tensors along a dimension); and what the exporter drops (Dropout,
Identity: their output is their input)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import StrictInt
from torch import nn

from .registry import (
    Attrs,
    Build,
    Built,
    Call,
    Epilogue,
    Exported,
    ExportError,
    OpSpec,
    register,
    register_passthrough,
)


class FlattenAttrs(Attrs):
    start_dim: StrictInt = 1
    end_dim: StrictInt = -1


def _build_flatten(b: Build[FlattenAttrs]) -> Built:
    start, end = b.attrs.start_dim, b.attrs.end_dim
    return Built(lambda x: torch.flatten(x, start, end))


def _flatten_call(call: Call) -> Exported:
    return Exported(FlattenAttrs(start_dim=call.arg(1, "start_dim", 0), end_dim=call.arg(2, "end_dim", -1)))


register(
    OpSpec(
        "flatten",
        FlattenAttrs,
        _build_flatten,
        modules={nn.Flatten: lambda m: Exported(FlattenAttrs(start_dim=m.start_dim, end_dim=m.end_dim))},
        functions=(torch.flatten,),
        methods=("flatten",),
        from_call=_flatten_call,
    )
)


class ConcatAttrs(Attrs):
    dim: StrictInt  # no default: torch.cat's is 0, a channel concatenation's 1


def _build_concat(b: Build[ConcatAttrs]) -> Built:
    dim = b.attrs.dim
    # along dim 1 (or -3) of two binary convs' NCHW outputs: channels each conv's epilogue can write
    return Built(lambda x, y: torch.cat([x, y], dim), epilogue=Epilogue("concat") if dim in (1, -3) else None)


def _concat_call(call: Call) -> Exported:
    tensors = call.arg(0, "tensors")
    if call.inputs != 2 or not isinstance(tensors, (list, tuple)) or len(tensors) != 2:
        raise ExportError("only the concatenation of two tensors is supported")
    return Exported(ConcatAttrs(dim=call.arg(1, "dim", 0)))


register(
    OpSpec(
        "concat",
        ConcatAttrs,
        _build_concat,
        inputs=2,
        functions=(torch.cat, torch.concat, torch.concatenate),
        from_call=_concat_call,
    )
)

register_passthrough(modules=(nn.Dropout, nn.Dropout2d, nn.Identity), functions=(F.dropout, F.dropout2d))
