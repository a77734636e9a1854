"""Typed dependencies: the running service's state, a resolved model, the API key check."""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from typing import Annotated, Any

from fastapi import Depends, Query, Request, Security
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from service.api.batching import Batcher
from service.api.budget import MemoryBudget
from service.api.errors import ModelNotFound, ModelNotReady
from service.api.metrics import ServiceMetrics
from service.api.workers import WorkerGroup
from service.settings import Settings


@dataclass
class ServiceState:
    """What the lifespan builds and every request reads."""

    settings: Settings
    metrics: ServiceMetrics
    budget: MemoryBudget
    models: dict[str, Any] = field(default_factory=dict)  # name -> LoadedModel (ready ones)
    errors: dict[str, str] = field(default_factory=dict)  # name -> why it is not ready
    batchers: dict[str, Batcher] = field(default_factory=dict)  # name -> its latest version's batcher
    served: dict[str, dict[str, tuple[Any, Batcher]]] = field(default_factory=dict)  # name -> version -> both
    workers: WorkerGroup = field(default_factory=WorkerGroup)  # the other workers of this server, if any
    started: bool = False  # the start-up load has finished (before: every lookup is "still loading")

    @property
    def ready(self) -> bool:
        """Ready to serve: this process serves a model (the default one, if one is named) and, when
        several workers serve, so does every one of them."""
        return self.workers.all_ready()

    @ready.setter
    def ready(self, value: bool) -> None:
        """Whether this process is ready (the repository decides; shutdown ends it)."""
        self.workers.set_ready(value)
        self.metrics.workers_ready.set(1 if value else 0)

    @property
    def default_model(self) -> str | None:
        if self.settings.default_model:
            return self.settings.default_model
        names = sorted(self.models) or sorted(self.errors)
        return names[0] if len(names) == 1 else None

    def resolve(self, name: str | None, version: str | None = None) -> tuple[Any, Batcher]:
        """The loaded model and its batcher; 404 for unknown names, 503 for broken or loading ones.
        ``version`` (a manifest's ``version`` string) picks one of the served versions (404 for another);
        without it, the latest."""
        if name is None:
            name = self.default_model
            if name is None:
                raise ModelNotFound(f"no model named and no default model; choose one of {sorted(self.models)}")
        if name in self.models and name in self.batchers:
            if version is None:
                return self.models[name], self.batchers[name]
            versions = self.served.get(name, {})
            if version not in versions:
                raise ModelNotFound(f"model {name!r} has no version {version!r}; available: {list(versions)}")
            return versions[version]
        if name in self.errors:
            raise ModelNotReady(f"model {name!r} is not ready: {self.errors[name]}")
        if not self.started:
            raise ModelNotReady("models are still loading")
        raise ModelNotFound(f"model {name!r} not found; available: {sorted(self.models)}")


def service_state(request: Request) -> ServiceState:
    return request.app.state.service


async def get_state(request: Request) -> ServiceState:
    """The dependency (async: FastAPI would run a plain function in a worker thread, per request)."""
    return service_state(request)


StateDep = Annotated[ServiceState, Depends(get_state)]

_api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="The service's API key, if it has one.")
_bearer = HTTPBearer(auto_error=False, description="The service's API key as a Bearer token.")


def api_key_matches(headers: list[tuple[bytes, bytes]], expected: bytes) -> bool:
    """Whether the raw request headers carry the key, as ``X-API-Key`` or ``Authorization: Bearer``
    (compared as raw bytes in constant time, so a UTF-8 key matches)."""
    given = None
    for name, value in headers:
        name = name.lower()
        if name == b"x-api-key":
            given = value
            break
        if name == b"authorization" and given is None:
            scheme, _, credentials = value.partition(b" ")
            if scheme.lower() == b"bearer" and credentials.strip():
                given = credentials.strip()
    return given is not None and secrets.compare_digest(given, expected)


async def require_api_key(
    api_key: Annotated[str | None, Security(_api_key_header)],
    bearer: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)],
) -> None:
    """Declares the security schemes in OpenAPI. The check itself is ``RequestGuardMiddleware``'s,
    made before the body is read (a dependency runs only after FastAPI has read and parsed it)."""


ApiKeyDep = Depends(require_api_key)
ModelQuery = Annotated[
    str | None,
    Query(description="Model name (default: the configured default or the only one).", examples=["fashion-mnist-bnn"]),
]
