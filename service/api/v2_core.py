"""The Open Inference Protocol (KServe v2) and Triton's extensions, apart from any transport.

What the protocol means here, once for both of its faces: which models exist and whether they are
ready, their metadata, configuration and statistics, the repository extension (index, load, unload
under ``BNN_MODEL_CONTROL``), and an inference request's checks, bounds and answer: its input tensor
(FP32 values, or BYTES holding encoded images), the outputs it asks for, its batch size and response
size known before any work, and the output tensors built from the logits.

``routes/v2.py`` (HTTP and JSON, the binary tensor extension) and ``grpc/`` (protobuf) only translate
their wire format into :class:`V2InferRequest` and these calls, and the results back. Errors are the
service's typed errors (``errors.py``); each face maps them to its statuses once.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Awaitable
from typing import Any, NamedTuple, TypeVar

import numpy as np
import torch
from starlette.requests import Request

from service.api.batching import Batcher
from service.api.cost import FLOAT32, json_float_bytes
from service.api.deps import ServiceState
from service.api.errors import InvalidInput, ModelNotFound, ModelNotReady, PayloadTooLarge, ServiceError
from service.api.images import ACCEPTED_FORMATS, decode_images, open_images
from service.api.repository import Repository
from service.api.schemas import (
    TritonDynamicBatching,
    TritonInstanceGroup,
    TritonTensorConfig,
    V2InferRequest,
    V2InputTensor,
    V2ModelConfig,
    V2ModelMetadata,
    V2ModelStatsResponse,
    V2OutputTensor,
    V2TensorMetadata,
)

T = TypeVar("T")

SERVER_NAME = "bnn-serve"
PLATFORM = "bnn-serve"
# Every extension the protocol has here; a face lists those it serves (binary tensor data is HTTP's).
EXTENSIONS = ("classification", "binary_tensor_data", "model_configuration", "statistics")
INPUT_NAME = "input"
OUTPUTS = ("logits", "probabilities")
_OUTPUT_MEANING = {"logits": "class scores (logits)", "probabilities": "softmax of the logits"}
# The preprocessing's pixel scale: service.model.preprocess divides 0..255 pixels by 255.
PIXEL_SCALE = 1 / 255

EncodedImages = list[tuple[str, bytes]]  # (what an error calls the element, its bytes)


class RequestedOutput(NamedTuple):
    """One output an inference answers with: its name, the classification extension's k (None: the
    values themselves), and whether it travels as binary data."""

    name: str
    classification: int | None
    binary: bool


# ---- models: lookup, metadata, readiness, configuration, statistics ---------------------------


def check_known(state: ServiceState, name: str) -> None:
    """ModelNotFound unless ``name`` is a served model or a model folder that failed to load."""
    if name not in state.models and name not in state.errors:
        raise ModelNotFound(f"model {name!r} not found; available: {sorted(state.models)}")


def input_shape(model: Any) -> list[int]:
    """The input tensor's shape, ``[-1, C, H, W]`` (any batch size)."""
    spec = model.input
    return [-1, spec.channels, spec.height, spec.width]


