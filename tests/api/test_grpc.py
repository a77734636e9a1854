"""The Open Inference Protocol over gRPC: NVIDIA's tritonclient.grpc against the real server, and the
compiled protocol kept in step with its .proto."""

from __future__ import annotations

import socket
import subprocess
import sys

import httpx
import numpy as np
import pytest

from service.api.budget import MemoryBudget
from service.api.deps import ServiceState
from service.api.grpc import start_grpc_server
from service.api.metrics import ServiceMetrics
from tests.api.conftest import settings
from tests.api.test_e2e import server  # noqa: F401 - the real server (its gRPC port: conftest's grpc_port)
from tests.tiny_model import REPO

GRPC_DIR = REPO / "service" / "api" / "grpc"
API_KEY = "s3cret-key"  # gRPC metadata values are printable ASCII


def e2e(test):
    return pytest.mark.e2e(pytest.mark.slow(test))


def test_compiled_protocol_matches_the_proto(tmp_path):
    """grpc_service.binpb is what protoc makes of grpc_service.proto (the command in the .proto's header)."""
    pytest.importorskip("grpc_tools")
    out = tmp_path / "grpc_service.binpb"
    subprocess.run(
        [sys.executable, "-m", "grpc_tools.protoc", f"-I{GRPC_DIR}", f"--descriptor_set_out={out}",
         str(GRPC_DIR / "grpc_service.proto")],
        check=True,
    )
    assert out.read_bytes() == (GRPC_DIR / "grpc_service.binpb").read_bytes(), "regenerate grpc_service.binpb"


def test_protocol_fields_match_tritonclient():
    """Every message and field this service defines has tritonclient's name, number and type."""
    service_pb2 = pytest.importorskip("tritonclient.grpc.service_pb2")
    from service.api.grpc import messages

    theirs = service_pb2.DESCRIPTOR
    ours = messages.ModelInferRequest.DESCRIPTOR.file

    def fields(message):
        rows = {(f.name, f.number, f.type, f.is_repeated) for f in message.fields}
        for nested in message.nested_types:
            rows |= {(f"{nested.name}.{name}", *rest) for name, *rest in fields(nested)}
        return rows

    for name, message in ours.message_types_by_name.items():
        assert fields(message) == fields(theirs.message_types_by_name[name]), name
    their_service = theirs.services_by_name["GRPCInferenceService"]
    for method in ours.services_by_name["GRPCInferenceService"].methods:
        other = their_service.methods_by_name[method.name]
        assert (method.input_type.name, method.output_type.name) == (other.input_type.name, other.output_type.name)


@pytest.mark.anyio
async def test_a_configured_port_in_use_stops_start_up():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        config = settings(grpc_port=taken.getsockname()[1])
        state = ServiceState(settings=config, metrics=ServiceMetrics(), budget=MemoryBudget(1 << 20, 0.1))
        with pytest.raises(RuntimeError, match="BNN_GRPC_PORT=0 turns gRPC off"):
            await start_grpc_server(state)
    assert await start_grpc_server(ServiceState(settings=settings(), metrics=ServiceMetrics(), budget=state.budget)) is None


@pytest.fixture
def triton(server, grpc_port):  # noqa: F811 - the fixture imported above
    tritonclient_grpc = pytest.importorskip("tritonclient.grpc")
    client = tritonclient_grpc.InferenceServerClient(f"127.0.0.1:{grpc_port}")
    yield client, server[0]
    client.close()


def fp32_input(batch: np.ndarray):
    import tritonclient.grpc as tritonclient_grpc

    x = tritonclient_grpc.InferInput("input", list(batch.shape), "FP32")
    x.set_data_from_numpy(batch)
    return x


def tiny_batch(url: str, n: int = 2, headers: dict[str, str] | None = None) -> np.ndarray:
    shape = httpx.get(f"{url}/v2/models/tiny", headers=headers, timeout=10).json()["inputs"][0]["shape"]
    return np.random.default_rng(0).standard_normal((n, *shape[1:])).astype(np.float32)


def status_of(call) -> str:
    from tritonclient.utils import InferenceServerException

    with pytest.raises(InferenceServerException) as info:
        call()
    return info.value.status()


