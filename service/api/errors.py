"""Typed service errors and their one mapping to HTTP: every error body is ``{"error": "..."}``."""

from __future__ import annotations

import logging
from collections.abc import Mapping

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

logger = logging.getLogger("bnn.api")


# Sent with an error answered before the body is read in full: the connection closes, the unread rest abandoned.
CLOSE_CONNECTION = {"Connection": "close"}


class ServiceError(Exception):
    """Base of the errors a request can end in; ``status_code`` and ``headers`` say how they reach HTTP."""

    status_code = 500

    def __init__(self, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.headers = headers or {}

    def response(self, close: bool = False) -> JSONResponse:
        """The error as its JSON response (also an ASGI app: middleware answer with it in the app's place)."""
        return error_response(self.status_code, self.message, self._headers(close))

    def http_exception(self, close: bool = False) -> StarletteHTTPException:
        """The error as Starlette's HTTP exception, for raising from a request's ``receive``: FastAPI's body
        parsers pass those through (anything else becomes a 400), and the handler below answers it."""
        return StarletteHTTPException(self.status_code, self.message, self._headers(close))

    def _headers(self, close: bool) -> dict[str, str]:
        return {**self.headers, **CLOSE_CONNECTION} if close else self.headers


class InvalidInput(ServiceError):
    status_code = 400


class InvalidParameter(ServiceError):
    """A well-formed request whose parameters the service refuses (e.g. padding beyond the kernel's reach)."""

    status_code = 422


class Unauthorized(ServiceError):
    status_code = 401

    def __init__(self, message: str = "missing or invalid API key") -> None:
        super().__init__(message, {"WWW-Authenticate": 'Bearer realm="bnn-serve"'})


class ModelNotFound(ServiceError):
    status_code = 404


class PayloadTooLarge(ServiceError):
    status_code = 413


class UnsupportedMediaType(ServiceError):
    """An image body in a format the service does not decode (e.g. ``Content-Type: image/gif``)."""

    status_code = 415


class RequestBodyTimeout(ServiceError):
    """The whole body did not arrive in time."""

    status_code = 408


class ModelNotReady(ServiceError):
    status_code = 503


class ServiceOverloaded(ServiceError):
    status_code = 503

    def __init__(self, message: str, retry_after_s: int = 1) -> None:
        super().__init__(message, {"Retry-After": str(retry_after_s)})


class RequestTimeout(ServiceError):
    status_code = 504


class ClientDisconnected(ServiceError):
    """The client left before its answer was ready (nginx's 499: never sent, only counted and logged)."""

    status_code = 499


def error_response(status_code: int, message: str, headers: Mapping[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status_code, headers=headers)


def _validation_message(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err.get("loc", ()) if p != "body") or "request"
        parts.append(f"{loc}: {err.get('msg', 'invalid')}")
    return "invalid request: " + "; ".join(parts[:10])


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ServiceError)
    async def _service_error(_: Request, exc: ServiceError) -> JSONResponse:
        return exc.response()

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(422, _validation_message(exc))

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        message = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
        return error_response(exc.status_code, message, getattr(exc, "headers", None))

    @app.exception_handler(ClientDisconnect)
    async def _client_left(_: Request, exc: ClientDisconnect) -> JSONResponse:
        return error_response(ClientDisconnected.status_code, "the client disconnected before the request was read")

    @app.exception_handler(MemoryError)
    async def _out_of_memory(request: Request, exc: MemoryError) -> JSONResponse:
        # The cost model and the memory budget exist so that this never happens; if it does, the
        # request was too large for what the machine has left, which is the client's to reduce.
        logger.warning("out of memory on %s %s", request.method, request.url.path)
        return error_response(413, "not enough memory for this request; send a smaller one")

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        logger.exception("unhandled error on %s %s", request.method, request.url.path)
        return error_response(500, "internal server error")
