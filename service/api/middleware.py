"""Pure ASGI middleware: API key and query checks, admission, the request body's bounds, and one JSON
log line plus metrics per request."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
import uuid
from urllib.parse import parse_qs, parse_qsl

from starlette.routing import Match, Router
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.api.budget import MemoryBudget, Reservation
from service.api.deps import ServiceState, api_key_matches
from service.api.errors import (
    InvalidInput,
    InvalidParameter,
    PayloadTooLarge,
    RequestBodyTimeout,
    ServiceError,
    ServiceOverloaded,
    Unauthorized,
)
from service.api.metrics import ServiceMetrics

access_log = logging.getLogger("bnn.access")


async def refuse(
    scope: Scope, receive: Receive, send: Send, error: ServiceError, rejected: str | None = None, close: bool = False
) -> None:
    """Answer ``error`` in the app's place, before it sees the request. ``rejected`` says why in the
    access log; ``close`` closes the connection after the answer (an unread body is abandoned)."""
    if rejected is not None:
        scope["bnn.rejected"] = rejected
    await error.response(close)(scope, receive, send)


class BodyMiddleware:
    """The request body, bounded in size, time and memory, streamed through to the app.

    - 413 when Content-Length declares more than ``max_bytes``, or as soon as the chunks received
      pass it (the app never sees more);
    - 408 when the whole body has not arrived within ``timeout_s`` of the request's start, so a
      client trickling its body cannot hold a connection, a task and memory indefinitely;
    - memory: as chunks arrive, three times their size is reserved in the process's budget (the
      body, and its parsed form: multipart fields or JSON text and values), in steps of
      ``RESERVE_STEP`` and held until the response is sent; a body the budget cannot take gets
      503 + Retry-After (or 413 if it alone exceeds the budget).

    Errors during the read are raised from ``receive`` as HTTP exceptions (``ServiceError.http_exception``),
    which the app turns into JSON error responses (closing the connection, whose unread body is abandoned).
    """

    RESERVE_STEP = 1 << 20
    PARSE_FACTOR = 3

    def __init__(self, app: ASGIApp, max_bytes: int, timeout_s: float, budget: MemoryBudget) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.timeout_s = timeout_s
        self.budget = budget

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = chunked = None
        for name, value in scope.get("headers") or ():
            if name == b"content-length":
                length = value
            elif name == b"transfer-encoding":
                chunked = value
        if length is not None:
            try:
                declared = int(length)
            except ValueError:
                await refuse(scope, receive, send, InvalidInput("invalid Content-Length header"))
                return
            if declared > self.max_bytes:
                await refuse(scope, receive, send, self._too_large(), rejected="body_too_large", close=True)
                return
            if declared == 0:
                await self.app(scope, receive, send)
                return
        elif chunked is None:
            await self.app(scope, receive, send)  # no body
            return

        deadline = asyncio.get_running_loop().time() + self.timeout_s
        reservations: list[Reservation] = []
        received = reserved = 0
        complete = False

        async def bounded_receive() -> Message:
            nonlocal received, reserved, complete
            if complete:  # the body is in: what follows is the disconnect, whenever it comes
                return await receive()
            try:
                async with asyncio.timeout_at(deadline):
                    message = await receive()
            except TimeoutError:
                scope["bnn.rejected"] = "body_timeout"
                timeout = RequestBodyTimeout(
                    f"request body not received within {self.timeout_s:g} s (setting BNN_BODY_TIMEOUT_S)"
                )
                raise timeout.http_exception(close=True) from None
            if message["type"] != "http.request":
                return message
            received += len(message.get("body", b""))
            if received > self.max_bytes:
                raise self._too_large().http_exception(close=True)
            if received > reserved:
                step = max(self.RESERVE_STEP, received - reserved)
                try:
                    reservations.append(
                        await self.budget.reserve(self.PARSE_FACTOR * step, f"a request body of {received}+ bytes")
                    )
                except ServiceError as exc:
                    scope["bnn.rejected"] = "memory_budget"
                    raise exc.http_exception(close=True) from None
                reserved += step
            if not message.get("more_body", False):
                complete = True
            return message

        try:
            await self.app(scope, bounded_receive, send)
        finally:
            for r in reservations:
                r.release()

    def _too_large(self) -> PayloadTooLarge:
        return PayloadTooLarge(f"request body exceeds the limit of {self.max_bytes} bytes (setting BNN_MAX_BODY_BYTES)")


class RequestGuardMiddleware:
    """Before anything else reads the request: the API key (401 before a byte of the body is read),
    and one value per query parameter (422 for a repeated one: every layer must read the same)."""

    OPEN_PATHS = frozenset(
        {
            "/healthz",
            "/readyz",
            "/metrics",
            "/v2/health/live",
            "/v2/health/ready",
            "/docs",
            "/docs/oauth2-redirect",
            "/redoc",
            "/openapi.json",
        }
    )
    OPEN_PREFIX = "/docs/static/"  # Swagger UI's and ReDoc's scripts and styles

    def __init__(self, app: ASGIApp, api_key: bytes | None) -> None:
        self.app = app
        self.api_key = api_key

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        open_path = path in self.OPEN_PATHS or path.startswith(self.OPEN_PREFIX)
        if self.api_key is not None and not open_path:  # noqa: SIM102 - guarded route, then its key
            if not api_key_matches(scope.get("headers") or [], self.api_key):
                await refuse(scope, receive, send, Unauthorized(), rejected="unauthorized", close=True)
                return
        query = scope.get("query_string", b"").decode("latin-1")
        if query:
            seen: set[str] = set()
            for name, _ in parse_qsl(query, keep_blank_values=True):
                if name in seen:
                    await refuse(
                        scope, receive, send, InvalidParameter(f"query parameter {name!r} is given more than once")
                    )
                    return
                seen.add(name)
        await self.app(scope, receive, send)


_INFER = re.compile(r"^/v2/models/(?P<name>[^/]+)(?:/versions/[^/]+)?/infer$")


class AdmissionMiddleware:
    """Admission of inference requests, before their body is read: 503 + Retry-After when the
    model's queue, counting requests already on their way, is full (so a burst past the bound is
    turned away cheaply; the batcher checks exactly again once the image count is known), else
    the request is announced to the model's batcher so a forming batch waits for it."""

    def __init__(self, app: ASGIApp, state: ServiceState) -> None:
        self.app = app
        self.state = state

    def _target(self, scope: Scope) -> str | None:
        if scope["type"] != "http" or scope.get("method") != "POST":
            return None
        path = scope.get("path", "")
        if path == "/predict":
            query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
            return query.get("model", [self.state.default_model])[0]
        match = _INFER.match(path)
        return match["name"] if match else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        name = self._target(scope)
        batcher = self.state.batchers.get(name) if name is not None else None
        if batcher is not None:
            try:
                batcher.admit()
            except ServiceOverloaded as exc:
                await refuse(scope, receive, send, exc, rejected="queue_full")
                return
            with batcher.arrival():
                await self.app(scope, receive, send)
            return
        await self.app(scope, receive, send)


