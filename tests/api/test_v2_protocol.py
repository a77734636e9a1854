"""The rest of the Open Inference Protocol as Triton / KServe implement it: what the input means (model
metadata), encoded images as a BYTES input, versioned routes, the model configuration and the
statistics extension, and the Triton-named metrics fed from the same statistics."""

from __future__ import annotations

import io
import json
import re

import numpy as np
import pytest
import torch
from PIL import Image

from tests.api.conftest import png_bytes, serve
from tests.api.test_models_v2 import infer_body

pytestmark = pytest.mark.anyio
HEADER = "Inference-Header-Content-Length"
URL = "/v2/models/tiny/infer"


def bytes_request(images: list[bytes], shape: list[int] | None = None, size: int | None = None) -> tuple[bytes, dict]:
    """A BYTES input as binary tensor data: each element a 4-byte little-endian length, then its bytes."""
    raw = b"".join(len(image).to_bytes(4, "little") + image for image in images)
    req = {"inputs": [{"name": "input", "shape": shape or [len(images)], "datatype": "BYTES",
                       "parameters": {"binary_data_size": len(raw) if size is None else size}}],
           "outputs": [{"name": "logits"}]}
    header = json.dumps(req).encode()
    return header + raw, {HEADER: str(len(header)), "Content-Type": "application/octet-stream"}


def json_bytes_body(strings: list, shape: list[int] | None = None) -> dict:
    return {"inputs": [{"name": "input", "shape": shape or [len(strings)], "datatype": "BYTES", "data": strings}],
            "outputs": [{"name": "logits"}]}


def ascii_bmp() -> bytes:
    """A 2x2 dark RGB BMP whose every byte is ASCII, so that a JSON string can carry it as it is."""
    buf = io.BytesIO()
    Image.new("RGB", (2, 2), (20, 90, 40)).save(buf, format="BMP", dpi=(1, 1))
    data = buf.getvalue()
    assert max(data) < 0x80
    return data


async def predict_probabilities(client, image: bytes, filename: str = "a.png") -> dict[int, float]:
    r = await client.post("/predict", files=[("file", (filename, image))], params={"top_k": 1000})
    assert r.status_code == 200, r.text
    return {p["index"]: p["probability"] for p in r.json()["results"][0]["predictions"]}


def probabilities_from(logits: list[float]) -> dict[int, float]:
    """/predict's probabilities from v2 logits: the same float64 softmax of the same float32 logits."""
    p = torch.softmax(torch.tensor([logits], dtype=torch.float32).to(torch.float64), dim=1)[0]
    return dict(enumerate(p.tolist()))


# ---- what the input means ------------------------------------------------------------------


async def test_metadata_declares_the_input_preprocessing_and_the_outputs(client, tiny_model):
    meta = (await client.get("/v2/models/tiny")).json()
    spec = tiny_model.input
    described = meta["parameters"]["input"]
    assert described["datatype"] == "FP32" and described["shape"] == [-1, 1, 12, 12]
    assert described["layout"] == "NCHW" and described["color_mode"] == "L"
    assert described["scale"] == pytest.approx(1 / 255)
    assert (described["mean"], described["std"]) == (spec.mean, spec.std)
    assert (described["resize"], described["invert"]) == (spec.resize, spec.invert)
    assert (described["height"], described["width"], described["channels"]) == (12, 12, 1)
    assert described["value"] == "(pixel * scale - mean[c]) / std[c]"
    assert described["encoded_datatype"] == "BYTES" and "PNG" in described["encoded_formats"]
    for output in ("logits", "probabilities"):
        assert meta["parameters"][output]["labels"] == tiny_model.labels
        assert meta["parameters"][output]["shape"] == [-1, 4]


async def test_input_built_from_the_metadata_gives_predicts_answer(client):
    """A client that follows the metadata's parameters gets /predict's scores for the same image."""
    described = (await client.get("/v2/models/tiny")).json()["parameters"]["input"]
    image = png_bytes(color=77)
    pixels = np.asarray(Image.open(io.BytesIO(image)), dtype=np.float32)
    x = (pixels * np.float32(described["scale"]) - described["mean"][0]) / described["std"][0]
    r = await client.post(URL, json=infer_body(torch.from_numpy(x).view(1, 1, 12, 12)))
    assert r.status_code == 200, r.text
    expected = await predict_probabilities(client, image)
    got = probabilities_from(r.json()["outputs"][0]["data"])
    assert got == pytest.approx(expected, rel=1e-5)


