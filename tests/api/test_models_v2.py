from __future__ import annotations

import pytest
import torch

from tests.api.conftest import png_bytes, serve
from tests.api.fakes import FakeStore

pytestmark = pytest.mark.anyio


async def test_list_models_shows_ready_and_broken(client, store):
    r = await client.get("/models")
    assert r.status_code == 200
    body = r.json()
    assert body["default_model"] == "tiny"
    by_name = {m["name"]: m for m in body["models"]}
    assert by_name["tiny"]["ready"] is True and by_name["tiny"]["packed_size_bytes"] > 0
    assert by_name["broken"] == {"name": "broken", "version": None, "ready": False,
                                 "error": store.errors["broken"], "packed_size_bytes": None}


async def test_model_detail(client, tiny_model):
    r = await client.get("/models/tiny")
    assert r.status_code == 200
    body = r.json()
    assert body["ready"] and body["summary"]["layers"][0]["name"] == "features.0"
    assert body["packed_size_bytes"] == tiny_model.packed_size_bytes
    broken = await client.get("/models/broken")
    assert broken.status_code == 200 and broken.json()["ready"] is False and broken.json()["error"]
    missing = await client.get("/models/nope")
    assert missing.status_code == 404 and set(missing.json()) == {"error"}


async def test_v2_health_and_metadata(client):
    assert (await client.get("/v2/health/live")).json() == {"live": True}
    assert (await client.get("/v2/health/ready")).json() == {"ready": True}
    server = (await client.get("/v2")).json()
    assert server["name"] == "bnn-serve" and "classification" in server["extensions"]
    meta = (await client.get("/v2/models/tiny")).json()
    assert meta["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 1, 12, 12]}]
    assert {o["name"] for o in meta["outputs"]} == {"logits", "probabilities"}
    assert (await client.get("/v2/models/tiny/ready")).json() == {"name": "tiny", "ready": True}
    r = await client.get("/v2/models/broken/ready")
    assert r.status_code == 503 and r.json()["ready"] is False
    assert (await client.get("/v2/models/nope/ready")).status_code == 404
    assert (await client.get("/v2/models/nope")).status_code == 404
    assert (await client.get("/v2/models/broken")).status_code == 503


def infer_body(x: torch.Tensor, **extra) -> dict:
    return {"inputs": [{"name": "input", "shape": list(x.shape), "datatype": "FP32", "data": x.flatten().tolist()}],
            **extra}


async def test_v2_infer_logits_variable_batch(client, tiny_model):
    for n in (1, 3):
        x = torch.randn(n, 1, 12, 12)
        r = await client.post("/v2/models/tiny/infer", json=infer_body(x, id="req-7"))
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["model_name"] == "tiny" and body["id"] == "req-7"
        out = body["outputs"][0]
        assert out["name"] == "logits" and out["datatype"] == "FP32" and out["shape"] == [n, 4]
        assert torch.allclose(torch.tensor(out["data"]).view(n, 4), tiny_model.predict(x), atol=1e-5)


async def test_v2_infer_nested_data_and_probabilities(client):
    x = torch.randn(1, 1, 12, 12)
    body = {"inputs": [{"name": "input", "shape": [1, 1, 12, 12], "datatype": "FP32", "data": x.tolist()}],
            "outputs": [{"name": "probabilities"}]}
    r = await client.post("/v2/models/tiny/infer", json=body)
    assert r.status_code == 200, r.text
    assert sum(r.json()["outputs"][0]["data"]) == pytest.approx(1.0)


async def test_v2_classification_extension(client, tiny_model):
    x = torch.randn(2, 1, 12, 12)
    r = await client.post("/v2/models/tiny/infer",
                          json=infer_body(x, outputs=[{"name": "logits", "parameters": {"classification": 2}}]))
    assert r.status_code == 200, r.text
    out = r.json()["outputs"][0]
    assert out["datatype"] == "BYTES" and out["shape"] == [2, 2]
    logits = tiny_model.predict(x)
    for row in range(2):
        value, index, label = out["data"][row * 2].split(":")
        assert int(index) == int(logits[row].argmax()) and label == tiny_model.labels[int(index)]
        assert float(value) == pytest.approx(float(logits[row].max()), abs=1e-5)


@pytest.mark.parametrize(
    "mutate,status,fragment",
    [
        (lambda b: b["inputs"][0].update(datatype="INT8"), 400, "FP32"),
        (lambda b: b["inputs"][0].update(shape=[1, 3, 12, 12]), 400, "[N, 1, 12, 12]"),
        (lambda b: b["inputs"][0].update(shape=[0, 1, 12, 12]), 400, "N >= 1"),
        (lambda b: b["inputs"][0].update(data=[1.0] * 10), 400, "needs 144"),
        (lambda b: b["inputs"][0].update(data=[[1.0, 2.0], [3.0]]), 400, "evenly"),
        (lambda b: b["inputs"][0].update(data=["x"] * 144), 400, "numbers"),
        (lambda b: b["inputs"].append(dict(b["inputs"][0])), 400, "exactly one"),
        (lambda b: b.update(outputs=[{"name": "nope"}]), 400, "unknown output"),
        (lambda b: b.update(outputs=[{"name": "logits", "parameters": {"classification": 0}}]), 400, "classification"),
        (lambda b: b.update(inputs=[]), 422, "inputs"),
        (lambda b: b["inputs"][0].update(shape=[100000, 1, 12, 12]), 413, "limit"),
    ],
)
async def test_v2_infer_errors(client, mutate, status, fragment):
    body = infer_body(torch.zeros(1, 1, 12, 12))
    mutate(body)
    r = await client.post("/v2/models/tiny/infer", json=body)
    assert r.status_code == status, r.text
    assert set(r.json()) == {"error"} and fragment in r.json()["error"]


async def test_v2_infer_unknown_model(client):
    r = await client.post("/v2/models/nope/infer", json=infer_body(torch.zeros(1, 1, 12, 12)))
    assert r.status_code == 404 and set(r.json()) == {"error"}


async def test_predict_and_v2_agree(client):
    r = await client.post("/predict", files=[("file", ("a.png", png_bytes(color=0)))], params={"top_k": 1})
    x = torch.full((1, 1, 12, 12), -1.0)  # black pixels after (x/255 - 0.5) / 0.5
    v2 = await client.post("/v2/models/tiny/infer", json=infer_body(x, outputs=[{"name": "probabilities"}]))
    top = r.json()["results"][0]["predictions"][0]
    assert v2.json()["outputs"][0]["data"][top["index"]] == pytest.approx(top["probability"], rel=1e-5)


@pytest.mark.parametrize(
    ("models", "default", "ready"),
    [({}, None, False), ({"tiny": True}, "missing", False), ({"tiny": True}, None, True), ({"tiny": True}, "tiny", True)],
)
async def test_ready_only_when_something_is_served(tiny_model, models, default, ready):
    """A server with no model (or without its configured default) must not pass readiness probes."""
    store = FakeStore({name: tiny_model for name in models}, {"broken": "model.json: invalid"})
    async with serve(store, default_model=default) as client:
        assert (await client.get("/v2/health/live")).status_code == 200
        r = await client.get("/v2/health/ready")
        assert r.status_code == (200 if ready else 503) and r.json() == {"ready": ready}
        assert (await client.get("/readyz")).status_code == (200 if ready else 503)
