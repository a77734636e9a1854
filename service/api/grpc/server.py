"""``inference.GRPCInferenceService`` over the running service's state: the v2 REST routes' checks,
conversions and limits (service.api.routes.v2), the same API key and metrics, on grpcio's asyncio
server in the app's own event loop.

Each RPC maps a ``ServiceError`` to the gRPC status of its HTTP status, with the same message.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import grpc  # type: ignore[import-untyped]
import torch
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

import service
from service.api.cost import FLOAT32, check_response_bytes
from service.api.deps import ServiceState, api_key_matches
from service.api.errors import InvalidInput, ModelNotReady, ServiceError, Unauthorized, _validation_message
from service.api.grpc import messages as pb
from service.api.guard import run_codec
from service.api.routes import v2
from service.api.schemas import V2InferRequest

logger = logging.getLogger("bnn.api")

# A ServiceError's HTTP status -> the gRPC status it answers with (Triton's own mapping, where it has one).
_STATUS = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    401: grpc.StatusCode.UNAUTHENTICATED,
    404: grpc.StatusCode.NOT_FOUND,
    408: grpc.StatusCode.DEADLINE_EXCEEDED,
    413: grpc.StatusCode.RESOURCE_EXHAUSTED,
    422: grpc.StatusCode.INVALID_ARGUMENT,
    499: grpc.StatusCode.CANCELLED,
    503: grpc.StatusCode.UNAVAILABLE,
    504: grpc.StatusCode.DEADLINE_EXCEEDED,
}
# The gRPC port keeps serving through uvicorn's drain (BNN_GRACEFUL_SHUTDOWN_S); this is for the RPCs
# still in flight when the lifespan stops it, kept short so the two fit in a container's stop grace period.
SHUTDOWN_GRACE_S = 5.0
# Probes answer without the API key, as /v2/health/* do over HTTP.
_OPEN_METHODS = frozenset({"ServerLive", "ServerReady"})
# What this face serves of the protocol's extensions (configuration and statistics are HTTP's only).
EXTENSIONS = ["classification"]

Rpc = Callable[[ServiceState, Any, Any], Awaitable[Any]]


async def _server_live(state: ServiceState, request: Any, context: Any) -> Any:
    return pb.ServerLiveResponse(live=True)


async def _server_ready(state: ServiceState, request: Any, context: Any) -> Any:
    return pb.ServerReadyResponse(ready=state.ready)


async def _model_ready(state: ServiceState, request: Any, context: Any) -> Any:
    v2._known(state, request.name)
    try:
        state.resolve(request.name, request.version or None)  # NOT_FOUND for a version the model does not have
    except ModelNotReady:
        return pb.ModelReadyResponse(ready=False)
    return pb.ModelReadyResponse(ready=True)


async def _server_metadata(state: ServiceState, request: Any, context: Any) -> Any:
    return pb.ServerMetadataResponse(name="bnn-serve", version=service.__version__, extensions=EXTENSIONS)


async def _model_metadata(state: ServiceState, request: Any, context: Any) -> Any:
    about = v2._metadata(state, request.name, request.version or None)
    return pb.ModelMetadataResponse(
        name=about.name,
        versions=about.versions,
        platform=about.platform,
        inputs=[t.model_dump() for t in about.inputs],
        outputs=[t.model_dump() for t in about.outputs],
    )


async def _model_infer(state: ServiceState, request: Any, context: Any) -> Any:
    """The inference, counted in the model's statistics as the v2 REST route counts its own."""
    model, batcher = state.resolve(request.model_name, request.model_version or None)
    start = time.perf_counter()
    try:
        response = await _infer(state, model, batcher, request, context)
    except BaseException:
        batcher.stats.request_done(False, time.perf_counter() - start)
        raise
    batcher.stats.request_done(True, time.perf_counter() - start)
    return response


