"""Bi-Real-Net-18 (Liu et al., "Bi-Real Net: Enhancing the Performance of 1-bit CNNs with Improved
Representational Capability and Advanced Training Algorithm", ECCV 2018), in the shape this
repository benchmarks it.

ResNet-18's plan with binary blocks: a float 7x7 stride-2 stem (3 -> 64, BatchNorm, ReLU, 3x3
max pooling), then 16 blocks in four stages of 64, 128, 256 and 512 channels (stride 2 at the start
of each stage but the first), global average pooling and a float fc. Each block is one binary 3x3
convolution with its own real-valued shortcut::

    out = bn(conv3x3(x)) + shortcut(x)

``shortcut`` is the identity, or AvgPool2d(stride) + 1x1 float conv + BatchNorm where the block
downsamples or widens. The float twin (``binary=False``) is the same network with ``nn.Conv2d``
and a ReLU after each sum (it needs a non-linearity; the BNN's is the sign its next conv takes).

Imports nothing of :mod:`service.model`: ``bench/profile_model.py --checkout`` loads this file by
path to build the same network on an older tree's code.
"""

from __future__ import annotations

import torch
from torch import nn

from service.kernel import BinaryConv2d

# (output channels, stride of the first block) of each stage; 4 blocks a stage.
BIREALNET18_STAGES = ((64, 1), (128, 2), (256, 2), (512, 2))


class BiRealBlock(nn.Module):
    """One Bi-Real block, ``cin`` -> ``cout``: a 3x3 conv, BatchNorm, and its shortcut added."""

    def __init__(self, cin: int, cout: int, stride: int, binary: bool = True) -> None:
        super().__init__()
        self.conv: nn.Module
        if binary:
            self.conv = BinaryConv2d(cin, cout, 3, stride=stride, padding=1)
        else:
            self.conv = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(cout)
        if stride != 1 or cin != cout:
            self.shortcut: nn.Module = nn.Sequential(
                nn.AvgPool2d(stride), nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout)
            )
        else:
            self.shortcut = nn.Identity()
        self.act = nn.Identity() if binary else nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)) + self.shortcut(x))


class BiRealNet18(nn.Module):
    """Bi-Real-Net-18, 224x224 RGB in, ``num_classes`` logits out."""

    def __init__(self, binary: bool = True, num_classes: int = 1000) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False),
            nn.BatchNorm2d(64),
            nn.ReLU(),
            nn.MaxPool2d(3, stride=2, padding=1),
        )
        blocks, cin = [], 64
        for cout, stride in BIREALNET18_STAGES:
            for i in range(4):
                blocks.append(BiRealBlock(cin, cout, stride if i == 0 else 1, binary))
                cin = cout
        self.blocks = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(512, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.flatten(self.pool(self.blocks(self.stem(x)))))


def birealnet18(binary: bool = True, num_classes: int = 1000) -> BiRealNet18:
    """Bi-Real-Net-18, for ``python -m service.export --model service.model.zoo:birealnet18``."""
    return BiRealNet18(binary=binary, num_classes=num_classes)
