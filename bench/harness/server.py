"""A real server for reliability checks: `python -m service` under uvicorn on a free 127.0.0.1 port,
plus the model store it serves. Shared by tests/reliability and bench/soak.py, bench/resource_attacks.py."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import torch

from bench.harness.procfs import rss_bytes

REPO = Path(__file__).resolve().parents[2]
SHIPPED_MODEL = REPO / "model_store" / "fashion-mnist-bnn"
FASHION_LABELS = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                  "Ankle boot"]
FASHION_INPUT = {"channels": 1, "height": 28, "width": 28, "mean": [0.286], "std": [0.353]}


def fashion_model_into(store: Path) -> tuple[str, str]:
    """Put the serving model into ``store``: the shipped fashion-mnist-bnn when present, else
    FashionNet(binary=True) with random weights (reliability does not depend on the weights).
    Returns (model name, where it came from)."""
    target = store / "fashion-mnist-bnn"
    if (SHIPPED_MODEL / "model.json").is_file():
        shutil.copytree(SHIPPED_MODEL, target)
        return "fashion-mnist-bnn", "shipped model_store/fashion-mnist-bnn"
    from service.export import export_model
    from training.train_fashion_mnist import FashionNet  # the repository root is on sys.path: bench is importable

    torch.manual_seed(0)
    export_model(FashionNet(binary=True), target, "fashion-mnist-bnn", "random", FASHION_INPUT, FASHION_LABELS)
    return "fashion-mnist-bnn", "FashionNet(binary=True), random weights (shipped model absent)"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def worker_pids(parent: int) -> list[int]:
    """The worker processes uvicorn's supervisor ``parent`` spawned (multiprocessing's spawn children)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == parent and b"multiprocessing.spawn" in cmdline and b"resource_tracker" not in cmdline:
            pids.append(int(entry.name))
    return sorted(pids)


@dataclass
class Server:
    """A running `python -m service` subprocess; its combined stdout/stderr goes to ``log``."""

    url: str
    proc: subprocess.Popen
    log: Path
    env: dict[str, str] = field(default_factory=dict)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def rss(self) -> int:
        return rss_bytes(self.pid)

    def workers(self) -> list[int]:
        """The pids of the worker processes (none when the server is one process)."""
        return worker_pids(self.pid)

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def terminate(self, timeout: float = 30.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


def start_server(model_store: Path, log_dir: Path | None = None, ready_timeout: float = 90.0,
                 launcher: list[str] | None = None, **settings) -> Server:
    """Start the service on a free loopback port with BNN_<NAME>=value for each setting; wait until ready.
    ``launcher`` replaces ``python -m service`` (it gets ``--host``/``--port`` appended), e.g. to serve another build."""
    port = free_port()
    env = {**os.environ, "BNN_MODEL_STORE": str(model_store), "BNN_KERNEL_THREADS": "1", "BNN_LOG_LEVEL": "warning",
           "BNN_GRPC_PORT": "0",  # several servers at once: gRPC stays off unless a check sets its port
           "BNN_WORKERS": "1"}  # one process, whose pid is the server's (RSS, CPU), unless a check asks for more
    env.update({f"BNN_{k.upper()}": str(v) for k, v in settings.items()})
    log_dir = Path(log_dir or tempfile.mkdtemp(prefix="bnn-server-"))
    log = log_dir / f"server-{port}.log"
    with open(log, "wb") as out:
        command = launcher or [sys.executable, "-m", "service"]
        proc = subprocess.Popen([*command, "--host", "127.0.0.1", "--port", str(port)],
                                cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)
    server = Server(f"http://127.0.0.1:{port}", proc, log, env)
    deadline = time.monotonic() + ready_timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited early ({proc.returncode}):\n{server.output()}")
        try:  # /readyz is 200 once the lifespan has loaded the store (broken models do not hold it back)
            if httpx.get(f"{server.url}/readyz", timeout=1).status_code == 200:
                return server
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    server.terminate()
    raise RuntimeError(f"server not ready within {ready_timeout} s:\n{server.output()}")


@contextlib.contextmanager
def running_server(model_store: Path, **settings) -> Iterator[Server]:
    server = start_server(model_store, **settings)
    try:
        yield server
    finally:
        server.terminate()
