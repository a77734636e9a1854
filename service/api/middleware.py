"""Pure ASGI middleware: request size limit, and one JSON log line plus metrics per request."""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from urllib.parse import parse_qs

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.api.deps import ServiceState
from service.api.errors import ServiceOverloaded, error_response
from service.api.metrics import ServiceMetrics

access_log = logging.getLogger("bnn.access")


class BodyLimitMiddleware:
    """413 for bodies over ``max_bytes``: refused on Content-Length, or counted as chunks stream in.

    The body is read here, up to the limit, and replayed to the app, so no route ever sees more.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length")
        if length is not None:
            try:
                declared = int(length)
            except ValueError:
                await error_response(400, "invalid Content-Length header")(scope, receive, send)
                return
            if declared > self.max_bytes:
                await self._too_large(scope, receive, send)
                return
        elif b"transfer-encoding" not in headers:
            await self.app(scope, receive, send)  # no body
            return

        chunks, total = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body = message.get("body", b"")
            total += len(body)
            if total > self.max_bytes:
                await self._too_large(scope, receive, send)
                return
            chunks.append(body)
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _too_large(self, scope: Scope, receive: Receive, send: Send) -> None:
        scope["bnn.rejected"] = "body_too_large"
        response = error_response(413, f"request body exceeds the limit of {self.max_bytes} bytes")
        response.headers["Connection"] = "close"
        await response(scope, receive, send)


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
                scope["bnn.rejected"] = "queue_full"
                await error_response(exc.status_code, exc.message, exc.headers)(scope, receive, send)
                return
            with batcher.arrival():
                await self.app(scope, receive, send)
            return
        await self.app(scope, receive, send)


class ObservabilityMiddleware:
    """Times every request, counts it in the metrics by route template, and logs one JSON line."""

    def __init__(self, app: ASGIApp, metrics: ServiceMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500
        sent_bytes = 0
        request_id = dict(scope.get("headers") or []).get(b"x-request-id", b"").decode("latin-1") or uuid.uuid4().hex

        async def send_wrapper(message: Message) -> None:
            nonlocal status, sent_bytes
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", []), (b"x-request-id", request_id.encode("latin-1"))]
            elif message["type"] == "http.response.body":
                sent_bytes += len(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            elapsed = time.perf_counter() - start
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            method = scope["method"]
            self.metrics.requests.labels(route, method, str(status)).inc()
            if status >= 400:
                self.metrics.request_failures.labels(route, method, str(status)).inc()
            self.metrics.request_latency.labels(route, method).observe(elapsed)
            if access_log.isEnabledFor(logging.INFO):
                client = scope.get("client")
                access_log.info(json.dumps({
                    "ts": round(time.time(), 3),
                    "request_id": request_id,
                    "method": method,
                    "path": scope["path"],
                    "route": route,
                    "query": scope.get("query_string", b"").decode("latin-1"),
                    "status": status,
                    "duration_ms": round(elapsed * 1000, 3),
                    "response_bytes": sent_bytes,
                    "client": f"{client[0]}:{client[1]}" if client else None,
                }))
