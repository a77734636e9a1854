"""Training-side modules that :mod:`service.export` understands, beyond ``service.kernel.BinaryConv2d``:
:class:`BinaryLinear`, and ReActNet's :class:`RSign` and :class:`RPReLU`."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from service.kernel import PackedWeights, binary_conv2d, pack_weights, sign


class BinaryLinear(nn.Module):
    """Fully connected layer with binary weights and activations: a 1x1 binary convolution.

    ``y = (sign(x) @ sign(W).T) * α + b`` with α = mean|W| per output when ``scale=True``.
    Trained through the same straight-through autograd Function as ``BinaryConv2d``.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = False, scale: bool = False) -> None:
        super().__init__()
        self.in_features, self.out_features, self.use_scale = in_features, out_features, scale
        self.weight = nn.Parameter(torch.empty(out_features, in_features))
        self.bias = nn.Parameter(torch.zeros(out_features)) if bias else None
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, scale={self.use_scale}"

    def channel_scale(self) -> torch.Tensor | None:
        return self.weight.abs().mean(dim=1) if self.use_scale else None

    def packed_weights(self) -> PackedWeights:
        return pack_weights(self.weight.detach().view(self.out_features, self.in_features, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        out = binary_conv2d(
            x.reshape(n, self.in_features, 1, 1), self.weight.view(self.out_features, self.in_features, 1, 1)
        )
        out = out.reshape(n, self.out_features)
        alpha = self.channel_scale()
        if alpha is not None:
            out = out * alpha
        if self.bias is not None:
            out = out + self.bias
        return out


class _SignSTE(torch.autograd.Function):
    """``kernel.sign`` forward; straight-through backward (the gradient where |x| <= 1)."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return sign(x)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return grad * (x.abs() <= 1).to(grad.dtype)


def _channel(v: torch.Tensor) -> torch.Tensor:
    return v.view(1, -1, 1, 1)


class RSign(nn.Module):
    """ReActNet's RSign: ``sign(x + shift)`` per channel, as ±1 floats (``kernel.sign``: +1 where
    ``x + shift >= 0``). The learnt threshold is ``-shift``; the sum is computed first, as ReActNet's
    LearnableBias + sign does, and the exported op and the fused packing compute the same sum."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.channels = channels
        self.shift = nn.Parameter(torch.zeros(channels))

    def extra_repr(self) -> str:
        return f"{self.channels}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _SignSTE.apply(x + _channel(self.shift))


class RPReLU(nn.Module):
    """ReActNet's RPReLU: ``prelu(x + shift_in, slope) + shift_out``, every parameter per channel."""

    def __init__(self, channels: int, init: float = 0.25) -> None:
        super().__init__()
        self.channels = channels
        self.shift_in = nn.Parameter(torch.zeros(channels))
        self.slope = nn.Parameter(torch.full((channels,), init))
        self.shift_out = nn.Parameter(torch.zeros(channels))

    def extra_repr(self) -> str:
        return f"{self.channels}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.prelu(x + _channel(self.shift_in), self.slope) + _channel(self.shift_out)
