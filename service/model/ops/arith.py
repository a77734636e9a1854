"""Arithmetic: ``add``, the sum of two tensors (residual connections)."""

from __future__ import annotations

import operator

import torch

from .registry import Built, Call, Epilogue, Exported, ExportError, NoAttrs, OpSpec, register


def _add_call(call: Call) -> Exported:
    if call.inputs != 2 or call.node.kwargs.get("alpha", 1) != 1:
        raise ExportError("only the sum of two tensors is supported")
    return Exported(NoAttrs())


register(
    OpSpec(
        "add",
        NoAttrs,
        lambda b: Built(torch.add, epilogue=Epilogue("residual")),
        inputs=2,
        functions=(operator.add, torch.add, operator.iadd),
        methods=("add",),
        from_call=_add_call,
    )
)
