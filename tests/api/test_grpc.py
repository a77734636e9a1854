"""The Open Inference Protocol over gRPC: NVIDIA's tritonclient.grpc against the app's gRPC face in
process (beside its HTTP face, which every answer is compared with) and against the real server, and
the compiled protocol kept in step with its .proto and with Triton's."""

from __future__ import annotations

import contextlib
import json
import shutil
import socket
import subprocess
import sys

import grpc
import httpx
import numpy as np
import pytest

from service.api.budget import MemoryBudget
from service.api.deps import ServiceState
from service.api.grpc import build_grpc_server, start_grpc_server
from service.api.metrics import ServiceMetrics
from tests.api.conftest import png_bytes, serve, settings
from tests.api.test_e2e import server  # noqa: F401 - the real server (its gRPC port: conftest's grpc_port)
from tests.tiny_model import REPO, export_tiny

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
    """Every message, field and enum value this service defines has tritonclient's name, number and type
    (Triton's grpc_service.proto and model_config.proto; the service keeps only the fields it uses)."""
    service_pb2 = pytest.importorskip("tritonclient.grpc.service_pb2")
    model_config_pb2 = pytest.importorskip("tritonclient.grpc.model_config_pb2")
    from service.api.grpc import messages

    theirs = {**service_pb2.DESCRIPTOR.message_types_by_name, **model_config_pb2.DESCRIPTOR.message_types_by_name}
    their_enums = {**service_pb2.DESCRIPTOR.enum_types_by_name, **model_config_pb2.DESCRIPTOR.enum_types_by_name}
    ours = messages.ModelInferRequest.DESCRIPTOR.file

    def type_name(f):
        kind = f.message_type or f.enum_type
        return kind.full_name if kind is not None else None

    def fields(message):
        rows = {
            (f.name, f.number, f.type, f.is_repeated, type_name(f), f.containing_oneof and f.containing_oneof.name)
            for f in message.fields
        }
        for nested in message.nested_types:
            rows |= {(f"{nested.name}.{name}", *rest) for name, *rest in fields(nested)}
        for enum in message.enum_types:
            rows |= {(f"{enum.name}.{value}", *rest) for value, *rest in values(enum)}
        return rows

    def values(enum):
        return {(v.name, v.number) for v in enum.values}

    for name, message in ours.message_types_by_name.items():
        assert fields(message) <= fields(theirs[name]), name
    for name, enum in ours.enum_types_by_name.items():
        assert values(enum) <= values(their_enums[name]), name
    their_service = service_pb2.DESCRIPTOR.services_by_name["GRPCInferenceService"]
    methods = ours.services_by_name["GRPCInferenceService"].methods
    assert len(methods) == 11
    for method in methods:
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
    config = client.get_model_config("tiny").config  # the synchronous client, as the in-process tests' asyncio one
    assert config.name == "tiny" and config.input[0].name == "input" and list(config.input[0].dims) == [1, 12, 12]


@e2e
def test_load_and_unload_reach_every_worker_of_the_real_server(triton, grpc_port):
    """The real server runs one worker per CPU (at least 2 here, BNN_WORKERS=2), each listening on the
    gRPC port: a model unloaded over one channel is gone for every new channel, and back once loaded."""
    import tritonclient.grpc as tritonclient_grpc

    client, url = triton

    def ready_everywhere() -> set[object]:
        answers = set()
        for _ in range(8):  # new channels, new connections: the kernel spreads them over the workers
            fresh = tritonclient_grpc.InferenceServerClient(f"127.0.0.1:{grpc_port}")
            with contextlib.closing(fresh):
                try:
                    answers.add(fresh.is_model_ready("tiny"))
                except tritonclient_grpc.InferenceServerException as exc:
                    answers.add(exc.status())
        return answers

    assert ready_everywhere() == {True}
    client.unload_model("tiny")
    assert ready_everywhere() == {"StatusCode.NOT_FOUND"}  # as REST's 404: no such model now
    assert httpx.get(f"{url}/v2/models/tiny/ready").status_code == 404
    client.load_model("tiny")
    assert ready_everywhere() == {True}


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
        "tiny",
        [fp32_input(batch)],
        model_version="1",
        outputs=[tritonclient_grpc.InferRequestedOutput("logits", class_count=2)],
    )
    classes = top.as_numpy("logits")
    assert classes.shape == (2, 2) and int(classes[0][0].decode().split(":")[1]) == int(np.argmax(logits[0]))

    stats = httpx.get(f"{url}/v2/models/tiny/stats", timeout=10).json()["model_stats"][0]["inference_stats"]
    assert stats["success"]["count"] >= 3
    assert (
        client.get_inference_statistics("tiny").model_stats[0].inference_stats.success.count
        == stats["success"]["count"]
    )
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