@e2e
def test_health_and_metadata(triton):
    client, _ = triton
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("tiny") and client.is_model_ready("tiny", "1")
    assert not client.is_model_ready("broken")
    assert status_of(lambda: client.is_model_ready("tiny", "2")) == "StatusCode.NOT_FOUND"
    about = client.get_server_metadata(as_json=True)
    assert about["name"] == "bnn-serve" and "classification" in about["extensions"]
    model = client.get_model_metadata("tiny", as_json=True)
    assert model["name"] == "tiny" and model["versions"] == ["1"] and model["platform"] == "bnn-serve"
    assert [t["name"] for t in model["inputs"]] == ["input"] and model["inputs"][0]["datatype"] == "FP32"
    assert [t["name"] for t in model["outputs"]] == ["logits", "probabilities"]
    assert client.get_model_metadata("tiny", "1", as_json=True)["name"] == "tiny"


@e2e
def test_infer_equals_http_v2_bit_for_bit(triton):
    import tritonclient.grpc as tritonclient_grpc
    import tritonclient.http as tritonclient_http

    client, url = triton
    batch = tiny_batch(url)
    result = client.infer("tiny", [fp32_input(batch)], request_id="7")
    logits = result.as_numpy("logits")
    assert logits.dtype == np.float32 and logits.shape[0] == 2
    assert result.get_response().id == "7" and result.get_response().model_version == "1"
    np.testing.assert_allclose(result.as_numpy("probabilities").sum(axis=1), 1, rtol=1e-5)

    http = tritonclient_http.InferenceServerClient(url.removeprefix("http://"))
    x = tritonclient_http.InferInput("input", list(batch.shape), "FP32")
    x.set_data_from_numpy(batch, binary_data=True)
    out = tritonclient_http.InferRequestedOutput("logits", binary_data=True)
    expected = http.infer("tiny", [x], outputs=[out]).as_numpy("logits")
    http.close()
    assert logits.tobytes() == expected.tobytes()

    top = client.infer(
        "tiny", [fp32_input(batch)], model_version="1",
        outputs=[tritonclient_grpc.InferRequestedOutput("logits", class_count=2)],
    )
    classes = top.as_numpy("logits")
    assert classes.shape == (2, 2) and int(classes[0][0].decode().split(":")[1]) == int(np.argmax(logits[0]))

    stats = httpx.get(f"{url}/v2/models/tiny/stats", timeout=10).json()["model_stats"][0]["inference_stats"]
    assert stats["success"]["count"] >= 3
    metrics = httpx.get(f"{url}/metrics", timeout=10).text
    assert 'route="grpc:/inference.GRPCInferenceService/ModelInfer"' in metrics


@e2e
def test_invalid_requests_get_their_status(triton):
    import tritonclient.grpc as tritonclient_grpc

    client, url = triton
    batch = tiny_batch(url)

    def infer(x, model="tiny"):
        return lambda: client.infer(model, [x])

    wrong_name = tritonclient_grpc.InferInput("image", list(batch.shape), "FP32")
    wrong_name.set_data_from_numpy(batch)
    wrong_type = tritonclient_grpc.InferInput("input", list(batch.shape), "FP64")
    wrong_type.set_data_from_numpy(batch.astype(np.float64))
    wrong_shape = fp32_input(batch[:, :, :-1])
    not_finite = fp32_input(np.full_like(batch, np.nan))
    for x in (wrong_name, wrong_type, wrong_shape, not_finite):
        assert status_of(infer(x)) == "StatusCode.INVALID_ARGUMENT"
    assert status_of(infer(fp32_input(batch), "nope")) == "StatusCode.NOT_FOUND"
    assert status_of(infer(fp32_input(batch), "broken")) == "StatusCode.UNAVAILABLE"
    assert status_of(lambda: client.get_model_metadata("nope")) == "StatusCode.NOT_FOUND"


@e2e
@pytest.mark.parametrize("server_env", [{"BNN_API_KEY": API_KEY}])
def test_api_key(triton):
    client, url = triton
    batch = tiny_batch(url, headers={"x-api-key": API_KEY})
    assert client.is_server_live() and client.is_server_ready()  # probes are open, as over HTTP
    assert status_of(lambda: client.get_server_metadata()) == "StatusCode.UNAUTHENTICATED"
    assert status_of(lambda: client.get_server_metadata(headers={"x-api-key": "wrong"})) == "StatusCode.UNAUTHENTICATED"
    assert status_of(lambda: client.infer("tiny", [fp32_input(batch)])) == "StatusCode.UNAUTHENTICATED"
    result = client.infer("tiny", [fp32_input(batch)], headers={"x-api-key": API_KEY})
    assert result.as_numpy("logits").shape[0] == 2
    assert client.get_server_metadata(headers={"authorization": f"Bearer {API_KEY}"}).name == "bnn-serve"

