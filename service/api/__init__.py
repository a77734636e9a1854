"""HTTP face of the service: schemas, limits, batching and routes. It never packs a bit.

``create_app`` is imported on first use, so that ``bnn-serve``'s supervisor process, which needs only
the small modules (``workers``, ``logs``), never loads torch or the models."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from service.settings import Settings

if TYPE_CHECKING:
    from service.api.main import create_app

__all__ = ["Settings", "create_app"]


def __getattr__(name: str) -> Any:
    if name == "create_app":
        from service.api.main import create_app

        return create_app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
