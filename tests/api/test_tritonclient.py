"""NVIDIA's own Triton client (tritonclient.http) against the real server: what protocol clients call."""

from __future__ import annotations

import io
import re
import shutil
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
from PIL import Image

from tests.api.conftest import png_bytes
from tests.api.test_e2e import server  # noqa: F401 - the real server, as the other end-to-end tests start it
from tests.tiny_model import export_tiny

tritonclient_http = pytest.importorskip("tritonclient.http")
from tritonclient.utils import InferenceServerException  # noqa: E402 - only once tritonclient is known to be there

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


@pytest.fixture
def triton(server):  # noqa: F811 - the fixture imported above
    url, _ = server
    client = tritonclient_http.InferenceServerClient(url.removeprefix("http://"), network_timeout=30)
    yield client, url
    client.close()


def predict_probabilities(url: str, image: bytes) -> np.ndarray:
    """/predict's probability for every class, in class order."""
    r = httpx.post(f"{url}/predict", files=[("file", ("a.png", image))], params={"top_k": 1000}, timeout=30)
    assert r.status_code == 200, r.text
    predictions = r.json()["results"][0]["predictions"]
    return np.array([p["probability"] for p in sorted(predictions, key=lambda p: p["index"])])


def softmax64(logits: np.ndarray) -> np.ndarray:
    """/predict's probabilities from float32 logits: torch's float64 softmax."""
    return torch.softmax(torch.tensor(logits).to(torch.float64), dim=0).numpy()


def encoded_input(*images: bytes):
    x = tritonclient_http.InferInput("input", [len(images)], "BYTES")
    x.set_data_from_numpy(np.array(images, dtype=np.object_))
    return x


