from __future__ import annotations

from typing import Annotated, Any

import numpy as np
import torch
from fastapi import APIRouter, File, Query, Request, UploadFile

from service.api.cost import check_response_bytes
from service.api.deps import ApiKeyDep, ModelQuery, StateDep
from service.api.errors import InvalidInput, PayloadTooLarge
from service.api.guard import run_codec, until_disconnect
from service.api.images import INLINE_DECODE_PIXELS as INLINE_DECODE_PIXELS  # where /predict's callers look
from service.api.images import decode_images, open_images
from service.api.schemas import ErrorBody, PredictResponse

router = APIRouter(tags=["predict"], dependencies=[ApiKeyDep])

_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorBody} for code in (400, 401, 404, 408, 413, 422, 503, 504)
}


def top_predictions(logits: torch.Tensor, labels: list[str], top_k: int) -> list[list[dict]]:
    """Per row, the top_k classes by softmax probability, highest first (ties: lower index first),
    as plain dicts that PredictResponse validates in one pass."""
    probabilities = torch.softmax(logits.to(torch.float64), dim=1).numpy()
    k = min(top_k, probabilities.shape[1])
    order = np.argsort(-probabilities, axis=1, kind="stable")[:, :k]
    values = np.take_along_axis(probabilities, order, axis=1)
    names = [labels[i] if i < len(labels) else str(i) for i in range(probabilities.shape[1])]
    return [
        [{"index": i, "label": names[i], "probability": p} for i, p in zip(row_order, row_values)]
        for row_order, row_values in zip(order.tolist(), values.tolist())
    ]


@router.post(
    "/predict",
    response_model=PredictResponse,
    responses=_ERRORS,
    summary="Classify uploaded images",
    description="Multipart upload; repeat the `file` field for several images. Results keep upload order; "
    "each lists the top_k classes by probability. PNG, JPEG, WebP and BMP in any mode are accepted; "
    "animated images are classified by their first frame.",
)
async def predict(
    request: Request,
    state: StateDep,
    file: Annotated[list[UploadFile], File(description="One or more images (repeat the field).")],
    model: ModelQuery = None,
    top_k: Annotated[int, Query(ge=1, le=1000, description="How many classes to return per image.")] = 5,
) -> PredictResponse:
    loaded, batcher = state.resolve(model)
    settings = state.settings
    if len(file) > settings.max_queue_size:
        raise PayloadTooLarge(
            f"{len(file)} images in one request; the limit is {settings.max_queue_size} (setting BNN_MAX_QUEUE_SIZE)"
        )
    uploads: list[tuple[str, bytes]] = []
    for upload in file:
        name = upload.filename or f"file{len(uploads)}"
        uploads.append((name, await upload.read()))
    if not uploads:
        raise InvalidInput("no images uploaded: send one or more `file` fields")
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
        return _response(loaded, names, logits, top_k)
    return await run_codec(_response, loaded, names, logits, top_k)


# Ranked predictions in a response built on the event loop; more are built on the codec thread.
INLINE_RANKED = 1024


def _response(model, names: list[str], logits: torch.Tensor, top_k: int) -> PredictResponse:
    ranked = top_predictions(logits, list(model.labels), top_k)
    return PredictResponse.model_validate(
        {
            "model": model.name,
            "version": str(model.version),
            "results": [{"filename": name, "predictions": preds} for name, preds in zip(names, ranked)],
        }
    )
