"""Open Inference Protocol (KServe v2) REST endpoints; errors keep this service's {"error": ...} body."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from fastapi import APIRouter, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

import service
from service.api.cost import (
    FLOAT32,
    PY_FLOAT,
    check_json_values,
    check_response_bytes,
    count_json_values,
    json_float_bytes,
)
from service.api.deps import ApiKeyDep, StateDep
from service.api.errors import InvalidInput, ModelNotFound, PayloadTooLarge
from service.api.guard import BudgetedResponse, run_codec, until_disconnect
from service.api.schemas import (
    ErrorBody,
    V2InferRequest,
    V2InferResponse,
    V2Live,
    V2ModelMetadata,
    V2ModelReady,
    V2OutputTensor,
    V2Ready,
    V2ServerMetadata,
    V2TensorMetadata,
)

health_router = APIRouter(prefix="/v2/health", tags=["v2"])
router = APIRouter(prefix="/v2", tags=["v2"], dependencies=[ApiKeyDep])

INPUT_NAME = "input"
OUTPUTS = ("logits", "probabilities")
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
    return V2ServerMetadata(
        name="bnn-serve", version=service.__version__, extensions=["classification", "binary_tensor_data"]
    )


def _known(state, name: str) -> None:
    if name not in state.models and name not in state.errors:
        raise ModelNotFound(f"model {name!r} not found; available: {sorted(state.models)}")


@router.get("/models/{name}", response_model=V2ModelMetadata, responses=_ERRORS)
async def model_metadata(state: StateDep, name: str) -> V2ModelMetadata:
    model, _ = state.resolve(name)
    spec = model.input
    return V2ModelMetadata(
        name=model.name,
        versions=[str(model.version)],
        platform="bnn-serve",
        inputs=[V2TensorMetadata(name=INPUT_NAME, datatype="FP32", shape=[-1, spec.channels, spec.height, spec.width])],
        outputs=[V2TensorMetadata(name=o, datatype="FP32", shape=[-1, model.num_classes]) for o in OUTPUTS],
    )


@router.get("/models/{name}/ready", response_model=V2ModelReady, responses=_ERRORS)
async def model_ready(state: StateDep, name: str) -> JSONResponse:
    _known(state, name)
    is_ready = name in state.batchers
    return JSONResponse({"name": name, "ready": is_ready}, status_code=200 if is_ready else 503)


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


def _input_tensor(req: V2InferRequest, binary: bytes, model, max_images: int) -> torch.Tensor:
    if len(req.inputs) != 1:
        raise InvalidInput(f"expected exactly one input tensor ({INPUT_NAME!r}), got {len(req.inputs)}")
    t = req.inputs[0]
    spec = model.input
    expected = [spec.channels, spec.height, spec.width]
    if t.name != INPUT_NAME:
        raise InvalidInput(f"unknown input {t.name!r}; this model's input is {INPUT_NAME!r}")
    if t.datatype != "FP32":
        raise InvalidInput(f"input {t.name!r} must have datatype FP32, got {t.datatype!r}")
    if len(t.shape) != 4 or t.shape[1:] != expected or t.shape[0] < 1:
        raise InvalidInput(
            f"input {t.name!r} must have shape [N, {', '.join(map(str, expected))}] with N >= 1, got {t.shape}"
        )
    if t.shape[0] > max_images:
        raise PayloadTooLarge(f"batch of {t.shape[0]} images; the limit is {max_images}")
    count = math.prod(t.shape)
    size = (t.parameters or {}).get("binary_data_size")
    if size is not None:
        array = _binary_input(t, size, count, binary)
    elif t.data is None:
        raise InvalidInput(f"input {t.name!r} has neither data nor the parameter binary_data_size")
    elif binary:
        raise InvalidInput(f"{len(binary)} bytes follow the JSON header, but no input has binary_data_size")
    else:
        array = _json_input(t, count)
    if not np.isfinite(array).all():  # a model's float layers would turn them into null logits
        raise InvalidInput(f"input {t.name!r}: data must be finite (no NaN or infinity)")
    return torch.from_numpy(array.reshape(t.shape))


def _json_input(t, count: int) -> np.ndarray:
    try:
        array = np.asarray(t.data)
    except (ValueError, TypeError):
        array = None
    if array is None or array.dtype.kind not in "biuf":  # null, strings or objects would pass a float32 cast
        raise InvalidInput(f"input {t.name!r}: data must be numbers, flat or nested evenly")
    if array.size != count:
        raise InvalidInput(f"input {t.name!r}: data has {array.size} values but shape {t.shape} needs {count}")
    return array.astype(np.float32)


def _binary_input(t, size, count: int, binary: bytes) -> np.ndarray:
    if t.data is not None:
        raise InvalidInput(f"input {t.name!r} has both data and binary_data_size")
    if isinstance(size, bool) or not isinstance(size, int) or size != 4 * count:
        raise InvalidInput(
            f"input {t.name!r}: binary_data_size must be {4 * count} ({count} FP32 values "
            f"for shape {t.shape}), got {size!r}"
        )
    if len(binary) != size:
        raise InvalidInput(
            f"input {t.name!r}: binary_data_size is {size}, but {len(binary)} bytes follow the JSON header"
        )
    return np.frombuffer(binary, dtype="<f4").astype(np.float32)  # a writable copy in native order


def _classification(logits: torch.Tensor, labels: list[str], k: int) -> list[str]:
    """Triton's classification extension: "value:index:label" for the top k, highest first."""
    values, indices = torch.topk(logits, min(k, logits.shape[1]), dim=1)
    return [
        f"{v:f}:{i}:{labels[i] if i < len(labels) else i}"
        for row_v, row_i in zip(values.tolist(), indices.tolist())
        for v, i in zip(row_v, row_i)
    ]


