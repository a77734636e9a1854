"""The tiny binary CNN the API and reliability tests export and serve: fast to export and run."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from service.export import export_model
from service.kernel import BinaryConv2d

REPO = Path(__file__).resolve().parents[1]
TINY_LABELS = ["circle", "square", "line", "dot"]
TINY_INPUT = {"channels": 1, "height": 12, "width": 12, "mean": [0.5], "std": [0.5]}


class TinyNet(nn.Module):
    """1x12x12 grey -> two binary convs ('features.0', 'features.1') -> 4 classes."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(BinaryConv2d(1, 8, 3, padding=1, scale=True),
                                      BinaryConv2d(8, 16, 3, stride=2, padding=1, scale=True))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.head = nn.Linear(16, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.flatten(self.pool(self.features(x))))


def export_tiny(folder: Path, name: str = "tiny", version: str = "1", seed: int = 0) -> Path:
    """A freshly seeded TinyNet exported to ``folder`` as model ``name`` (another seed: other weights)."""
    torch.manual_seed(seed)
    return export_model(TinyNet(), folder, name, version, TINY_INPUT, TINY_LABELS)
