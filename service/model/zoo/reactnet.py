"""ReActNet-A (Liu et al., "ReActNet: Towards Precise Binary Neural Network with Generalized
Activation Functions", ECCV 2020), as its authors' reference code defines it.

MobileNetV1's plan with binary blocks: a float 3x3 stride-2 stem (3 -> 32, BatchNorm), then 13
blocks over the channel plan 32 -> 64 -> 128 -> 128 -> 256 -> 256 -> 512 (x6) -> 1024 -> 1024,
stride 2 where the channel count grows (except 32 -> 64), global average pooling and a float fc.
Each block is two halves, ``x`` its input::

    out1 = rprelu1(bn3(conv3x3(rsign3(x))) + shortcut(x))      # conv3x3: C -> C, the block's stride
    out2 = rprelu2(bn1(conv1x1(rsign1(out1))) + out1)           # C -> C
         = rprelu2(cat(bn1a(conv1x1a(s)) + out1, bn1b(conv1x1b(s)) + out1))   # C -> 2C, s = rsign1(out1)

``shortcut`` is the identity, or AvgPool2d(2) on a stride-2 block. The binary convolutions scale
each output channel by mean |W| (``BinaryConv2d(scale=True)``) and pad with zeros, as the
reference's HardBinaryConv does; RSign is ``sign(x + shift)`` and RPReLU
``prelu(x + shift_in) + shift_out`` per channel (:mod:`service.model.layers`).

The float twin (``binary=False``) is the same network with ``nn.Conv2d`` and no binarisation (RSign
becomes the identity; RPReLU is its non-linearity): what a user would run in float instead.
"""

from __future__ import annotations

import torch
from torch import nn

from service.kernel import BinaryConv2d

from ..layers import RPReLU, RSign

# Output channels of the stem and of each of the 13 blocks.
REACTNET_A_CHANNELS = (32, 64, 128, 128, 256, 256, 512, 512, 512, 512, 512, 512, 1024, 1024)


def _conv(cin: int, cout: int, kernel: int, stride: int, binary: bool) -> nn.Module:
    padding = kernel // 2
    if binary:
        return BinaryConv2d(cin, cout, kernel, stride=stride, padding=padding, scale=True)
    return nn.Conv2d(cin, cout, kernel, stride=stride, padding=padding, bias=False)


def _rsign(channels: int, binary: bool) -> nn.Module:
    return RSign(channels) if binary else nn.Identity()


class ReActNetBlock(nn.Module):
    """One ReActNet-A block, ``cin`` -> ``cout`` (``cout`` is ``cin`` or ``2 * cin``)."""

    def __init__(self, cin: int, cout: int, stride: int, binary: bool = True) -> None:
        super().__init__()
        if cout not in (cin, 2 * cin):
            raise ValueError(f"a ReActNet-A block keeps or doubles its channels, got {cin} -> {cout}")
        if stride not in (1, 2):
            raise ValueError(f"stride must be 1 or 2, got {stride}")
        self.cin, self.cout = cin, cout
        self.rsign3 = _rsign(cin, binary)
        self.conv3 = _conv(cin, cin, 3, stride, binary)
        self.bn3 = nn.BatchNorm2d(cin)
        self.shortcut = nn.AvgPool2d(2) if stride == 2 else nn.Identity()
        self.rprelu1 = RPReLU(cin)
        self.rsign1 = _rsign(cin, binary)
        if cout == cin:
            self.conv1 = _conv(cin, cin, 1, 1, binary)
            self.bn1 = nn.BatchNorm2d(cin)
        else:
            self.conv1a = _conv(cin, cin, 1, 1, binary)
            self.bn1a = nn.BatchNorm2d(cin)
            self.conv1b = _conv(cin, cin, 1, 1, binary)
            self.bn1b = nn.BatchNorm2d(cin)
        self.rprelu2 = RPReLU(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out1 = self.rprelu1(self.shortcut(x) + self.bn3(self.conv3(self.rsign3(x))))
        s = self.rsign1(out1)
        if self.cout == self.cin:
            out2 = self.bn1(self.conv1(s)) + out1
        else:
            out2 = torch.cat([self.bn1a(self.conv1a(s)) + out1, self.bn1b(self.conv1b(s)) + out1], dim=1)
        return self.rprelu2(out2)


class ReActNetA(nn.Module):
    """ReActNet-A; ``width`` scales every channel count (1.0: the paper's; smaller for tests)."""

    def __init__(self, binary: bool = True, num_classes: int = 1000, width: float = 1.0) -> None:
        super().__init__()
        channels = [max(1, round(c * width)) for c in REACTNET_A_CHANNELS]
        self.stem = nn.Sequential(
            nn.Conv2d(3, channels[0], 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(channels[0])
        )
        blocks = []
        for cin, cout, full in zip(channels, channels[1:], REACTNET_A_CHANNELS[1:]):
            # stride 2 where the plan's channel count grows, except into its 64
            stride = 2 if cout != cin and full != 64 else 1
            blocks.append(ReActNetBlock(cin, cout, stride, binary))
        self.blocks = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(channels[-1], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.flatten(self.pool(self.blocks(self.stem(x)))))


def reactnet_a(binary: bool = True, num_classes: int = 1000, width: float = 1.0) -> ReActNetA:
    """ReActNet-A, for ``python -m service.export --model service.model.zoo:reactnet_a``."""
    return ReActNetA(binary=binary, num_classes=num_classes, width=width)
