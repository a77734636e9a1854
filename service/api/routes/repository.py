"""The model repository extension of the Open Inference Protocol, as Triton serves it: the index
of the store, and loading, reloading and unloading a model while the service runs."""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, Request

from service.api import v2_core as core
from service.api.deps import ApiKeyDep
from service.api.errors import InvalidInput
from service.api.repository import Repository
from service.api.schemas import ErrorBody, RepositoryIndexEntry

router = APIRouter(prefix="/v2/repository", tags=["v2 repository"], dependencies=[ApiKeyDep])
_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorBody},
    401: {"model": ErrorBody},
    403: {"model": ErrorBody},
    404: {"model": ErrorBody},
}


def _repository(request: Request) -> Repository:
    return request.app.state.repository


async def _options(request: Request) -> dict[str, Any]:
    """The request's JSON object; an empty body (what tritonclient sends) is ``{}``."""
    raw = await request.body()
    if not raw.strip():
        return {}
    try:
        body = json.loads(raw)
    except ValueError:
        raise InvalidInput("the body must be a JSON object, or empty") from None
    if not isinstance(body, dict):
        raise InvalidInput("the body must be a JSON object, or empty")
    return body


_BODY: dict[str, Any] = {
    "requestBody": {"required": False, "content": {"application/json": {"schema": {"type": "object"}}}}
}


@router.post(
    "/index",
    response_model=list[RepositoryIndexEntry],
    summary="Every model in the store and its state",
    openapi_extra=_BODY,
)
async def index(request: Request) -> list[dict[str, str]]:
    """Each served version as READY; a model folder that is not served as UNAVAILABLE, with the
    reason. A body ``{"ready": true}`` lists only the served ones."""
    body = await _options(request)
    return core.repository_index(_repository(request), ready_only=body.get("ready") is True)


@router.post(
    "/models/{name}/load", responses=_ERRORS, summary="Load or reload a model from its folder", openapi_extra=_BODY
)
async def load(name: str, request: Request) -> dict:
    """Reads ``<model store>/<name>`` again and serves every version in it (each warmed up first);
    the versions it replaces finish their requests in flight. If the folder does not load, what was
    served stays served and the answer is 400 with the reason."""
    await _options(request)  # Triton's parameters (a config override, files) have no meaning here
    await core.load_model(_repository(request), name)
    return {}


@router.post("/models/{name}/unload", responses=_ERRORS, summary="Stop serving a model", openapi_extra=_BODY)
async def unload(name: str, request: Request) -> dict:
    """Its requests in flight still get their answers; new ones get 404."""
    await _options(request)  # e.g. {"parameters": {"unload_dependents": false}}: no dependents here
    await core.unload_model(_repository(request), name)
    return {}
