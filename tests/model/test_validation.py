"""Each way a model folder can be broken gives a ModelLoadError naming the file and the problem,
and a broken model never stops the others in the store from loading."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from service.model import ModelLoadError, ModelStore, load_model


def _manifest(folder: Path) -> dict:
    return json.loads((folder / "model.json").read_text())


def _write_manifest(folder: Path, data: dict) -> None:
    (folder / "model.json").write_text(json.dumps(data))


def _rewrite_weights(folder: Path, change) -> None:
    """Apply ``change`` to the tensors and keep the checksum consistent (so only the intended fault remains)."""
    tensors = load_file(str(folder / "weights.safetensors"))
    change(tensors)
    save_file(tensors, str(folder / "weights.safetensors"))
    data = _manifest(folder)
    data["weights"]["sha256"] = hashlib.sha256((folder / "weights.safetensors").read_bytes()).hexdigest()
    _write_manifest(folder, data)


def _edit_manifest(edit):
    def apply(folder: Path) -> None:
        data = _manifest(folder)
        edit(data)
        _write_manifest(folder, data)
    return apply


def _node(data: dict, name: str) -> dict:
    return next(n for n in data["graph"]["nodes"] if n["name"] == name)


def _declare(data: dict, tensor: str, **changes) -> None:
    data["weights"]["tensors"][tensor].update(changes)


def _set_file(value: str):
    return _edit_manifest(lambda d: d["weights"].__setitem__("file", value))


def _truncate(folder: Path) -> None:
    path = folder / "weights.safetensors"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _flip_byte(folder: Path) -> None:
    path = folder / "weights.safetensors"
    raw = bytearray(path.read_bytes())
    raw[-10] ^= 0xFF
    path.write_bytes(bytes(raw))


def _symlink_outside(folder: Path) -> None:
    outside = folder.parent.parent / "elsewhere.safetensors"
    shutil.copy(folder / "weights.safetensors", outside)
    os.symlink(outside, folder / "link.safetensors")
    _set_file("link.safetensors")(folder)


def _binary_weight_as_float(tensors: dict) -> None:
    tensors["bconv.weight"] = tensors["bconv.weight"].to(torch.float32)


def _wrong_shape(tensors: dict) -> None:
    tensors["fc.weight"] = torch.zeros(5, 23)


BROKEN = {
    # the manifest
    "missing_manifest": (lambda f: (f / "model.json").unlink(), "model.json", "missing"),
    "not_json": (lambda f: (f / "model.json").write_text("{not json"), "model.json", "not valid JSON"),
    "schema": (_edit_manifest(lambda d: d.pop("labels")), "model.json", "labels"),
    "format_version": (_edit_manifest(lambda d: d.__setitem__("format_version", 99)), "model.json", "format_version"),
    "bad_mean": (_edit_manifest(lambda d: d["input"].__setitem__("mean", [0.5])), "model.json", "one value per channel"),
    "unknown_op": (_edit_manifest(lambda d: _node(d, "relu").__setitem__("op", "gelu")), "model.json", "unknown op 'gelu'"),
    "dangling_input": (_edit_manifest(lambda d: _node(d, "relu").__setitem__("inputs", ["nowhere"])), "model.json", "'nowhere'"),
    "bad_output": (_edit_manifest(lambda d: d["graph"].__setitem__("output", "nowhere")), "model.json", "output"),
    "undeclared_tensor": (_edit_manifest(lambda d: _node(d, "fc")["params"].__setitem__("weight", "ghost")), "model.json", "ghost"),
    "bad_attr": (_edit_manifest(lambda d: _node(d, "bconv")["attrs"].__setitem__("stride", [0, 1])), "model.json", "stride"),
    "extra_attr": (_edit_manifest(lambda d: _node(d, "relu")["attrs"].__setitem__("inplace", True)), "model.json", "unknown attributes"),
    "labels_vs_output": (_edit_manifest(lambda d: d.__setitem__("labels", ["x", "y"])), "model.json", "2 labels"),
    "name_vs_folder": (_edit_manifest(lambda d: d.__setitem__("name", "other")), "model.json", "folder name"),
    # the weights file
    "missing_weights": (lambda f: (f / "weights.safetensors").unlink(), "weights.safetensors", "missing"),
    "truncated": (_truncate, "weights.safetensors", "truncated or corrupt"),
    "checksum_flip": (_flip_byte, "weights.safetensors", "sha256 mismatch"),
    "checksum_manifest": (_edit_manifest(lambda d: d["weights"].__setitem__("sha256", "0" * 64)), "weights.safetensors", "sha256 mismatch"),
    "shape_vs_manifest": (_edit_manifest(lambda d: _declare(d, "fc.weight", shape=[5, 23])), "weights.safetensors", "shape"),
    "dtype_vs_manifest": (_edit_manifest(lambda d: _declare(d, "fc.weight", dtype="uint8")), "weights.safetensors", "dtype"),
    "shape_vs_op": (lambda f: (_rewrite_weights(f, _wrong_shape), _edit_manifest(lambda d: _declare(d, "fc.weight", shape=[5, 23]))(f)),
                    "model.json", "must have shape [5, 24]"),
    "dtype_vs_op": (lambda f: (_rewrite_weights(f, _binary_weight_as_float), _edit_manifest(lambda d: _declare(d, "bconv.weight", dtype="float32"))(f)),
                    "model.json", "must be torch.uint8"),
    "extra_tensor": (lambda f: _rewrite_weights(f, lambda t: t.__setitem__("spare", torch.zeros(2))), "weights.safetensors", "not declared"),
    "missing_tensor": (lambda f: _rewrite_weights(f, lambda t: t.pop("fc.bias")), "weights.safetensors", "missing"),
    "nan": (lambda f: _rewrite_weights(f, lambda t: t["fc.bias"].__setitem__(0, float("nan"))), "weights.safetensors", "non-finite"),
    # paths that would leave the folder
    "escape_dotdot": (_set_file("../good/weights.safetensors"), "model.json", "escapes the model folder"),
    "escape_absolute": (_set_file("/etc/passwd"), "model.json", "escapes the model folder"),
    "escape_symlink": (_symlink_outside, "model.json", "resolves outside the model folder"),
}


@pytest.fixture
def store_with_broken(exported):
    """The good model plus one copy per fault, side by side in one store."""
    _, good = exported
    root = good.parent
    for name, (breaker, _, _) in BROKEN.items():
        folder = root / name
        shutil.copytree(good, folder)
        _edit_manifest(lambda d, n=name: d.__setitem__("name", n))(folder)
        _rewrite_weights(folder, lambda t: None)  # fresh checksum for the copy (unchanged tensors)
        breaker(folder)
    return root


def test_each_fault_is_reported_and_the_good_model_still_loads(store_with_broken):
    store = ModelStore.load(store_with_broken)
    assert list(store.models) == ["good"]
    assert sorted(store.errors) == sorted(BROKEN)
    for name, (_, file, problem) in BROKEN.items():
        message = store.errors[name]
        assert f"{name}/{file}" in message or (file == "weights.safetensors" and name in message), (name, message)
        assert problem in message, (name, message)


@pytest.mark.parametrize("name", sorted(BROKEN))
def test_load_model_raises_model_load_error(store_with_broken, name):
    if name == "name_vs_folder":  # only the store ties names to folders
        assert load_model(store_with_broken / name).name == "other"
        return
    with pytest.raises(ModelLoadError) as info:
        load_model(store_with_broken / name)
    assert BROKEN[name][2] in str(info.value)
    assert info.value.file.startswith(str(store_with_broken / name))


def test_missing_store_directory(tmp_path):
    with pytest.raises(ModelLoadError, match="does not exist"):
        ModelStore.load(tmp_path / "nope")


def test_no_pickle_in_weights(exported):
    """The weights are plain safetensors: readable without torch.load, no pickle opcodes."""
    _, folder = exported
    raw = (folder / "weights.safetensors").read_bytes()
    header_len = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8 : 8 + header_len])
    assert {v["dtype"] for k, v in header.items() if k != "__metadata__"} == {"U8", "F32"}
    assert header["bconv.weight"]["dtype"] == "U8"
