"""The models being served, and changing them while the service runs.

Each model folder of the store may hold several versions (``<name>/model.json``, or Triton's
``<name>/<version>/model.json``); every version that loads gets its own batcher, and requests that
name no version go to the latest one. :meth:`Repository.load` (re)reads one folder from disk and
swaps its versions in at once; the versions it replaces, and those :meth:`Repository.unload`
removes, stop only after the requests already handed to them have their answers. In ``poll`` mode
the store is scanned every ``repository_poll_s`` seconds and a folder added, changed or removed is
loaded, reloaded or unloaded. Requests to other models never notice.

With several workers, a load or unload asked of one worker goes through the server's
:class:`~service.api.workers.ControlJournal`: every worker applies the same changes in the same order,
and the answer comes once all live workers have applied it. (Polling needs no journal: each worker
scans the store itself.)

Everything here runs on the event loop, one change at a time; loading and warm-up run in threads.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from service.api.batching import Batcher
from service.api.deps import ServiceState
from service.api.errors import InvalidInput, ModelNotFound, RequestTimeout, ServiceError
from service.api.workers import ControlJournal
from service.model import ModelLoadError
from service.model.store import load_versions, model_folders

logger = logging.getLogger("bnn.api")

Fingerprint = tuple[tuple[str, int, int], ...]
FOLLOW_S = 0.1  # how often a worker looks for changes the others were asked for


def fingerprint(folder: Path) -> Fingerprint:
    """What a reload must notice: every file under ``folder`` with its size and modification time."""
    files = []
    for path in sorted(folder.rglob("*")):
        with contextlib.suppress(OSError):  # a file removed while scanning: the next scan sees it gone
            if path.is_file() and not path.name.startswith("."):
                st = path.stat()
                files.append((str(path.relative_to(folder)), st.st_size, st.st_mtime_ns))
    return tuple(files)


@dataclass
class _Served:
    model: Any
    batcher: Batcher


class Repository:
    """Owns the batchers and publishes what is served into :class:`ServiceState` (``served``,
    ``models``, ``batchers``, ``errors``, ``ready``), replacing those dicts, never mutating them, so
    a request that has looked a model up keeps a consistent view."""

    def __init__(self, state: ServiceState) -> None:
        self.state = state
        self.settings = state.settings
        self._served: dict[str, dict[str, _Served]] = {}
        self._fingerprints: dict[str, Fingerprint] = {}
        self._lock = asyncio.Lock()
        self._draining: set[asyncio.Task] = set()
        self._poller: asyncio.Task | None = None
        # several workers: the shared order of changes, how far this one has applied it, and the
        # outcome of the changes this worker was asked for, by sequence number
        self._journal: ControlJournal | None = None
        self._applied = 0
        self._in_order = asyncio.Lock()
        self._outcomes: dict[int, ServiceError | None] = {}
        self._follower: asyncio.Task | None = None

    @property
    def root(self) -> Path:
        return self.settings.model_store

    # ---- start and stop ----------------------------------------------------------------------

    async def start(self, versions: dict[str, dict[str, Any]], errors: dict[str, str]) -> None:
        """Serve what the store held at start-up (or what a test injected), then poll if asked to.
        A worker that joins a running server leaves out the models the others were told to unload."""
        workers = self.state.workers
        if workers.folder is not None and self.settings.model_control != "none":
            self._journal = ControlJournal(workers.folder)
            entries = await asyncio.to_thread(self._journal.entries)
            last = {entry["model"]: entry["action"] for entry in entries}
            unloaded = {name for name, action in last.items() if action == "unload"}
            versions = {name: v for name, v in versions.items() if name not in unloaded}
            errors = {name: e for name, e in errors.items() if name not in unloaded}
            self._applied = len(entries)
            self._journal.applied(self._applied)
        async with self._lock:
            self.state.errors = dict(errors)
            for name, reason in errors.items():
                logger.warning("model %r is not ready: %s", name, reason)
                self.state.metrics.model_ready.labels(name).set(0)
            for name, loaded in versions.items():
                folder = self.root / name
                self._fingerprints[name] = await asyncio.to_thread(fingerprint, folder) if folder.is_dir() else ()
                await self._swap(name, loaded)
        self.state.started = True
        if self.settings.model_control == "poll":
            self._poller = asyncio.get_running_loop().create_task(self._poll(), name="repository-poll")
        if self._journal is not None:
            self._follower = asyncio.get_running_loop().create_task(self._follow(), name="repository-follow")

    async def close(self) -> None:
        for task in (self._poller, self._follower):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        async with self._lock:
            for versions in self._served.values():
                for served in versions.values():
                    await served.batcher.stop()
            self._served = {}
            self._publish()
        for task in list(self._draining):
            await task

    # ---- the repository extension ------------------------------------------------------------

    def index(self) -> list[dict[str, str]]:
        """Every model folder in the store and every served version: READY, or UNAVAILABLE with the reason."""
        entries = []
        for name in sorted(self._on_disk() | set(self._served) | set(self.state.errors)):
            served = self._served.get(name, {})
            for version in served:
                entries.append({"name": name, "version": version, "state": "READY", "reason": ""})
            if name in self.state.errors:
                entries.append({"name": name, "version": "", "state": "UNAVAILABLE", "reason": self.state.errors[name]})
            elif not served:
                entries.append({"name": name, "version": "", "state": "UNAVAILABLE", "reason": "unloaded"})
        return entries

    async def load(self, name: str) -> None:
        """(Re)load ``name`` from its folder: every version in it is served at once, the versions it
        replaces drain. A folder that does not load leaves what was served as it was (and says why).
        With several workers, all of them do."""
        await self._change("load", name)

    async def unload(self, name: str) -> None:
        """Stop serving ``name``; its requests in flight still get their answers. With several workers,
        all of them stop."""
        await self._change("unload", name)

    # ---- one change, in every worker ---------------------------------------------------------

    async def _change(self, action: str, name: str) -> None:
        if self._journal is None:
            await self._apply(action, name)
            return
        async with self._in_order:  # the follower cannot apply it before its outcome is awaited here
            seq = await asyncio.to_thread(self._journal.append, action, name)
            self._outcomes[seq] = None
            await self._catch_up()  # every change before it too, in the journal's order
        outcome = self._outcomes.pop(seq, None)
        deadline = asyncio.get_running_loop().time() + self.settings.request_timeout_s
        while behind := await asyncio.to_thread(self._journal.behind, seq):
            if asyncio.get_running_loop().time() > deadline:
                raise RequestTimeout(
                    f"{action} of model {name!r} is done in this worker, but workers {behind} had not applied it "
                    f"within {self.settings.request_timeout_s:g} s"
                )
            await asyncio.sleep(0.02)
        if outcome is not None:
            raise outcome

    async def _apply(self, action: str, name: str) -> None:
        await (self._load(name) if action == "load" else self._unload(name))

    async def _catch_up(self) -> None:
        """Apply the journal's entries this worker has not applied yet, in order; keep the outcome of
        those it was asked for (another worker's failure is in its own log and index). The caller
        holds ``_in_order``."""
        assert self._journal is not None
        for entry in await asyncio.to_thread(self._journal.entries, self._applied):
            seq = entry["seq"]
            try:
                await self._apply(entry["action"], entry["model"])
            except ServiceError as exc:
                if seq in self._outcomes:
                    self._outcomes[seq] = exc
            self._applied = seq
        await asyncio.to_thread(self._journal.applied, self._applied)

    async def _follow(self) -> None:
        assert self._journal is not None
        seen = -1
        while True:
            await asyncio.sleep(FOLLOW_S)
            try:
                size = self._journal.size()
                if size != seen:
                    seen = size
                    async with self._in_order:
                        await self._catch_up()
            except Exception:
                logger.exception("following the workers' model changes failed")

    # ---- in this worker ----------------------------------------------------------------------

    async def _load(self, name: str) -> None:
        folder = self.root / name
        if name.startswith(".") or "/" in name or not folder.is_dir():
            raise ModelNotFound(f"no model folder {name!r} in the model store {self.root}")
        async with self._lock:
            fp = await asyncio.to_thread(fingerprint, folder)
            try:
                versions = await asyncio.to_thread(load_versions, folder)
            except ModelLoadError as exc:
                self._fail(name, str(exc))
                raise InvalidInput(f"model {name!r} did not load: {exc}") from None
            except Exception as exc:  # noqa: BLE001 - a broken folder must not take the service down
                self._fail(name, f"{folder}: unexpected {type(exc).__name__}: {exc}")
                raise InvalidInput(f"model {name!r} did not load: {type(exc).__name__}: {exc}") from None
            self._fingerprints[name] = fp
            await self._swap(name, versions)
            logger.info("model %r loaded: versions %s", name, list(versions))

    async def _unload(self, name: str) -> None:
        async with self._lock:
            if name not in self._served and name not in self.state.errors:
                raise ModelNotFound(f"model {name!r} is not loaded")
            old = self._served.pop(name, {})
            self._fingerprints.pop(name, None)
            self.state.errors = {k: v for k, v in self.state.errors.items() if k != name}
            self.state.metrics.model_ready.labels(name).set(0)
            self._publish()
            self._drain(old.values())
            logger.info("model %r unloaded", name)

    # ---- internals ---------------------------------------------------------------------------

    def _on_disk(self) -> set[str]:
        return {p.name for p in model_folders(self.root)} if self.root.is_dir() else set()

    def _fail(self, name: str, reason: str) -> None:
        logger.error("model %r did not load: %s", name, reason)
        self.state.errors = {**self.state.errors, name: reason}
        if name not in self._served:
            self.state.metrics.model_ready.labels(name).set(0)
        self._publish()

    async def _swap(self, name: str, versions: dict[str, Any]) -> None:
        settings = self.settings
        fresh: dict[str, _Served] = {}
        for version, model in versions.items():
            batcher = Batcher(
                model,
                self.state.metrics,
                max_batch_size=settings.max_batch_size,
                max_queue_delay_ms=settings.max_queue_delay_ms,
                max_queue_size=settings.max_queue_size,
            )
            await batcher.warm_up(settings.warmup_batches)  # before any request can reach it
            batcher.start()
            fresh[str(version)] = _Served(model, batcher)
        old = self._served.get(name, {})
        self._served = {**self._served, name: fresh}
        self.state.errors = {k: v for k, v in self.state.errors.items() if k != name}
        self.state.metrics.model_ready.labels(name).set(1)
        self._publish()
        self._drain(old.values())

    def _drain(self, served: Any) -> None:
        for s in served:
            task = asyncio.get_running_loop().create_task(s.batcher.drain(self.settings.request_timeout_s))
            self._draining.add(task)
            task.add_done_callback(self._draining.discard)

    def _publish(self) -> None:
        """Replace the state's views at once: each name's latest version serves unversioned requests."""
        state = self.state
        state.served = {
            name: {v: (s.model, s.batcher) for v, s in versions.items()} for name, versions in self._served.items()
        }
        latest = {name: versions[next(reversed(versions))] for name, versions in self._served.items() if versions}
        state.models = {name: s.model for name, s in latest.items()}
        state.batchers = {name: s.batcher for name, s in latest.items()}
        default = self.settings.default_model
        state.ready = bool(state.batchers) and (default is None or default in state.batchers)

    async def _poll(self) -> None:
        interval = self.settings.repository_poll_s
        while True:
            await asyncio.sleep(interval)
            try:
                await self._poll_once()
            except Exception:
                logger.exception("model store scan failed")

    async def _poll_once(self) -> None:
        on_disk = self._on_disk()
        for name in sorted(on_disk):
            fp = await asyncio.to_thread(fingerprint, self.root / name)
            if fp != self._fingerprints.get(name):
                self._fingerprints[name] = fp  # a folder that fails is retried when it changes again
                with contextlib.suppress(InvalidInput, ModelNotFound):
                    await self._load(name)  # each worker scans for itself: no journal
        for name in sorted(set(self._served) - on_disk):
            with contextlib.suppress(ModelNotFound):
                await self._unload(name)