class ObservabilityMiddleware:
    """Times every request, counts it in the metrics by route template, and logs one access line
    (service/api/logs.py formats it), with the error message of a 4xx/5xx answer."""

    ERROR_BODY_LIMIT = 4096  # an error body is {"error": "..."}: this much of it names the problem

    def __init__(self, app: ASGIApp, metrics: ServiceMetrics, router: Router | None = None) -> None:
        self.app = app
        self.metrics = metrics
        self.router = router

    def _route(self, scope: Scope, path: str, root_path: str) -> str:
        """The route template the request went to; for one answered before routing (a 413 of the body
        limit, a 401) or served outside FastAPI's routes (/openapi.json, the docs' static files), the
        template it would have gone to. Unknown paths are "unmatched": the label set stays bounded."""
        route = getattr(scope.get("route"), "path", None)
        if route is None and self.router is not None:
            # routing may have rewritten path and root_path (a Mount does): match the request as it came
            route = _template(self.router.routes, {**scope, "path": path, "root_path": root_path})
        return route or "unmatched"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        path, root_path = scope["path"], scope.get("root_path", "")
        status: int | None = None
        client_left = False  # before the response was sent: counted as 499, whatever the app did then
        sent_bytes = 0
        error_body = bytearray()
        request_id = _header(scope, b"x-request-id").decode("latin-1") or uuid.uuid4().hex

        async def send_wrapper(message: Message) -> None:
            nonlocal status, sent_bytes
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", []), (b"x-request-id", request_id.encode("latin-1"))]
            elif message["type"] == "http.response.body":
                body = message.get("body", b"")
                sent_bytes += len(body)
                if status is not None and status >= 400 and len(error_body) < self.ERROR_BODY_LIMIT:
                    error_body.extend(body[: self.ERROR_BODY_LIMIT - len(error_body)])
            await send(message)

        async def receive_wrapper() -> Message:
            nonlocal client_left
            message = await receive()
            if message["type"] == "http.disconnect" and status is None:
                client_left = True
            return message

        try:
            await self.app(scope, receive_wrapper, send_wrapper)
        finally:
            status = 499 if client_left else (status or 500)
            elapsed = time.perf_counter() - start
            route = self._route(scope, path, root_path)
            method = scope["method"]
            requests, failures, latency = self.metrics.http_series(route, method, status)
            requests.inc()
            if failures is not None:
                failures.inc()
            latency.observe(elapsed)
            if access_log.isEnabledFor(logging.INFO):
                client = scope.get("client")
                fields = {
                    "request_id": request_id,
                    "method": method,
                    "path": path,
                    "route": route,
                    "query": scope.get("query_string", b"").decode("latin-1"),
                    "status": status,
                    "error": _error_message(status, bytes(error_body), client_left),
                    "rejected": scope.get("bnn.rejected"),
                    "duration_ms": round(elapsed * 1000, 3),
                    "response_bytes": sent_bytes,
                    "client": f"{client[0]}:{client[1]}" if client else None,
                }
                access_log.info("%s %s %d", method, path, status, extra={"fields": fields})


def _header(scope: Scope, name: bytes) -> bytes:
    """A (lower-case) header's last value, as ``dict(headers)`` gave it, b"" when absent, with no
    dict built per request."""
    found = b""
    for key, value in scope.get("headers") or ():
        if key == name:
            found = value
    return found


def _template(routes: list, scope: Scope) -> str | None:
    """The path template of the route ``scope`` matches in full, looking through FastAPI's wrappers
    of included routers."""
    for candidate in routes:
        if candidate.matches(scope)[0] is Match.FULL:
            included = getattr(candidate, "original_router", None)
            return _template(included.routes, scope) if included is not None else getattr(candidate, "path", None)
    return None


def _error_message(status: int, body: bytes, client_left: bool) -> str | None:
    """The ``error`` of a 4xx/5xx JSON body (None for a success)."""
    if client_left:
        return "the client disconnected before the answer was sent"
    if status < 400:
        return None
    try:
        message = json.loads(body).get("error")
    except (ValueError, AttributeError):
        return body[:200].decode("utf-8", "replace") or None
    return message if isinstance(message, str) else None
