from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Annotated, Any

import numpy as np
import orjson
import torch
from fastapi import APIRouter, Query, Request
from fastapi.responses import Response
from fastapi.routing import APIRoute
from pydantic import Field, TypeAdapter, ValidationError
from starlette.datastructures import UploadFile

from service.api.cost import check_response_bytes
from service.api.deps import ApiKeyDep, ModelQuery, service_state
from service.api.errors import InvalidInput, InvalidParameter, PayloadTooLarge, UnsupportedMediaType
from service.api.guard import run_codec, until_disconnect
from service.api.images import IMAGE_MEDIA_TYPES, decode_images, open_images
from service.api.images import INLINE_DECODE_PIXELS as INLINE_DECODE_PIXELS  # where /predict's callers look
from service.api.schemas import ErrorBody, PredictResponse

TopK = Annotated[int, Field(ge=1, le=1000)]
_top_k = TypeAdapter(TopK)


def predict_query(request: Request) -> tuple[str | None, int]:
    """/predict's ``model`` and ``top_k``, checked as FastAPI would from the endpoint's signature."""
    query = request.query_params
    try:
        top_k = _top_k.validate_python(query.get("top_k", 5))
    except ValidationError as exc:
        raise InvalidParameter(f"invalid request: query.top_k: {exc.errors()[0]['msg']}") from None
    return query.get("model"), top_k


