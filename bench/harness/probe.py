"""Watching a server from outside while it is attacked: a /healthz prober in a process of its own.

The prober is a separate process on purpose: in the test process, the attack's own Python work
(building bodies, reading answers) holds the interpreter lock and would be counted as the server's
latency. It keeps one keep-alive connection, GETs /healthz every ``interval`` seconds and, when told
to stop, reports the worst latency, including a probe still waiting for its answer.

Run as a script it is the prober itself (standard library only, so it starts in milliseconds):
``python probe.py URL INTERVAL_S`` prints ``ready`` after its first answer, probes until a line
arrives on stdin, then prints one JSON line and exits.
"""

from __future__ import annotations

import http.client
import json
import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit


@dataclass
class HealthReport:
    probes: int
    worst_s: float
    p50_s: float
    p99_s: float
    failures: int
    first_failures: list[str] = field(default_factory=list)

    def summary(self) -> str:
        text = f"{self.probes} probes, worst {1000 * self.worst_s:.1f} ms, p99 {1000 * self.p99_s:.1f} ms"
        return text + (f", {self.failures} failed ({'; '.join(self.first_failures)})" if self.failures else "")


class HealthProbe:
    """``with HealthProbe(url) as probe: ...attack...; report = probe.stop()``."""

    def __init__(self, url: str, interval_s: float = 0.01, ready_timeout_s: float = 10.0) -> None:
        self.url, self.interval_s, self.ready_timeout_s = url, interval_s, ready_timeout_s
        self.proc: subprocess.Popen | None = None
        self.report: HealthReport | None = None

    def __enter__(self) -> HealthProbe:
        self.proc = subprocess.Popen([sys.executable, "-u", __file__, self.url, str(self.interval_s)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        line = _readline(self.proc, self.ready_timeout_s)
        if line.strip() != "ready":
            self._kill()
            raise RuntimeError(f"health prober did not start: {line!r}")
        return self

    def stop(self, timeout_s: float = 10.0) -> HealthReport:
        if self.report is None:
            assert self.proc is not None
            try:
                self.proc.stdin.write("stop\n")
                self.proc.stdin.flush()
                line = _readline(self.proc, timeout_s)
                self.report = HealthReport(**json.loads(line))
            except (OSError, ValueError, TypeError) as exc:
                self.report = HealthReport(0, float("inf"), 0.0, 0.0, 1, [f"prober gave no report: {exc}"])
            finally:
                self._kill()
        return self.report

    def __exit__(self, *exc) -> None:
        self.stop()

    def _kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
        if self.proc is not None:
            self.proc.wait()
            for pipe in (self.proc.stdin, self.proc.stdout):
                if pipe is not None and not pipe.closed:
                    try:
                        pipe.close()
                    except OSError:  # the prober is gone: nothing left to flush
                        pass


def _readline(proc: subprocess.Popen, timeout_s: float) -> str:
    result: list[str] = []
    reader = threading.Thread(target=lambda: result.append(proc.stdout.readline()), daemon=True)
    reader.start()
    reader.join(timeout_s)
    if not result:
        raise ValueError(f"no line from the prober within {timeout_s} s")
    return result[0]


# ---- the prober process ------------------------------------------------------------------------


def _prober(url: str, interval_s: float) -> None:
    parts = urlsplit(url)
    lock = threading.Lock()
    latencies: list[float] = []
    failures: list[str] = []
    inflight = [None]  # when the probe now waiting started

    def report_and_exit() -> None:
        sys.stdin.readline()
        with lock:
            lat = sorted(latencies)
            if inflight[0] is not None:
                lat.append(time.perf_counter() - inflight[0])
                lat.sort()
            n = len(lat)
            print(json.dumps({
                "probes": n, "worst_s": lat[-1] if n else 0.0, "p50_s": lat[n // 2] if n else 0.0,
                "p99_s": lat[min(n - 1, int(0.99 * n))] if n else 0.0, "failures": len(failures),
                "first_failures": failures[:3],
            }), flush=True)
        os._exit(0)

    threading.Thread(target=report_and_exit, daemon=True).start()
    conn = None
    ready = False
    while True:
        if conn is None:
            conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=600)
        start = time.perf_counter()
        with lock:
            inflight[0] = start
        try:
            conn.request("GET", "/healthz")
            response = conn.getresponse()
            response.read()
            status, closing = response.status, response.will_close
        except (OSError, http.client.HTTPException) as exc:
            status, closing = None, True
            problem = f"{type(exc).__name__}: {exc}"
        elapsed = time.perf_counter() - start
        with lock:
            inflight[0] = None
            latencies.append(elapsed)
            if status != 200:
                failures.append(problem if status is None else f"status {status}")
        if closing:
            conn.close()
            conn = None
        if not ready and status == 200:
            ready = True
            print("ready", flush=True)
        time.sleep(max(0.0, interval_s - elapsed))


if __name__ == "__main__":
    _prober(sys.argv[1], float(sys.argv[2]))
