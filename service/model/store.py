"""Loading and validating model folders: :class:`ModelStore`, :class:`LoadedModel`, :class:`ModelLoadError`."""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from pydantic import ValidationError
from safetensors.torch import load as load_safetensors

from .graph import BinaryLayer, Executor, GraphError
from .manifest import MANIFEST_FILE, InputSpec, Manifest
from .ops import op_spec
from .preprocess import preprocess as _preprocess

_DTYPES = {"uint8": torch.uint8, "float32": torch.float32}
MAX_MANIFEST_BYTES = 4 << 20


class ModelLoadError(Exception):
    """A model folder that cannot be served; the message names the file and the problem."""

    def __init__(self, file: str | os.PathLike, problem: str) -> None:
        self.file = str(file)
        self.problem = problem
        super().__init__(f"{self.file}: {problem}")


def _pydantic_problem(e: ValidationError) -> str:
    parts = []
    for err in e.errors()[:5]:
        where = ".".join(str(p) for p in err["loc"]) or "(top level)"
        parts.append(f"{where}: {err['msg'].removeprefix('Value error, ')}")
    more = f" (+{e.error_count() - 5} more)" if e.error_count() > 5 else ""
    return "invalid manifest: " + "; ".join(parts) + more


def _inside(folder: Path, relative: str, what: str, manifest_path: Path) -> Path:
    """``folder / relative``, refusing anything that would leave the folder (absolute, '..', symlinks)."""
    if not relative or "\\" in relative or "\x00" in relative:
        raise ModelLoadError(manifest_path, f"{what} path {relative!r} is not a plain relative path")
    rel = Path(relative)
    if rel.is_absolute() or ".." in rel.parts:
        raise ModelLoadError(manifest_path, f"{what} path {relative!r} escapes the model folder")
    target = (folder / rel).resolve()
    if not target.is_relative_to(folder.resolve()):
        raise ModelLoadError(manifest_path, f"{what} path {relative!r} resolves outside the model folder")
    return target


def read_manifest(folder: str | os.PathLike) -> Manifest:
    path = Path(folder) / MANIFEST_FILE
    if not path.is_file():
        raise ModelLoadError(path, "missing")
    if path.stat().st_size > MAX_MANIFEST_BYTES:
        raise ModelLoadError(path, f"larger than {MAX_MANIFEST_BYTES} bytes")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ModelLoadError(path, f"not valid JSON: {e}") from None
    try:
        return Manifest.model_validate(data)
    except ValidationError as e:
        raise ModelLoadError(path, _pydantic_problem(e)) from None


def read_weights(folder: Path, manifest: Manifest) -> tuple[dict[str, torch.Tensor], int]:
    """The weights file's tensors, checked against the manifest (parse, checksum, names, dtypes, shapes)."""
    manifest_path = folder / MANIFEST_FILE
    path = _inside(folder, manifest.weights.file, "weights", manifest_path)
    if not path.is_file():
        raise ModelLoadError(path, "weights file missing")
    raw = path.read_bytes()
    try:
        tensors = load_safetensors(raw)
    except Exception as e:  # noqa: BLE001 - safetensors raises several types for a bad file
        raise ModelLoadError(path, f"not a readable safetensors file (truncated or corrupt?): {e}") from None
    digest = hashlib.sha256(raw).hexdigest()
    if digest != manifest.weights.sha256:
        raise ModelLoadError(path, f"sha256 mismatch: file has {digest}, manifest says {manifest.weights.sha256}")
    declared = manifest.weights.tensors
    missing = sorted(set(declared) - set(tensors))
    extra = sorted(set(tensors) - set(declared))
    if missing:
        raise ModelLoadError(path, f"tensors declared in the manifest are missing: {missing[:5]}")
    if extra:
        raise ModelLoadError(path, f"tensors not declared in the manifest: {extra[:5]}")
    for name, spec in declared.items():
        t = tensors[name]
        if t.dtype != _DTYPES[spec.dtype]:
            raise ModelLoadError(path, f"tensor {name!r} has dtype {t.dtype}, manifest says {spec.dtype}")
        if list(t.shape) != spec.shape:
            raise ModelLoadError(path, f"tensor {name!r} has shape {list(t.shape)}, manifest says {spec.shape}")
        if t.is_floating_point() and not torch.isfinite(t).all():
            raise ModelLoadError(path, f"tensor {name!r} has non-finite values")
    return tensors, len(raw)


