"""The model repository extension of the Open Inference Protocol, as Triton serves it: the index
of the store, and loading, reloading and unloading a model while the service runs."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Request

from service.api.deps import ApiKeyDep
from service.api.errors import ServiceError
from service.api.repository import Repository
from service.api.schemas import ErrorBody, RepositoryIndexEntry

router = APIRouter(prefix="/v2/repository", tags=["v2 repository"], dependencies=[ApiKeyDep])
_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorBody},
    401: {"model": ErrorBody},
    403: {"model": ErrorBody},
    404: {"model": ErrorBody},
}


class ModelControlOff(ServiceError):
    status_code = 403


def _repository(request: Request, changes: bool = False) -> Repository:
    repository: Repository = request.app.state.repository
    if changes and repository.settings.model_control == "none":
        raise ModelControlOff("models cannot be loaded or unloaded: model control is off (BNN_MODEL_CONTROL=none)")
    return repository


@router.post("/index", response_model=list[RepositoryIndexEntry], summary="Every model in the store and its state")
async def index(request: Request, body: Annotated[dict[str, Any] | None, Body()] = None) -> list[dict[str, str]]:
    """Each served version as READY; a model folder that is not served as UNAVAILABLE, with the
    reason. ``{"ready": true}`` lists only the served ones."""
    entries = _repository(request).index()
    if body and body.get("ready") is True:
        entries = [e for e in entries if e["state"] == "READY"]
    return entries


@router.post("/models/{name}/load", responses=_ERRORS, summary="Load or reload a model from its folder")
async def load(name: str, request: Request, body: Annotated[dict[str, Any] | None, Body()] = None) -> dict:
    """Reads ``<model store>/<name>`` again and serves every version in it (each warmed up first);
    the versions it replaces finish their requests in flight. If the folder does not load, what was
    served stays served and the answer is 400 with the reason."""
    await _repository(request, changes=True).load(name)
    return {}


@router.post("/models/{name}/unload", responses=_ERRORS, summary="Stop serving a model")
async def unload(name: str, request: Request, body: Annotated[dict[str, Any] | None, Body()] = None) -> dict:
    """Its requests in flight still get their answers; new ones get 404."""
    await _repository(request, changes=True).unload(name)
    return {}
