"""Dynamic batching: one queue and one worker per model, so concurrent requests share kernel calls.

Requests put rows (images) into the queue; the worker takes the first waiting rows and, while other
requests for the model are on their way (announced by :meth:`Batcher.arrival` when they enter the
app, still reading or decoding), waits up to ``max_queue_delay_ms`` for them until
``max_batch_size``; with none on the way it runs at once, so a lone request pays no delay. It runs
``model.predict`` in a worker
thread (the kernel releases the GIL), so the event loop never runs the kernel. While a batch
computes, new rows pile up and form the next batch without waiting. The queue is bounded: when
full, requests fail fast with 503 + Retry-After instead of waiting behind it.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import contextvars
import logging
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Protocol

import torch

from service import kernel
from service.api.errors import RequestTimeout, ServiceError, ServiceOverloaded
from service.api.metrics import ServiceMetrics
from service.model.manifest import InputSpec

logger = logging.getLogger("bnn.api")


class Predictor(Protocol):
    name: str
    version: str
    input: InputSpec

    def predict(self, batch: torch.Tensor) -> torch.Tensor: ...


@dataclass
class _Chunk:
    rows: torch.Tensor
    future: asyncio.Future
    enqueued_at: float = field(default_factory=time.perf_counter)


@dataclass
class _Arrival:
    """A request announced to a batcher, until it has queued its rows (or left without)."""

    batcher: Batcher
    on_the_way: bool = True

    def settle(self) -> None:
        if self.on_the_way:
            self.on_the_way = False
            self.batcher._arriving -= 1
            self.batcher._wakeup.set()


_current_arrival: contextvars.ContextVar[_Arrival | None] = contextvars.ContextVar("bnn_arrival", default=None)


class BatchFailed(ServiceError):
    status_code = 500


class Batcher:
    def __init__(
        self,
        model: Predictor,
        metrics: ServiceMetrics,
        *,
        max_batch_size: int,
        max_queue_delay_ms: float,
        max_queue_size: int,
    ) -> None:
        self.model = model
        self.metrics = metrics
        self.stats = metrics.model_stats(model.name, str(model.version))
        self.max_batch_size = max_batch_size
        self.max_queue_delay_s = max_queue_delay_ms / 1000.0
        self.max_queue_size = max_queue_size
        self._pending: collections.deque[_Chunk] = collections.deque()
        self._queued_rows = 0
        self._arriving = 0  # announced requests that have not queued their rows yet
        self._waiting = 0  # requests whose rows are queued or computing
        self._wakeup = asyncio.Event()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"bnn-{model.name}")
        self._worker: asyncio.Task | None = None

    @property
    def queued_rows(self) -> int:
        return self._queued_rows

    def start(self) -> None:
        self._worker = asyncio.get_running_loop().create_task(self._run(), name=f"batcher-{self.model.name}")

    async def warm_up(self, batches: int) -> None:
        """Run ``batches`` zero batches through the model on the batcher's own thread, alternating one
        image and a full batch, before it serves: the first requests then find torch's kernels
        chosen, this thread's pools started and the buffers of both extremes of batch size mapped."""
        spec = self.model.input
        loop = asyncio.get_running_loop()
        start = time.perf_counter()
        for i in range(batches):
            size = 1 if i % 2 == 0 else self.max_batch_size
            zeros = torch.zeros(size, spec.channels, spec.height, spec.width)
            await loop.run_in_executor(self._executor, self._compute, zeros, kernel.CancelToken())
        if batches:
            logger.info(
                "model %r version %s warmed up: %d batches in %.0f ms",
                self.model.name,
                self.model.version,
                batches,
                (time.perf_counter() - start) * 1e3,
            )

    @property
    def idle(self) -> bool:
        """No request is on its way to this batcher, queued in it or waiting for its results."""
        return self._arriving == 0 and self._waiting == 0

    async def drain(self, timeout_s: float) -> None:
        """Stop, once every request already handed to this batcher has its answer (or ``timeout_s``
        passed): a model being replaced or unloaded finishes its in-flight work first."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while not self.idle and loop.time() < deadline:
            await asyncio.sleep(0.01)
        await self.stop()

    async def stop(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
        for chunk in self._pending:
            if not chunk.future.done():
                chunk.future.set_exception(ServiceOverloaded("the service is shutting down"))
        self._pending.clear()
        self._executor.shutdown(wait=True)

    @contextlib.contextmanager
    def arrival(self) -> Iterator[None]:
        """Announce, for the request running in this context, that rows are on their way: a forming
        batch waits for them (at most max_queue_delay_ms). Settled when predict() queues them."""
        token = _Arrival(self)
        self._arriving += 1
        reset = _current_arrival.set(token)
        try:
            yield
        finally:
            token.settle()
            _current_arrival.reset(reset)

    def check_room(self, n: int) -> None:
        """Raise ServiceOverloaded (503 + Retry-After) unless ``n`` more images fit in the queue."""
        if self._queued_rows + n > self.max_queue_size:
            raise self._overloaded(n, f"{self._queued_rows} images queued")

    def admit(self) -> None:
        """Admission of a new request before its body is read: it is refused when the queued images
        plus the requests already on their way (at least one image each) fill the queue, so a burst
        is turned away as it arrives rather than after every body has been read."""
        if self._queued_rows + self._arriving + 1 > self.max_queue_size:
            raise self._overloaded(1, f"{self._queued_rows} images queued and {self._arriving} requests on their way")

    def _overloaded(self, n: int, load: str) -> ServiceOverloaded:
        self.metrics.inference_failures.labels(self.model.name, "queue_full").inc(n)
        return ServiceOverloaded(
            f"model {self.model.name!r} has {load} (limit {self.max_queue_size} images); retry later",
            retry_after_s=max(1, round(self.max_queue_delay_s + 1)),
        )

    async def predict(self, rows: torch.Tensor, timeout_s: float) -> torch.Tensor:
        """Logits for ``rows`` [N, C, H, W], computed in batches with other requests' rows."""
        n = rows.shape[0]
        self.check_room(n)
        loop = asyncio.get_running_loop()
        chunks = [
            _Chunk(rows[i : i + self.max_batch_size], loop.create_future()) for i in range(0, n, self.max_batch_size)
        ]
        self._pending.extend(chunks)
        self._queued_rows += n
        self.metrics.queue_depth.labels(self.model.name).set(self._queued_rows)
        self._wakeup.set()
        token = _current_arrival.get()
        if token is not None and token.batcher is self:
            token.settle()
        futures = [c.future for c in chunks]
        self._waiting += 1
        try:
            async with asyncio.timeout(timeout_s):
                parts = await asyncio.gather(*futures)
        except TimeoutError:
            for f in futures:
                f.cancel()  # the worker skips cancelled chunks still queued
            self.metrics.inference_failures.labels(self.model.name, "timeout").inc(n)
            raise RequestTimeout(f"inference on {self.model.name!r} did not finish within {timeout_s:g} s") from None
        finally:
            self._waiting -= 1
        return parts[0] if len(parts) == 1 else torch.cat(parts)

    # ---- the worker ------------------------------------------------------------------------

    async def _next_batch(self) -> list[_Chunk]:
        while not self._pending:
            self._wakeup.clear()
            await self._wakeup.wait()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.max_queue_delay_s
        while self._arriving > 0 and self._rows_waiting() < self.max_batch_size:
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            self._wakeup.clear()
            try:
                async with asyncio.timeout(remaining):
                    await self._wakeup.wait()
            except TimeoutError:
                break
        batch, rows = [], 0
        while self._pending and rows + self._pending[0].rows.shape[0] <= self.max_batch_size:
            chunk = self._pending.popleft()
            self._queued_rows -= chunk.rows.shape[0]
            if chunk.future.done():  # timed out or cancelled while waiting
                continue
            batch.append(chunk)
            rows += chunk.rows.shape[0]
        self.metrics.queue_depth.labels(self.model.name).set(self._queued_rows)
        return batch

    def _rows_waiting(self) -> int:
        return sum(c.rows.shape[0] for c in self._pending if not c.future.done())

    def _compute(self, inputs: torch.Tensor, token: kernel.CancelToken) -> tuple[torch.Tensor, float]:
        start = time.perf_counter()
        with torch.inference_mode(), kernel.cancellable(token):
            out = self.model.predict(inputs)
        return out, time.perf_counter() - start

    @staticmethod
    def _cancel_when_abandoned(batch: list[_Chunk]) -> kernel.CancelToken:
        """A token that is cancelled once every request in the batch has given up on it (timed out
        or disconnected): the kernel then stops within one work item instead of finishing for nobody."""
        token = kernel.CancelToken()
        futures = [c.future for c in batch]

        def check(_: asyncio.Future) -> None:
            if all(f.cancelled() for f in futures):
                token.cancel()

        for f in futures:
            f.add_done_callback(check)
        return token

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        name = self.model.name
        while True:
            batch = await self._next_batch()
            if not batch:
                continue
            now = time.perf_counter()
            queued_s = [now - chunk.enqueued_at for chunk in batch]
            for seconds in queued_s:
                self.metrics.queue_time.labels(name).observe(seconds)
            inputs = batch[0].rows if len(batch) == 1 else torch.cat([c.rows for c in batch])
            input_s = time.perf_counter() - now
            token = self._cancel_when_abandoned(batch)
            try:
                out, seconds = await loop.run_in_executor(self._executor, self._compute, inputs, token)
            except asyncio.CancelledError:
                raise
            except kernel.Cancelled:  # every request of the batch left: nobody to answer
                self.metrics.inference_failures.labels(name, "cancelled").inc(inputs.shape[0])
                continue
            except Exception as exc:  # a model failure fails this batch's requests, not the worker
                logger.exception("model %r failed on a batch of %d", name, inputs.shape[0])
                self.metrics.inference_failures.labels(name, "error").inc(inputs.shape[0])
                error = BatchFailed(f"inference failed on model {name!r}: {type(exc).__name__}")
                for chunk in batch:
                    if not chunk.future.done():
                        chunk.future.set_exception(error)
                continue
            self.metrics.compute_time.labels(name).observe(seconds)
            self.metrics.batch_size.labels(name).observe(inputs.shape[0])
            self.metrics.inferences.labels(name).inc(inputs.shape[0])
            output_start = time.perf_counter()
            start = 0
            for chunk in batch:
                n = chunk.rows.shape[0]
                if not chunk.future.done():
                    chunk.future.set_result(out[start : start + n])
                start += n
            output_s = time.perf_counter() - output_start
            self.stats.executed(queued_s, inputs.shape[0], input_s, seconds, output_s)
