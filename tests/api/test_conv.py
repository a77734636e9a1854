from __future__ import annotations

import base64

import numpy as np
import pytest
import torch

from service.kernel import binary_conv2d
from tests.api.conftest import serve

pytestmark = pytest.mark.anyio


def b64(t: torch.Tensor) -> str:
    return base64.b64encode(t.numpy().astype("<f4").tobytes()).decode()


def tensor(t: torch.Tensor) -> dict:
    return {"shape": list(t.shape), "data": t.flatten().tolist()}


@pytest.mark.parametrize(
    "geometry",
    [{}, {"stride": 2, "padding": 1}, {"stride": [1, 2], "padding": [2, 0], "dilation": [2, 1]},
     {"padding": 1, "pad_value": 1}, {"padding": [2, 1], "pad_value": -1}],
)
async def test_conv_matches_kernel_exactly(client, geometry):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 5, 9, 8, generator=g)
    w = torch.randn(3, 5, 3, 2, generator=g)
    r = await client.post("/conv", json={"input": tensor(x), "weight": tensor(w), **geometry})
    assert r.status_code == 200, r.text
    expected = binary_conv2d(x, w, **geometry)
    assert r.json()["shape"] == list(expected.shape)
    assert r.json()["data"] == expected.flatten().tolist()


async def test_conv_base64_in_and_out(client):
    x = torch.randn(1, 70, 6, 6)
    w = torch.randn(4, 70, 3, 3)
    body = {"input": {"shape": [1, 70, 6, 6], "dtype": "float32", "b64": b64(x)},
            "weight": {"shape": [4, 70, 3, 3], "b64": b64(w)}, "padding": 1}
    r = await client.post("/conv", json=body)
    assert r.status_code == 200, r.text
    out = np.frombuffer(base64.b64decode(r.json()["b64"]), dtype="<f4").reshape(r.json()["shape"])
    assert torch.equal(torch.from_numpy(out.copy()), binary_conv2d(x, w, padding=1))


async def test_nan_and_inf_binarise_by_the_kernel_sign_rule(client):
    # NaN -> -1, +inf -> +1, -inf -> -1, 0 -> +1
    content = '{"input": {"shape": [1, 1, 1, 4], "data": [NaN, Infinity, -Infinity, 0]},' \
              ' "weight": {"shape": [4, 1, 1, 1], "data": [1, 1, 1, 1]}}'
    r = await client.post("/conv", content=content, headers={"content-type": "application/json"})
    assert r.status_code == 200, r.text
    assert r.json()["data"] == [-1, 1, -1, 1] * 4


async def test_conv_with_a_model_layer(client, tiny_model):
    x = torch.randn(2, 8, 6, 6)
    r = await client.post("/conv", json={"input": tensor(x), "model": "tiny", "layer": "features.1"})
    assert r.status_code == 200, r.text
    layer = tiny_model.binary_layers["features.1"]
    expected = binary_conv2d(x, layer.weights, stride=2, padding=1)
    assert r.json()["data"] == expected.flatten().tolist()
    # geometry restated as stored is fine; a different one is refused
    ok = await client.post("/conv", json={"input": tensor(x), "model": "tiny", "layer": "features.1", "stride": 2})
    assert ok.status_code == 200
    bad = await client.post("/conv", json={"input": tensor(x), "model": "tiny", "layer": "features.1", "stride": 1})
    assert bad.status_code == 400 and "stored stride" in bad.json()["error"]


