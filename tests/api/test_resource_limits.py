"""Resource safety at the API level: the cost model refuses before any work, the memory budget
admits, waits or refuses, and the protocol checks of /v2. (The same classes against a real server,
with peak RSS and health-probe latency: tests/reliability/test_resource_safety.py.)"""

from __future__ import annotations

import asyncio
import base64

import numpy as np
import pytest
import torch

from service.api.budget import MemoryBudget
from service.api.cost import conv_cost, count_json_values
from service.api.errors import PayloadTooLarge, ServiceOverloaded
from tests.api.conftest import png_bytes, serve

pytestmark = pytest.mark.anyio


def b64(x: np.ndarray) -> dict:
    return {"shape": list(x.shape), "dtype": "float32", "b64": base64.b64encode(x.astype("<f4").tobytes()).decode()}


# ---- the memory budget -------------------------------------------------------------------------


async def test_budget_grants_waits_and_refuses():
    budget = MemoryBudget(100, wait_s=0.2)
    a = await budget.reserve(60, "a")
    assert budget.used == 60
    with pytest.raises(PayloadTooLarge, match="BNN_MEMORY_BUDGET_BYTES"):
        await budget.reserve(101, "too big")
    with pytest.raises(ServiceOverloaded) as info:  # waits 0.2 s, then 503 with Retry-After
        await budget.reserve(50, "b")
    assert info.value.headers["Retry-After"] == "1"
    assert budget.used == 60 and not budget._waiters
    waiter = asyncio.ensure_future(budget.reserve(50, "c"))
    await asyncio.sleep(0.01)
    assert not waiter.done()
    a.release()
    a.release()  # idempotent
    c = await waiter
    assert budget.used == 50
    c.release()
    assert budget.used == 0


async def test_budget_is_first_come_first_served():
    budget = MemoryBudget(100, wait_s=1.0)
    held = await budget.reserve(90, "held")
    big = asyncio.ensure_future(budget.reserve(80, "big"))
    await asyncio.sleep(0.01)
    small = asyncio.ensure_future(budget.reserve(5, "small"))  # would fit, but waits behind the big one
    await asyncio.sleep(0.01)
    assert not small.done()
    held.release()
    await asyncio.wait_for(asyncio.gather(big, small), 1)
    assert budget.used == 85


async def test_cancelled_waiter_leaves_no_trace():
    budget = MemoryBudget(10, wait_s=5)
    held = await budget.reserve(10, "held")
    waiter = asyncio.ensure_future(budget.reserve(10, "w"))
    await asyncio.sleep(0.01)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    held.release()
    assert budget.used == 0 and not budget._waiters


# ---- the cost model ----------------------------------------------------------------------------


def test_json_value_count_is_an_upper_bound():
    body = b'{"input":{"shape":[1,1,2,2],"data":[1,2,3,4]},"weight":{"shape":[1,1,1,1],"data":[1]}}'
    assert count_json_values(body) >= 4 + 1 + 4 + 4
    assert count_json_values(b'{"b64":"' + b"A" * 10000 + b'"}') < 5


def test_conv_cost_counts_the_padded_packed_input():
    cost = conv_cost((1, 130, 10, 10), (16, 130, 3, 3), (10, 10), (1, 1), json_out=False, weight_given=True)
    assert cost.packed_input_bytes == 8 * 12 * 12 * 3
    assert cost.output_elements == 16 * 100 and cost.binary_ops == 1600 * 130 * 9
    assert cost.response_bytes >= 4 * 1600 * 4 / 3
    assert cost.peak_bytes > cost.packed_input_bytes + 4 * cost.output_elements


# ---- /conv -------------------------------------------------------------------------------------


async def test_conv_padding_beyond_the_kernels_reach_is_422_before_any_allocation(store):
    async with serve(store) as client:
        one = {"shape": [1, 1, 1, 1], "data": [1]}
        for p in (65536, 11585, 1):
            r = await client.post("/conv", json={"input": one, "weight": one, "padding": p, "stride": p})
            assert r.status_code == 422, r.text
            assert "reach" in r.json()["error"]
        r = await client.post("/conv", json={"input": one, "weight": one, "padding": 0, "stride": 65536})
        assert r.status_code == 200 and r.json()["data"] == [1.0]


