from __future__ import annotations

import asyncio

import pytest
import torch

from tests.api.conftest import png_bytes, serve

pytestmark = pytest.mark.anyio


async def test_concurrent_requests_share_model_calls(store, tiny_model):
    async with serve(store, max_batch_size=32, max_queue_delay_ms=50) as client:
        tiny_model.gate.clear()  # hold the first call so the rest pile up behind it
        requests = [client.post("/predict", files=[("file", (f"{i}.png", png_bytes(color=i)))]) for i in range(16)]
        tasks = [asyncio.ensure_future(r) for r in requests]
        await asyncio.sleep(0.3)
        tiny_model.gate.set()
        responses = await asyncio.gather(*tasks)
        metrics = (await client.get("/metrics")).text
    assert all(r.status_code == 200 for r in responses)
    assert [r.json()["results"][0]["filename"] for r in responses] == [f"{i}.png" for i in range(16)]
    assert tiny_model.calls < 16 and tiny_model.calls <= 3, tiny_model.batch_sizes
    assert sum(tiny_model.batch_sizes) == 16
    assert f'bnn_batch_size_count{{model="tiny"}} {float(tiny_model.calls)}' in metrics


async def test_a_lone_request_does_not_wait_out_the_queue_delay(store, tiny_model):
    """Nothing else on its way: the batch runs at once (the 60 s delay would trip the guard)."""
    async with serve(store, max_queue_delay_ms=60_000) as client:
        bad = await client.post("/predict", files=[("file", ("x.png", b"not an image"))])
        assert bad.status_code == 400  # its announcement must be withdrawn too
        for _ in range(3):
            r = await asyncio.wait_for(client.post("/predict", files=[("file", ("a.png", png_bytes()))]), 20)
            assert r.status_code == 200
    assert tiny_model.batch_sizes == [1, 1, 1]


async def test_requests_on_their_way_join_the_forming_batch(store, tiny_model):
    """Concurrent requests announce themselves on arrival; the batch waits for them, not for the clock."""
    async with serve(store, max_batch_size=32, max_queue_delay_ms=60_000) as client:
        requests = [client.post("/predict", files=[("file", (f"{i}.png", png_bytes(color=i)))]) for i in range(8)]
        responses = await asyncio.wait_for(asyncio.gather(*requests), 20)
    assert all(r.status_code == 200 for r in responses)
    assert sum(tiny_model.batch_sizes) == 8 and tiny_model.calls < 8, tiny_model.batch_sizes


async def test_batched_results_equal_single_results(store, tiny_model):
    xs = [torch.randn(n, 1, 12, 12) for n in (1, 2, 3)]
    body = lambda x: {"inputs": [{"name": "input", "shape": list(x.shape), "datatype": "FP32",  # noqa: E731
                                  "data": x.flatten().tolist()}]}
    async with serve(store, max_batch_size=4, max_queue_delay_ms=50) as client:
        tiny_model.gate.clear()
        tasks = [asyncio.ensure_future(client.post("/v2/models/tiny/infer", json=body(x))) for x in xs]
        await asyncio.sleep(0.3)
        tiny_model.gate.set()
        responses = await asyncio.gather(*tasks)
    for x, r in zip(xs, responses):
        got = torch.tensor(r.json()["outputs"][0]["data"]).view(x.shape[0], 4)
        assert torch.allclose(got, tiny_model.predict(x), atol=1e-5)
    assert max(tiny_model.batch_sizes) <= 4


async def test_batching_off_runs_one_image_per_call(store, tiny_model):
    async with serve(store, max_batch_size=1) as client:
        r = await client.post("/predict", files=[("file", (f"{i}.png", png_bytes())) for i in range(5)])
    assert r.status_code == 200 and len(r.json()["results"]) == 5
    assert tiny_model.batch_sizes == [1] * 5


