"""What each RPC of ``inference.GRPCInferenceService`` does: protobuf in, the protocol's calls
(``service.api.v2_core``, shared with the REST routes), protobuf out. Auth, metrics and the mapping of
errors to statuses are the server's (``server.py``).
"""

from __future__ import annotations

import asyncio
from typing import Any, cast

from fastapi.exceptions import RequestValidationError
from google.protobuf import json_format  # type: ignore[import-untyped]
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request

import service
from service.api import v2_core as core
from service.api.cost import check_response_bytes
from service.api.deps import ServiceState
from service.api.errors import InvalidInput
from service.api.grpc import messages as pb
from service.api.guard import run_codec
from service.api.repository import Repository
from service.api.schemas import V2InferRequest

# What this face serves of the protocol's extensions: all but binary tensor data, which is JSON's
# (protobuf carries raw bytes anyway).
EXTENSIONS = [e for e in core.EXTENSIONS if e != "binary_tensor_data"]
# The RPCs that need the model repository (served when the server is given one).
REPOSITORY_RPCS = frozenset({"RepositoryIndex", "RepositoryModelLoad", "RepositoryModelUnload"})


class _Call:
    """What decoding encoded images needs of a connection: a ``receive()`` that reports an HTTP
    client leaving. A gRPC call that ends cancels its handler, and so the decoding, instead: this
    one never returns."""

    async def receive(self) -> dict[str, Any]:
        await asyncio.get_running_loop().create_future()
        raise AssertionError("unreachable")


class InferenceService:
    """The RPCs, one coroutine each, named as in the protocol; each takes the request message and
    grpc's call context and returns the response message, or raises the service's typed errors."""

    def __init__(self, state: ServiceState, repository: Repository | None = None) -> None:
        self.state = state
        self.repository = repository

    # ---- health and metadata -----------------------------------------------------------------

    async def ServerLive(self, request: Any, context: Any) -> Any:
        return pb.ServerLiveResponse(live=True)

    async def ServerReady(self, request: Any, context: Any) -> Any:
        return pb.ServerReadyResponse(ready=self.state.ready)

    async def ModelReady(self, request: Any, context: Any) -> Any:
        return pb.ModelReadyResponse(ready=core.model_ready(self.state, request.name, request.version or None))

    async def ServerMetadata(self, request: Any, context: Any) -> Any:
        return pb.ServerMetadataResponse(name=core.SERVER_NAME, version=service.__version__, extensions=EXTENSIONS)

    async def ModelMetadata(self, request: Any, context: Any) -> Any:
        about = core.model_metadata(self.state, request.name, request.version or None)
        return pb.ModelMetadataResponse(
            name=about.name,
            versions=about.versions,
            platform=about.platform,
            inputs=[t.model_dump() for t in about.inputs],
            outputs=[t.model_dump() for t in about.outputs],
        )

    # ---- Triton's configuration and statistics extensions ------------------------------------

    async def ModelConfig(self, request: Any, context: Any) -> Any:
        config = core.model_config(self.state, request.name, request.version or None)
        return _message({"config": config.model_dump(exclude_none=True)}, pb.ModelConfigResponse())

    async def ModelStatistics(self, request: Any, context: Any) -> Any:
        """One model's statistics (its latest version, or ``version``), or with no name every served model's."""
        name = request.name or None
        stats = core.model_statistics(self.state, name, request.version or None if name else None)
        return _message(stats.model_dump(), pb.ModelStatisticsResponse())

    # ---- the model repository extension ------------------------------------------------------

    async def RepositoryIndex(self, request: Any, context: Any) -> Any:
        entries = core.repository_index(self._repository(), ready_only=request.ready)
        return pb.RepositoryIndexResponse(models=entries)

    async def RepositoryModelLoad(self, request: Any, context: Any) -> Any:
        await core.load_model(self._repository(), request.model_name)
        return pb.RepositoryModelLoadResponse()

    async def RepositoryModelUnload(self, request: Any, context: Any) -> Any:
        await core.unload_model(self._repository(), request.model_name)
        return pb.RepositoryModelUnloadResponse()

    def _repository(self) -> Repository:
        assert self.repository is not None, "the repository RPCs are registered only with a repository"
        return self.repository

    # ---- inference ---------------------------------------------------------------------------

    async def ModelInfer(self, request: Any, context: Any) -> Any:
        """The inference, counted in the model's statistics as the REST route counts its own."""
        model, batcher = self.state.resolve(request.model_name, request.model_version or None)
        return await core.counted(batcher, self._infer(model, batcher, request, context))

    async def _infer(self, model: Any, batcher: Any, request: Any, context: Any) -> Any:
        state = self.state
        settings = state.settings
        req, binary = _as_v2_request(request)
        # Every output travels in raw_output_contents: the REST route's binary form, split per output.
        requested = [out._replace(binary=True) for out in core.requested_outputs(req)]
        images = core.declared_batch(req, settings.max_queue_size)
        response_bytes, _ = core.response_size(requested, images, model)
        check_response_bytes(response_bytes, settings.max_response_bytes, "the response")
        # the request's tensor bytes besides the inference's own (encoded images reserve their decoding)
        peak = len(binary) + core.inference_bytes(model, images, response_bytes)
        reservation = await state.budget.reserve(peak, f"this inference of {images} images")
        try:
            checked = await run_in_threadpool(core.input_tensor, req, binary, model, settings.max_queue_size)
            del binary
            batch = await core.decoded_input(state, model, checked, cast(Request, _Call()))
            remaining = context.time_remaining()  # the client's deadline, when it set one
            timeout_s = settings.request_timeout_s if remaining is None else min(settings.request_timeout_s, remaining)
            logits = await batcher.predict(batch, max(timeout_s, 0.001))
            outputs, blob = await run_codec(core.outputs, requested, logits, list(model.labels))
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


def _message(values: dict[str, Any], message: Any) -> Any:
    """``message`` filled from the REST answer's JSON form, which is the protobuf's own JSON mapping
    (Triton's HTTP and gRPC answers are one message in two encodings)."""
    return json_format.ParseDict(values, message)


def _as_v2_request(request: Any) -> tuple[V2InferRequest, bytes]:
    """The request as the REST route's model and its binary tensor data: raw_input_contents become
    binary data (``binary_data_size``), typed contents the JSON form's ``data``, except BYTES
    elements (encoded images), which become binary data as tritonclient frames them in raw form."""
    raw = list(request.raw_input_contents)
    if raw and len(raw) != len(request.inputs):
        raise InvalidInput(f"raw_input_contents has {len(raw)} entries for {len(request.inputs)} inputs")
    inputs: list[dict[str, Any]] = []
    blobs: list[bytes] = []
    for i, t in enumerate(request.inputs):
        tensor: dict[str, Any] = {"name": t.name, "datatype": t.datatype, "shape": list(t.shape)}
        parameters = _parameters(t.parameters)
        if raw:
            blob: bytes | None = raw[i]
        elif t.datatype == "BYTES":
            blob = b"".join(len(b).to_bytes(4, "little") + b for b in t.contents.bytes_contents)
        else:
            blob = None
            tensor["data"] = list(t.contents.fp32_contents)
        if blob is not None:
            parameters["binary_data_size"] = len(blob)
            blobs.append(blob)
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
    return req, blobs[0] if len(blobs) == 1 else b"".join(blobs)


def _parameters(parameters: Any) -> dict[str, Any]:
    """InferParameter values as the JSON form's plain ones."""
    values = {}
    for key, value in parameters.items():
        choice = value.WhichOneof("parameter_choice")
        values[key] = getattr(value, choice) if choice is not None else None
    return values