# ---- in process: the app's gRPC face with the repository, beside its HTTP face ---------------------


@pytest.fixture
def store_dir(tmp_path, model_store_dir):
    """A private copy of the test store (tiny + broken) that a test may change."""
    root = tmp_path / "store"
    shutil.copytree(model_store_dir, root)
    return root


@contextlib.asynccontextmanager
async def grpc_and_http(store_dir, **overrides):
    """tritonclient.grpc's asyncio client on the app's gRPC face (every RPC, the repository's included,
    on a free loopback port) and an HTTP client on the same app, its lifespan running."""
    aio = pytest.importorskip("tritonclient.grpc.aio")
    async with serve(None, model_store=store_dir, **overrides) as http:
        server = build_grpc_server(http.app.state.service, http.app.state.repository)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        client = aio.InferenceServerClient(f"127.0.0.1:{port}")
        client.address = f"127.0.0.1:{port}"  # for a test's own calls of the RPCs
        try:
            yield client, http
        finally:
            await client.close()
            await server.stop(None)


async def grpc_status(call) -> str:
    from tritonclient.utils import InferenceServerException

    with pytest.raises(InferenceServerException) as info:
        await call
    return info.value.status()


def plain(value):
    """A protobuf message's JSON (int64s as strings, defaults left out) comparable with REST's JSON."""
    if isinstance(value, dict):
        items = ((k, plain(v)) for k, v in value.items())
        return {k: v for k, v in items if v not in (0, "", False, [], {})}
    if isinstance(value, list):
        return [plain(v) for v in value]
    return int(value) if isinstance(value, str) and value.isdigit() else value


def index_of(response) -> list[dict[str, str]]:
    return [{"name": m.name, "version": m.version, "state": m.state, "reason": m.reason} for m in response.models]


@pytest.mark.anyio
async def test_model_config_equals_rest(store_dir):
    async with grpc_and_http(store_dir) as (client, http):
        config = (await client.get_model_config("tiny", as_json=True))["config"]
        rest = (await http.get("/v2/models/tiny/config")).json()
        assert config["input"][0]["data_type"] == "TYPE_FP32" and config["input"][0]["format"] == "FORMAT_NCHW"
        assert config["input"][0]["dims"] == ["1", "12", "12"] and config["output"][1]["name"] == "probabilities"
        assert config["dynamic_batching"]["max_queue_delay_microseconds"] == "5000"
        assert config["parameters"]["mean"] == {"string_value": "[0.5]"}
        assert plain(config) == plain(rest)
        assert (await client.get_model_config("tiny", "1", as_json=True))["config"]["name"] == "tiny"

        for name, version, status in (("nope", "", 404), ("tiny", "2", 404), ("broken", "", 503)):
            path = f"/v2/models/{name}/versions/{version}/config" if version else f"/v2/models/{name}/config"
            assert (await http.get(path)).status_code == status
            expected = "StatusCode.NOT_FOUND" if status == 404 else "StatusCode.UNAVAILABLE"
            assert await grpc_status(client.get_model_config(name, version)) == expected


