"""The application factory: settings in, a FastAPI app out; the lifespan loads models and starts batchers."""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import os
from collections.abc import AsyncIterator
from typing import Any, Protocol

import torch
from fastapi import FastAPI
from fastapi_offline import FastAPIOffline
from PIL import Image
from pydantic import BaseModel

import service
from service import kernel
from service.api.budget import MemoryBudget
from service.api.deps import ServiceState
from service.api.errors import install_error_handlers
from service.api.grpc import SHUTDOWN_GRACE_S, start_grpc_server
from service.api.guard import run_codec
from service.api.images import configure_pillow
from service.api.logs import configure_logging
from service.api.metrics import ServiceMetrics
from service.api.middleware import AdmissionMiddleware, BodyMiddleware, ObservabilityMiddleware, RequestGuardMiddleware
from service.api.protocol import configure_protocol
from service.api.repository import Repository
from service.api.routes import conv, health, metrics, models, predict, v2
from service.api.routes import repository as repository_routes
from service.api.routes.predict import top_predictions
from service.api.schemas import ConvRequest, V2InferRequest
from service.api.workers import WorkerGroup, shared_folder
from service.settings import Settings, configure
from service.tuning import freeze_startup_objects, keep_freed_memory

logger = logging.getLogger("bnn.api")


class StoreLike(Protocol):
    """What the app needs from ``service.model.ModelStore``: ready models and load errors."""

    models: dict[str, Any]
    errors: dict[str, str]


class StartupError(RuntimeError):
    """The service cannot start as configured; the message says why in one line."""


def load_store(settings: Settings) -> StoreLike:
    """Every model under ``settings.model_store`` (broken ones as errors); StartupError when there
    is nothing to serve, unless ``allow_empty_store``."""
    from service.model import ModelStore  # imported late: the API layer also runs with an injected store

    problem = settings.model_store_problem()
    if problem is not None:
        if not settings.allow_empty_store:
            raise StartupError(f"{problem}; --allow-empty-store / BNN_ALLOW_EMPTY_STORE=1 starts without models")
        logger.warning("%s; starting without models (allow_empty_store)", problem)
        return ModelStore(settings.model_store)
    return ModelStore.load(settings.model_store)


def _warm_request_path() -> None:
    """What a request's first pass would pay for once: decoding a PNG and ranking classes (torch's
    float64 softmax and sort, first used here)."""
    buffer = io.BytesIO()
    Image.new("L", (8, 8)).save(buffer, format="PNG")
    Image.open(io.BytesIO(buffer.getvalue())).convert("RGB").load()
    top_predictions(torch.zeros(1, 4), ["a", "b", "c", "d"], 2)


def _document_request_models(app: FastAPI, *models: type[BaseModel]) -> None:
    """Put the models of request bodies that a route parses itself (declared with ``openapi_extra``,
    like /v2 infer's JSON-plus-binary body) into the OpenAPI components."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = build()
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            for model in models:
                model_schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
                components.update(model_schema.pop("$defs", {}))
                components[model.__name__] = model_schema
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def create_app(settings: Settings | None = None, *, store: StoreLike | None = None) -> FastAPI:
    """Build the service. ``store`` replaces loading ``settings.model_store`` (tests, benchmarks)."""
    settings = settings or Settings()
    folder = shared_folder()  # set by bnn-serve when several workers serve
    workers = WorkerGroup(settings.worker_count, folder)
    service_metrics = ServiceMetrics(folder)
    budget = MemoryBudget(  # the server's budget, shared out equally among its workers
        settings.memory_budget_bytes // workers.expected,
        settings.memory_wait_s,
        on_change=service_metrics.memory_reserved.set,
    )
    state = ServiceState(settings=settings, metrics=service_metrics, budget=budget, workers=workers)
    repository = Repository(state)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        configure(settings)  # kernel path and threads, torch's threads
        workers.join()
        configure_pillow(settings.max_image_pixels)
        await run_codec(_warm_request_path)  # starts the codec thread, with the first calls' costs paid
        keep_freed_memory()  # batch-sized activations are reused, not page-faulted in again per call
        loaded = store if store is not None else await asyncio.to_thread(load_store, settings)
        versions = getattr(loaded, "versions", None) or {name: {str(m.version): m} for name, m in loaded.models.items()}
        await repository.start(versions, dict(loaded.errors))
        freeze_startup_objects()  # the collector no longer walks torch and the models on every full pass
        # Ready means something is served: at least one model, and the default one if it is named.
        if not state.workers.ready_here:
            logger.error("not ready: no model to serve (default %r; errors: %s)", settings.default_model, state.errors)
        logger.info(
            "serving models %s on %d kernel threads (%s)%s",
            sorted(state.batchers),
            kernel.get_num_threads(),
            kernel.active_isa(),
            f", worker {os.getpid()} of {workers.expected}" if workers.shared else "",
        )
        grpc_server = None
        try:
            # after the repository: its first RPC finds the models; its load and unload are the repository's
            grpc_server = await start_grpc_server(state, repository)
            yield
        finally:
            state.ready = False
            if grpc_server is not None:
                await grpc_server.stop(SHUTDOWN_GRACE_S)
            await repository.close()
            workers.leave()

    configure_logging(settings.log_level, settings.log_format)
    # Swagger UI and ReDoc from fastapi-offline's copies of their assets, served by the app itself:
    # /docs works on a machine with no route to a CDN.
    app = FastAPIOffline(
        static_url="/docs/static",
        title="bnn-serve",
        version=service.__version__,
        description="Binary (1-bit) CNN inference on CPUs: image classification, the raw binary convolution, "
        'and the Open Inference Protocol (v2). Every error body is `{"error": "..."}`.',
        lifespan=lifespan,
    )
    app.state.service = state
    app.state.repository = repository
    _document_request_models(app, V2InferRequest, ConvRequest)
    install_error_handlers(app)
    for router in (
        predict.router,
        conv.router,
        models.router,
        v2.health_router,
        v2.router,
        repository_routes.router,
        health.router,
        metrics.router,
    ):
        app.include_router(router)
    # Outermost last: observability sees every response, including the 413s of the body limit; the
    # API key and admission are decided before the body is read.
    app.add_middleware(
        BodyMiddleware, max_bytes=settings.max_body_bytes, timeout_s=settings.body_timeout_s, budget=budget
    )
    app.add_middleware(AdmissionMiddleware, state=state)
    api_key = settings.api_key.get_secret_value().encode() if settings.api_key is not None else None
    app.add_middleware(RequestGuardMiddleware, api_key=api_key)
    app.add_middleware(ObservabilityMiddleware, metrics=state.metrics, router=app.router)
    return app


def served_app() -> FastAPI:
    """uvicorn's app factory in every worker process (``service.api.main:served_app``): the settings
    from the environment, where ``bnn-serve`` put its flags, and the HTTP protocol's limits set from
    them, with its refusals counted in this worker's metrics."""
    settings = Settings()
    app = create_app(settings)
    refusals = app.state.service.metrics.connection_refusals
    configure_protocol(settings, on_refusal=lambda reason: refusals.labels(reason).inc())
    return app