@pytest.mark.parametrize(
    "body,status,fragment",
    [
        ({"input": {"shape": [1, 1, 2, 2], "data": [1, 2, 3]}, "weight": {"shape": [1, 1, 1, 1], "data": [1]}},
         400, "input.data has 3 values"),
        ({"input": {"shape": [1, 1, 2], "data": [1, 2]}, "weight": {"shape": [1, 1, 1, 1], "data": [1]}},
         400, "4 dimensions"),
        ({"input": {"shape": [1, 0, 2, 2], "data": []}, "weight": {"shape": [1, 1, 1, 1], "data": [1]}},
         400, ">= 1"),
        ({"input": {"shape": [1, 2, 2, 2], "data": [1] * 8}, "weight": {"shape": [1, 1, 1, 1], "data": [1]}},
         400, "channel mismatch"),
        ({"input": {"shape": [1, 1, 2, 2], "data": [1] * 4}, "weight": {"shape": [1, 1, 3, 3], "data": [1] * 9}},
         400, "does not fit"),
        ({"input": {"shape": [1, 1, 2, 2], "b64": "!!!!"}, "weight": {"shape": [1, 1, 1, 1], "data": [1]}},
         400, "not valid base64"),
        ({"input": {"shape": [1, 1, 2, 2], "b64": "AAAAAA=="}, "weight": {"shape": [1, 1, 1, 1], "data": [1]}},
         400, "needs 16"),
        ({"input": {"shape": [1, 1, 2, 2], "data": [1] * 4, "b64": "AAAA"}, "weight": {"shape": [1, 1, 1, 1],
          "data": [1]}}, 400, "exactly one"),
        ({"input": {"shape": [1, 1, 2, 2], "data": [1] * 4}}, 400, "give 'weight'"),
        ({"input": {"shape": [1, 1, 2, 2], "data": [1] * 4}, "weight": {"shape": [1, 1, 1, 1], "data": [1]},
          "model": "tiny", "layer": "features.0"}, 400, "not both"),
        ({"input": {"shape": [1, 1, 2, 2], "data": [1] * 4}, "weight": {"shape": [1, 1, 1, 1], "data": [1]},
          "stride": 0}, 400, "stride"),
        ({"input": {"shape": [1, 1, 2, 2], "data": [1] * 4}, "weight": {"shape": [1, 1, 1, 1], "data": [1]},
          "stride": 10**30}, 400, "stride"),
        ({"input": {"shape": [1, 1, 2, 2], "data": [1] * 4}, "weight": {"shape": [1, 1, 1, 1], "data": [1]},
          "padding": -1}, 400, "padding"),
        ({"input": {"shape": [1, 1, 2, 2], "data": [1] * 4}, "weight": {"shape": [1, 1, 1, 1], "data": [1]},
          "pad_value": 2}, 422, "pad_value"),
        ({"input": {"shape": [1, 1, 2, 2], "data": [1] * 4}, "weight": {"shape": [1, 1, 1, 1], "data": [1]},
          "stride": [1, 2, 3]}, 422, "stride"),
        ({"input": {"shape": [1, 1, 2, 2], "data": ["a"] * 4}, "weight": {"shape": [1, 1, 1, 1], "data": [1]}},
         422, "input.data"),
        ({"input": {"shape": [1, 1, 2, 2], "data": [1] * 4, "dtype": "float64"}, "weight": {"shape": [1, 1, 1, 1],
          "data": [1]}}, 422, "dtype"),
        ({"input": {"shape": [1, 1, 2, 2], "data": [1] * 4}, "model": "tiny", "layer": "nope"}, 404, "features.0"),
        ({"input": {"shape": [1, 1, 2, 2], "data": [1] * 4}, "model": "nope", "layer": "x"}, 404, "nope"),
        ({"input": {"shape": [1, 1, 2, 2], "data": [1] * 4}, "model": "broken", "layer": "x"}, 503, "not ready"),
        ({"input": {"shape": [100000, 100000, 100000, 100000], "b64": ""}, "weight": {"shape": [1, 1, 1, 1],
          "data": [1]}}, 413, "elements"),
        ({"input": {"shape": [1, 1, 2, 2], "data": [1] * 4}, "weight": {"shape": [1, 1, 1, 1], "data": [1]},
          "padding": 60000}, 422, "exceeds the kernel's reach"),
        ({"input": {"shape": [1, 1, 2, 2], "data": [1] * 4}, "weight": {"shape": [1, 1, 3, 3], "data": [1] * 9},
          "padding": [2, 3]}, 422, "padding 3 in width"),
        ({"input": {"shape": [1, 1, 2, 2], "data": ["1e5"] * 4}, "weight": {"shape": [1, 1, 1, 1], "data": [1]}},
         422, "valid number"),
        ({"input": {"shape": [1, 1, 2, 2], "data": [True] * 4}, "weight": {"shape": [1, 1, 1, 1], "data": [1]}},
         422, "valid number"),
        ({"input": {"shape": [1, 1, 2, 2], "data": [1] * 4}, "weight": {"shape": [1, 1, 1, 1], "data": [1]},
          "stride": "2"}, 422, "stride"),
        ({"input": {"shape": [1, 1, 2, 2], "data": [1] * 4}, "weight": {"shape": [1, 1, 1, 1], "data": [1]},
          "pad_value": True}, 422, "pad_value"),
    ],
)
async def test_conv_rejects_bad_requests(client, body, status, fragment):
    r = await client.post("/conv", json=body)
    assert r.status_code == status, r.text
    assert set(r.json()) == {"error"}
    assert fragment in r.json()["error"]


async def test_conv_work_limit_is_413(store):
    async with serve(store, max_conv_ops=1000) as client:
        x, w = torch.randn(1, 8, 8, 8), torch.randn(8, 8, 3, 3)
        r = await client.post("/conv", json={"input": tensor(x), "weight": tensor(w)})
    assert r.status_code == 413 and "multiply-adds" in r.json()["error"]


async def test_conv_malformed_json_is_422(client):
    r = await client.post("/conv", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 422 and set(r.json()) == {"error"}