async def test_conv_json_answer_over_the_value_limit_is_413_naming_the_setting(store):
    async with serve(store, max_json_values=1000) as client:
        x = {"shape": [1, 1, 8, 8], "data": [1] * 64}
        w = {"shape": [20, 1, 1, 1], "data": [1] * 20}
        r = await client.post("/conv", json={"input": x, "weight": w})
        assert r.status_code == 413 and "BNN_MAX_JSON_VALUES" in r.json()["error"]
        # the same in base64 is answered in base64, within the limit
        r = await client.post("/conv", json={"input": b64(np.ones((1, 1, 8, 8))), "weight": w})
        assert r.status_code == 200 and r.json()["shape"] == [1, 20, 8, 8]
        # a request body with more numbers than the limit is refused before it is parsed
        r = await client.post("/conv", json={"input": {"shape": [1, 1, 40, 40], "data": [1] * 1600}, "weight": w})
        assert r.status_code == 413 and "request body" in r.json()["error"]


async def test_conv_response_over_the_byte_limit_is_413(store):
    async with serve(store, max_response_bytes=100_000) as client:
        r = await client.post("/conv", json={"input": b64(np.ones((1, 1, 64, 64))),
                                             "weight": {"shape": [16, 1, 1, 1], "data": [1] * 16}})
        assert r.status_code == 413 and "BNN_MAX_RESPONSE_BYTES" in r.json()["error"]


async def test_conv_over_the_memory_budget_is_413(store):
    async with serve(store, memory_budget_bytes=1 << 20) as client:
        r = await client.post("/conv", json={"input": b64(np.ones((1, 8, 64, 64))), "weight": b64(np.ones((64, 8, 3, 3))),
                                             "padding": 1})
        assert r.status_code == 413 and "BNN_MEMORY_BUDGET_BYTES" in r.json()["error"]


async def test_conv_answers_are_unchanged_by_chunked_encoding(store):
    """Outputs of more values than one serialisation step, as JSON and as base64, equal the kernel's."""
    from service import kernel

    g = torch.Generator().manual_seed(3)
    x, w = torch.randn(1, 3, 70, 70, generator=g), torch.randn(5, 3, 3, 3, generator=g)
    expected = kernel.binary_conv2d(x, w, padding=1)
    async with serve(store) as client:
        r = await client.post("/conv", json={"input": {"shape": list(x.shape), "data": x.flatten().tolist()},
                                             "weight": {"shape": list(w.shape), "data": w.flatten().tolist()},
                                             "padding": 1})
        assert r.status_code == 200
        assert torch.equal(torch.tensor(r.json()["data"]).view_as(expected), expected)
        r = await client.post("/conv", json={"input": b64(x.numpy()), "weight": b64(w.numpy()), "padding": 1})
        raw = np.frombuffer(base64.b64decode(r.json()["b64"]), "<f4").reshape(expected.shape)
        assert torch.equal(torch.from_numpy(raw.copy()), expected)


# ---- query parameters, /predict ----------------------------------------------------------------


async def test_repeated_query_parameters_are_422(store):
    async with serve(store) as client:
        r = await client.post("/predict?model=tiny&model=other", files=[("file", ("a.png", png_bytes()))])
        assert r.status_code == 422 and "'model'" in r.json()["error"]
        r = await client.get("/models?x=1&x=1")
        assert r.status_code == 422


async def test_predict_request_pixel_budget_is_checked_from_the_headers(store):
    async with serve(store, max_request_pixels=3 * 100 * 100) as client:
        files = [("file", (f"{i}.png", png_bytes(size=(100, 100)))) for i in range(4)]
        r = await client.post("/predict", files=files)
        assert r.status_code == 413 and "BNN_MAX_REQUEST_PIXELS" in r.json()["error"]
        r = await client.post("/predict", files=files[:3])
        assert r.status_code == 200 and len(r.json()["results"]) == 3


