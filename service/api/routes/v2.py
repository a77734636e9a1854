"""Open Inference Protocol (KServe v2) REST endpoints, with Triton's model configuration and statistics
extensions; errors keep this service's {"error": ...} body.

Every model route also answers under ``/versions/{version}``, where the version is the model's
manifest ``version`` string (any other is 404).
"""

from __future__ import annotations

import json
import math
import time
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
from service.api.errors import InvalidInput, ModelNotFound, ModelNotReady, PayloadTooLarge
from service.api.guard import BudgetedResponse, run_codec, until_disconnect
from service.api.images import ACCEPTED_FORMATS, decode_images, open_images
from service.api.metrics import ModelStats
from service.api.schemas import (
    ErrorBody,
    TritonDynamicBatching,
    TritonInstanceGroup,
    TritonTensorConfig,
    V2InferRequest,
    V2InferResponse,
    V2Live,
    V2ModelConfig,
    V2ModelMetadata,
    V2ModelReady,
    V2ModelStatsResponse,
    V2OutputTensor,
    V2Ready,
    V2ServerMetadata,
    V2TensorMetadata,
)

health_router = APIRouter(prefix="/v2/health", tags=["v2"])
router = APIRouter(prefix="/v2", tags=["v2"], dependencies=[ApiKeyDep])

PLATFORM = "bnn-serve"
INPUT_NAME = "input"
OUTPUTS = ("logits", "probabilities")
_OUTPUT_MEANING = {"logits": "class scores (logits)", "probabilities": "softmax of the logits"}
# The preprocessing's pixel scale: service.model.preprocess divides 0..255 pixels by 255.
PIXEL_SCALE = 1 / 255
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
        name="bnn-serve",
        version=service.__version__,
        extensions=["classification", "binary_tensor_data", "model_configuration", "statistics"],
    )


def _known(state, name: str) -> None:
    if name not in state.models and name not in state.errors:
        raise ModelNotFound(f"model {name!r} not found; available: {sorted(state.models)}")


# Declared before /models/{name}: a model named "stats" is reached under /models/stats/versions/...
@router.get(
    "/models/stats",
    response_model=V2ModelStatsResponse,
    responses=_ERRORS,
    summary="Inference statistics of every served model version",
)
async def all_model_stats(state: StateDep) -> V2ModelStatsResponse:
    return _stats([batcher.stats for _, versions in sorted(state.served.items()) for _, batcher in versions.values()])


def _input_shape(model) -> list[int]:
    spec = model.input
    return [-1, spec.channels, spec.height, spec.width]


def _tensor_parameters(model) -> dict[str, dict[str, Any]]:
    """What each tensor's values mean: the input's layout and preprocessing (everything the model's
    input spec holds) and its encoded-image form; the outputs' labels."""
    spec = model.input
    value = "(1 - pixel * scale - mean[c]) / std[c]" if spec.invert else "(pixel * scale - mean[c]) / std[c]"
    described: dict[str, dict[str, Any]] = {
        INPUT_NAME: {
            "datatype": "FP32",
            "shape": _input_shape(model),
            "layout": "NCHW",
            "color_mode": "L" if spec.channels == 1 else "RGB",
            "value": value,
            "scale": PIXEL_SCALE,
            **spec.model_dump(mode="json"),
            "encoded_datatype": "BYTES",
            "encoded_shape": [-1],
            "encoded_formats": list(ACCEPTED_FORMATS),
        }
    }
    for name in OUTPUTS:
        described[name] = {
            "datatype": "FP32",
            "shape": [-1, model.num_classes],
            "value": _OUTPUT_MEANING[name],
            "labels": list(model.labels),
        }
    return described


def _metadata(state, name: str, version: str | None) -> V2ModelMetadata:
    model, _ = state.resolve(name, version)
    return V2ModelMetadata(
        name=model.name,
        versions=list(state.served.get(model.name, {})) or [str(model.version)],  # every served version
        platform=PLATFORM,
        inputs=[V2TensorMetadata(name=INPUT_NAME, datatype="FP32", shape=_input_shape(model))],
        outputs=[V2TensorMetadata(name=o, datatype="FP32", shape=[-1, model.num_classes]) for o in OUTPUTS],
        parameters=_tensor_parameters(model),
    )


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
    return _metadata(state, name, None)


@router.get("/models/{name}/versions/{version}", **_METADATA)
async def model_version_metadata(state: StateDep, name: str, version: str) -> V2ModelMetadata:
    return _metadata(state, name, version)