class QueryOnlyRoute(APIRoute):
    """A route documented from its endpoint's signature as usual, but served without FastAPI's
    per-request dependency solving (about a quarter of a one-image /predict's event-loop CPU, issue 15):
    the endpoint takes only its query parameters, read by ``predict_query``, and reads its body
    itself. The router's API-key dependency only documents the security schemes
    (RequestGuardMiddleware checks the key), so skipping it changes nothing."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        endpoint = self.endpoint

        async def handler(request: Request) -> Response:
            model, top_k = predict_query(request)
            return await endpoint(request, model, top_k)

        return handler


router = APIRouter(tags=["predict"], dependencies=[ApiKeyDep], route_class=QueryOnlyRoute)

_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorBody} for code in (400, 401, 404, 408, 413, 415, 422, 503, 504)
}
# The route reads its body itself (a multipart form or one raw image), so OpenAPI learns both from here.
_REQUEST_BODY = {
    "required": True,
    "content": {
        "multipart/form-data": {
            "schema": {
                "type": "object",
                "required": ["file"],
                "properties": {
                    "file": {
                        "type": "array",
                        "items": {"type": "string", "format": "binary"},
                        "description": "One or more images (repeat the field).",
                    }
                },
            }
        },
        **{media_type: {"schema": {"type": "string", "format": "binary"}} for media_type in IMAGE_MEDIA_TYPES},
    },
}
# The filename a raw-body image is answered under (a multipart upload keeps its own).
RAW_BODY_FILENAME = "body"


def top_predictions(logits: torch.Tensor, labels: list[str], top_k: int) -> list[list[dict]]:
    """Per row, the top_k classes by softmax probability, highest first (ties: lower index first),
    as plain dicts (PredictResponse's shape)."""
    probabilities = torch.softmax(logits.to(torch.float64), dim=1).numpy()
    k = min(top_k, probabilities.shape[1])
    order = np.argsort(-probabilities, axis=1, kind="stable")[:, :k]
    values = np.take_along_axis(probabilities, order, axis=1)
    names = [labels[i] if i < len(labels) else str(i) for i in range(probabilities.shape[1])]
    return [
        [{"index": i, "label": names[i], "probability": p} for i, p in zip(row_order, row_values)]
        for row_order, row_values in zip(order.tolist(), values.tolist())
    ]


def _media_type(request: Request) -> bytes:
    """The request's Content-Type without parameters, lower case (b"" when absent)."""
    for name, value in request.scope["headers"]:
        if name == b"content-type":
            return value.partition(b";")[0].strip().lower()
    return b""


async def read_uploads(request: Request, max_images: int) -> list[tuple[str, bytes]]:
    """(filename, bytes) per image: one raw image body (``Content-Type: image/png|jpeg|webp|bmp``),
    or the multipart form's ``file`` fields. The body's size, time and memory are bounded by
    BodyMiddleware, whichever way it comes."""
    media_type = _media_type(request)
    if media_type in IMAGE_MEDIA_TYPES_BYTES:
        data = await request.body()
        if not data:
            raise InvalidInput(f"empty request body: send the image as the body ({media_type.decode()})")
        return [(RAW_BODY_FILENAME, data)]
    if media_type.startswith(b"image/"):
        raise UnsupportedMediaType(
            f"Content-Type {media_type.decode('latin-1')!r} is not accepted; send "
            f"{', '.join(IMAGE_MEDIA_TYPES)} as the body, or a multipart/form-data upload"
        )
    if media_type != b"multipart/form-data":
        raise InvalidParameter(
            "invalid request: file: Field required (send a multipart/form-data upload with one or more `file` fields, "
            f"or one image as the body with Content-Type {', '.join(IMAGE_MEDIA_TYPES)})"
        )
    uploads: list[tuple[str, bytes]] = []
    async with request.form() as form:
        files = form.getlist("file")
        if not files:
            raise InvalidParameter("invalid request: file: Field required (repeat the `file` field for several images)")
        if len(files) > max_images:
            raise PayloadTooLarge(
                f"{len(files)} images in one request; the limit is {max_images} (setting BNN_MAX_QUEUE_SIZE)"
            )
        for upload in files:
            if not isinstance(upload, UploadFile):
                raise InvalidParameter(
                    f"invalid request: file.{len(uploads)}: expected a file upload, got a text field"
                )
            uploads.append((upload.filename or f"file{len(uploads)}", await upload.read()))
    return uploads


IMAGE_MEDIA_TYPES_BYTES = frozenset(t.encode() for t in IMAGE_MEDIA_TYPES)


@router.post(
    "/predict",
    response_model=PredictResponse,  # documents the answer; the route sends its own JSON bytes, unvalidated again
    responses=_ERRORS,
    openapi_extra={"requestBody": _REQUEST_BODY},
    summary="Classify uploaded images",
    description="A multipart upload (repeat the `file` field for several images), or one image as the raw "
    "body with `Content-Type: image/png`, `image/jpeg`, `image/webp` or `image/bmp`. Results keep upload "
    "order; each lists the top_k classes by probability. PNG, JPEG, WebP and BMP in any mode are accepted; "
    "animated images are classified by their first frame.",
)
async def predict(
    request: Request,
    model: ModelQuery = None,
    top_k: Annotated[TopK, Query(description="How many classes to return per image.")] = 5,
) -> Response:
    state = service_state(request)
    loaded, batcher = state.resolve(model)
    settings = state.settings
    uploads = await read_uploads(request, settings.max_queue_size)
    # Headers first (no pixel decoded): bad or oversized files fail fast, the request's whole decoding
    # cost is bounded before it starts, and the size decides where to decode.
    images = open_images(uploads, settings)
    answer_bytes = len(uploads) * (
        min(top_k, loaded.num_classes) * (max(map(len, loaded.labels), default=0) + 64)
        + max(len(name) for name, _ in uploads)
        + 64
    )
    check_response_bytes(answer_bytes, settings.max_response_bytes, "the response")
    batch = await decode_images(request, loaded, images, settings, state.budget)
    del images
    logits = await until_disconnect(
        request, batcher.predict(batch, settings.request_timeout_s), f"the inference on {loaded.name!r}"
    )
    names = [name for name, _ in uploads]
    if len(names) * min(top_k, loaded.num_classes) <= INLINE_RANKED:
        body = _response_body(loaded, names, logits, top_k)
    else:
        body = await run_codec(_response_body, loaded, names, logits, top_k)
    return Response(body, media_type="application/json")


# Ranked predictions in a response built on the event loop; more are built on the codec thread.
INLINE_RANKED = 1024


def _response_body(model, names: list[str], logits: torch.Tensor, top_k: int) -> bytes:
    """PredictResponse as JSON bytes, built from values the code made itself (no second validation)."""
    ranked = top_predictions(logits, list(model.labels), top_k)
    return orjson.dumps(
        {
            "model": model.name,
            "version": str(model.version),
            "results": [{"filename": name, "predictions": preds} for name, preds in zip(names, ranked)],
        }
    )
