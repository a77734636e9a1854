"""Typed dependencies: the running service's state, a resolved model, the API key check."""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from typing import Annotated, Any

from fastapi import Depends, Query, Request, Security
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from service.api.batching import Batcher
from service.api.config import Settings
from service.api.errors import ModelNotFound, ModelNotReady, Unauthorized
from service.api.metrics import ServiceMetrics


@dataclass
class ServiceState:
    """What the lifespan builds and every request reads."""

    settings: Settings
    metrics: ServiceMetrics
    models: dict[str, Any] = field(default_factory=dict)  # name -> LoadedModel (ready ones)
    errors: dict[str, str] = field(default_factory=dict)  # name -> why it is not ready
    batchers: dict[str, Batcher] = field(default_factory=dict)
    ready: bool = False

    @property
    def default_model(self) -> str | None:
        if self.settings.default_model:
            return self.settings.default_model
        names = sorted(self.models) or sorted(self.errors)
        return names[0] if len(names) == 1 else None

    def resolve(self, name: str | None) -> tuple[Any, Batcher]:
        """The loaded model and its batcher; 404 for unknown names, 503 for broken or loading ones."""
        if name is None:
            name = self.default_model
            if name is None:
                raise ModelNotFound(f"no model named and no default model; choose one of {sorted(self.models)}")
        if name in self.models and name in self.batchers:
            return self.models[name], self.batchers[name]
        if name in self.errors:
            raise ModelNotReady(f"model {name!r} is not ready: {self.errors[name]}")
        if not self.ready:
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


async def require_api_key(
    request: Request,
    api_key: Annotated[str | None, Security(_api_key_header)],
    bearer: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)],
) -> None:
    expected = service_state(request).settings.api_key
    if expected is None:
        return
    given = api_key if api_key is not None else (bearer.credentials if bearer is not None else None)
    # Header values arrive decoded as latin-1: back to their raw bytes, so a UTF-8 key can match.
    if given is None or not secrets.compare_digest(given.encode("latin-1"), expected.get_secret_value().encode()):
        raise Unauthorized()


ApiKeyDep = Depends(require_api_key)
ModelQuery = Annotated[str | None, Query(description="Model name (default: the configured default or the only one).",
                                         examples=["fashion-mnist-bnn"])]