# ---- encoded images as a BYTES input ----------------------------------------------------------


async def test_bytes_input_as_binary_data_equals_predict_exactly(client, tiny_model):
    images = [png_bytes(color=30), png_bytes(mode="RGB", size=(20, 9), color=(200, 10, 90))]
    for image in images:  # one image a request, as /predict's: the same float32 logits, bit for bit
        body, headers = bytes_request([image])
        r = await client.post(URL, content=body, headers=headers)
        assert r.status_code == 200, r.text
        logits = r.json()["outputs"][0]["data"]
        assert probabilities_from(logits) == await predict_probabilities(client, image)
        decoded = tiny_model.preprocess(Image.open(io.BytesIO(image))).unsqueeze(0)
        assert logits == tiny_model.predict(decoded)[0].tolist()
    body, headers = bytes_request(images)  # a batch: each row as alone (up to the batch's float rounding)
    r = await client.post(URL, content=body, headers=headers)
    out = r.json()["outputs"][0]
    assert out["shape"] == [2, 4]
    for row, image in enumerate(images):
        got = probabilities_from(out["data"][row * 4 : row * 4 + 4])
        assert got == pytest.approx(await predict_probabilities(client, image), rel=1e-6)


async def test_bytes_input_as_json_strings_equals_predict(client):
    """In JSON a BYTES element is a string, taken as its UTF-8 bytes (the protocol has no base64)."""
    image = ascii_bmp()
    for strings, shape in (([image.decode("ascii")], [1]), ([[image.decode("ascii")]], [1, 1])):
        r = await client.post(URL, json=json_bytes_body(strings, shape))
        assert r.status_code == 200, r.text
        assert probabilities_from(r.json()["outputs"][0]["data"]) == await predict_probabilities(
            client, image, "a.bmp"
        )


async def test_a_large_bytes_image_is_decoded_off_the_event_loop_as_predict_does(client):
    from service.api.images import INLINE_DECODE_PIXELS

    image = png_bytes(mode="RGB", size=(300, 300), color=(10, 200, 30))
    assert INLINE_DECODE_PIXELS < 300 * 300
    body, headers = bytes_request([image])
    r = await client.post(URL, content=body, headers=headers)
    assert r.status_code == 200, r.text
    assert probabilities_from(r.json()["outputs"][0]["data"]) == await predict_probabilities(client, image)


def _with_binary(image: bytes, **changes):
    body, headers = bytes_request([image], **changes)
    return {"content": body, "headers": headers}


@pytest.mark.parametrize(
    "request_kwargs,status,fragment",
    [
        ({"json": {**infer_body(torch.zeros(1, 1, 12, 12)), "inputs": [
            {"name": "pixels", "shape": [1, 1, 12, 12], "datatype": "FP32", "data": [0.0] * 144}]}},
         400, "unknown input 'pixels'; this model's input is 'input'"),
        ({"json": {"inputs": [{"name": "input", "shape": [1], "datatype": "UINT8", "data": [1]}]}},
         400, "must have datatype FP32, got 'UINT8'"),
        ({"json": json_bytes_body(["not an image"])}, 400, "input 'input' element 0: not a PNG, JPEG, WebP or BMP"),
        ({"json": json_bytes_body([""])}, 400, "input 'input' element 0: empty file"),
        ({"json": json_bytes_body([1])}, 400, "must be 1 strings"),
        ({"json": json_bytes_body(["a", "b"], shape=[3])}, 400, "must be 3 strings"),
        ({"json": json_bytes_body(["a", "b"], shape=[1, 2])}, 400, "shape [N] or [N, 1]"),
        ({"json": {"inputs": [{"name": "input", "shape": [1], "datatype": "BYTES"}]}}, 400, "neither data"),
        (_with_binary(b"GIF89a...."), 400, "element 0: not a PNG, JPEG, WebP or BMP"),
        (_with_binary(png_bytes(), shape=[2]), 400, "needs 2 length-prefixed elements; the binary data holds 1"),
        (_with_binary(png_bytes(), size=5), 400, "binary_data_size is 5"),
        (_with_binary(png_bytes(), shape=[100000]), 413, "limit"),
    ],
)
async def test_input_errors(client, request_kwargs, status, fragment):
    r = await client.post(URL, **request_kwargs)
    assert r.status_code == status, r.text
    assert set(r.json()) == {"error"} and fragment in r.json()["error"], r.json()