def test_health_metadata_and_config(triton):
    client, _ = triton
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("tiny") and client.is_model_ready("tiny", "1")
    assert not client.is_model_ready("tiny", "2")
    about = client.get_server_metadata()
    assert about["name"] == "bnn-serve" and {"statistics", "model_configuration"} <= set(about["extensions"])

    meta = client.get_model_metadata("tiny")
    assert meta["versions"] == ["1"]
    assert meta["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 1, 12, 12]}]
    described = meta["parameters"]["input"]
    assert described["layout"] == "NCHW" and described["mean"] == [0.5] and described["std"] == [0.5]
    assert described["scale"] == pytest.approx(1 / 255) and described["encoded_datatype"] == "BYTES"
    assert client.get_model_metadata("tiny", "1") == meta
    with pytest.raises(InferenceServerException, match="no version '2'"):
        client.get_model_metadata("tiny", "2")

    config = client.get_model_config("tiny")
    assert config["name"] == "tiny" and config["max_batch_size"] == 32  # BNN_MAX_BATCH_SIZE's default
    assert config["input"][0]["data_type"] == "TYPE_FP32" and config["input"][0]["dims"] == [1, 12, 12]
    assert [o["name"] for o in config["output"]] == ["logits", "probabilities"]
    assert config["dynamic_batching"]["max_queue_delay_microseconds"] == 2000  # BNN_MAX_QUEUE_DELAY_MS's default
    assert client.get_model_config("tiny", "1") == config


def test_infer_with_pixels_and_with_encoded_images(triton):
    client, url = triton
    image = png_bytes(color=77)
    expected = predict_probabilities(url, image)

    # FP32, preprocessed by the client as the metadata says
    described = client.get_model_metadata("tiny")["parameters"]["input"]
    pixels = np.asarray(Image.open(io.BytesIO(image)), dtype=np.float32)
    x = ((pixels * np.float32(described["scale"]) - described["mean"][0]) / described["std"][0]).reshape(1, 1, 12, 12)
    fp32 = tritonclient_http.InferInput("input", [1, 1, 12, 12], "FP32")
    fp32.set_data_from_numpy(x.astype(np.float32))
    result = client.infer("tiny", [fp32])
    np.testing.assert_allclose(result.as_numpy("probabilities")[0], expected, rtol=1e-5)

    # BYTES: the PNG file itself, preprocessed by the service as /predict does
    result = client.infer("tiny", [encoded_input(image)])
    assert (softmax64(result.as_numpy("logits")[0]) == expected).all()
    assert result.get_response()["model_version"] == "1"

    # a version, named: the right one answers, another is an error
    result = client.infer("tiny", [encoded_input(image)], model_version="1")
    assert (softmax64(result.as_numpy("logits")[0]) == expected).all()
    with pytest.raises(InferenceServerException, match="no version '2'") as wrong:
        client.infer("tiny", [encoded_input(image)], model_version="2")
    assert wrong.value.status() == "404"
    with pytest.raises(InferenceServerException, match="not a PNG, JPEG, WebP or BMP") as bad:
        client.infer("tiny", [encoded_input(b"not an image")])
    assert bad.value.status() == "400"


def metric(text: str, name: str) -> float:
    match = re.search(rf'^{name}{{model="tiny",version="1"}} (\S+)$', text, re.MULTILINE)
    assert match, f"{name} not in /metrics"
    return float(match[1])


def test_statistics_and_triton_metrics_rise(triton):
    client, url = triton
    names = ("nv_inference_request_success", "nv_inference_request_failure", "nv_inference_count",
             "nv_inference_exec_count", "nv_inference_request_duration_us", "nv_inference_queue_duration_us",
             "nv_inference_compute_infer_duration_us")
    metrics_before = httpx.get(f"{url}/metrics").text
    before = client.get_inference_statistics("tiny")["model_stats"][0]
    images = [png_bytes(color=c) for c in (10, 20, 30)]
    client.infer("tiny", [encoded_input(images[0])])
    client.infer("tiny", [encoded_input(*images[1:])])
    with pytest.raises(InferenceServerException):
        client.infer("tiny", [encoded_input(b"")])
    after = client.get_inference_statistics("tiny")["model_stats"][0]
    stats_before, stats_after = before["inference_stats"], after["inference_stats"]
    assert stats_after["success"]["count"] - stats_before["success"]["count"] == 2
    assert stats_after["fail"]["count"] - stats_before["fail"]["count"] == 1
    assert after["inference_count"] - before["inference_count"] == 3
    assert after["execution_count"] - before["execution_count"] == 2
    assert stats_after["queue"]["count"] - stats_before["queue"]["count"] == 2
    assert stats_after["compute_infer"]["ns"] > stats_before["compute_infer"]["ns"]
    assert client.get_inference_statistics("tiny", "1")["model_stats"] == [after]
    assert [s["name"] for s in client.get_inference_statistics()["model_stats"]] == ["tiny"]
    with pytest.raises(InferenceServerException):
        client.get_inference_statistics("tiny", "2")

    metrics_after = httpx.get(f"{url}/metrics").text
    rise = {name: metric(metrics_after, name) - metric(metrics_before, name) for name in names}
    assert rise["nv_inference_request_success"] == 2 and rise["nv_inference_request_failure"] == 1
    assert rise["nv_inference_count"] == 3 and rise["nv_inference_exec_count"] == 2
    assert rise["nv_inference_request_duration_us"] > 0 and rise["nv_inference_compute_infer_duration_us"] > 0
    assert rise["nv_inference_queue_duration_us"] >= 0
    assert "_created" not in metrics_after


def test_model_repository_load_and_unload(triton, model_store_dir):
    """tritonclient's repository calls: the index, a model with two versions added on disk and
    loaded, an unload."""
    client, _ = triton
    try:
        _repository_round_trip(client, model_store_dir)
    finally:
        shutil.rmtree(model_store_dir / "fresh", ignore_errors=True)  # the store is the session's


def _repository_round_trip(client, store: Path) -> None:
    index = client.get_model_repository_index()
    assert {"name": "tiny", "version": "1", "state": "READY", "reason": ""} in index
    assert any(e["name"] == "broken" and e["state"] == "UNAVAILABLE" for e in index)

    export_tiny(store / "fresh" / "1", name="fresh", version="1", seed=11)
    export_tiny(store / "fresh" / "2", name="fresh", version="2", seed=12)
    client.load_model("fresh")
    assert client.is_model_ready("fresh") and client.get_model_metadata("fresh")["versions"] == ["1", "2"]
    x = tritonclient_http.InferInput("input", [1, 1, 12, 12], "FP32")
    x.set_data_from_numpy(np.full((1, 1, 12, 12), 0.25, dtype=np.float32))
    latest = client.infer("fresh", [x]).as_numpy("logits")
    assert np.array_equal(client.infer("fresh", [x], model_version="2").as_numpy("logits"), latest)
    assert not np.array_equal(client.infer("fresh", [x], model_version="1").as_numpy("logits"), latest)

    client.unload_model("fresh")
    assert not client.is_model_ready("fresh")
    with pytest.raises(InferenceServerException):
        client.infer("fresh", [x])
    assert client.is_model_ready("tiny")
