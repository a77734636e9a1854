"""Open Inference Protocol (KServe v2) REST endpoints; errors keep this service's {"error": ...} body."""

from __future__ import annotations

import math

import numpy as np
import torch
from fastapi import APIRouter
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

import service
from service.api.deps import ApiKeyDep, StateDep
from service.api.errors import InvalidInput, ModelNotFound, PayloadTooLarge
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
_ERRORS = {code: {"model": ErrorBody} for code in (400, 401, 404, 413, 422, 503, 504)}


@health_router.get("/live", response_model=V2Live)
async def live() -> V2Live:
    return V2Live(live=True)


@health_router.get("/ready", response_model=V2Ready, responses={503: {"model": V2Ready}})
async def ready(state: StateDep) -> JSONResponse:
    return JSONResponse({"ready": state.ready}, status_code=200 if state.ready else 503)


@router.get("", response_model=V2ServerMetadata)
async def server_metadata() -> V2ServerMetadata:
    return V2ServerMetadata(name="bnn-serve", version=service.__version__, extensions=["classification"])


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


def _input_tensor(req: V2InferRequest, model, max_images: int) -> torch.Tensor:
    if len(req.inputs) != 1:
        raise InvalidInput(f"expected exactly one input tensor ({INPUT_NAME!r}), got {len(req.inputs)}")
    t = req.inputs[0]
    spec = model.input
    expected = [spec.channels, spec.height, spec.width]
    if t.datatype != "FP32":
        raise InvalidInput(f"input {t.name!r} must have datatype FP32, got {t.datatype!r}")
    if len(t.shape) != 4 or t.shape[1:] != expected or t.shape[0] < 1:
        raise InvalidInput(f"input {t.name!r} must have shape [N, {', '.join(map(str, expected))}] with N >= 1, "
                           f"got {t.shape}")
    if t.shape[0] > max_images:
        raise PayloadTooLarge(f"batch of {t.shape[0]} images; the limit is {max_images}")
    count = math.prod(t.shape)
    try:
        array = np.asarray(t.data)
    except (ValueError, TypeError):
        array = None
    if array is None or array.dtype.kind not in "biuf":  # null, strings or objects would pass a float32 cast
        raise InvalidInput(f"input {t.name!r}: data must be numbers, flat or nested evenly")
    array = array.astype(np.float32)
    if not np.isfinite(array).all():  # a model's float layers would turn them into null logits
        raise InvalidInput(f"input {t.name!r}: data must be finite (no NaN or infinity)")
    if array.size != count:
        raise InvalidInput(f"input {t.name!r}: data has {array.size} values but shape {t.shape} needs {count}")
    return torch.from_numpy(array.reshape(t.shape))


def _classification(logits: torch.Tensor, labels: list[str], k: int) -> list[str]:
    """Triton's classification extension: "value:index:label" for the top k, highest first."""
    values, indices = torch.topk(logits, min(k, logits.shape[1]), dim=1)
    return [
        f"{v:f}:{i}:{labels[i] if i < len(labels) else i}"
        for row_v, row_i in zip(values.tolist(), indices.tolist())
        for v, i in zip(row_v, row_i)
    ]


def _requested_outputs(req: V2InferRequest) -> list[tuple[str, int | None]]:
    """(output name, classification k or None) for each requested output, checked before inference."""
    if not req.outputs:
        return [("logits", None)]
    requested = []
    for out in req.outputs:
        if out.name not in OUTPUTS:
            raise InvalidInput(f"unknown output {out.name!r}; this model has {list(OUTPUTS)}")
        k = (out.parameters or {}).get("classification")
        if k is not None and (isinstance(k, bool) or not isinstance(k, int) or k < 1):
            raise InvalidInput(f"output {out.name!r}: parameter classification must be an integer >= 1, got {k!r}")
        requested.append((out.name, k))
    return requested


def _outputs(requested: list[tuple[str, int | None]], logits: torch.Tensor, labels: list[str]) -> list[V2OutputTensor]:
    outputs = []
    for name, k in requested:
        values = logits if name == "logits" else torch.softmax(logits, dim=1)
        if k is not None:
            k = min(k, values.shape[1])
            outputs.append(V2OutputTensor(name=name, shape=[values.shape[0], k], datatype="BYTES",
                                          data=_classification(values, labels, k)))
        else:
            outputs.append(V2OutputTensor(name=name, shape=list(values.shape), datatype="FP32",
                                          data=values.flatten().tolist()))
    return outputs


@router.post("/models/{name}/infer", response_model=V2InferResponse, response_model_exclude_none=True,
             responses=_ERRORS)
async def infer(state: StateDep, name: str, req: V2InferRequest) -> V2InferResponse:
    model, batcher = state.resolve(name)
    settings = state.settings
    requested = _requested_outputs(req)
    batch = await run_in_threadpool(_input_tensor, req, model, settings.max_queue_size)
    logits = await batcher.predict(batch, settings.request_timeout_s)
    return V2InferResponse(model_name=model.name, model_version=str(model.version), id=req.id,
                           outputs=_outputs(requested, logits, list(model.labels)))
