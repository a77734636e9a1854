"""Several worker processes behind one port (``--workers N``): what they share, and how one worker
knows whether the whole server is ready.

``bnn-serve`` makes one run folder for the server and names it in ``PROMETHEUS_MULTIPROC_DIR``
before anything imports prometheus_client; uvicorn's supervisor spawns the workers (each imports the
app afresh), replaces one that dies, and sends SIGTERM to each on shutdown (each drains its own
requests). The folder holds:

- prometheus_client's per-process value files, which /metrics and the statistics read together;
- ``ready/<pid>``, one empty file per worker that is ready to serve. The server is ready while as
  many live workers as configured have one, so readiness is false from a worker's death until its
  replacement has loaded every model.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
from pathlib import Path

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