@pytest.mark.anyio
async def test_statistics_count_grpc_inferences(store_dir):
    import tritonclient.grpc.aio as aio

    async with grpc_and_http(store_dir) as (client, http):
        before = (await client.get_inference_statistics("tiny", as_json=True))["model_stats"][0]
        assert before["name"] == "tiny" and before["version"] == "1"
        assert "success" not in before["inference_stats"] or before["inference_stats"]["success"] == {}
        x = aio.InferInput("input", [3, 1, 12, 12], "FP32")
        x.set_data_from_numpy(np.zeros((3, 1, 12, 12), np.float32))
        await client.infer("tiny", [x])
        bad = aio.InferInput("input", [3, 1, 12, 11], "FP32")
        bad.set_data_from_numpy(np.zeros((3, 1, 12, 11), np.float32))
        assert await grpc_status(client.infer("tiny", [bad])) == "StatusCode.INVALID_ARGUMENT"

        after = (await client.get_inference_statistics("tiny", "1", as_json=True))["model_stats"][0]
        assert (
            after["inference_stats"]["success"]["count"] == "1" and int(after["inference_stats"]["success"]["ns"]) > 0
        )
        assert after["inference_stats"]["fail"]["count"] == "1"
        assert after["inference_count"] == "3" and after["execution_count"] == "1"
        assert after["batch_stats"][0]["batch_size"] == "3"
        assert plain(after) == plain((await http.get("/v2/models/tiny/stats")).json()["model_stats"][0])

        every = (await client.get_inference_statistics(as_json=True))["model_stats"]  # no name: every model
        assert plain(every) == plain((await http.get("/v2/models/stats")).json()["model_stats"])
        assert [s["name"] for s in every] == ["tiny"]
        assert await grpc_status(client.get_inference_statistics("nope")) == "StatusCode.NOT_FOUND"
        assert await grpc_status(client.get_inference_statistics("tiny", "2")) == "StatusCode.NOT_FOUND"
        assert await grpc_status(client.get_inference_statistics("broken")) == "StatusCode.UNAVAILABLE"
        metrics = (await http.get("/metrics")).text
        assert 'route="grpc:/inference.GRPCInferenceService/ModelStatistics"' in metrics


@pytest.mark.anyio
async def test_repository_index_load_and_unload(store_dir):
    import grpc

    from service.api.grpc import messages as pb

    async with grpc_and_http(store_dir) as (client, http):
        index = index_of(await client.get_model_repository_index())
        assert index == (await http.post("/v2/repository/index")).json()
        assert {"name": "tiny", "version": "1", "state": "READY", "reason": ""} in index
        assert next(e for e in index if e["name"] == "broken")["state"] == "UNAVAILABLE"

        export_tiny(store_dir / "extra", name="extra", seed=3)
        assert await grpc_status(client.is_model_ready("extra")) == "StatusCode.NOT_FOUND"
        await client.load_model("extra")
        assert await client.is_model_ready("extra")
        assert (await http.get("/v2/models/extra/ready")).status_code == 200
        assert {"name": "extra", "version": "1", "state": "READY", "reason": ""} in index_of(
            await client.get_model_repository_index()
        )

        await client.unload_model("extra")
        assert (await http.get("/v2/models/extra/ready")).status_code == 404
        assert await grpc_status(client.is_model_ready("extra")) == "StatusCode.NOT_FOUND"
        assert await grpc_status(client.unload_model("extra")) == "StatusCode.NOT_FOUND"  # HTTP: 404
        assert await grpc_status(client.load_model("nothing-here")) == "StatusCode.NOT_FOUND"
        assert await grpc_status(client.load_model("broken")) == "StatusCode.INVALID_ARGUMENT"  # HTTP: 400

        # The request's ready flag (tritonclient does not set it): only the served versions.
        async with grpc.aio.insecure_channel(client.address) as channel:
            index_rpc = channel.unary_unary(
                f"/{pb.SERVICE}/RepositoryIndex",
                request_serializer=pb.RepositoryIndexRequest.SerializeToString,
                response_deserializer=pb.RepositoryIndexResponse.FromString,
            )
            ready = index_of(await index_rpc(pb.RepositoryIndexRequest(ready=True)))
        assert ready == (await http.post("/v2/repository/index", json={"ready": True})).json()
        assert [e["name"] for e in ready] == ["tiny"]


