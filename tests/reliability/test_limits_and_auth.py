"""Nothing is allocated before validation (the server's RSS stays flat under requests that claim
huge tensors or images), and with an API key every operation but health needs it."""

from __future__ import annotations

import json

import httpx
import pytest

from bench.harness.hostile import png_declaring
from bench.harness.server import running_server

OPEN_PATHS = {"/healthz", "/readyz", "/v2/health/live", "/v2/health/ready", "/metrics"}


def huge_claims(model: str) -> list[tuple[str, bytes, dict]]:
    """(path, body, headers) of small requests that each claim about 10^12 elements or pixels."""
    w = {"shape": [1, 1, 1, 1], "data": [1.0]}
    conv = [
        {"input": {"shape": [1, 1, 10**6, 10**6], "data": [1.0]}, "weight": w},
        {"input": {"shape": [10**4, 10**4, 10**2, 10**2], "b64": "AACAPw=="}, "weight": w},
        {"input": {"shape": [1, 1, 2, 2], "data": [1.0] * 4}, "weight": {"shape": [10**6, 1, 10**3, 10**3], "data": [1]}},
    ]
    v2 = {"inputs": [{"name": "input", "shape": [10**12, 1, 12, 12], "datatype": "FP32", "data": [0.0]}]}
    out = [("/conv", json.dumps(b).encode(), {"content-type": "application/json"}) for b in conv]
    out.append((f"/v2/models/{model}/infer", json.dumps(v2).encode(), {"content-type": "application/json"}))
    return out


def test_huge_claims_are_refused_before_allocation(server, http):
    bomb = png_declaring(10**6, 10**6)
    http.get("/healthz")
    before = server.rss()
    for _ in range(10):
        for path, body, headers in huge_claims("tiny"):
            r = http.post(path, content=body, headers=headers)
            assert r.status_code == 413 and "limit" in r.json()["error"], r.text
            assert r.elapsed.total_seconds() < 2
        r = http.post("/predict", files=[("file", ("bomb.png", bomb))])
        assert r.status_code == 413, r.text
    growth = server.rss() - before
    assert growth < 32 * 2**20, f"RSS grew by {growth / 2**20:.1f} MiB answering 50 requests claiming 10^12 elements"


@pytest.fixture(scope="module")
def keyed_server(tiny_store):
    with running_server(tiny_store, api_key="k3y-\u00e9", default_model="tiny") as server:
        yield server


def _operations(client: httpx.Client) -> list[tuple[str, str]]:
    schema = client.get("/openapi.json").json()
    return [(method.upper(), path.replace("{name}", "tiny"))
            for path, methods in schema["paths"].items() for method in methods]


def test_every_operation_but_health_needs_the_key(keyed_server):
    with httpx.Client(base_url=keyed_server.url, timeout=10) as client:
        operations = _operations(client)
        assert len(operations) >= 10
        for method, path in operations:
            anonymous = client.request(method, path)
            if path in OPEN_PATHS:
                assert anonymous.status_code == 200, (method, path, anonymous.text)
                continue
            assert anonymous.status_code == 401 and anonymous.json() == {"error": "missing or invalid API key"}, \
                (method, path, anonymous.text)
            assert anonymous.headers["www-authenticate"].startswith("Bearer")
            for wrong in ({"X-API-Key": "k3y"}, {"Authorization": "Bearer k3y-"}, {"Authorization": "Basic azN5"},
                          {"X-API-Key": ""}, {"X-API-Key": "k3y-\u00e9" * 1000}):
                r = client.request(method, path, headers={k: v.encode("utf-8") for k, v in wrong.items()})
                assert r.status_code == 401, (method, path, wrong, r.status_code)
            keyed = client.request(method, path, headers={"X-API-Key": "k3y-\u00e9".encode("utf-8")})
            assert keyed.status_code not in (401, 403) and keyed.status_code < 500, (method, path, keyed.text)
            if path.endswith("/unload"):  # serve the model again for the operations after this one
                client.post(path.removesuffix("/unload") + "/load", headers={"X-API-Key": "k3y-\u00e9".encode()})
    assert "Traceback" not in keyed_server.output()