@dataclass
class LoadedModel:
    """A validated model, ready to serve. ``predict`` is thread-safe and does no weight work."""

    manifest: Manifest
    folder: Path
    executor: Executor
    weights_file_bytes: int
    packed_size_bytes: int
    float_size_bytes: int
    layer_shapes: dict[str, list[int]] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.manifest.name

    @property
    def version(self) -> str:
        return self.manifest.version

    @property
    def labels(self) -> list[str]:
        return list(self.manifest.labels)

    @property
    def num_classes(self) -> int:
        return len(self.manifest.labels)

    @property
    def input(self) -> InputSpec:
        return self.manifest.input

    @property
    def binary_layers(self) -> dict[str, BinaryLayer]:
        return self.executor.binary_layers

    def preprocess(self, image: Image.Image) -> torch.Tensor:
        return _preprocess(image, self.manifest.input)

    def check_batch(self, batch: torch.Tensor) -> torch.Tensor:
        spec = self.input
        expected = (spec.channels, spec.height, spec.width)
        if not isinstance(batch, torch.Tensor):
            raise ValueError(f"batch must be a torch.Tensor, got {type(batch).__name__}")
        if batch.dim() != 4 or tuple(batch.shape[1:]) != expected or batch.shape[0] < 1:
            raise ValueError(f"batch must have shape [N>=1, {', '.join(map(str, expected))}], got {list(batch.shape)}")
        if not batch.is_floating_point():
            raise ValueError(f"batch must be floating point, got dtype {batch.dtype}")
        if batch.device.type != "cpu":
            raise ValueError(f"batch must be on the CPU, got {batch.device}")
        return batch.to(torch.float32)

    def predict(self, batch: torch.Tensor) -> torch.Tensor:
        """Logits [N, num_classes] for a float32 batch [N, C, H, W]."""
        x = self.check_batch(batch)
        with torch.no_grad():
            return self.executor.run(x)

    def summary(self) -> dict[str, Any]:
        layers = []
        for node in self.manifest.graph.nodes:
            entry: dict[str, Any] = {
                "name": node.name,
                "op": node.op,
                "inputs": list(node.inputs),
                "attrs": node.attrs.model_dump(mode="json"),
            }
            entry["params"] = {role: self.manifest.weights.tensors[t].shape for role, t in node.params.items()}
            if node.name in self.layer_shapes:
                entry["output_shape"] = self.layer_shapes[node.name]
            layers.append(entry)
        binary_packed = sum(layer.weights.nbytes for layer in self.binary_layers.values())
        binary_float = sum(layer.float_size_bytes for layer in self.binary_layers.values())
        return {
            "name": self.name,
            "version": self.version,
            "description": self.manifest.description,
            "input": self.input.model_dump(),
            "labels": self.labels,
            "num_classes": self.num_classes,
            "layers": layers,
            "binary_layers": sorted(self.binary_layers),
            # binary convs whose epilogue writes the next binary convs' packed input (no float output)
            "packed_outputs": list(self.executor.packed_outputs),
            # binary convs that write their floats and, from the same pass, that packed input
            "dual_outputs": list(self.executor.dual_outputs),
            # steps that run several nodes as one (a binary conv with its residual sum and PReLU)
            "fusions": self.executor.fusions,
            # rsign nodes (ReActNet) computed by a binary conv's packing or dual output, or one packing step
            "sign_shifts": self.executor.sign_shifts,
            "sizes": {
                "weights_file_bytes": self.weights_file_bytes,
                "packed_size_bytes": self.packed_size_bytes,
                "float_size_bytes": self.float_size_bytes,
                "binary_weights_packed_bytes": binary_packed,
                "binary_weights_float_bytes": binary_float,
                "binary_compression": round(binary_float / binary_packed, 2) if binary_packed else None,
                "overall_compression": round(self.float_size_bytes / self.packed_size_bytes, 2)
                if self.packed_size_bytes
                else None,
            },
        }


