from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST

router = APIRouter(tags=["metrics"])


@router.get("/metrics", summary="Prometheus metrics (every worker's, together)", response_class=Response)
async def metrics(request: Request) -> Response:
    return Response(request.app.state.service.metrics.exposition(), media_type=CONTENT_TYPE_LATEST)
