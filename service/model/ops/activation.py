"""Activations: ``sign`` (the kernel's binarisation), ``relu``, ``hardtanh``, ``prelu``, and ReActNet's
``rsign`` (sign after a per-channel shift) and ``rprelu`` (PReLU between two per-channel shifts)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import model_validator
from torch import nn

from service import kernel

from ..layers import RPReLU, RSign
from .norm import channel_view
from .registry import Attrs, Build, Built, Call, Count, Epilogue, Exported, NoAttrs, OpSpec, Param, as_float, register

# ---- sign --------------------------------------------------------------------------------

register(
    OpSpec(
        "sign",
        NoAttrs,
        # the function itself, not a wrapper: the executor's packed-output fusion recognises it
        lambda b: Built(kernel.sign),
        functions=(kernel.sign,),
        from_call=lambda call: Exported(NoAttrs()),
    )
)

# ---- relu --------------------------------------------------------------------------------

register(
    OpSpec(
        "relu",
        NoAttrs,
        # the function itself, not a wrapper: the executor's relu prologue recognises it
        lambda b: Built(F.relu, epilogue=Epilogue("clamp", lo=0.0, hi=float("inf"))),
        modules={nn.ReLU: lambda m: Exported(NoAttrs())},
        functions=(F.relu, torch.relu),
        methods=("relu",),
        from_call=lambda call: Exported(NoAttrs()),
    )
)

# ---- hardtanh ----------------------------------------------------------------------------


class HardtanhAttrs(Attrs):
    min_val: float = -1.0
    max_val: float = 1.0

    @model_validator(mode="after")
    def _ordered(self) -> HardtanhAttrs:
        if not self.min_val < self.max_val:
            raise ValueError(f"min_val {self.min_val} must be < max_val {self.max_val}")
        return self


def _build_hardtanh(b: Build[HardtanhAttrs]) -> Built:
    lo, hi = b.attrs.min_val, b.attrs.max_val
    return Built(lambda x: F.hardtanh(x, lo, hi), epilogue=Epilogue("clamp", lo=lo, hi=hi))


def _hardtanh_call(call: Call) -> Exported:
    lo, hi = call.arg(1, "min_val", -1.0), call.arg(2, "max_val", 1.0)
    return Exported(HardtanhAttrs(min_val=float(lo), max_val=float(hi)))


register(
    OpSpec(
        "hardtanh",
        HardtanhAttrs,
        _build_hardtanh,
        # nn.ReLU6 is a Hardtanh(0, 6) and exports as one
        modules={nn.Hardtanh: lambda m: Exported(HardtanhAttrs(min_val=float(m.min_val), max_val=float(m.max_val)))},
        functions=(F.hardtanh,),
        from_call=_hardtanh_call,
    )
)

# ---- prelu -------------------------------------------------------------------------------


class PReLUAttrs(Attrs):
    num_parameters: Count = 1


def _build_prelu(b: Build[PReLUAttrs]) -> Built:
    w = b.params["weight"]
    return Built(lambda x: F.prelu(x, w), epilogue=Epilogue("prelu", slope=w))


register(
    OpSpec(
        "prelu",
        PReLUAttrs,
        _build_prelu,
        params=(Param("weight", torch.float32, lambda a: (a.num_parameters,)),),
        modules={
            nn.PReLU: lambda m: Exported(PReLUAttrs(num_parameters=m.num_parameters), {"weight": as_float(m.weight)})
        },
    )
)


# ---- rsign, rprelu (ReActNet) ------------------------------------------------------------


class ChannelsAttrs(Attrs):
    """A per-channel op: its parameters have one value per channel."""

    channels: Count


def _per_channel(a: ChannelsAttrs) -> tuple[int, ...]:
    return (a.channels,)


def _build_rsign(b: Build[ChannelsAttrs]) -> Built:
    shift = b.params["shift"]
    # the same float sum as RSign.forward, then kernel.sign
    return Built(lambda x: kernel.sign(x + channel_view(shift, x)), sign_shift=shift)


register(
    OpSpec(
        "rsign",
        ChannelsAttrs,
        _build_rsign,
        params=(Param("shift", torch.float32, _per_channel),),
        modules={RSign: lambda m: Exported(ChannelsAttrs(channels=m.channels), {"shift": as_float(m.shift)})},
    )
)


def _build_rprelu(b: Build[ChannelsAttrs]) -> Built:
    shift_in, slope, shift_out = b.params["shift_in"], b.params["slope"], b.params["shift_out"]

    def rprelu(x: torch.Tensor) -> torch.Tensor:  # RPReLU.forward's float operations
        return F.prelu(x + channel_view(shift_in, x), slope) + channel_view(shift_out, x)

    return Built(rprelu, epilogue=Epilogue("rprelu", slope=slope, shift_in=shift_in, shift_out=shift_out))


def _export_rprelu(m: RPReLU) -> Exported:
    params = {"shift_in": as_float(m.shift_in), "slope": as_float(m.slope), "shift_out": as_float(m.shift_out)}
    return Exported(ChannelsAttrs(channels=m.channels), params)


register(
    OpSpec(
        "rprelu",
        ChannelsAttrs,
        _build_rprelu,
        params=(
            Param("shift_in", torch.float32, _per_channel),
            Param("slope", torch.float32, _per_channel),
            Param("shift_out", torch.float32, _per_channel),
        ),
        modules={RPReLU: _export_rprelu},
    )
)
