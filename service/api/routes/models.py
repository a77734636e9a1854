from __future__ import annotations

from fastapi import APIRouter

from service.api.deps import ApiKeyDep, ServiceState, StateDep
from service.api.errors import ModelNotFound
from service.api.schemas import ErrorBody, ModelDetail, ModelList, ModelStatus

router = APIRouter(prefix="/models", tags=["models"], dependencies=[ApiKeyDep])


def _status(state: ServiceState, name: str) -> ModelStatus:
    if name in state.models:
        m = state.models[name]
        return ModelStatus(
            name=name, version=str(m.version), ready=name in state.batchers, packed_size_bytes=int(m.packed_size_bytes)
        )
    return ModelStatus(name=name, ready=False, error=state.errors.get(name, "loading"))


@router.get("", response_model=ModelList, summary="Every model in the store, ready or not")
async def list_models(state: StateDep) -> ModelList:
    names = sorted(set(state.models) | set(state.errors))
    return ModelList(default_model=state.default_model, models=[_status(state, n) for n in names])


@router.get(
    "/{name}",
    response_model=ModelDetail,
    responses={404: {"model": ErrorBody}},
    summary="One model: summary, layers, packed size, and whether it is ready",
)
async def get_model(state: StateDep, name: str) -> ModelDetail:
    if name not in state.models and name not in state.errors:
        raise ModelNotFound(f"model {name!r} not found; available: {sorted(set(state.models) | set(state.errors))}")
    status = _status(state, name)
    summary = state.models[name].summary() if name in state.models else None
    return ModelDetail(**status.model_dump(), summary=summary)
