"""Test doubles around the real model layer: a call-counting, gateable model and a store holder."""

from __future__ import annotations

import threading

import torch


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
