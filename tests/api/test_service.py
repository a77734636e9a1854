"""Cross-cutting behaviour: error bodies everywhere, limits, auth, metrics, logs, health."""

from __future__ import annotations

import json
import logging

import httpx
import pytest

from service.api.logs import JsonFormatter
from service.api.main import StartupError
from tests.api.conftest import png_bytes, serve

pytestmark = pytest.mark.anyio


async def test_unknown_route_and_wrong_method_use_the_error_body(client):
    r = await client.get("/nope")
    assert r.status_code == 404 and set(r.json()) == {"error"}
    r = await client.get("/predict")
    assert r.status_code == 405 and set(r.json()) == {"error"}
    r = await client.delete("/models")
    assert r.status_code == 405 and set(r.json()) == {"error"}


async def test_body_over_limit_by_content_length_is_413(store):
    async with serve(store, max_body_bytes=4096) as client:
        r = await client.post("/predict", files=[("file", ("a.png", b"x" * 5000))])
        assert r.status_code == 413 and "4096" in r.json()["error"]
        ok = await client.post("/predict", files=[("file", ("a.png", png_bytes()))])
        assert ok.status_code == 200


async def test_streamed_body_over_limit_is_413(store):
    async def chunks():
        for _ in range(10):
            yield b"x" * 1000

    async with serve(store, max_body_bytes=4096) as client:
        r = await client.post("/conv", content=chunks(), headers={"content-type": "application/json"})
        assert r.status_code == 413 and set(r.json()) == {"error"}
        metrics = (await client.get("/metrics")).text
    assert 'bnn_http_requests_total{method="POST",route="unmatched",status="413"}' in metrics or \
        'status="413"' in metrics


async def test_bad_content_length_is_400(store):
    async with serve(store) as client:
        app = client.app
        messages = []

        async def receive():
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message):
            messages.append(message)

        scope = {"type": "http", "method": "POST", "path": "/conv", "headers": [(b"content-length", b"abc")],
                 "query_string": b"", "http_version": "1.1", "scheme": "http", "server": ("t", 80), "client": None,
                 "root_path": "", "raw_path": b"/conv"}
        await app(scope, receive, send)
    assert messages[0]["status"] == 400


async def test_api_key_required_when_set(store):
    async with serve(store, api_key="s3cret") as client:
        files = [("file", ("a.png", png_bytes()))]
        r = await client.post("/predict", files=files)
        assert r.status_code == 401 and set(r.json()) == {"error"}
        assert r.headers["www-authenticate"].startswith("Bearer")
        assert (await client.post("/predict", files=files, headers={"X-API-Key": "wrong"})).status_code == 401
        assert (await client.post("/predict", files=files, headers={"X-API-Key": "s3cret"})).status_code == 200
        assert (await client.get("/models", headers={"Authorization": "Bearer s3cret"})).status_code == 200
        assert (await client.get("/models")).status_code == 401
        assert (await client.get("/v2/models/tiny")).status_code == 401
        assert (await client.post("/conv", json={})).status_code == 401
        for open_path in ("/healthz", "/readyz", "/v2/health/live", "/v2/health/ready", "/metrics"):
            assert (await client.get(open_path)).status_code == 200, open_path


async def test_health(client, store):
    assert (await client.get("/healthz")).json() == {"status": "ok"}
    r = await client.get("/readyz")
    assert r.status_code == 200 and r.json()["ready"] is True and r.json()["not_ready"] == store.errors


async def test_not_ready_before_startup(store):
    from service.api import create_app
    from tests.api.conftest import settings

    app = create_app(settings(), store=store)  # lifespan not started
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
        assert (await client.get("/v2/health/ready")).status_code == 503
        assert (await client.get("/v2/health/live")).status_code == 200
        r = await client.post("/predict", files=[("file", ("a.png", png_bytes()))])
        assert r.status_code == 503 and "loading" in r.json()["error"]


async def test_metrics_count_requests_per_route_and_model(client):
    await client.post("/predict", files=[("file", ("a.png", png_bytes()))] * 3)
    await client.get("/models/nope")
    text = (await client.get("/metrics")).text
    assert 'bnn_http_requests_total{method="POST",route="/predict",status="200"} 1.0' in text
    assert 'bnn_http_request_failures_total{method="GET",route="/models/{name}",status="404"} 1.0' in text
    assert 'bnn_inference_images_total{model="tiny"} 3.0' in text
    assert 'bnn_batch_size_count{model="tiny"} 1.0' in text
    assert 'bnn_model_ready{model="broken"} 0.0' in text
    assert "bnn_queue_seconds_bucket" in text and "bnn_compute_seconds_bucket" in text
    assert "bnn_http_request_duration_seconds_bucket" in text


