"""The Open Inference Protocol's binary tensor data extension (KServe / Triton) on /v2 infer."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from tests.api.test_models_v2 import infer_body

pytestmark = pytest.mark.anyio
HEADER = "Inference-Header-Content-Length"
URL = "/v2/models/tiny/infer"


def binary_request(x: torch.Tensor, outputs=None, parameters=None, size=None) -> tuple[bytes, dict]:
    raw = x.numpy().astype("<f4").tobytes()
    req = {"inputs": [{"name": "input", "shape": list(x.shape), "datatype": "FP32",
                       "parameters": {"binary_data_size": len(raw) if size is None else size}}]}
    if outputs is not None:
        req["outputs"] = outputs
    if parameters is not None:
        req["parameters"] = parameters
    header = json.dumps(req).encode()
    return header + raw, {HEADER: str(len(header)), "Content-Type": "application/octet-stream"}


def split_response(r) -> tuple[dict, bytes]:
    n = int(r.headers[HEADER])
    return json.loads(r.content[:n]), r.content[n:]


async def test_server_metadata_lists_the_extension(client):
    assert "binary_tensor_data" in (await client.get("/v2")).json()["extensions"]


async def test_binary_input_json_output_equals_json_input(client, tiny_model):
    x = torch.randn(3, 1, 12, 12)
    body, headers = binary_request(x)
    r = await client.post(URL, content=body, headers=headers)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("application/json")
    as_json = await client.post(URL, json=infer_body(x))
    assert r.json()["outputs"] == as_json.json()["outputs"]
    assert torch.allclose(torch.tensor(r.json()["outputs"][0]["data"]).view(3, 4), tiny_model.predict(x), atol=1e-5)


async def test_binary_outputs_per_output_and_request_wide(client, tiny_model):
    x = torch.randn(2, 1, 12, 12)
    logits = tiny_model.predict(x)
    outputs = [{"name": "logits", "parameters": {"binary_data": True}},
               {"name": "probabilities", "parameters": {"classification": 2, "binary_data": True}}]
    body, headers = binary_request(x, outputs=outputs)
    r = await client.post(URL, content=body, headers=headers)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/octet-stream"
    head, blob = split_response(r)
    binary_logits, classes = head["outputs"]
    assert "data" not in binary_logits and binary_logits["parameters"] == {"binary_data_size": 2 * 4 * 4}
    got = np.frombuffer(blob[:32], dtype="<f4").reshape(2, 4)
    assert torch.allclose(torch.from_numpy(got.copy()), logits, atol=1e-5)
    assert classes["datatype"] == "BYTES" and classes["shape"] == [2, 2]
    rest, strings = blob[32:], []
    assert len(rest) == classes["parameters"]["binary_data_size"]
    while rest:  # each BYTES element: 4-byte little-endian length, then the bytes
        n = int.from_bytes(rest[:4], "little")
        strings.append(rest[4 : 4 + n].decode())
        rest = rest[4 + n :]
    assert len(strings) == 4 and int(strings[0].split(":")[1]) == int(logits[0].argmax())
    # binary_data_output makes every output binary unless an output says otherwise; it works for JSON inputs too
    r = await client.post(URL, json=infer_body(x, parameters={"binary_data_output": True},
                                               outputs=[{"name": "logits"},
                                                        {"name": "probabilities", "parameters": {"binary_data": False}}]))
    head, blob = split_response(r)
    assert "data" not in head["outputs"][0] and len(blob) == 32 and len(head["outputs"][1]["data"]) == 8


@pytest.mark.parametrize(
    "make,fragment",
    [
        (lambda b, h: (b, {**h, HEADER: "abc"}), "must be an integer"),
        (lambda b, h: (b, {**h, HEADER: str(len(b) + 1)}), "the body has"),
        (lambda b, h: (b, {**h, HEADER: "0"}), "the body has"),
        (lambda b, h: (b[:-4], h), "follow the JSON header"),
        (lambda b, h: (b + b"\0" * 4, h), "follow the JSON header"),
    ],
)
async def test_malformed_binary_requests_are_400(client, make, fragment):
    body, headers = make(*binary_request(torch.zeros(1, 1, 12, 12)))
    r = await client.post(URL, content=body, headers=headers)
    assert r.status_code == 400, r.text
    assert set(r.json()) == {"error"} and fragment in r.json()["error"]


async def test_inconsistent_binary_parameters_are_400(client):
    x = torch.zeros(1, 1, 12, 12)
    body, headers = binary_request(x, size=100)
    r = await client.post(URL, content=body, headers=headers)
    assert r.status_code == 400 and "binary_data_size must be 576" in r.json()["error"]
    both = infer_body(x)
    both["inputs"][0]["parameters"] = {"binary_data_size": 576}
    header = json.dumps(both).encode()
    r = await client.post(URL, content=header + bytes(576), headers={HEADER: str(len(header))})
    assert r.status_code == 400 and "both data and binary_data_size" in r.json()["error"]
    neither = infer_body(x)
    del neither["inputs"][0]["data"]
    r = await client.post(URL, json=neither)
    assert r.status_code == 400 and "neither data nor" in r.json()["error"]
    trailing = json.dumps(infer_body(x)).encode()
    r = await client.post(URL, content=trailing + bytes(8), headers={HEADER: str(len(trailing))})
    assert r.status_code == 400 and "no input has binary_data_size" in r.json()["error"]
    r = await client.post(URL, json=infer_body(x, outputs=[{"name": "logits", "parameters": {"binary_data": 1}}]))
    assert r.status_code == 400 and "true or false" in r.json()["error"]
    nan = np.full((1, 1, 12, 12), np.nan, dtype="<f4").tobytes()
    body, headers = binary_request(x)
    r = await client.post(URL, content=body[: -len(nan)] + nan, headers=headers)
    assert r.status_code == 400 and "finite" in r.json()["error"]


async def test_bad_json_header_is_422(client):
    r = await client.post(URL, content=b"{not json" + bytes(8), headers={HEADER: "9"})
    assert r.status_code == 422 and set(r.json()) == {"error"}
    r = await client.post(URL, content=b"[]", headers={"Content-Type": "application/json"})
    assert r.status_code == 422 and set(r.json()) == {"error"}
