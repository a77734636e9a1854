"""Packed binary models: the model-store format, its validation, and inference.

    from service.model import ModelStore, LoadedModel, ModelLoadError
    store = ModelStore.load("model_store")   # one LoadedModel per good folder, errors for the rest

Modules: ``manifest`` (the model.json schema), ``ops`` (the op registry: one declaration per op,
its attributes, parameters, builder and exporter matchers), ``graph`` (the executor),
``preprocess`` (image -> tensor), ``store`` (loading and validation), ``layers`` (training-side
modules the exporter understands, e.g. :class:`BinaryLinear`).
"""

from .graph import BinaryLayer
from .manifest import FORMAT_VERSION, InputSpec, Manifest
from .store import LoadedModel, ModelLoadError, ModelStore, load_model

__all__ = [
    "FORMAT_VERSION",
    "BinaryLayer",
    "InputSpec",
    "LoadedModel",
    "Manifest",
    "ModelLoadError",
    "ModelStore",
    "load_model",
]