def _ready(state, name: str, version: str | None) -> JSONResponse:
    _known(state, name)
    try:
        state.resolve(name, version)  # 404 for a version the model does not have
        is_ready = True
    except ModelNotReady:
        is_ready = False
    return JSONResponse({"name": name, "ready": is_ready}, status_code=200 if is_ready else 503)


@router.get("/models/{name}/ready", response_model=V2ModelReady, responses=_ERRORS)
async def model_ready(state: StateDep, name: str) -> JSONResponse:
    return _ready(state, name, None)


@router.get("/models/{name}/versions/{version}/ready", response_model=V2ModelReady, responses=_ERRORS)
async def model_version_ready(state: StateDep, name: str, version: str) -> JSONResponse:
    return _ready(state, name, version)


def _config(state, name: str, version: str | None) -> V2ModelConfig:
    model, _ = state.resolve(name, version)
    settings = state.settings
    spec = model.input
    preprocessing = _tensor_parameters(model)[INPUT_NAME]
    return V2ModelConfig(
        name=model.name,
        platform=PLATFORM,
        backend=PLATFORM,
        max_batch_size=settings.max_batch_size,
        input=[
            TritonTensorConfig(
                name=INPUT_NAME,
                data_type="TYPE_FP32",
                format="FORMAT_NCHW",
                dims=[spec.channels, spec.height, spec.width],
            )
        ],
        output=[TritonTensorConfig(name=o, data_type="TYPE_FP32", dims=[model.num_classes]) for o in OUTPUTS],
        dynamic_batching=TritonDynamicBatching(max_queue_delay_microseconds=round(settings.max_queue_delay_ms * 1000)),
        instance_group=[TritonInstanceGroup(name=f"{model.name}_0")],
        parameters={
            key: {"string_value": value if isinstance(value, str) else json.dumps(value)}
            for key, value in preprocessing.items()
        },
    )


_CONFIG: dict[str, Any] = dict(
    response_model=V2ModelConfig,
    response_model_exclude_none=True,  # an output has no format
    responses=_ERRORS,
    summary="Model configuration, in the shape of Triton's (tritonclient's get_model_config)",
)


@router.get("/models/{name}/config", **_CONFIG)
async def model_config(state: StateDep, name: str) -> V2ModelConfig:
    return _config(state, name, None)


@router.get("/models/{name}/versions/{version}/config", **_CONFIG)
async def model_version_config(state: StateDep, name: str, version: str) -> V2ModelConfig:
    return _config(state, name, version)


def _stats(stats: list[ModelStats]) -> V2ModelStatsResponse:
    return V2ModelStatsResponse.model_validate({"model_stats": [s.as_dict() for s in stats]})


_STATS: dict[str, Any] = dict(
    response_model=V2ModelStatsResponse,
    responses=_ERRORS,
    summary="Inference statistics (Triton's statistics extension)",
    description="Counts and cumulative durations since the service started: requests (success, fail) as the v2 "
    "infer route answered them; per model call, the time each request queued and computed, images "
    "(inference_count) and calls (execution_count), including /predict's.",
)


@router.get("/models/{name}/stats", **_STATS)
async def model_stats(state: StateDep, name: str) -> V2ModelStatsResponse:
    _, batcher = state.resolve(name)
    return _stats([batcher.stats])


@router.get("/models/{name}/versions/{version}/stats", **_STATS)
async def model_version_stats(state: StateDep, name: str, version: str) -> V2ModelStatsResponse:
    _, batcher = state.resolve(name, version)
    return _stats([batcher.stats])


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


EncodedImages = list[tuple[str, bytes]]  # (what an error calls the element, its bytes)


def _input_tensor(req: V2InferRequest, binary: bytes, model, max_images: int) -> torch.Tensor | EncodedImages:
    """The checked input: the FP32 batch itself, or for a BYTES input its encoded images, to decode."""
    if len(req.inputs) != 1:
        raise InvalidInput(f"expected exactly one input tensor ({INPUT_NAME!r}), got {len(req.inputs)}")
    t = req.inputs[0]
    spec = model.input
    expected = [spec.channels, spec.height, spec.width]
    if t.name != INPUT_NAME:
        raise InvalidInput(f"unknown input {t.name!r}; this model's input is {INPUT_NAME!r}")
    if t.datatype == "BYTES":
        return _encoded_images(t, binary, max_images)
    if t.datatype != "FP32":
        raise InvalidInput(
            f"input {t.name!r} must have datatype FP32, got {t.datatype!r} (or BYTES: one encoded image per element)"
        )
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


