"""uvicorn's HTTP/1.1 protocol with limits on slow and surplus clients, answered in the service's JSON.

Two things uvicorn leaves open: a client may take forever to send its request line and headers
(uvicorn's keep-alive timer only runs between requests, and not at all before the first), and its
``limit_concurrency`` answers in text/plain. So, per connection:

- **header timeout**: from the moment a connection opens, or a request's first bytes arrive on a
  kept-alive one, the client has ``header_timeout_s`` to finish the request line and headers, else
  ``408`` and the connection closes. The timer stops once the headers are complete (the body's pace is
  the app's ``body_timeout_s``) and never answers while a request is being served.
- **connection cap**: a connection beyond ``max_connections`` gets ``503`` with ``Retry-After: 1``
  as soon as it opens, before anything is read, and is closed.
- uvicorn's own ``400`` for unparseable requests is answered in JSON too.

``ServiceHTTPProtocol`` is the class for ``uvicorn.run(http=...)``, on top of the parser uvicorn itself
would pick (httptools when installed, else h11); ``configure_protocol(settings)`` sets its limits.
"""

from __future__ import annotations

import asyncio
import http
import json
from collections.abc import Callable, Sequence
from typing import Any

import h11
from uvicorn.protocols.http.auto import AutoHTTPProtocol
from uvicorn.protocols.http.h11_impl import H11Protocol

from service.settings import Settings

RefusalHook = Callable[[str], None]
"""Called with "header_timeout", "connection_limit" or "bad_request" each time a connection is refused."""


def canned_response(status: int, message: str, extra_headers: Sequence[tuple[bytes, bytes]] = ()) -> bytes:
    """A complete ``Connection: close`` response with the body ``{"error": message}``, as raw bytes."""
    body = json.dumps({"error": message}).encode()
    head = [f"HTTP/1.1 {status} {http.HTTPStatus(status).phrase}".encode()]
    head += [name + b": " + value for name, value in extra_headers]
    head += [b"content-type: application/json", b"content-length: %d" % len(body), b"connection: close"]
    return b"\r\n".join(head) + b"\r\n\r\n" + body


class _SlowClientGuard:
    """The limits, as a mixin over a uvicorn HTTP protocol; subclasses say where a request's headers stand.

    The limits are class attributes that ``protocol_class`` sets from the settings (uvicorn gives a
    protocol no other way in); the rest is what uvicorn's protocols provide (``connections``: the
    server's open connections; ``cycle``: the latest request's response cycle)."""

    header_timeout_s: float
    max_connections: int
    on_refusal: RefusalHook | None = None

    transport: asyncio.Transport
    connections: set[Any]
    cycle: Any
    server_state: Any
    loop: asyncio.AbstractEventLoop
    timeout_keep_alive_task: asyncio.TimerHandle | None

    _header_timer: asyncio.TimerHandle | None = None

    # -- what each parser answers -----------------------------------------------------------
    def _headers_pending(self) -> bool:
        """True while a request line and headers are due: the connection is new, or a request has begun
        and its headers are not complete."""
        raise NotImplementedError

    # -- asyncio.Protocol ---------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)  # type: ignore[misc]
        if len(self.connections) > self.max_connections:
            self.connections.discard(self)  # a refused connection holds no slot while it closes
            self._refuse(
                503,
                f"too many open connections (limit {self.max_connections}); retry shortly",
                "connection_limit",
                [(b"retry-after", b"1")],
            )
            return
        self._arm_header_timer()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)  # type: ignore[misc]
        if self.transport.is_closing() or self not in self.connections:
            return  # answered and closing, or upgraded to a WebSocket: no longer this protocol's to time
        if self._request_in_progress() and not self._headers_pending():
            self._cancel_header_timer()  # the headers completed in this call (h11 says so no earlier)
        elif self.timeout_keep_alive_task is None:
            # Bytes that are not (yet) a whole request: a request begun, blank lines between requests, or
            # the rest of a body the app did not read. uvicorn stopped its keep-alive timer on them, so
            # this timer must bound them (a no-op when on_message_begin already armed it).
            self._arm_header_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_header_timer()
        super().connection_lost(exc)  # type: ignore[misc]

    # -- uvicorn's hooks --------------------------------------------------------------------------
    def send_400_response(self, msg: str) -> None:
        """uvicorn's answer to a request it cannot parse, in the service's JSON."""
        self._refuse(400, msg, "bad_request")

    # -- the timer ---------------------------------------------------------------------------------
    def _request_in_progress(self) -> bool:
        return self.cycle is not None and not self.cycle.response_complete

    def _arm_header_timer(self) -> None:
        if self._header_timer is None:
            self._header_timer = self.loop.call_later(self.header_timeout_s, self._header_timeout_expired)

    def _cancel_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _header_timeout_expired(self) -> None:
        self._header_timer = None
        if self.transport.is_closing():
            return
        if self._request_in_progress():
            # A pipelined request stalled while the one before it is answered: finish that answer, then close.
            self.cycle.keep_alive = False
        elif self._headers_pending():
            self._refuse(408, f"request headers not received within {self.header_timeout_s:g} s", "header_timeout")
        else:
            self.transport.close()  # stray bytes between requests, and no request: idle, so close quietly

    def _refuse(
        self, status: int, message: str, event: str, extra_headers: list[tuple[bytes, bytes]] | None = None
    ) -> None:
        # uvicorn's Date and Server headers, as on every response it writes
        headers = [*self.server_state.default_headers, *(extra_headers or [])]
        self.transport.write(canned_response(status, message, headers))
        self.transport.close()
        if self.on_refusal is not None:
            self.on_refusal(event)