async def test_a_truncated_length_prefix_is_refused(client):
    raw = len(b"abcdef").to_bytes(4, "little") + b"abc"
    header = json.dumps({"inputs": [{"name": "input", "shape": [1], "datatype": "BYTES",
                                     "parameters": {"binary_data_size": len(raw)}}]}).encode()
    r = await client.post(URL, content=header + raw, headers={HEADER: str(len(header))})
    assert r.status_code == 400 and "declares 6 bytes, but 3 bytes of binary data are left" in r.json()["error"]


@pytest.mark.parametrize(
    "limits,fragment",
    [({"max_request_pixels": 100}, "BNN_MAX_REQUEST_PIXELS"), ({"max_image_pixels": 100}, "limit of 100 pixels")],
)
async def test_bytes_images_keep_predicts_pixel_limits(store, limits, fragment):
    async with serve(store, **limits) as client:
        body, headers = bytes_request([png_bytes(size=(12, 12))])
        r = await client.post(URL, content=body, headers=headers)
        assert r.status_code == 413, r.text
        assert set(r.json()) == {"error"} and fragment in r.json()["error"]
        r = await client.post("/predict", files=[("file", ("a.png", png_bytes(size=(12, 12))))])
        assert r.status_code == 413 and fragment in r.json()["error"]


# ---- versions ----------------------------------------------------------------------------------


async def test_versioned_routes_answer_for_the_manifest_version(client):
    assert (await client.get("/v2/models/tiny/versions/1")).json() == (await client.get("/v2/models/tiny")).json()
    assert (await client.get("/v2/models/tiny/versions/1/ready")).json() == {"name": "tiny", "ready": True}
    config = await client.get("/v2/models/tiny/versions/1/config")
    assert config.status_code == 200 and config.json() == (await client.get("/v2/models/tiny/config")).json()
    stats = await client.get("/v2/models/tiny/versions/1/stats")
    assert stats.status_code == 200 and stats.json()["model_stats"][0]["version"] == "1"
    r = await client.post("/v2/models/tiny/versions/1/infer", json=infer_body(torch.zeros(1, 1, 12, 12)))
    assert r.status_code == 200 and r.json()["model_version"] == "1"


@pytest.mark.parametrize(
    "method,path",
    [("GET", ""), ("GET", "/ready"), ("GET", "/config"), ("GET", "/stats"), ("POST", "/infer")],
)
async def test_an_unknown_version_is_404(client, method, path):
    body = infer_body(torch.zeros(1, 1, 12, 12)) if method == "POST" else None
    r = await client.request(method, f"/v2/models/tiny/versions/2{path}", json=body)
    assert r.status_code == 404, r.text
    assert set(r.json()) == {"error"} and "has no version '2'; available: ['1']" in r.json()["error"]


async def test_versions_of_unknown_and_broken_models(client):
    assert (await client.get("/v2/models/nope/versions/1/ready")).status_code == 404
    r = await client.get("/v2/models/broken/versions/1/ready")
    assert r.status_code == 503 and r.json() == {"name": "broken", "ready": False}
    assert (await client.get("/v2/models/broken/versions/1")).status_code == 503


# ---- configuration -----------------------------------------------------------------------------


