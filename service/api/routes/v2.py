"""Open Inference Protocol (KServe v2) REST endpoints, with Triton's model configuration and statistics
extensions; errors keep this service's {"error": ...} body. The protocol itself (lookup, metadata,
configuration, statistics, an inference's checks and outputs) is ``service.api.v2_core``'s, shared with
the gRPC face; here is what is HTTP's: routes, the JSON body and the binary tensor data extension.

Every model route also answers under ``/versions/{version}``, where the version is the model's
manifest ``version`` string (any other is 404).
"""

from __future__ import annotations

from typing import Any

import torch
from fastapi import APIRouter, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

import service
from service.api import v2_core as core
from service.api.cost import PY_FLOAT, check_json_values, check_response_bytes, count_json_values
from service.api.deps import ApiKeyDep, StateDep
from service.api.errors import InvalidInput
from service.api.guard import BudgetedResponse, run_codec, until_disconnect
from service.api.schemas import (
    ErrorBody,
    V2InferRequest,
    V2InferResponse,
    V2Live,
    V2ModelConfig,
    V2ModelMetadata,
    V2ModelReady,
    V2ModelStatsResponse,
    V2Ready,
    V2ServerMetadata,
)

health_router = APIRouter(prefix="/v2/health", tags=["v2"])
router = APIRouter(prefix="/v2", tags=["v2"], dependencies=[ApiKeyDep])

# Binary tensor data extension (KServe / Triton): the body is this many bytes of JSON, then raw tensors.
BINARY_HEADER = "Inference-Header-Content-Length"
_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorBody} for code in (400, 401, 404, 408, 413, 422, 503, 504)
}


@health_router.get("/live", response_model=V2Live)
async def live() -> V2Live:
    return V2Live(live=True)


@health_router.get("/ready", response_model=V2Ready, responses={503: {"model": V2Ready}})
async def ready(state: StateDep) -> JSONResponse:
    return JSONResponse({"ready": state.ready}, status_code=200 if state.ready else 503)


@router.get("", response_model=V2ServerMetadata)
async def server_metadata() -> V2ServerMetadata:
    return V2ServerMetadata(name=core.SERVER_NAME, version=service.__version__, extensions=list(core.EXTENSIONS))


_STATS: dict[str, Any] = dict(
    response_model=V2ModelStatsResponse,
    responses=_ERRORS,
    summary="Inference statistics (Triton's statistics extension)",
    description="Counts and cumulative durations since the service started: requests (success, fail) as the v2 "
    "infer routes (HTTP and gRPC) answered them; per model call, the time each request queued and computed, "
    "images (inference_count) and calls (execution_count), including /predict's.",
)


# Declared before /models/{name}: a model named "stats" is reached under /models/stats/versions/...
@router.get(
    "/models/stats",
    response_model=V2ModelStatsResponse,
    responses=_ERRORS,
    summary="Inference statistics of every served model version",
)
async def all_model_stats(state: StateDep) -> V2ModelStatsResponse:
    return core.model_statistics(state, None)


_METADATA: dict[str, Any] = dict(
    response_model=V2ModelMetadata,
    responses=_ERRORS,
    summary="Model metadata: tensors, and in parameters what the input's values mean",
    description="The input is FP32 `[N, C, H, W]` holding each pixel as `parameters.input.value` says "
    "(raw 0..255 pixels give wrong classes), or BYTES `[N]` holding encoded images (PNG, JPEG, WebP, BMP) "
    "that the service preprocesses as /predict does.",
)


@router.get("/models/{name}", **_METADATA)
async def model_metadata(state: StateDep, name: str) -> V2ModelMetadata:
    return core.model_metadata(state, name, None)


@router.get("/models/{name}/versions/{version}", **_METADATA)
async def model_version_metadata(state: StateDep, name: str, version: str) -> V2ModelMetadata:
    return core.model_metadata(state, name, version)


def _ready(state, name: str, version: str | None) -> JSONResponse:
    is_ready = core.model_ready(state, name, version)
    return JSONResponse({"name": name, "ready": is_ready}, status_code=200 if is_ready else 503)


@router.get("/models/{name}/ready", response_model=V2ModelReady, responses=_ERRORS)
async def model_ready(state: StateDep, name: str) -> JSONResponse:
    return _ready(state, name, None)


@router.get("/models/{name}/versions/{version}/ready", response_model=V2ModelReady, responses=_ERRORS)
async def model_version_ready(state: StateDep, name: str, version: str) -> JSONResponse:
    return _ready(state, name, version)


_CONFIG: dict[str, Any] = dict(
    response_model=V2ModelConfig,
    response_model_exclude_none=True,  # an output has no format
    responses=_ERRORS,
    summary="Model configuration, in the shape of Triton's (tritonclient's get_model_config)",
)


@router.get("/models/{name}/config", **_CONFIG)
async def model_config(state: StateDep, name: str) -> V2ModelConfig:
    return core.model_config(state, name, None)


@router.get("/models/{name}/versions/{version}/config", **_CONFIG)
async def model_version_config(state: StateDep, name: str, version: str) -> V2ModelConfig:
    return core.model_config(state, name, version)