def tensor_parameters(model: Any) -> dict[str, dict[str, Any]]:
    """What each tensor's values mean: the input's layout and preprocessing (everything the model's
    input spec holds) and its encoded-image form; the outputs' labels."""
    spec = model.input
    value = "(1 - pixel * scale - mean[c]) / std[c]" if spec.invert else "(pixel * scale - mean[c]) / std[c]"
    described: dict[str, dict[str, Any]] = {
        INPUT_NAME: {
            "datatype": "FP32",
            "shape": input_shape(model),
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


def model_metadata(state: ServiceState, name: str, version: str | None) -> V2ModelMetadata:
    """The protocol's model metadata of a served model (``version`` None: the latest)."""
    model, _ = state.resolve(name, version)
    return V2ModelMetadata(
        name=model.name,
        versions=list(state.served.get(model.name, {})) or [str(model.version)],  # every served version
        platform=PLATFORM,
        inputs=[V2TensorMetadata(name=INPUT_NAME, datatype="FP32", shape=input_shape(model))],
        outputs=[V2TensorMetadata(name=o, datatype="FP32", shape=[-1, model.num_classes]) for o in OUTPUTS],
        parameters=tensor_parameters(model),
    )


def model_ready(state: ServiceState, name: str, version: str | None) -> bool:
    """Whether the model (or one of its versions) serves: False for a folder that failed to load;
    ModelNotFound for an unknown model or a version it does not have."""
    check_known(state, name)
    try:
        state.resolve(name, version)
    except ModelNotReady:
        return False
    return True


def model_config(state: ServiceState, name: str, version: str | None) -> V2ModelConfig:
    """The model's configuration in the shape of Triton's ``ModelConfig``: its tensors, batching and limits."""
    model, _ = state.resolve(name, version)
    settings = state.settings
    spec = model.input
    preprocessing = tensor_parameters(model)[INPUT_NAME]
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


def model_statistics(state: ServiceState, name: str | None, version: str | None = None) -> V2ModelStatsResponse:
    """Triton's statistics of one model version (``version`` None: the latest), or with ``name``
    None of every served version of every model."""
    if name is None:
        models = [model for _, versions in sorted(state.served.items()) for model, _ in versions.values()]
    else:
        models = [state.resolve(name, version)[0]]
    stats = [state.metrics.model_stats(m.name, str(m.version)).as_dict() for m in models]
    return V2ModelStatsResponse.model_validate({"model_stats": stats})


# ---- the model repository extension -----------------------------------------------------------


class ModelControlOff(ServiceError):
    """Loading and unloading are refused: ``BNN_MODEL_CONTROL=none``."""

    status_code = 403


def repository_index(repository: Repository, ready_only: bool = False) -> list[dict[str, str]]:
    """Every model folder and served version: READY, or UNAVAILABLE with the reason; with
    ``ready_only``, the served versions only."""
    entries = repository.index()
    if ready_only:
        entries = [e for e in entries if e["state"] == "READY"]
    return entries


def _changeable(repository: Repository) -> Repository:
    if repository.settings.model_control == "none":
        raise ModelControlOff("models cannot be loaded or unloaded: model control is off (BNN_MODEL_CONTROL=none)")
    return repository


async def load_model(repository: Repository, name: str) -> None:
    """(Re)load a model folder and serve every version in it; see :meth:`Repository.load`."""
    await _changeable(repository).load(name)


async def unload_model(repository: Repository, name: str) -> None:
    """Stop serving a model; its requests in flight still get their answers."""
    await _changeable(repository).unload(name)


# ---- an inference request: outputs, bounds, input ---------------------------------------------


def requested_outputs(req: V2InferRequest) -> list[RequestedOutput]:
    """The outputs to answer with, checked before inference: each an output of the model, at most
    once; none requested means all."""
    binary_default = _flag((req.parameters or {}).get("binary_data_output"), "request parameter binary_data_output")
    if not req.outputs:
        return [RequestedOutput(name, None, binary_default) for name in OUTPUTS]
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
        requested.append(RequestedOutput(out.name, k, binary_default if params.get("binary_data") is None else binary))
    return requested


def _flag(value: Any, what: str) -> bool:
    if value is None:
        return False
    if not isinstance(value, bool):
        raise InvalidInput(f"{what} must be true or false, got {value!r}")
    return value


def declared_batch(req: V2InferRequest, max_images: int) -> int:
    """The batch size the input declares, bounded before anything is sized by it (the whole shape
    is checked, with the other inputs' faults, in :func:`input_tensor`)."""
    shape = req.inputs[0].shape if req.inputs else []
    n = shape[0] if shape and isinstance(shape[0], int) and shape[0] >= 1 else 1
    if n > max_images:
        raise PayloadTooLarge(f"batch of {n} images; the limit is {max_images} (setting BNN_MAX_QUEUE_SIZE)")
    return n


def response_size(requested: list[RequestedOutput], images: int, model: Any) -> tuple[int, int]:
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


def inference_bytes(model: Any, images: int, response_bytes: int) -> int:
    """The memory an inference holds at its peak apart from its request's own form: the input (and
    its float32 copy), the logits and probabilities, and the response twice (built, then sent)."""
    spec = model.input
    input_bytes = FLOAT32 * images * spec.channels * spec.height * spec.width
    return 2 * input_bytes + 2 * FLOAT32 * images * model.num_classes + 2 * response_bytes


def input_tensor(req: V2InferRequest, binary: bytes, model: Any, max_images: int) -> torch.Tensor | EncodedImages:
    """The checked input: the FP32 batch itself, or for a BYTES input its encoded images, to decode
    (:func:`decoded_input`). ``binary`` is the binary tensor data the input's ``binary_data_size``
    parameter refers to (empty when its values are in ``data``)."""
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
    array = _binary_input(t, count, binary) if _in_binary_data(t, binary) else _json_input(t, count)
    if not np.isfinite(array).all():  # a model's float layers would turn them into null logits
        raise InvalidInput(f"input {t.name!r}: data must be finite (no NaN or infinity)")
    return torch.from_numpy(array.reshape(t.shape))


def _json_input(t: V2InputTensor, count: int) -> np.ndarray:
    try:
        array = np.asarray(t.data)
    except (ValueError, TypeError):
        array = None
    if array is None or array.dtype.kind not in "biuf":  # null, strings or objects would pass a float32 cast
        raise InvalidInput(f"input {t.name!r}: data must be numbers, flat or nested evenly")
    if array.size != count:
        raise InvalidInput(f"input {t.name!r}: data has {array.size} values but shape {t.shape} needs {count}")
    return array.astype(np.float32)


def _in_binary_data(t: V2InputTensor, binary: bytes) -> bool:
    """Whether the input's values are the binary tensor data (it has ``binary_data_size``) rather
    than its ``data``; an input with both, neither, or data beside unclaimed binary data is refused."""
    if (t.parameters or {}).get("binary_data_size") is not None:
        if t.data is not None:
            raise InvalidInput(f"input {t.name!r} has both data and binary_data_size")
        return True
    if t.data is None:
        raise InvalidInput(f"input {t.name!r} has neither data nor the parameter binary_data_size")
    if binary:
        raise InvalidInput(f"{len(binary)} bytes follow the JSON header, but no input has binary_data_size")
    return False


def _binary_input(t: V2InputTensor, count: int, binary: bytes) -> np.ndarray:
    size = (t.parameters or {})["binary_data_size"]
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


def _encoded_images(t: V2InputTensor, binary: bytes, max_images: int) -> EncodedImages:
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
    if _in_binary_data(t, binary):
        size = (t.parameters or {})["binary_data_size"]
        if isinstance(size, bool) or not isinstance(size, int) or size != len(binary):
            raise InvalidInput(
                f"input {t.name!r}: binary_data_size is {size!r}, but {len(binary)} bytes follow the JSON header"
            )
        elements = _length_prefixed(t, binary, n)
    else:
        elements = _json_strings(t, n)
    return [(f"input {t.name!r} element {i}", element) for i, element in enumerate(elements)]


def _length_prefixed(t: V2InputTensor, raw: bytes, n: int) -> list[bytes]:
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


def _json_strings(t: V2InputTensor, n: int) -> list[bytes]:
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


async def decoded_input(
    state: ServiceState, model: Any, checked: torch.Tensor | EncodedImages, connection: Request
) -> torch.Tensor:
    """The model's input batch from :func:`input_tensor`'s result: encoded images are decoded and
    preprocessed as /predict does, within its bounds; the decoding stops when ``connection``'s
    client leaves."""
    if isinstance(checked, torch.Tensor):
        return checked
    settings = state.settings
    return await decode_images(connection, model, open_images(checked, settings), settings, state.budget)


async def counted(batcher: Batcher, inference: Awaitable[T]) -> T:
    """The inference's result, counted in its model's statistics as a success or a failure, with its duration."""
    start = time.perf_counter()
    try:
        result = await inference
    except BaseException:
        batcher.stats.request_done(False, time.perf_counter() - start)
        raise
    batcher.stats.request_done(True, time.perf_counter() - start)
    return result


# ---- the answer -------------------------------------------------------------------------------


def classification(logits: torch.Tensor, labels: list[str], k: int) -> list[str]:
    """Triton's classification extension: "value:index:label" for the top k, highest first."""
    values, indices = torch.topk(logits, min(k, logits.shape[1]), dim=1)
    return [
        f"{v:f}:{i}:{labels[i] if i < len(labels) else i}"
        for row_v, row_i in zip(values.tolist(), indices.tolist())
        for v, i in zip(row_v, row_i)
    ]


def outputs(
    requested: list[RequestedOutput], logits: torch.Tensor, labels: list[str]
) -> tuple[list[V2OutputTensor], bytes]:
    """The response's output tensors, and the binary data of those asked for as binary, in order
    (each such output's ``binary_data_size`` parameter gives its length)."""
    tensors, blobs = [], []
    for name, k, binary in requested:
        values = logits if name == "logits" else torch.softmax(logits, dim=1)
        data: list[Any] | None
        if k is not None:
            k = min(k, values.shape[1])
            shape, datatype, data = [values.shape[0], k], "BYTES", classification(values, labels, k)
            raw = b"".join(len(b).to_bytes(4, "little") + b for b in (v.encode() for v in data)) if binary else b""
        else:
            shape, datatype = list(values.shape), "FP32"
            data = None if binary else values.flatten().tolist()
            raw = values.numpy().astype("<f4").tobytes() if binary else b""
        if binary:
            tensors.append(
                V2OutputTensor(name=name, shape=shape, datatype=datatype, parameters={"binary_data_size": len(raw)})
            )
            blobs.append(raw)
        else:
            tensors.append(V2OutputTensor(name=name, shape=shape, datatype=datatype, data=data))
    return tensors, b"".join(blobs)
