"""Several worker processes behind one port (``--workers N``): what they share, and how one worker
knows whether the whole server is ready.

``bnn-serve`` makes one run folder for the server and names it in ``PROMETHEUS_MULTIPROC_DIR``
before anything imports prometheus_client; uvicorn's supervisor spawns the workers (each imports the
app afresh), replaces one that dies, and sends SIGTERM to each on shutdown (each drains its own
requests). The folder holds:

- prometheus_client's per-process value files, which /metrics and the statistics read together;
- ``ready/<pid>``, one empty file per worker that is ready to serve. The server is ready while as
  many live workers as configured have one, so readiness is false from a worker's death until its
  replacement has loaded every model;
- ``control/``: the repository API's loads and unloads, which every worker applies in one order
  (:class:`ControlJournal`).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import re
from pathlib import Path
from typing import Any

logger = logging.getLogger("bnn.api")

MULTIPROCESS_ENV = "PROMETHEUS_MULTIPROC_DIR"
_LIVE_GAUGE_FILE = re.compile(r"gauge_live\w*_(\d+)\.db")


def shared_folder() -> str | None:
    """The run folder of a multi-worker server, or None (one process serves)."""
    return os.environ.get(MULTIPROCESS_ENV) or None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process: alive
    return True


class WorkerGroup:
    """This worker's place among ``expected`` workers sharing ``folder``; with no folder, a group of one."""

    def __init__(self, expected: int = 1, folder: str | os.PathLike[str] | None = None) -> None:
        self.expected = expected if folder is not None else 1
        self.folder = Path(folder) if folder is not None else None
        self.pid = os.getpid()
        self._ready = False

    @property
    def shared(self) -> bool:
        return self.folder is not None

    def _marks(self) -> Path:
        assert self.folder is not None
        return self.folder / "ready"

    def join(self) -> None:
        """At a worker's start: forget the workers that died without leaving (killed, crashed), so
        their readiness and their live gauges (queue depth, memory held) stop counting."""
        if self.folder is None:
            return
        from prometheus_client import multiprocess

        self._marks().mkdir(parents=True, exist_ok=True)
        for mark in self._marks().iterdir():
            if mark.name.isdigit() and not _alive(int(mark.name)):
                mark.unlink(missing_ok=True)
        dead = {int(m.group(1)) for f in self.folder.iterdir() if (m := _LIVE_GAUGE_FILE.fullmatch(f.name))}
        for pid in sorted(p for p in dead if not _alive(p)):
            multiprocess.mark_process_dead(pid, str(self.folder))
            logger.info("worker %d had exited; its live gauges are dropped", pid)

    def set_ready(self, ready: bool) -> None:
        self._ready = ready
        if self.folder is None:
            return
        mark = self._marks() / str(self.pid)
        if ready:
            mark.touch()
        else:
            mark.unlink(missing_ok=True)

    @property
    def ready_here(self) -> bool:
        """This worker alone is ready."""
        return self._ready

    def all_ready(self) -> bool:
        """This worker is ready, and so are as many live workers as the server should have."""
        if not self._ready:
            return False
        if self.folder is None:
            return True
        with contextlib.suppress(OSError):
            live = sum(1 for mark in self._marks().iterdir() if mark.name.isdigit() and _alive(int(mark.name)))
            return live >= self.expected
        return False

    def leave(self) -> None:
        """At a worker's clean exit: no longer ready, and its live gauges no longer count."""
        self.set_ready(False)
        if self.folder is not None:
            from prometheus_client import multiprocess

            multiprocess.mark_process_dead(self.pid, str(self.folder))


class ControlJournal:
    """The model changes asked of any worker (the repository API's load and unload), in one order for
    all of them: an append-only file of ``{"seq", "action", "model", "pid"}`` lines under ``control/``,
    plus ``applied/<pid>``, the last entry each worker has applied. A worker appends a change, applies
    every entry up to it in order (so all workers apply the same sequence), and answers once every live
    worker has applied it; the others follow the file; one that starts later skips the models whose
    last entry unloads them. Each call is a few small file operations (appends hold an flock)."""

    def __init__(self, folder: str | os.PathLike[str]) -> None:
        self.folder = Path(folder) / "control"
        self.path = self.folder / "journal"
        self.pid = os.getpid()
        (self.folder / "applied").mkdir(parents=True, exist_ok=True)
        self.path.touch()

    def append(self, action: str, model: str) -> int:
        """Add a change; its sequence number (1, 2, ...)."""
        with open(self.path, "a+", encoding="utf-8") as journal:
            fcntl.flock(journal, fcntl.LOCK_EX)
            try:
                journal.seek(0)
                seq = sum(1 for _ in journal) + 1
                journal.write(json.dumps({"seq": seq, "action": action, "model": model, "pid": self.pid}) + "\n")
                journal.flush()
            finally:
                fcntl.flock(journal, fcntl.LOCK_UN)
        return seq

    def entries(self, after: int = 0) -> list[dict[str, Any]]:
        """The complete entries numbered above ``after``, in order."""
        with open(self.path, encoding="utf-8") as journal:
            lines = journal.read().split("\n")[:-1]  # the last piece: "" or a line still being written
        return [json.loads(line) for line in lines[after:]]

    def size(self) -> int:
        return self.path.stat().st_size

    def applied(self, seq: int) -> None:
        """Record that this worker has applied every entry up to ``seq``."""
        mark = self.folder / "applied" / str(self.pid)
        partial = mark.with_name(f".{self.pid}")
        partial.write_text(str(seq))
        partial.replace(mark)

    def behind(self, seq: int) -> list[int]:
        """The live workers that have not yet applied entry ``seq``."""
        waiting = []
        for mark in (self.folder / "applied").iterdir():
            if mark.name.isdigit() and _alive(int(mark.name)):
                with contextlib.suppress(OSError, ValueError):
                    if int(mark.read_text()) < seq:
                        waiting.append(int(mark.name))
        return waiting