async def _infer(state: ServiceState, model: Any, batcher: Any, request: Any, context: Any) -> Any:
    settings = state.settings
    req, raw = _as_v2_request(request)
    # Every output travels in raw_output_contents: the REST route's binary form, split per output.
    requested = [(name, k, True) for name, k, _ in v2._requested_outputs(req)]
    images = v2._declared_batch(req, settings.max_queue_size)
    response_bytes, _ = v2._response_size(requested, images, model)
    check_response_bytes(response_bytes, settings.max_response_bytes, "the response")
    spec = model.input
    input_bytes = FLOAT32 * images * spec.channels * spec.height * spec.width
    # the request's raw bytes, the input (and its float32 copy), the logits and probabilities, the response
    peak = len(raw) + 2 * input_bytes + 2 * FLOAT32 * images * model.num_classes + 2 * response_bytes
    reservation = await state.budget.reserve(peak, f"this inference of {images} images")
    try:
        batch = await run_in_threadpool(v2._input_tensor, req, raw, model, settings.max_queue_size)
        del raw
        assert isinstance(batch, torch.Tensor)  # BYTES inputs are refused in _as_v2_request
        remaining = context.time_remaining()  # the client's deadline, when it set one
        timeout_s = settings.request_timeout_s if remaining is None else min(settings.request_timeout_s, remaining)
        logits = await batcher.predict(batch, max(timeout_s, 0.001))
        outputs, blob = await run_codec(v2._outputs, requested, logits, list(model.labels))
    finally:
        reservation.release()
    response = pb.ModelInferResponse(model_name=model.name, model_version=str(model.version), id=request.id)
    pos = 0
    for out in outputs:
        size = (out.parameters or {})["binary_data_size"]
        response.outputs.add(name=out.name, datatype=out.datatype, shape=out.shape)
        response.raw_output_contents.append(blob[pos : pos + size])
        pos += size
    return response


def _as_v2_request(request: Any) -> tuple[V2InferRequest, bytes]:
    """The request as the REST route's model and its binary tensor data: raw_input_contents become
    binary data (``binary_data_size``), typed contents the JSON form's ``data``."""
    raw = list(request.raw_input_contents)
    if raw and len(raw) != len(request.inputs):
        raise InvalidInput(f"raw_input_contents has {len(raw)} entries for {len(request.inputs)} inputs")
    inputs: list[dict[str, Any]] = []
    for i, t in enumerate(request.inputs):
        if t.datatype == "BYTES":
            raise InvalidInput(
                f"input {t.name!r}: BYTES (encoded images) is served over HTTP only; send FP32 [N, C, H, W] over gRPC"
            )
        tensor: dict[str, Any] = {"name": t.name, "datatype": t.datatype, "shape": list(t.shape)}
        parameters = _parameters(t.parameters)
        if raw:
            parameters["binary_data_size"] = len(raw[i])
        else:
            tensor["data"] = list(t.contents.fp32_contents)
        tensor["parameters"] = parameters or None
        inputs.append(tensor)
    body = {
        "id": request.id or None,
        "parameters": _parameters(request.parameters) or None,
        "inputs": inputs,
        "outputs": [{"name": o.name, "parameters": _parameters(o.parameters) or None} for o in request.outputs],
    }
    try:
        req = V2InferRequest.model_validate(body)
    except ValidationError as exc:
        raise RequestValidationError(exc.errors(include_url=False)) from None
    return req, raw[0] if len(raw) == 1 else b"".join(raw)


def _parameters(parameters: Any) -> dict[str, Any]:
    """InferParameter values as the JSON form's plain ones."""
    values = {}
    for key, value in parameters.items():
        choice = value.WhichOneof("parameter_choice")
        values[key] = getattr(value, choice) if choice is not None else None
    return values


_RPCS: dict[str, tuple[Rpc, Any, Any]] = {
    "ServerLive": (_server_live, pb.ServerLiveRequest, pb.ServerLiveResponse),
    "ServerReady": (_server_ready, pb.ServerReadyRequest, pb.ServerReadyResponse),
    "ModelReady": (_model_ready, pb.ModelReadyRequest, pb.ModelReadyResponse),
    "ServerMetadata": (_server_metadata, pb.ServerMetadataRequest, pb.ServerMetadataResponse),
    "ModelMetadata": (_model_metadata, pb.ModelMetadataRequest, pb.ModelMetadataResponse),
    "ModelInfer": (_model_infer, pb.ModelInferRequest, pb.ModelInferResponse),
}