def load_model(folder: str | os.PathLike) -> LoadedModel:
    """Load and fully validate one model folder; raises :class:`ModelLoadError`."""
    folder = Path(folder)
    manifest_path = folder / MANIFEST_FILE
    if not folder.is_dir():
        raise ModelLoadError(folder, "not a directory")
    manifest = read_manifest(folder)
    tensors, file_bytes = read_weights(folder, manifest)
    try:
        executor = Executor(manifest.graph.nodes, manifest.graph.output, tensors)
    except GraphError as e:
        raise ModelLoadError(manifest_path, str(e)) from None
    binary = {  # the bit-packed tensors
        t
        for node in manifest.graph.nodes
        for role, t in node.params.items()
        if (op := op_spec(node.op)) is not None and op.param(role).bits
    }
    packed = sum(t.numel() * t.element_size() for t in tensors.values())
    # the same network with every weight as float32 (binary weights unpacked to one float each)
    float_size = sum(layer.float_size_bytes for layer in executor.binary_layers.values())
    float_size += sum(t.numel() * 4 for name, t in tensors.items() if name not in binary)
    model = LoadedModel(manifest, folder, executor, file_bytes, packed, float_size)
    # One dry run: catches shapes that do not chain (e.g. a linear layer after the wrong flatten)
    # and the wrong number of classes, before the model is offered.
    spec = manifest.input
    try:
        with torch.no_grad():
            out = executor.run(torch.zeros(1, spec.channels, spec.height, spec.width), model.layer_shapes)
    except GraphError as e:
        raise ModelLoadError(
            manifest_path, f"graph does not run on a [1, {spec.channels}, {spec.height}, {spec.width}] input: {e}"
        ) from None
    if list(out.shape) != [1, model.num_classes]:
        raise ModelLoadError(
            manifest_path,
            f"graph output has shape {list(out.shape)}, expected [N, {model.num_classes}] for {model.num_classes} labels",
        )
    return model


def version_folders(folder: Path) -> list[Path]:
    """The folders that each hold one version of the model in ``folder``: the folder itself when it
    has a model.json, else its subfolders that have one (Triton's ``<name>/<version>/`` layout)."""
    if (folder / MANIFEST_FILE).is_file():
        return [folder]
    return sorted(p for p in folder.iterdir() if p.is_dir() and (p / MANIFEST_FILE).is_file())


def version_order(version: str) -> tuple[tuple[int, int | str], ...]:
    """Sort key of version strings: numeric parts as numbers (so 10 > 9 and 1.10.0 > 1.9.2)."""
    return tuple((0, int(p)) if p.isdigit() else (1, p) for p in re.split(r"[.\-+_]", version))


def load_versions(folder: Path) -> dict[str, LoadedModel]:
    """Every version of the model in ``folder``, keyed by its manifest's ``version``, oldest first.
    ModelLoadError for the first version that does not load, a model name that is not the folder's,
    two folders with one version, or no model.json at all."""
    found = version_folders(folder)
    if not found:
        raise ModelLoadError(folder / MANIFEST_FILE, "no model.json here or in a version subfolder")
    versions: dict[str, LoadedModel] = {}
    for path in found:
        model = load_model(path)
        if model.name != folder.name:
            raise ModelLoadError(
                path / MANIFEST_FILE, f"model name {model.name!r} differs from its folder name {folder.name!r}"
            )
        if model.version in versions:
            raise ModelLoadError(path / MANIFEST_FILE, f"version {model.version!r} is also in another folder")
        versions[model.version] = model
    return dict(sorted(versions.items(), key=lambda kv: version_order(kv[0])))


def model_folders(root: Path) -> list[Path]:
    """The model folders of a store: its visible subfolders."""
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


@dataclass
class ModelStore:
    """Every model folder under a root: ``versions`` (name -> version -> model), ``models`` (each
    name's latest version) and ``errors`` (folder name -> reason)."""

    root: Path
    models: dict[str, LoadedModel] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    versions: dict[str, dict[str, LoadedModel]] = field(default_factory=dict)

    @classmethod
    def load(cls, path: str | os.PathLike) -> ModelStore:
        root = Path(path)
        if not root.is_dir():
            raise ModelLoadError(root, "model store directory does not exist")
        store = cls(root)
        for folder in model_folders(root):
            try:
                versions = load_versions(folder)
            except ModelLoadError as e:
                store.errors[folder.name] = str(e)
            except Exception as e:  # noqa: BLE001 - one broken model must not stop the others
                store.errors[folder.name] = f"{folder}: unexpected {type(e).__name__}: {e}"
            else:
                store.versions[folder.name] = versions
                store.models[folder.name] = next(reversed(versions.values()))
        return store