# ---- /v2 ---------------------------------------------------------------------------------------


def infer(x: torch.Tensor, outputs=None, name: str = "input") -> dict:
    body = {"inputs": [{"name": name, "shape": list(x.shape), "datatype": "FP32", "data": x.flatten().tolist()}]}
    if outputs is not None:
        body["outputs"] = outputs
    return body


async def test_v2_outputs_each_at_most_once_and_all_by_default(store, tiny_model):
    x = torch.randn(2, 1, 12, 12)
    url = "/v2/models/tiny/infer"
    async with serve(store) as client:
        r = await client.post(url, json=infer(x, [{"name": "logits"}] * 10_000))
        assert r.status_code == 400 and "more than once" in r.json()["error"]
        r = await client.post(url, json=infer(x, [{"name": "nope"}]))
        assert r.status_code == 400 and "unknown output" in r.json()["error"]
        r = await client.post(url, json=infer(x, name="pixels"))
        assert r.status_code == 400 and "'input'" in r.json()["error"]
        r = await client.post(url, json=infer(x))
        assert r.status_code == 200
        outputs = {o["name"]: o for o in r.json()["outputs"]}
        assert sorted(outputs) == ["logits", "probabilities"]
        logits = tiny_model.predict(x)
        assert torch.allclose(torch.tensor(outputs["logits"]["data"]).view(2, 4), logits, atol=1e-5)
        assert torch.allclose(torch.tensor(outputs["probabilities"]["data"]).view(2, 4), torch.softmax(logits, 1),
                              atol=1e-5)


async def test_v2_json_over_the_value_limit_is_413(store):
    async with serve(store, max_json_values=200) as client:
        r = await client.post("/v2/models/tiny/infer", json=infer(torch.randn(2, 1, 12, 12)))
        assert r.status_code == 413 and "binary_data_size" in r.json()["error"]


async def test_waiter_cancelled_as_the_budget_frees_up():
    """The waiter's future is cancelled first, then a release runs _wake (which drops it) before the
    waiter's own clean-up: no error, nothing held, nobody left waiting."""
    budget = MemoryBudget(10, wait_s=5)
    held = await budget.reserve(10, "held")
    waiter = asyncio.ensure_future(budget.reserve(10, "w"))
    await asyncio.sleep(0.01)
    waiter.cancel()
    held.release()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert budget.used == 0 and not budget._waiters
    assert (await budget.reserve(10, "again")).nbytes == 10


async def test_a_client_that_leaves_is_counted_499_and_its_rows_withdrawn(store, tiny_model):
    """The model is held; the client disconnects while its request waits: the request ends at once as 499
    (not after the model, not as 500), and the held batch, whose only request left, is not answered."""
    import json as json_

    async with serve(store) as client:
        app = client.app
        tiny_model.gate.clear()
        body = json_.dumps(infer(torch.randn(1, 1, 12, 12))).encode()
        calls = 0

        async def receive():
            nonlocal calls
            calls += 1
            if calls == 1:
                return {"type": "http.request", "body": body, "more_body": False}
            await asyncio.sleep(0.2)
            return {"type": "http.disconnect"}

        sent = []

        async def send(message):
            sent.append(message)

        scope = {"type": "http", "method": "POST", "path": "/v2/models/tiny/infer", "raw_path": b"/v2/models/tiny/infer",
                 "headers": [(b"content-length", str(len(body)).encode()), (b"content-type", b"application/json")],
                 "query_string": b"", "http_version": "1.1", "scheme": "http", "server": ("t", 80), "client": None,
                 "root_path": ""}
        try:
            started = asyncio.get_running_loop().time()
            await asyncio.wait_for(app(scope, receive, send), 5)
            assert asyncio.get_running_loop().time() - started < 2
        finally:
            tiny_model.gate.set()
        metrics = (await client.get("/metrics")).text
        assert 'bnn_http_requests_total{method="POST",route="/v2/models/{name}/infer",status="499"} 1.0' in metrics