def _authorized(context: Any, api_key: bytes) -> bool:
    metadata = [
        (item.key.encode(), item.value if isinstance(item.value, bytes) else item.value.encode())
        for item in context.invocation_metadata() or ()
    ]
    return api_key_matches(metadata, api_key)


def _handler(state: ServiceState, method: str, rpc: Rpc, api_key: bytes | None) -> Callable[..., Awaitable[Any]]:
    """The RPC behind the API key, its errors mapped to statuses, counted as HTTP requests are."""
    route = f"grpc:/{pb.SERVICE}/{method}"
    metrics = state.metrics
    required_key = None if method in _OPEN_METHODS else api_key

    def count(status: grpc.StatusCode, start: float) -> None:
        metrics.requests.labels(route, "GRPC", status.name).inc()
        if status is not grpc.StatusCode.OK:
            metrics.request_failures.labels(route, "GRPC", status.name).inc()
        metrics.request_latency.labels(route, "GRPC").observe(time.perf_counter() - start)

    async def handle(request: Any, context: Any) -> Any:
        start = time.perf_counter()
        try:
            if required_key is not None and not _authorized(context, required_key):
                raise Unauthorized()
            response = await rpc(state, request, context)
        except ServiceError as exc:
            status, message = _STATUS.get(exc.status_code, grpc.StatusCode.UNKNOWN), exc.message
        except RequestValidationError as exc:
            status, message = grpc.StatusCode.INVALID_ARGUMENT, _validation_message(exc)
        except MemoryError:
            status, message = (
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                "not enough memory for this request; send a smaller one",
            )
        except asyncio.CancelledError:
            count(grpc.StatusCode.CANCELLED, start)
            raise
        except Exception:
            logger.exception("unhandled error on gRPC %s", method)
            status, message = grpc.StatusCode.INTERNAL, "internal server error"
        else:
            count(grpc.StatusCode.OK, start)
            return response
        count(status, start)
        await context.abort(status, message)

    return handle


async def start_grpc_server(state: ServiceState) -> Any:
    """The started gRPC server on ``settings.grpc_port`` (None when that is unset or 0). A port set
    explicitly that it cannot listen on stops start-up, as the HTTP port does; the default one is
    skipped with an error logged."""
    settings = state.settings
    if not settings.grpc_port:
        return None
    api_key = settings.api_key.get_secret_value().encode() if settings.api_key is not None else None
    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", settings.max_body_bytes),
            ("grpc.max_send_message_length", settings.max_response_bytes),
            ("grpc.so_reuseport", 0),  # a port in use is an error, not a second server sharing it
        ]
    )
    handlers = {
        method: grpc.unary_unary_rpc_method_handler(
            _handler(state, method, rpc, api_key),
            request_deserializer=request_type.FromString,
            response_serializer=response_type.SerializeToString,
        )
        for method, (rpc, request_type, response_type) in _RPCS.items()
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(pb.SERVICE, handlers),))
    host = f"[{settings.host}]" if ":" in settings.host else settings.host
    address = f"{host}:{settings.grpc_port}"
    try:
        server.add_insecure_port(address)
    except RuntimeError as exc:
        problem = f"cannot listen for gRPC on {address} ({exc})"
        if "grpc_port" in settings.model_fields_set:
            raise RuntimeError(f"{problem}; BNN_GRPC_PORT=0 turns gRPC off") from None
        # Only the default port: a second server on one machine (tests, benchmarks) still starts, without gRPC.
        logger.error("%s; serving without gRPC (set BNN_GRPC_PORT: another port, or 0 for none)", problem)
        return None
    await server.start()
    logger.info("serving gRPC (%s) on %s", pb.SERVICE, address)
    return server
