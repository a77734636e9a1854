"""``BinaryConv2d``: the drop-in ``nn.Conv2d`` with binary weights and activations."""

from __future__ import annotations

import math

import torch
from torch import nn

from .conv import binary_conv2d
from .geometry import ConvGeometry, IntPair, pair
from .packing import PackedWeights, pack_weights


class BinaryConv2d(nn.Module):
    """Drop-in for ``nn.Conv2d`` with binary weights and activations.

    Keeps float latent weights for training (gradients by the straight-through estimator) and
    packs them once when used in eval mode. ``scale=True`` multiplies each output channel by
    α = mean|W| (XNOR-Net); ``bias=True`` adds a learnt bias. Both are fused into the kernel at
    inference. Under ``torch.compile`` the layer runs the ``bnn::binary_conv2d`` op on its float
    weights (packing them per call), so the compiled graph has no break.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: IntPair,
        stride: IntPair = 1,
        padding: IntPair = 0,
        dilation: IntPair = 1,
        groups: int = 1,
        bias: bool = False,
        scale: bool = False,
        pad_value: int = 0,
    ) -> None:
        super().__init__()
        if in_channels < 1 or out_channels < 1:
            raise ValueError(f"in_channels and out_channels must be >= 1, got {in_channels}, {out_channels}")
        if groups < 1 or in_channels % groups or out_channels % groups:
            raise ValueError(f"groups={groups} must divide in_channels={in_channels} and out_channels={out_channels}")
        self.in_channels, self.out_channels, self.groups = in_channels, out_channels, groups
        self.kernel_size = pair(kernel_size, "kernel_size", 1)
        self.geometry = ConvGeometry.parse(stride, padding, dilation, pad_value, groups)
        self.stride, self.padding, self.dilation = self.geometry.stride, self.geometry.padding, self.geometry.dilation
        self.pad_value = self.geometry.pad_value
        self.use_scale = scale
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels // groups, *self.kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        self._packed: PackedWeights | None = None
        self._packed_version: tuple[int, int] | None = None

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
            f"padding={self.padding}, dilation={self.dilation}, groups={self.groups}, "
            f"bias={self.bias is not None}, scale={self.use_scale}, pad_value={self.pad_value}"
        )

    def channel_scale(self) -> torch.Tensor | None:
        """α = mean |W| over each output channel's weights, or None without scaling."""
        if not self.use_scale:
            return None
        return self.weight.abs().mean(dim=(1, 2, 3))

    def packed_weights(self) -> PackedWeights:
        """The bit-packed weights, packed once and repacked only if the weights change."""
        if self.groups != 1:
            raise ValueError("packed weights are available for groups=1 only")
        if self.weight.is_inference():
            # A layer built under torch.inference_mode(): its tensors have no version counter, so an
            # in-place change could not be seen; pack on every call (correct, and cheap next to the conv).
            return pack_weights(self.weight)
        version = (self.weight._version, self.weight.data_ptr())
        if self._packed is None or self._packed_version != version:
            self._packed = pack_weights(self.weight)
            self._packed_version = version
        return self._packed

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        g = self.geometry
        grad_needed = torch.is_grad_enabled() and (x.requires_grad or self.weight.requires_grad)
        if self.training or grad_needed or torch.compiler.is_compiling():
            out = binary_conv2d(x, self.weight, g.stride, g.padding, g.dilation, g.pad_value, g.groups)
            alpha = self.channel_scale()
            if alpha is not None:
                out = out * alpha.view(1, -1, 1, 1)
            if self.bias is not None:
                out = out + self.bias.view(1, -1, 1, 1)
            return out
        with torch.no_grad():
            weight = self.packed_weights() if self.groups == 1 else self.weight
            return binary_conv2d(
                x,
                weight,
                g.stride,
                g.padding,
                g.dilation,
                g.pad_value,
                g.groups,
                scale=self.channel_scale(),
                bias=None if self.bias is None else self.bias.detach(),
            )
