"""The process's memory budget: what in-flight requests may allocate together.

A request that computes first estimates, from its headers and parameters alone, the bytes it will
hold at its peak (``service.api.cost``), then reserves them here before allocating anything. It
waits (first come, first served) at most ``memory_wait_s`` for the budget to free up, then gets 503
with Retry-After; a request whose estimate alone exceeds the whole budget gets 413. The reservation
is held until the response has been sent (or the work behind it has really stopped), so under any
mix of requests within the limits the process's resident memory stays under its baseline plus
the budget.

Everything here runs on the event loop thread: no locks.
"""

from __future__ import annotations

import asyncio
import collections
import math
from dataclasses import dataclass, field

from service.api.errors import PayloadTooLarge, ServiceOverloaded


def mib(nbytes: int) -> str:
    return f"{nbytes / (1 << 20):.1f} MiB"


@dataclass
class Reservation:
    """Bytes held in a :class:`MemoryBudget`; ``release()`` gives them back (once, idempotent)."""

    budget: MemoryBudget
    nbytes: int
    released: bool = False

    def release(self) -> None:
        if not self.released:
            self.released = True
            self.budget._give_back(self.nbytes)


@dataclass
class _Waiter:
    nbytes: int
    future: asyncio.Future = field(repr=False)


class MemoryBudget:
    def __init__(self, total_bytes: int, wait_s: float, on_change=None) -> None:
        self.total = total_bytes
        self.wait_s = wait_s
        self.used = 0
        self._waiters: collections.deque[_Waiter] = collections.deque()
        self._on_change = on_change  # called with the bytes in use, for a metrics gauge

    async def reserve(self, nbytes: int, what: str) -> Reservation:
        """Hold ``nbytes`` for ``what`` (a request's description, for the error messages)."""
        nbytes = max(0, int(nbytes))
        if nbytes > self.total:
            raise PayloadTooLarge(
                f"{what} needs an estimated {mib(nbytes)} of memory, more than the service's whole budget of "
                f"{mib(self.total)} (setting BNN_MEMORY_BUDGET_BYTES)"
            )
        if not self._waiters and self.used + nbytes <= self.total:
            return self._grant(nbytes)
        waiter = _Waiter(nbytes, asyncio.get_running_loop().create_future())
        self._waiters.append(waiter)
        try:
            async with asyncio.timeout(self.wait_s):
                await waiter.future
        except (TimeoutError, asyncio.CancelledError) as exc:
            if waiter.future.done() and not waiter.future.cancelled():
                # Granted just as the wait ended: give it back (another waiter may fit now).
                self._give_back(nbytes)
            else:
                waiter.future.cancel()
                if waiter in self._waiters:  # _wake() drops cancelled waiters it meets first
                    self._waiters.remove(waiter)
                self._wake()  # a large waiter at the head may have been blocking smaller ones
            if isinstance(exc, asyncio.CancelledError):
                raise
            raise ServiceOverloaded(
                f"{what} needs an estimated {mib(nbytes)} of memory and the budget of {mib(self.total)} "
                f"(setting BNN_MEMORY_BUDGET_BYTES) stayed in use by other requests for {self.wait_s:g} s; retry later",
                retry_after_s=max(1, math.ceil(self.wait_s)),
            ) from None
        return Reservation(self, nbytes)

    def _grant(self, nbytes: int) -> Reservation:
        self.used += nbytes
        self._changed()
        return Reservation(self, nbytes)

    def _give_back(self, nbytes: int) -> None:
        self.used -= nbytes
        self._wake()
        self._changed()

    def _wake(self) -> None:
        # First come, first served: a large request at the head is not starved by small ones behind it.
        while self._waiters and self.used + self._waiters[0].nbytes <= self.total:
            waiter = self._waiters.popleft()
            if waiter.future.done():
                continue
            self.used += waiter.nbytes
            waiter.future.set_result(None)

    def _changed(self) -> None:
        if self._on_change is not None:
            self._on_change(self.used)