def _encoded_images(t, binary: bytes, max_images: int) -> EncodedImages:
    """A BYTES input's elements, each an encoded image: JSON strings (their UTF-8 bytes, as the protocol
    defines BYTES in JSON) or binary tensor data (each element a 4-byte little-endian length, then its bytes)."""
    if len(t.shape) not in (1, 2) or t.shape[1:] not in ([], [1]) or t.shape[0] < 1:
        raise InvalidInput(
            f"input {t.name!r} with datatype BYTES must have shape [N] or [N, 1] with N >= 1 "
            f"(one encoded image per element), got {t.shape}"
        )
    n = t.shape[0]
    if n > max_images:
        raise PayloadTooLarge(f"batch of {n} images; the limit is {max_images}")
    size = (t.parameters or {}).get("binary_data_size")
    if size is not None:
        if t.data is not None:
            raise InvalidInput(f"input {t.name!r} has both data and binary_data_size")
        if isinstance(size, bool) or not isinstance(size, int) or size != len(binary):
            raise InvalidInput(
                f"input {t.name!r}: binary_data_size is {size!r}, but {len(binary)} bytes follow the JSON header"
            )
        elements = _length_prefixed(t, binary, n)
    elif t.data is None:
        raise InvalidInput(f"input {t.name!r} has neither data nor the parameter binary_data_size")
    elif binary:
        raise InvalidInput(f"{len(binary)} bytes follow the JSON header, but no input has binary_data_size")
    else:
        elements = _json_strings(t, n)
    return [(f"input {t.name!r} element {i}", element) for i, element in enumerate(elements)]


def _length_prefixed(t, raw: bytes, n: int) -> list[bytes]:
    elements: list[bytes] = []
    pos = 0
    while pos < len(raw) and len(elements) < n:
        if pos + 4 > len(raw):
            raise InvalidInput(f"input {t.name!r}: the binary data ends inside element {len(elements)}'s length")
        length = int.from_bytes(raw[pos : pos + 4], "little")
        pos += 4
        if pos + length > len(raw):
            raise InvalidInput(
                f"input {t.name!r}: element {len(elements)} declares {length} bytes, "
                f"but {len(raw) - pos} bytes of binary data are left"
            )
        elements.append(raw[pos : pos + length])
        pos += length
    if len(elements) != n or pos != len(raw):
        raise InvalidInput(
            f"input {t.name!r}: shape {t.shape} needs {n} length-prefixed elements; the binary data "
            f"holds {len(elements)}{' and more bytes' if pos != len(raw) else ''}"
        )
    return elements


def _json_strings(t, n: int) -> list[bytes]:
    flat: list[Any] = []
    pending = [t.data]
    while pending:  # flat or nested lists, in row-major order
        item = pending.pop()
        if isinstance(item, list):
            pending.extend(reversed(item))
        else:
            flat.append(item)
    if len(flat) != n or not all(isinstance(s, str) for s in flat):
        raise InvalidInput(
            f"input {t.name!r}: BYTES data must be {n} strings (one encoded image each) for shape {t.shape}"
        )
    try:
        return [s.encode("utf-8") for s in flat]
    except UnicodeEncodeError:
        raise InvalidInput(f"input {t.name!r}: a BYTES string is not valid Unicode text") from None


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
    return await _counted_infer(state, name, None, request)


@router.post("/models/{name}/versions/{version}/infer", **_INFER)
async def infer_version(state: StateDep, name: str, version: str, request: Request) -> BudgetedResponse:
    return await _counted_infer(state, name, version, request)


async def _counted_infer(state, name: str, version: str | None, request: Request) -> BudgetedResponse:
    """The inference, counted in the model's statistics as a success or a failure, with its duration."""
    model, batcher = state.resolve(name, version)
    start = time.perf_counter()
    try:
        response = await _infer(state, model, batcher, request)
    except BaseException:
        batcher.stats.request_done(False, time.perf_counter() - start)
        raise
    batcher.stats.request_done(True, time.perf_counter() - start)
    return response


async def _infer(state, model, batcher, request: Request) -> BudgetedResponse:
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
    # serialised form, the body (encoded images reserve their decoding in decode_images)
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
        if not isinstance(batch, torch.Tensor):  # encoded images: decoded within /predict's bounds
            batch = await decode_images(request, model, open_images(batch, settings), settings, state.budget)
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