def _requested_outputs(req: V2InferRequest) -> list[tuple[str, int | None, bool]]:
    """(output name, classification k or None, as binary data) per requested output, checked
    before inference: each an output of the model, at most once; none requested means all."""
    binary_default = _flag((req.parameters or {}).get("binary_data_output"), "request parameter binary_data_output")
    if not req.outputs:
        return [(name, None, binary_default) for name in OUTPUTS]
    requested = []
    seen = set()
    for out in req.outputs:
        if out.name not in OUTPUTS:
            raise InvalidInput(f"unknown output {out.name!r}; this model has {list(OUTPUTS)}")
        if out.name in seen:
            raise InvalidInput(f"output {out.name!r} is requested more than once")
        seen.add(out.name)
        params = out.parameters or {}
        k = params.get("classification")
        if k is not None and (isinstance(k, bool) or not isinstance(k, int) or k < 1):
            raise InvalidInput(f"output {out.name!r}: parameter classification must be an integer >= 1, got {k!r}")
        binary = _flag(params.get("binary_data"), f"output {out.name!r}: parameter binary_data")
        requested.append((out.name, k, binary_default if params.get("binary_data") is None else binary))
    return requested


def _flag(value, what: str) -> bool:
    if value is None:
        return False
    if not isinstance(value, bool):
        raise InvalidInput(f"{what} must be true or false, got {value!r}")
    return value


def _outputs(requested, logits: torch.Tensor, labels: list[str]) -> tuple[list[V2OutputTensor], bytes]:
    """The response's output tensors, and the binary data of those asked for as binary, in order."""
    outputs, blobs = [], []
    for name, k, binary in requested:
        values = logits if name == "logits" else torch.softmax(logits, dim=1)
        data: list[Any] | None
        if k is not None:
            k = min(k, values.shape[1])
            shape, datatype, data = [values.shape[0], k], "BYTES", _classification(values, labels, k)
            raw = b"".join(len(b).to_bytes(4, "little") + b for b in (v.encode() for v in data)) if binary else b""
        else:
            shape, datatype = list(values.shape), "FP32"
            data = None if binary else values.flatten().tolist()
            raw = values.numpy().astype("<f4").tobytes() if binary else b""
        if binary:
            outputs.append(
                V2OutputTensor(name=name, shape=shape, datatype=datatype, parameters={"binary_data_size": len(raw)})
            )
            blobs.append(raw)
        else:
            outputs.append(V2OutputTensor(name=name, shape=shape, datatype=datatype, data=data))
    return outputs, b"".join(blobs)


