"""``inference.GRPCInferenceService`` over the running service's state: the RPCs of
``inference_service.py`` (the protocol of ``service.api.v2_core``, shared with the REST routes) behind
the same API key and metrics as HTTP, on grpcio's asyncio server in the app's own event loop.

Each RPC maps a ``ServiceError`` to the gRPC status of its HTTP status, with the same message.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import grpc  # type: ignore[import-untyped]
from fastapi.exceptions import RequestValidationError

from service.api.deps import ServiceState, api_key_matches
from service.api.errors import ServiceError, Unauthorized, _validation_message
from service.api.grpc import messages as pb
from service.api.grpc.inference_service import REPOSITORY_RPCS, InferenceService
from service.api.repository import Repository

logger = logging.getLogger("bnn.api")

# A ServiceError's HTTP status -> the gRPC status it answers with (Triton's own mapping, where it has one).
_STATUS = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    401: grpc.StatusCode.UNAUTHENTICATED,
    403: grpc.StatusCode.PERMISSION_DENIED,
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

Rpc = Callable[[Any, Any], Awaitable[Any]]

# Every RPC served: its request and response messages (the coroutine is InferenceService's method of its name).
RPCS: dict[str, tuple[Any, Any]] = {
    "ServerLive": (pb.ServerLiveRequest, pb.ServerLiveResponse),
    "ServerReady": (pb.ServerReadyRequest, pb.ServerReadyResponse),
    "ModelReady": (pb.ModelReadyRequest, pb.ModelReadyResponse),
    "ServerMetadata": (pb.ServerMetadataRequest, pb.ServerMetadataResponse),
    "ModelMetadata": (pb.ModelMetadataRequest, pb.ModelMetadataResponse),
    "ModelInfer": (pb.ModelInferRequest, pb.ModelInferResponse),
    "ModelConfig": (pb.ModelConfigRequest, pb.ModelConfigResponse),
    "ModelStatistics": (pb.ModelStatisticsRequest, pb.ModelStatisticsResponse),
    "RepositoryIndex": (pb.RepositoryIndexRequest, pb.RepositoryIndexResponse),
    "RepositoryModelLoad": (pb.RepositoryModelLoadRequest, pb.RepositoryModelLoadResponse),
    "RepositoryModelUnload": (pb.RepositoryModelUnloadRequest, pb.RepositoryModelUnloadResponse),
}


def _authorized(context: Any, api_key: bytes) -> bool:
    metadata = [
        (item.key.encode(), item.value if isinstance(item.value, bytes) else item.value.encode())
        for item in context.invocation_metadata() or ()
    ]
    return api_key_matches(metadata, api_key)


def _handler(state: ServiceState, method: str, rpc: Rpc, api_key: bytes | None) -> Rpc:
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
            response = await rpc(request, context)
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


def build_grpc_server(state: ServiceState, repository: Repository | None = None) -> Any:
    """A gRPC server (not yet listening) with every RPC of :data:`RPCS`; without ``repository``, the
    repository RPCs are left out (UNIMPLEMENTED)."""
    settings = state.settings
    api_key = settings.api_key.get_secret_value().encode() if settings.api_key is not None else None
    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", settings.max_body_bytes),
            ("grpc.max_send_message_length", settings.max_response_bytes),
            # One worker: a port in use is an error, not a second server sharing it. Several: each worker
            # listens on the port and the kernel shares the connections out.
            ("grpc.so_reuseport", 1 if state.workers.shared else 0),
        ]
    )
    rpcs = InferenceService(state, repository)
    handlers = {
        method: grpc.unary_unary_rpc_method_handler(
            _handler(state, method, getattr(rpcs, method), api_key),
            request_deserializer=request_type.FromString,
            response_serializer=response_type.SerializeToString,
        )
        for method, (request_type, response_type) in RPCS.items()
        if repository is not None or method not in REPOSITORY_RPCS
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(pb.SERVICE, handlers),))
    return server


async def start_grpc_server(state: ServiceState, repository: Repository | None = None) -> Any:
    """The started gRPC server on ``settings.grpc_port`` (None when that is unset or 0), serving the
    repository RPCs on ``repository``. A port set explicitly that it cannot listen on stops start-up,
    as the HTTP port does; the default one is skipped with an error logged."""
    settings = state.settings
    if not settings.grpc_port:
        return None
    server = build_grpc_server(state, repository)
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