async def test_full_queue_is_503_with_retry_after(store, tiny_model):
    async with serve(store, max_batch_size=1, max_queue_size=2, max_queue_delay_ms=0) as client:
        tiny_model.gate.clear()
        files = [("file", ("a.png", png_bytes()))]
        first = asyncio.ensure_future(client.post("/predict", files=files))  # taken by the worker, held
        await asyncio.sleep(0.2)
        queued = [asyncio.ensure_future(client.post("/predict", files=files)) for _ in range(2)]
        await asyncio.sleep(0.2)
        refused = await client.post("/predict", files=files)
        tiny_model.gate.set()
        done = await asyncio.gather(first, *queued)
        metrics = (await client.get("/metrics")).text
    assert refused.status_code == 503
    assert int(refused.headers["retry-after"]) >= 1
    assert "queued" in refused.json()["error"]
    assert all(r.status_code == 200 for r in done)
    assert 'bnn_inference_failures_total{model="tiny",reason="queue_full"} 1.0' in metrics


@pytest.mark.parametrize("path", ["/predict", "/predict?model=tiny", "/v2/models/tiny/infer"])
async def test_full_queue_sheds_before_reading_the_body(store, tiny_model, path):
    async with serve(store, max_batch_size=1, max_queue_size=1, max_queue_delay_ms=0) as client:
        tiny_model.gate.clear()
        files = [("file", ("a.png", png_bytes()))]
        first = asyncio.ensure_future(client.post("/predict", files=files))  # taken by the worker, held
        await asyncio.sleep(0.2)
        queued = asyncio.ensure_future(client.post("/predict", files=files))  # fills the queue
        await asyncio.sleep(0.2)
        sent = []

        async def receive():  # the app must answer without asking for the body
            raise AssertionError("the body was read")

        async def send(message):
            sent.append(message)

        raw, _, query = path.partition("?")
        scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
                 "path": raw, "raw_path": raw.encode(), "query_string": query.encode(), "root_path": "",
                 "headers": [(b"content-length", b"100000"), (b"content-type", b"application/json")],
                 "client": ("127.0.0.1", 1), "server": ("test", 80)}
        await client.app(scope, receive, send)
        tiny_model.gate.set()
        assert all(r.status_code == 200 for r in await asyncio.gather(first, queued))
    start = next(m for m in sent if m["type"] == "http.response.start")
    assert start["status"] == 503
    assert (b"retry-after", b"1") in [(k.lower(), v) for k, v in start["headers"]]
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    assert b"queued" in body


async def test_request_timeout_is_504(store, tiny_model):
    async with serve(store, request_timeout_s=0.2) as client:
        tiny_model.gate.clear()
        r = await client.post("/predict", files=[("file", ("a.png", png_bytes()))])
        tiny_model.gate.set()
        assert r.status_code == 504 and "did not finish" in r.json()["error"]
        ok = await client.post("/predict", files=[("file", ("a.png", png_bytes()))])
        assert ok.status_code == 200


async def test_model_failure_is_500_and_the_worker_survives(store, tiny_model, monkeypatch):
    original = tiny_model.predict
    monkeypatch.setattr(tiny_model, "predict", lambda batch: (_ for _ in ()).throw(RuntimeError("boom")))
    async with serve(store) as client:
        r = await client.post("/predict", files=[("file", ("a.png", png_bytes()))])
        assert r.status_code == 500 and "RuntimeError" in r.json()["error"]
        monkeypatch.setattr(tiny_model, "predict", original)
        assert (await client.post("/predict", files=[("file", ("a.png", png_bytes()))])).status_code == 200


async def test_event_loop_never_runs_the_model(store, tiny_model, monkeypatch):
    import threading

    threads = []
    original = tiny_model.predict

    def spy(batch):
        threads.append(threading.current_thread().name)
        return original(batch)

    monkeypatch.setattr(tiny_model, "predict", spy)
    async with serve(store) as client:
        await client.post("/predict", files=[("file", ("a.png", png_bytes()))])
    assert threads and all(name.startswith("bnn-tiny") for name in threads)


async def test_admission_counts_requests_on_their_way(tiny_model):
    """A burst is refused as it arrives: requests still reading their bodies hold a queue place."""
    from service.api.batching import Batcher
    from service.api.errors import ServiceOverloaded
    from service.api.metrics import ServiceMetrics

    batcher = Batcher(tiny_model, ServiceMetrics(), max_batch_size=4, max_queue_delay_ms=1, max_queue_size=2)
    with batcher.arrival():
        batcher.admit()
        with batcher.arrival(), pytest.raises(ServiceOverloaded, match="2 requests on their way"):
            batcher.admit()
        batcher.admit()  # one left: room again
    batcher.admit()
