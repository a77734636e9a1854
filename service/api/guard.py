"""Running a request's heavy work off the event loop, under a deadline that stops it, and sending
its answer without letting a client that never reads it pin memory.

- :func:`run_cancellable` runs blocking work in a worker thread bound to a kernel cancel token;
  past the deadline (504) or when the client disconnects (499) the token is cancelled, so the
  kernel stops within one work item and the CPU is free again, not just no longer awaited.
- :func:`until_disconnect` races any awaitable (a batcher's result) with the client leaving.
- :func:`run_codec` parses or serialises large bodies on one dedicated thread: the interpreter
  lock is held in steps of at most a few tens of milliseconds, and only one such thread competes
  with the event loop for it, so health probes stay answered.
- :class:`BudgetedResponse` holds the request's memory reservation until its body is sent, in
  chunks, each with a send timeout.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from service import kernel
from service.api.budget import Reservation
from service.api.errors import ClientDisconnected, RequestTimeout

T = TypeVar("T")

_codec = ThreadPoolExecutor(max_workers=1, thread_name_prefix="bnn-codec")
SEND_CHUNK = 1 << 20


async def run_codec(fn: Callable[..., T], *args: Any) -> T:
    """``fn(*args)`` on the one codec thread (JSON parsing and serialising of large bodies)."""
    return await asyncio.get_running_loop().run_in_executor(_codec, fn, *args)


async def _disconnected(receive: Receive) -> None:
    """Returns when the client has gone (call only once the request body has been read)."""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return


def _retrieve(future: asyncio.Future) -> None:
    if not future.cancelled():
        future.exception()  # an abandoned thread's Cancelled is expected: never "never retrieved"


async def run_cancellable(
    request: Request,
    fn: Callable[..., T],
    *args: Any,
    timeout_s: float,
    what: str,
    reservation: Reservation | None = None,
) -> T:
    """``fn(token, *args)`` in a worker thread whose kernel calls are bound to ``token``.

    Raises RequestTimeout (504) after ``timeout_s`` and ClientDisconnected (499) when the client
    leaves first; in both cases, and when this coroutine is cancelled, the token is cancelled so
    the work stops. ``reservation`` (the memory the work holds) is released when ``fn`` fails, or
    when an abandoned thread has really stopped; on success it stays with the caller.
    """
    loop = asyncio.get_running_loop()
    token = kernel.CancelToken()

    def call() -> T:
        with kernel.cancellable(token):
            return fn(token, *args)

    work = loop.run_in_executor(None, call)
    work.add_done_callback(_retrieve)

    def abandon() -> None:
        token.cancel()
        if reservation is not None:
            work.add_done_callback(lambda _: reservation.release())

    gone = asyncio.ensure_future(_disconnected(request.receive))
    try:
        done, _ = await asyncio.wait((work, gone), timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:
        abandon()
        raise
    finally:
        gone.cancel()
    if work in done:
        try:
            return work.result()
        except BaseException:
            if reservation is not None:
                reservation.release()
            raise
    abandon()
    if gone in done:
        raise ClientDisconnected(f"the client disconnected; {what} was stopped")
    raise RequestTimeout(
        f"{what} did not finish within {timeout_s:g} s (setting BNN_REQUEST_TIMEOUT_S); it was stopped"
    )


async def until_disconnect(request: Request, awaitable: Awaitable[T], what: str) -> T:
    """The awaitable's result, or ClientDisconnected (499) when the client leaves first (the
    awaitable is then cancelled, which for a batcher's predict() withdraws the request's rows)."""
    task = asyncio.ensure_future(awaitable)
    gone = asyncio.ensure_future(_disconnected(request.receive))
    gone.add_done_callback(lambda g: None if g.cancelled() else task.cancel())
    try:
        return await task  # cancelling this coroutine cancels the task too
    except asyncio.CancelledError:
        if gone.done() and not gone.cancelled():
            raise ClientDisconnected(f"the client disconnected; {what} was withdrawn") from None
        raise
    finally:
        gone.cancel()


class BudgetedResponse(Response):
    """A response body the route built itself, as a list of byte strings (no second validation,
    no joining into one more copy), sent piece by piece in chunks of at most ``SEND_CHUNK`` bytes,
    each within ``send_timeout_s``. The memory ``reservation`` is released once the body is sent,
    or given up on: a client that stops reading loses its connection instead of pinning the body
    in the server's send buffers."""

    def __init__(
        self,
        parts: list[bytes],
        *,
        reservation: Reservation | None,
        send_timeout_s: float,
        media_type: str = "application/json",
        headers: dict[str, str] | None = None,
        status_code: int = 200,
    ) -> None:
        self.parts = parts
        self.status_code = status_code
        self.media_type = media_type
        self.background = None
        self.body = b""
        self.raw_headers = [
            (b"content-type", media_type.encode("latin-1")),
            (b"content-length", str(sum(len(p) for p in parts)).encode("latin-1")),
            *((k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in (headers or {}).items()),
        ]
        self.reservation = reservation
        self.send_timeout_s = send_timeout_s

    def _chunks(self):
        for part in self.parts:
            view = memoryview(part)
            for start in range(0, len(view), SEND_CHUNK):
                yield view[start : start + SEND_CHUNK]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
            pending = None
            for chunk in self._chunks():  # one chunk behind, so the last one can say more_body=False
                if pending is not None and not await self._send(scope, send, pending, more=True):
                    return
                pending = chunk
            await self._send(scope, send, pending if pending is not None else memoryview(b""), more=False)
        finally:
            if self.reservation is not None:
                self.reservation.release()

    async def _send(self, scope: Scope, send: Send, chunk: memoryview, more: bool) -> bool:
        try:
            async with asyncio.timeout(self.send_timeout_s):
                await send({"type": "http.response.body", "body": bytes(chunk), "more_body": more})
            return True
        except TimeoutError:
            scope["bnn.rejected"] = "client_stalled"  # the server closes the connection
            return False
