"""Liveness and readiness for orchestrators; always open, even when an API key is set."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from service.api.deps import StateDep

router = APIRouter(tags=["health"])


@router.get("/healthz", summary="Liveness: the process is serving HTTP")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", summary="Readiness: every valid model is loaded (503 until then)")
async def readyz(state: StateDep) -> JSONResponse:
    body = {"ready": state.ready, "models": sorted(state.batchers), "not_ready": state.errors}
    return JSONResponse(body, status_code=200 if state.ready else 503)
