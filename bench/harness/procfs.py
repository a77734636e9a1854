"""What /proc says about a server process and the machine, read once or sampled in a thread."""

from __future__ import annotations

import os
import platform
import threading
import time
from collections.abc import Callable
from pathlib import Path


def _status_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} for pid {pid}")


def rss_bytes(pid: int) -> int:
    """Resident memory of a process (VmRSS), in bytes."""
    return _status_kib(pid, "VmRSS") * 1024


def peak_rss_bytes(pid: int) -> int:
    """The most resident memory the process has had (VmHWM) since it started or since
    :func:`reset_peak_rss`, in bytes."""
    return _status_kib(pid, "VmHWM") * 1024


def reset_peak_rss(pid: int) -> int:
    """Reset the process's VmHWM to its current VmRSS (writing 5 to clear_refs; needs the same
    user or root) and return that VmRSS: the baseline a later :func:`peak_rss_bytes` is read against."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")
    return rss_bytes(pid)


_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """CPU time the process has used, all threads, user + system (/proc/<pid>/stat utime + stime;
    the kernel counts it in clock ticks, usually 10 ms)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS


def mem_available_bytes() -> int:
    """The machine's MemAvailable (/proc/meminfo), in bytes."""
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no MemAvailable in /proc/meminfo")


def cpu_name() -> str:
    """The CPU's model name (/proc/cpuinfo), else what ``platform`` knows (ARM's cpuinfo names none)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def load_average() -> float | None:
    """The machine's 1-minute load average (how much else ran on a shared VM), None where the OS has none."""
    return round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None


class Sampler:
    """Calls ``read()`` every ``interval_s`` in a daemon thread while in its ``with`` block and keeps
    (time.monotonic(), value) in ``samples``; stops early when ``read`` raises OSError or ValueError
    (the process is gone) or when :meth:`on_sample` returns False."""

    def __init__(self, read: Callable[[], float], interval_s: float) -> None:
        self.read, self.interval_s = read, interval_s
        self.samples: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def on_sample(self, at: float, value: float) -> bool:
        """Called after each sample; False stops sampling."""
        return True

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                at, value = time.monotonic(), self.read()
            except (OSError, ValueError):  # the process is gone
                return
            self.samples.append((at, value))
            if not self.on_sample(at, value):
                return
            self._stop.wait(self.interval_s)


class CpuSampler(Sampler):
    """A process's CPU seconds every ``interval_s``: ``samples`` holds (time.monotonic(), cpu seconds)."""

    def __init__(self, pid: int, interval_s: float = 0.02) -> None:
        super().__init__(lambda: cpu_seconds(pid), interval_s)

    def busy_until(self, since: float, busy_cores: float = 0.5) -> float | None:
        """The time of the last sample after ``since`` that ended an interval in which the process used
        more than ``busy_cores`` cores (and at least two clock ticks, so that an idle server's
        occasional tick is not counted); None when it was never that busy after ``since``."""
        last = None
        for (t0, c0), (t1, c1) in zip(self.samples, self.samples[1:]):
            if t1 <= since or t1 <= t0:
                continue
            used = c1 - c0
            if used >= 0.019 and used / (t1 - t0) > busy_cores:
                last = t1
        return last

    def idle_for(self, seconds: float, busy_cores: float = 0.5) -> bool:
        """Whether the last ``seconds`` of samples show no busy interval."""
        if not self.samples or self.samples[-1][0] - self.samples[0][0] < seconds:
            return False
        start = self.samples[-1][0] - seconds
        return self.busy_until(start, busy_cores) is None