@router.get("/models/{name}/stats", **_STATS)
async def model_stats(state: StateDep, name: str) -> V2ModelStatsResponse:
    return core.model_statistics(state, name)


@router.get("/models/{name}/versions/{version}/stats", **_STATS)
async def model_version_stats(state: StateDep, name: str, version: str) -> V2ModelStatsResponse:
    return core.model_statistics(state, name, version)


_INFER_BODY = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/V2InferRequest"}}},
        "description": "The JSON inference request. With the binary tensor data extension, the body is that JSON "
        f"followed by the raw little-endian tensor bytes, the header `{BINARY_HEADER}` gives the JSON's length "
        'and the input has `"parameters": {"binary_data_size": BYTES}` instead of `data`.',
    }
}


_INFER: dict[str, Any] = dict(
    response_model=V2InferResponse,
    response_model_exclude_none=True,
    responses=_ERRORS,
    openapi_extra=_INFER_BODY,
    description="Open Inference Protocol inference, with the classification and binary tensor data "
    'extensions: ask for binary outputs with `"binary_data": true` on an output or '
    '`"binary_data_output": true` in the request\'s parameters. The input is FP32 `[N, C, H, W]`, '
    "preprocessed as the model metadata's `parameters.input` says, or BYTES `[N]`: one encoded image "
    "(PNG, JPEG, WebP, BMP) per element, as JSON strings or length-prefixed binary data, decoded and "
    "preprocessed as /predict does.",
)


@router.post("/models/{name}/infer", **_INFER)
async def infer(state: StateDep, name: str, request: Request) -> BudgetedResponse:
    model, batcher = state.resolve(name)
    return await core.counted(batcher, _infer(state, model, batcher, request))


@router.post("/models/{name}/versions/{version}/infer", **_INFER)
async def infer_version(state: StateDep, name: str, version: str, request: Request) -> BudgetedResponse:
    model, batcher = state.resolve(name, version)
    return await core.counted(batcher, _infer(state, model, batcher, request))


async def _read_request(request: Request, max_json_values: int) -> tuple[V2InferRequest, bytes, int]:
    """The JSON inference request, the binary tensor data that follows it (empty without the
    extension) and a bound of the numbers in the JSON; the JSON is parsed off the event loop, once
    its size is known to be bounded."""
    body = await request.body()
    declared = request.headers.get(BINARY_HEADER)
    if declared is None:
        header, binary = body, b""
    else:
        try:
            n = int(declared)
        except ValueError:
            raise InvalidInput(f"{BINARY_HEADER} must be an integer, got {declared!r}") from None
        if not 0 < n <= len(body):
            raise InvalidInput(f"{BINARY_HEADER} is {n}, but the body has {len(body)} bytes")
        header, binary = body[:n], body[n:]
    values = count_json_values(header)
    check_json_values(
        values,
        max_json_values,
        "the request's JSON",
        "the input as binary tensor data (the binary_data_size parameter)",
    )
    return await run_codec(_parse, header), binary, values


def _parse(header: bytes) -> V2InferRequest:
    try:
        return V2InferRequest.model_validate_json(header)
    except ValidationError as exc:
        raise RequestValidationError(exc.errors(include_url=False)) from None


async def _infer(state, model, batcher, request: Request) -> BudgetedResponse:
    settings = state.settings
    req, binary, values_in = await _read_request(request, settings.max_json_values)
    requested = core.requested_outputs(req)
    images = core.declared_batch(req, settings.max_queue_size)
    response_bytes, json_values = core.response_size(requested, images, model)
    check_json_values(
        json_values, settings.max_json_values, "the JSON response", 'binary outputs ("binary_data": true)'
    )
    check_response_bytes(response_bytes, settings.max_response_bytes, "the response")
    # the parsed JSON's numbers and the response's, besides the inference's own (encoded images
    # reserve their decoding in decode_images)
    peak = PY_FLOAT * values_in + PY_FLOAT * json_values + core.inference_bytes(model, images, response_bytes)
    reservation = await state.budget.reserve(peak, f"this inference of {images} images")
    try:
        checked = await run_in_threadpool(core.input_tensor, req, binary, model, settings.max_queue_size)
        del binary
        batch = await core.decoded_input(state, model, checked, request)
        logits = await until_disconnect(
            request, batcher.predict(batch, settings.request_timeout_s), f"the inference on {model.name!r}"
        )
        body, headers = await run_codec(_encode, requested, logits, model, req.id)
    except BaseException:
        reservation.release()
        raise
    media_type = "application/octet-stream" if headers else "application/json"
    return BudgetedResponse(
        body, reservation=reservation, send_timeout_s=settings.body_timeout_s, media_type=media_type, headers=headers
    )


def _encode(
    requested: list[core.RequestedOutput], logits: torch.Tensor, model, request_id: str | None
) -> tuple[list[bytes], dict[str, str]]:
    """The response body's pieces, and its headers when binary outputs follow the JSON."""
    outputs, blob = core.outputs(requested, logits, list(model.labels))
    response = V2InferResponse(model_name=model.name, model_version=str(model.version), id=request_id, outputs=outputs)
    header = response.model_dump_json(exclude_none=True).encode()
    if not any(out.binary for out in requested):
        return [header], {}
    return [header, blob], {BINARY_HEADER: str(len(header))}