async def test_model_config_in_tritons_shape(store):
    async with serve(store, max_batch_size=8, max_queue_delay_ms=3) as client:
        config = (await client.get("/v2/models/tiny/config")).json()
    assert config["name"] == "tiny" and config["platform"] == config["backend"] == "bnn-serve"
    assert config["max_batch_size"] == 8
    assert config["input"] == [{"name": "input", "data_type": "TYPE_FP32", "format": "FORMAT_NCHW",
                                "dims": [1, 12, 12], "is_shape_tensor": False}]
    assert config["output"] == [{"name": name, "data_type": "TYPE_FP32", "dims": [4], "is_shape_tensor": False}
                                for name in ("logits", "probabilities")]
    assert config["dynamic_batching"]["max_queue_delay_microseconds"] == 3000
    assert config["instance_group"] == [{"name": "tiny_0", "kind": "KIND_CPU", "count": 1}]
    assert config["parameters"]["mean"] == {"string_value": "[0.5]"}
    assert config["parameters"]["resize"] == {"string_value": "stretch"}


# ---- statistics and metrics ------------------------------------------------------------------------


async def model_stat(client) -> dict:
    r = await client.get("/v2/models/tiny/stats")
    assert r.status_code == 200, r.text
    (stat,) = r.json()["model_stats"]
    return stat


def metric(text: str, name: str) -> float:
    match = re.search(rf'^{name}{{model="tiny",version="1"}} (\S+)$', text, re.MULTILINE)
    assert match, f"{name} not in /metrics"
    return float(match[1])


async def test_statistics_count_requests_images_and_model_calls(client):
    before = await model_stat(client)
    for n in (1, 3):
        r = await client.post(URL, json=infer_body(torch.zeros(n, 1, 12, 12)))
        assert r.status_code == 200
    body, headers = bytes_request([png_bytes(), png_bytes(color=3)])
    assert (await client.post(URL, content=body, headers=headers)).status_code == 200
    bad = await client.post(URL, json=json_bytes_body(["not an image"]))
    assert bad.status_code == 400
    after = await model_stat(client)

    def grew(*keys):
        a, b = after, before
        for k in keys:
            a, b = a[k], b[k]
        return a - b

    assert grew("inference_stats", "success", "count") == 3
    assert grew("inference_stats", "fail", "count") == 1
    assert grew("inference_stats", "success", "ns") > 0 and grew("inference_stats", "fail", "ns") > 0
    assert grew("inference_count") == 6 and grew("execution_count") == 3
    for part in ("queue", "compute_input", "compute_infer", "compute_output"):
        assert grew("inference_stats", part, "count") == 3
    assert grew("inference_stats", "compute_infer", "ns") > 0
    assert after["last_inference"] > 0
    sizes = {b["batch_size"]: b["compute_infer"]["count"] for b in after["batch_stats"]}
    assert sizes.get(1, 0) >= 1 and sizes.get(3, 0) >= 1 and sizes.get(2, 0) >= 1
    everything = (await client.get("/v2/models/stats")).json()["model_stats"]
    assert [s["name"] for s in everything] == ["tiny"] and everything[0] == after


async def test_triton_metrics_read_the_same_statistics(client):
    assert (await client.post(URL, json=infer_body(torch.zeros(2, 1, 12, 12)))).status_code == 200
    assert (await client.post(URL, json=infer_body(torch.zeros(1, 1, 12, 12), inputs=[]))).status_code == 422
    stat = await model_stat(client)
    text = (await client.get("/metrics")).text
    stats = stat["inference_stats"]
    assert metric(text, "nv_inference_request_success") == stats["success"]["count"]
    assert metric(text, "nv_inference_request_failure") == stats["fail"]["count"] == 1
    assert metric(text, "nv_inference_count") == stat["inference_count"] == 2
    assert metric(text, "nv_inference_exec_count") == stat["execution_count"] == 1
    assert metric(text, "nv_inference_request_duration_us") == stats["success"]["ns"] // 1000
    assert metric(text, "nv_inference_queue_duration_us") == stats["queue"]["ns"] // 1000
    assert metric(text, "nv_inference_compute_infer_duration_us") == stats["compute_infer"]["ns"] // 1000
    assert "_created" not in text
    assert 'bnn_inference_images_total{model="tiny"} 2.0' in text  # the project's own series stay


async def test_server_metadata_lists_the_extensions(client):
    extensions = (await client.get("/v2")).json()["extensions"]
    assert {"model_configuration", "statistics", "binary_tensor_data", "classification"} <= set(extensions)