@pytest.mark.anyio
async def test_model_control_none_refuses_load_and_unload(store_dir):
    async with grpc_and_http(store_dir, model_control="none") as (client, http):
        assert (await http.post("/v2/repository/models/tiny/unload")).status_code == 403
        assert await grpc_status(client.unload_model("tiny")) == "StatusCode.PERMISSION_DENIED"
        assert await grpc_status(client.load_model("tiny")) == "StatusCode.PERMISSION_DENIED"
        assert await client.is_model_ready("tiny")
        assert [e["name"] for e in index_of(await client.get_model_repository_index())] == ["broken", "tiny"]


@pytest.mark.anyio
async def test_every_rpc_but_the_probes_needs_the_api_key(store_dir):
    async with grpc_and_http(store_dir, api_key=API_KEY) as (client, _):
        key = {"x-api-key": API_KEY}
        assert await client.is_server_live() and await client.is_server_ready()
        calls = {
            "config": lambda headers: client.get_model_config("tiny", headers=headers),
            "stats": lambda headers: client.get_inference_statistics("tiny", headers=headers),
            "index": lambda headers: client.get_model_repository_index(headers=headers),
            "load": lambda headers: client.load_model("tiny", headers=headers),
            "unload": lambda headers: client.unload_model("broken", headers=headers),
        }
        for name, call in calls.items():
            for headers in (None, {"x-api-key": "wrong"}):
                assert await grpc_status(call(headers)) == "StatusCode.UNAUTHENTICATED", name
            await call(key)
        assert await client.is_model_ready("tiny", headers={"authorization": f"Bearer {API_KEY}"})


def length_prefixed(elements: list[bytes]) -> bytes:
    return b"".join(len(e).to_bytes(4, "little") + e for e in elements)


@pytest.mark.anyio
async def test_encoded_images_as_bytes_equal_rest(store_dir):
    import tritonclient.grpc.aio as aio

    from service.api.grpc import messages as pb

    # a small image decoded on the event loop, a large one in a worker thread (as over REST)
    images = [png_bytes(size=(12, 12), color=30), png_bytes("RGB", size=(300, 200), color=(200, 10, 90))]
    async with grpc_and_http(store_dir) as (client, http):
        x = aio.InferInput("input", [2], "BYTES")
        x.set_data_from_numpy(np.array(images, dtype=np.object_))
        logits = (await client.infer("tiny", [x])).as_numpy("logits")
        assert logits.shape == (2, 4) and logits.dtype == np.float32

        blob = length_prefixed(images)
        header = json.dumps(
            {
                "inputs": [
                    {"name": "input", "datatype": "BYTES", "shape": [2], "parameters": {"binary_data_size": len(blob)}}
                ],
                "outputs": [{"name": "logits", "parameters": {"binary_data": True}}],
            }
        ).encode()
        r = await http.post(
            "/v2/models/tiny/infer",
            content=header + blob,
            headers={"Inference-Header-Content-Length": str(len(header))},
        )
        assert r.status_code == 200, r.text
        assert r.content[int(r.headers["inference-header-content-length"]) :] == logits.tobytes()

        # typed contents (bytes_contents) instead of raw_input_contents: the same answer
        request = pb.ModelInferRequest(model_name="tiny")
        request.inputs.add(name="input", datatype="BYTES", shape=[2]).contents.bytes_contents.extend(images)
        async with grpc.aio.insecure_channel(client.address) as channel:
            infer_rpc = channel.unary_unary(
                f"/{pb.SERVICE}/ModelInfer",
                request_serializer=pb.ModelInferRequest.SerializeToString,
                response_deserializer=pb.ModelInferResponse.FromString,
            )
            response = await infer_rpc(request)
        assert response.outputs[0].name == "logits" and response.raw_output_contents[0] == logits.tobytes()

        not_an_image = aio.InferInput("input", [1], "BYTES")
        not_an_image.set_data_from_numpy(np.array([b"GIF89a not really"], dtype=np.object_))
        wrong_shape = aio.InferInput("input", [1, 2], "BYTES")
        wrong_shape.set_data_from_numpy(np.array([images], dtype=np.object_))
        for bad in (not_an_image, wrong_shape):
            assert await grpc_status(client.infer("tiny", [bad])) == "StatusCode.INVALID_ARGUMENT"
