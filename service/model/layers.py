"""Training-side modules that :mod:`service.export` understands, beyond ``service.kernel.BinaryConv2d``."""

from __future__ import annotations

import math

import torch
from torch import nn

from service.kernel import PackedWeights, binary_conv2d, pack_weights


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