class GuardedH11Protocol(_SlowClientGuard, H11Protocol):
    """h11 builds a request's event only once its headers are complete, so its state tells where they stand."""

    def _headers_pending(self) -> bool:
        return self.conn.their_state is h11.IDLE


try:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
except ImportError:  # httptools is optional: uvicorn (and so this module) then serves with h11
    GuardedHttpToolsProtocol: type[asyncio.Protocol] | None = None
else:

    class _GuardedHttpToolsProtocol(_SlowClientGuard, HttpToolsProtocol):
        """httptools reports a request's first byte (on_message_begin) and its headers' end (on_headers_complete)."""

        _reading_headers = True  # a new connection owes its first request's headers

        def _headers_pending(self) -> bool:
            return self._reading_headers

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self._reading_headers = True
            self._arm_header_timer()  # on a new connection the timer runs since connection_made already

        def on_headers_complete(self) -> None:
            self._reading_headers = False
            self._cancel_header_timer()
            super().on_headers_complete()

    GuardedHttpToolsProtocol = _GuardedHttpToolsProtocol


def _parser_base() -> type[asyncio.Protocol]:
    """The guarded protocol over the parser uvicorn would pick itself (httptools when installed)."""
    if GuardedHttpToolsProtocol is not None and AutoHTTPProtocol is not H11Protocol:
        return GuardedHttpToolsProtocol
    return GuardedH11Protocol


class ServiceHTTPProtocol(_parser_base()):  # type: ignore[misc]
    """The protocol ``bnn-serve`` gives uvicorn, by import path (``service.api.protocol:ServiceHTTPProtocol``:
    a worker process imports it afresh). uvicorn instantiates it per connection as
    ``cls(config=, server_state=, app_state=)``, so the limits travel as class attributes, which
    :func:`configure_protocol` sets in each worker from its settings before the first connection."""

    header_timeout_s = Settings.model_fields["header_timeout_s"].default
    max_connections = Settings.model_fields["max_connections"].default


def configure_protocol(settings: Settings, on_refusal: RefusalHook | None = None) -> type[asyncio.Protocol]:
    """Set :class:`ServiceHTTPProtocol`'s limits from ``settings``; ``on_refusal`` counts refusals (e.g.
    into metrics). Process-wide: called once per worker, by its app factory."""
    ServiceHTTPProtocol.header_timeout_s = settings.header_timeout_s
    ServiceHTTPProtocol.max_connections = settings.max_connections
    ServiceHTTPProtocol.on_refusal = staticmethod(on_refusal) if on_refusal is not None else None
    return ServiceHTTPProtocol
