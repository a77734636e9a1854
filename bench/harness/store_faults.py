"""Broken model folders beside a good one: each must be not-ready with its reason, the good ones must
serve, and nothing in the store may ever be unpickled (a planted pickle would create a marker file).
Shared by tests/reliability/test_store_faults.py and bench/soak.py; the good model is theirs to give."""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import shutil
from collections.abc import Callable
from pathlib import Path

import httpx
import torch
from PIL import Image

from bench.harness.hostile import Outcome, _save


def with_planted_pickle(good: str) -> str:
    """The name of the good model's copy that has pickles planted beside it."""
    return f"{good}-with-planted-pickle"


class _Planted:
    """Unpickling this runs open(marker, 'w'): proof that something unpickled it."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def planted_pickle(marker: Path) -> bytes:
    return pickle.dumps(_Planted(marker))


def planted_torch_save(marker: Path) -> bytes:
    buf = io.BytesIO()
    torch.save({"weight": torch.zeros(2), "payload": _Planted(marker)}, buf)
    return buf.getvalue()


def _manifest(folder: Path) -> dict:
    return json.loads((folder / "model.json").read_text())


def _edit(folder: Path, change: Callable[[dict], None]) -> None:
    data = _manifest(folder)
    change(data)
    (folder / "model.json").write_text(json.dumps(data))


def _weights(folder: Path) -> Path:
    return folder / "weights.safetensors"


def _replace_weights(folder: Path, blob: bytes, name: str = "weights.safetensors") -> None:
    """Put ``blob`` where the weights go, with a matching checksum, so only its content is wrong."""
    (folder / name).write_bytes(blob)
    _edit(folder, lambda d: d["weights"].update(file=name, sha256=hashlib.sha256(blob).hexdigest()))


def _first_tensor(folder: Path) -> str:
    return sorted(_manifest(folder)["weights"]["tensors"])[0]


def _faults(marker: Path, good: str) -> dict[str, tuple[Callable[[Path], None], str]]:
    def truncate(f: Path) -> None:
        raw = _weights(f).read_bytes()
        _weights(f).write_bytes(raw[: len(raw) // 2])

    def flip(f: Path) -> None:
        raw = bytearray(_weights(f).read_bytes())
        raw[-5] ^= 0xFF
        _weights(f).write_bytes(bytes(raw))

    def wrong_shape(f: Path) -> None:
        t = _first_tensor(f)
        _edit(f, lambda d: d["weights"]["tensors"][t].update(shape=[3, 3, 3]))

    def wrong_dtype(f: Path) -> None:
        t = _first_tensor(f)
        dtype = _manifest(f)["weights"]["tensors"][t]["dtype"]
        _edit(f, lambda d: d["weights"]["tensors"][t].update(dtype="uint8" if dtype == "float32" else "float32"))

    def escape_symlink(f: Path) -> None:
        outside = f.parent.parent / f"outside-{f.name}.safetensors"
        shutil.copy(_weights(f), outside)
        os.symlink(outside, f / "link.safetensors")
        _edit(f, lambda d: d["weights"].update(file="link.safetensors"))

    return {
        "manifest-invalid": (lambda f: _edit(f, lambda d: d.pop("labels")), "labels"),
        "manifest-not-json": (lambda f: (f / "model.json").write_text("{'name': 'x',"), "not valid JSON"),
        "manifest-is-a-pickle": (lambda f: (f / "model.json").write_bytes(planted_pickle(marker)), "model.json"),
        "weights-truncated": (truncate, "truncated or corrupt"),
        "weights-wrong-checksum": (flip, "sha256 mismatch"),
        "weights-wrong-shape": (wrong_shape, "shape"),
        "weights-wrong-dtype": (wrong_dtype, "dtype"),
        "path-escapes-dotdot": (lambda f: _edit(f, lambda d: d["weights"].update(file=f"../{good}/weights.safetensors")),
                                "escapes the model folder"),
        "path-escapes-absolute": (lambda f: _edit(f, lambda d: d["weights"].update(file="/etc/passwd")),
                                  "escapes the model folder"),
        "path-escapes-symlink": (escape_symlink, "outside the model folder"),
        "weights-are-a-pickle": (lambda f: _replace_weights(f, planted_pickle(marker)), "not a readable safetensors"),
        "weights-are-torch-save": (lambda f: _replace_weights(f, planted_torch_save(marker)),
                                   "not a readable safetensors"),
        "weights-named-pkl": (lambda f: _replace_weights(f, planted_pickle(marker), "weights.pkl"),
                              "not a readable safetensors"),
        "weights-are-an-image": (lambda f: _replace_weights(f, _save(Image.new("L", (4, 4)), "PNG")),
                                 "not a readable safetensors"),
    }


def build_store(root: Path, marker: Path, good_model: Path) -> dict[str, str]:
    """A store with ``good_model`` (a model folder, copied in under its folder's name, which is its
    model name), the good model beside planted pickles, and one copy per fault.
    Returns the broken folder names -> a fragment their reason must contain."""
    good = root / good_model.name
    shutil.copytree(good_model, good)
    planted = root / with_planted_pickle(good.name)
    shutil.copytree(good, planted)
    _edit(planted, lambda d: d.update(name=planted.name))
    for name in ("model.pkl", "model.pt", "weights.pth", "__init__.py.pkl"):
        (planted / name).write_bytes(planted_pickle(marker))
    (planted / "pytorch_model.bin").write_bytes(planted_torch_save(marker))
    expected = {}
    for name, (breaker, fragment) in _faults(marker, good.name).items():
        folder = root / name
        shutil.copytree(good, folder)
        _edit(folder, lambda d, n=name: d.update(name=n))
        breaker(folder)
        expected[name] = fragment
    return expected


def check_store(client: httpx.Client, broken: dict[str, str], marker: Path, image: bytes, good: str) -> list[Outcome]:
    """One outcome per folder: broken ones report not-ready with the reason; the good model ``good``
    and its copy beside planted pickles predict."""
    outcomes = []
    for name, fragment in broken.items():
        problems = []
        r = client.get(f"/models/{name}")
        if r.status_code != 200 or r.json().get("ready") is not False:
            problems.append(f"GET /models/{name}: {r.status_code} {r.text[:200]}")
        elif fragment.lower() not in (r.json().get("error") or "").lower():
            problems.append(f"reason {r.json().get('error')!r} does not mention {fragment!r}")
        r = client.get(f"/v2/models/{name}/ready")
        if r.status_code != 503 or r.json() != {"name": name, "ready": False}:
            problems.append(f"/v2/models/{name}/ready: {r.status_code} {r.text[:200]}")
        r = client.post("/predict", params={"model": name}, files=[("file", ("a.png", image))])
        if r.status_code != 503 or "not ready" not in r.json().get("error", ""):
            problems.append(f"POST /predict?model={name}: {r.status_code} {r.text[:200]}")
        outcomes.append(Outcome(name, "model-store", r.status_code, "; ".join(problems) or None))
    for name in (good, with_planted_pickle(good)):
        r = client.post("/predict", params={"model": name}, files=[("file", ("a.png", image))])
        ready = client.get(f"/v2/models/{name}/ready")
        problem = None
        if r.status_code != 200 or ready.json() != {"name": name, "ready": True}:
            problem = f"good model {name} does not serve: {r.status_code} {r.text[:200]}; ready {ready.text}"
        outcomes.append(Outcome(f"{name} serves", "model-store", r.status_code, problem))
    outcomes.append(Outcome("nothing unpickled", "model-store", None,
                            f"a planted pickle was unpickled: {marker} exists" if marker.exists() else None))
    return outcomes
