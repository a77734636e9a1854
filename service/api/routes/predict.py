from __future__ import annotations

from typing import Annotated

import numpy as np
import torch
from fastapi import APIRouter, File, Query, UploadFile
from PIL import Image
from starlette.concurrency import run_in_threadpool

from service.api.deps import ApiKeyDep, ModelQuery, StateDep
from service.api.errors import InvalidInput, PayloadTooLarge
from service.api.images import load_image, open_image
from service.api.schemas import ErrorBody, PredictResponse

router = APIRouter(tags=["predict"], dependencies=[ApiKeyDep])

_ERRORS = {code: {"model": ErrorBody} for code in (400, 401, 404, 413, 422, 503, 504)}


# Uploads with at most this many pixels in all are decoded on the event loop (tens of
# microseconds for a thumbnail, less than a hand-off to a worker thread); larger ones in a thread.
INLINE_DECODE_PIXELS = 128 * 128


def _preprocess(model, images: list[tuple[str, Image.Image]], max_pixels: int) -> torch.Tensor:
    """Decode and convert every upload as the model's manifest says: [N, C, H, W] float32."""
    tensors = []
    for filename, image in images:
        image = load_image(image, filename, max_pixels)
        try:
            tensors.append(model.preprocess(image))
        except (ValueError, OSError) as exc:  # e.g. a model that takes one exact size only
            raise InvalidInput(f"{filename}: {exc}") from None
    return torch.stack(tensors)


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
    state: StateDep,
    file: Annotated[list[UploadFile], File(description="One or more images (repeat the field).")],
    model: ModelQuery = None,
    top_k: Annotated[int, Query(ge=1, le=1000, description="How many classes to return per image.")] = 5,
) -> PredictResponse:
    loaded, batcher = state.resolve(model)
    settings = state.settings
    if len(file) > settings.max_queue_size:
        raise PayloadTooLarge(f"{len(file)} images in one request; the limit is {settings.max_queue_size}")
    uploads = []
    for upload in file:
        name = upload.filename or f"file{len(uploads)}"
        uploads.append((name, await upload.read()))
    if not uploads:
        raise InvalidInput("no images uploaded: send one or more `file` fields")
    # Headers first (no pixel decoded): bad or oversized files fail fast, and the size decides where to decode.
    images = [(name, open_image(data, name, settings.max_image_pixels)) for name, data in uploads]
    if sum(image.width * image.height for _, image in images) <= INLINE_DECODE_PIXELS:
        batch = _preprocess(loaded, images, settings.max_image_pixels)
    else:
        batch = await run_in_threadpool(_preprocess, loaded, images, settings.max_image_pixels)
    logits = await batcher.predict(batch, settings.request_timeout_s)
    ranked = top_predictions(logits, list(loaded.labels), top_k)
    return PredictResponse.model_validate({
        "model": loaded.name,
        "version": str(loaded.version),
        "results": [{"filename": name, "predictions": preds} for (name, _), preds in zip(uploads, ranked)],
    })
