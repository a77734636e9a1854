"""The shipped model_store/fashion-mnist-bnn reaches >= 90% top-1 on the 10,000 Fashion-MNIST test images.

Data: the Debian package ``dataset-fashion-mnist`` (or ``$FASHION_MNIST_DIR``). Without it the test
skips locally and fails when ``CI`` is set.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from service.model import ModelStore
from training.train_fashion_mnist import FILES, LABELS, data_dir, load_split

STORE = Path(__file__).resolve().parents[2] / "model_store"
MODEL = "fashion-mnist-bnn"


def _require_data() -> Path:
    d = data_dir()
    missing = [name for name in FILES["test"] if not (d / name).is_file()]
    if missing:
        message = (f"Fashion-MNIST files missing from {d}: {missing} "
                   "(apt-get install dataset-fashion-mnist, or set FASHION_MNIST_DIR)")
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return d


@pytest.mark.slow
def test_fashion_mnist_bnn_accuracy():
    _require_data()
    store = ModelStore.load(STORE)
    assert MODEL in store.models, store.errors.get(MODEL, f"{MODEL} not in {STORE}")
    model = store.models[MODEL]
    assert model.labels == LABELS
    assert model.binary_layers, "the shipped model must have binary layers"
    spec = model.input
    assert (spec.channels, spec.height, spec.width) == (1, 28, 28)

    images, labels = load_split("test")
    assert len(images) == 10_000
    x = torch.from_numpy(images).float().div(255.0).unsqueeze(1)
    if spec.invert:
        x = 1.0 - x
    x = (x - spec.mean[0]) / spec.std[0]
    y = torch.from_numpy(labels)
    correct = sum((model.predict(x[i : i + 1000]).argmax(1) == y[i : i + 1000]).sum().item() for i in range(0, 10_000, 1000))
    accuracy = correct / 10_000
    print(f"{MODEL}: top-1 {accuracy:.4f} on the Fashion-MNIST test set")
    assert accuracy >= 0.90
