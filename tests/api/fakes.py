"""A tiny real binary CNN honouring the LoadedModel contract of docs/CONTRACTS.md (until service.model lands)."""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image
from torch import nn

from service.kernel import BinaryConv2d, PackedWeights


@dataclass
class InputSpec:
    channels: int
    height: int
    width: int
    resize: bool = True
    mean: tuple[float, ...] = (0.5,)
    std: tuple[float, ...] = (0.5,)
    invert: bool = False


@dataclass
class BinaryLayer:
    weights: PackedWeights
    stride: tuple[int, int]
    padding: tuple[int, int]
    dilation: tuple[int, int]
    pad_value: int


class TinyBinaryModel:
    """1x12x12 grey input -> two binary convs -> 4 classes. ``gate`` can hold predict() to fill queues."""

    def __init__(self, name: str = "tiny", seed: int = 0) -> None:
        torch.manual_seed(seed)
        self.name, self.version = name, "1"
        self.labels = ["circle", "square", "line", "dot"]
        self.num_classes = len(self.labels)
        self.input = InputSpec(1, 12, 12)
        self.conv1 = BinaryConv2d(1, 8, 3, padding=1, scale=True).eval()
        self.conv2 = BinaryConv2d(8, 16, 3, stride=2, padding=1, scale=True).eval()
        self.head = nn.Linear(16, self.num_classes).eval()
        self.binary_layers = {
            "features.0": BinaryLayer(self.conv1.packed_weights(), (1, 1), (1, 1), (1, 1), 0),
            "features.1": BinaryLayer(self.conv2.packed_weights(), (2, 2), (1, 1), (1, 1), 0),
        }
        self.packed_size_bytes = sum(layer.weights.nbytes for layer in self.binary_layers.values())
        self.calls = 0
        self.batch_sizes: list[int] = []
        self.gate = threading.Event()
        self.gate.set()
        self._lock = threading.Lock()

    def preprocess(self, image: Image.Image) -> torch.Tensor:
        image = image.convert("L").resize((self.input.width, self.input.height))
        x = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0)[None]
        return (x - 0.5) / 0.5

    @torch.no_grad()
    def predict(self, batch: torch.Tensor) -> torch.Tensor:
        self.gate.wait(10)
        with self._lock:
            self.calls += 1
            self.batch_sizes.append(batch.shape[0])
        h = self.conv1(batch)
        h = self.conv2(h)
        return self.head(h.mean(dim=(2, 3)))

    def summary(self) -> dict:
        return {
            "name": self.name, "version": self.version, "labels": self.labels,
            "input": {"channels": 1, "height": 12, "width": 12},
            "layers": [{"name": n, "op": "binary_conv2d", "weight_shape": [l.weights.out_channels, l.weights.in_channels,
                                                                           *l.weights.kernel_size]}
                       for n, l in self.binary_layers.items()],
            "packed_size_bytes": self.packed_size_bytes,
        }


class GatedModel:
    """Wraps a LoadedModel: counts predict() calls and batch sizes; ``gate`` can hold calls to fill queues."""

    def __init__(self, model) -> None:
        self._model = model
        self.calls = 0
        self.batch_sizes: list[int] = []
        self.gate = threading.Event()
        self.gate.set()
        self._lock = threading.Lock()

    def __getattr__(self, item):
        return getattr(self._model, item)

    def predict(self, batch: torch.Tensor) -> torch.Tensor:
        self.gate.wait(10)
        with self._lock:
            self.calls += 1
            self.batch_sizes.append(batch.shape[0])
        return self._model.predict(batch)


class FakeStore:
    def __init__(self, models: dict, errors: dict | None = None) -> None:
        self.models = models
        self.errors = errors or {}