class _ListHandler(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


async def test_one_json_log_line_per_request(store):
    handler = _ListHandler()
    async with serve(store, log_level="info") as client:
        logger = logging.getLogger("bnn.access")
        logger.addHandler(handler)
        try:
            await client.get("/models", headers={"X-Request-ID": "abc"})
        finally:
            logger.removeHandler(handler)
    lines = [json.loads(JsonFormatter().format(r)) for r in handler.records]
    assert len(lines) == 1
    assert lines[0]["request_id"] == "abc" and lines[0]["route"] == "/models" and lines[0]["status"] == 200
    assert lines[0]["logger"] == "bnn.access" and lines[0]["error"] is None


async def test_the_access_line_of_an_error_carries_its_message(store):
    handler = _ListHandler()
    async with serve(store, log_level="info") as client:
        logger = logging.getLogger("bnn.access")
        logger.addHandler(handler)
        try:
            await client.get("/models/nope")
            await client.post("/predict", content=b"x" * 100, headers={"content-type": "text/plain"})
        finally:
            logger.removeHandler(handler)
    lines = [json.loads(JsonFormatter().format(r)) for r in handler.records]
    assert [line["status"] for line in lines] == [404, 422]
    assert "nope" in lines[0]["error"] and lines[0]["route"] == "/models/{name}"
    assert lines[1]["error"].startswith("invalid request")


async def test_openapi_has_examples(client):
    spec = (await client.get("/openapi.json")).json()
    assert {"/predict", "/conv", "/models", "/v2/models/{name}/infer", "/metrics"} <= set(spec["paths"])
    assert "examples" in json.dumps(spec["components"]["schemas"]["ConvRequest"])
    assert (await client.get("/docs")).status_code == 200


async def test_startup_loads_the_store_from_settings(model_store_dir):
    async with serve(None, model_store=model_store_dir) as client:
        models = {m["name"]: m for m in (await client.get("/models")).json()["models"]}
        assert models["tiny"]["ready"] and not models["broken"]["ready"]
        assert (await client.get("/v2/health/ready")).json() == {"ready": True}
        r = await client.post("/predict", files=[("file", ("a.png", png_bytes()))])
        assert r.status_code == 200


@pytest.mark.parametrize("store", ["absent", "empty"])
async def test_a_store_with_nothing_to_serve_stops_startup(tmp_path, store):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / ".hidden").mkdir()
    with pytest.raises(StartupError, match=f"model store {tmp_path / store} (is not a directory|holds no model)"):
        async with serve(None, model_store=tmp_path / store, default_model=None):
            pass


async def test_allow_empty_store_stays_up_not_ready_without_a_phantom_model(tmp_path):
    async with serve(None, model_store=tmp_path / "absent", default_model=None, allow_empty_store=True) as client:
        assert (await client.get("/healthz")).status_code == 200
        assert (await client.get("/v2/health/ready")).status_code == 503
        assert (await client.get("/models")).json()["models"] == []


async def test_shipped_fashion_mnist_model_serves():
    from tests.tiny_model import REPO

    shipped = REPO / "model_store"
    async with serve(None, model_store=shipped, default_model="fashion-mnist-bnn") as client:
        r = await client.post("/predict", files=[("file", ("x.png", png_bytes(size=(28, 28))))], params={"top_k": 3})
        assert r.status_code == 200, r.text
        assert len(r.json()["results"][0]["predictions"]) == 3
        layers = (await client.get("/models/fashion-mnist-bnn")).json()["summary"]["layers"]
        name = next(layer["name"] for layer in layers if layer["op"] == "binary_conv2d")
        c = next(layer for layer in layers if layer["name"] == name)["attrs"]["in_channels"]
        x = {"shape": [1, c, 7, 7], "data": [1.0] * (c * 49)}
        conv = await client.post("/conv", json={"input": x, "model": "fashion-mnist-bnn", "layer": name})
        assert conv.status_code == 200, conv.text


async def test_every_route_is_labelled_in_the_metrics(store):
    async with serve(store, max_body_bytes=1024, api_key="k") as client:
        for path in ("/docs", "/openapi.json", "/docs/static/swagger-ui.css", "/no/such/path"):
            assert (await client.get(path)).status_code in (200, 401)
        assert (await client.get("/docs/static/swagger-ui.css")).status_code == 200  # open, like /docs
        big = {"content-type": "application/octet-stream", "x-api-key": "k"}
        assert (await client.post("/predict", content=b"x" * 5000, headers=big)).status_code == 413
        assert (await client.post("/conv", json={})).status_code == 401
        text = (await client.get("/metrics")).text
    for route, status in [
        ("/docs", 200),
        ("/openapi.json", 200),
        ("/docs/static", 200),
        ("/predict", 413),
        ("/conv", 401),
        ("unmatched", 401),  # an unknown path is refused for its missing key, under one bounded label
    ]:
        assert f'route="{route}",status="{status}"' in text, (route, status)