_INFER_BODY = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/V2InferRequest"}}},
        "description": "The JSON inference request. With the binary tensor data extension, the body is that JSON "
        f"followed by the raw little-endian tensor bytes, the header `{BINARY_HEADER}` gives the JSON's length "
        'and the input has `"parameters": {"binary_data_size": BYTES}` instead of `data`.',
    }
}


@router.post(
    "/models/{name}/infer",
    response_model=V2InferResponse,
    response_model_exclude_none=True,
    responses=_ERRORS,
    openapi_extra=_INFER_BODY,
    description="Open Inference Protocol inference, with the classification and binary tensor data "
    'extensions: ask for binary outputs with `"binary_data": true` on an output or '
    '`"binary_data_output": true` in the request\'s parameters.',
)
async def infer(state: StateDep, name: str, request: Request) -> BudgetedResponse:
    model, batcher = state.resolve(name)
    settings = state.settings
    req, binary, values_in = await _read_request(request, settings.max_json_values)
    requested = _requested_outputs(req)
    images = _declared_batch(req, settings.max_queue_size)
    response_bytes, json_values = _response_size(requested, images, model)
    check_json_values(
        json_values, settings.max_json_values, "the JSON response", 'binary outputs ("binary_data": true)'
    )
    check_response_bytes(response_bytes, settings.max_response_bytes, "the response")
    spec = model.input
    input_bytes = FLOAT32 * images * spec.channels * spec.height * spec.width
    # the parsed JSON's numbers, the input (and its float32 copy), the logits and probabilities, their
    # serialised form, the body
    peak = (
        PY_FLOAT * values_in
        + 2 * input_bytes
        + 2 * FLOAT32 * images * model.num_classes
        + PY_FLOAT * json_values
        + 2 * response_bytes
    )
    reservation = await state.budget.reserve(peak, f"this inference of {images} images")
    try:
        batch = await run_in_threadpool(_input_tensor, req, binary, model, settings.max_queue_size)
        del binary
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


def _declared_batch(req: V2InferRequest, max_images: int) -> int:
    """The batch size the input declares, bounded before anything is sized by it (the whole shape
    is checked, with the other inputs' faults, in _input_tensor)."""
    shape = req.inputs[0].shape if req.inputs else []
    n = shape[0] if shape and isinstance(shape[0], int) and shape[0] >= 1 else 1
    if n > max_images:
        raise PayloadTooLarge(f"batch of {n} images; the limit is {max_images} (setting BNN_MAX_QUEUE_SIZE)")
    return n


def _response_size(requested, images: int, model) -> tuple[int, int]:
    """(an upper bound of the response's bytes, the numbers its JSON holds), from the request alone."""
    nbytes, values = 512, 0
    label = max((len(lbl.encode()) for lbl in model.labels), default=0) + 48  # "value:index:label" + framing
    for _, k, binary in requested:
        per_image = min(k, model.num_classes) if k is not None else model.num_classes
        if k is not None:
            nbytes += images * per_image * (label + 4)
        elif binary:
            nbytes += images * per_image * FLOAT32
        else:
            nbytes += images * per_image * json_float_bytes()
            values += images * per_image
    return nbytes, values


def _encode(requested, logits: torch.Tensor, model, request_id: str | None) -> tuple[list[bytes], dict[str, str]]:
    """The response body's pieces, and its headers when binary outputs follow the JSON."""
    outputs, blob = _outputs(requested, logits, list(model.labels))
    response = V2InferResponse(model_name=model.name, model_version=str(model.version), id=request_id, outputs=outputs)
    header = response.model_dump_json(exclude_none=True).encode()
    if not any(binary for _, _, binary in requested):
        return [header], {}
    return [header, blob], {BINARY_HEADER: str(len(header))}
