"""Several worker processes behind one port (``--workers N``): one server to its clients and operators.

Real servers (``python -m service``) on loopback: the requests spread over the workers, /metrics and
the statistics count all of them whichever worker answers, readiness waits for every worker, a worker
that dies is replaced, SIGTERM drains every one, and a worker that cannot start stops the server.
"""

from __future__ import annotations

import concurrent.futures
import itertools
import json
import os
import re
import shutil
import signal
import socket
import time
from pathlib import Path

import httpx
import pytest

from bench.harness.server import Server, start_server
from service.api.workers import ControlJournal, WorkerGroup
from service.settings import Settings, available_cpus
from tests.api.conftest import png_bytes
from tests.tiny_model import export_tiny

IMAGE = {"content": png_bytes(), "headers": {"content-type": "image/png"}}


def _fresh(server: Server) -> httpx.Client:
    """A client that opens a new connection per request, so the workers take turns accepting them."""
    return httpx.Client(base_url=server.url, timeout=30, limits=httpx.Limits(max_keepalive_connections=0))


def _metric(text: str, name: str, **labels: str) -> float:
    """The value of one sample in Prometheus text."""
    wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    pattern = re.escape(name) + (r"\{" + re.escape(wanted) + r"\}" if labels else "") + r" (\S+)"
    match = re.search(r"^" + pattern + r"$", text, flags=re.M)
    assert match, f"{name}{{{wanted}}} not in /metrics"
    return float(match.group(1))


def _access_pids(server: Server, path: str) -> set[int]:
    pids = set()
    for line in server.output().splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if record.get("logger") == "bnn.access" and record.get("path") == path:
            pids.add(record["pid"])
    return pids


def _wait(condition, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    pytest.fail(f"{what} within {timeout_s} s")


@pytest.fixture
def two_workers(model_store_dir, tmp_path):
    server = start_server(
        model_store_dir, log_dir=tmp_path, workers=2, default_model="tiny", log_level="info", max_queue_delay_ms=1
    )
    try:
        yield server
    finally:
        server.terminate()


@pytest.mark.e2e
@pytest.mark.slow
def test_two_workers_are_one_server(two_workers):
    server = two_workers
    workers = server.workers()
    assert len(workers) == 2 and server.pid not in workers
    # 48 predictions at once, 6 on each of 4 connections held by each worker (which worker accepts a
    # new connection is not up to the client: each is pinned first)
    port = int(server.url.rsplit(":", 1)[1])
    clients = _pinned_connections(server, port, set(workers), per_worker=4)

    def six(client: socket.socket) -> list[tuple[int, bytes]]:
        return [_request(client, "POST", "/predict", IMAGE["content"], "image/png") for _ in range(6)]

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        answers = [a for batch in pool.map(six, clients) for a in batch]
    for client in clients:
        client.close()
    assert [status for status, _ in answers] == [200] * 48
    assert len({json.loads(body)["results"][0]["predictions"][0]["label"] for _, body in answers}) == 1
    # Each worker wrote access lines for the predictions it served: both took a share.
    _wait(lambda: _access_pids(server, "/predict") == set(workers), 5, "both workers served /predict")
    # Whichever worker answers, the numbers are the whole server's: asked of each worker.
    for pid, client in _one_per_worker(server).items():
        status, text = _request(client, "GET", "/metrics")
        assert status == 200, pid
        text = text.decode()
        assert _metric(text, "nv_inference_count", model="tiny", version="1") == 48
        assert _metric(text, "bnn_http_requests_total", route="/predict", method="POST", status="200") == 48
        assert _metric(text, "bnn_workers_ready") == 2
        assert _metric(text, "bnn_model_ready", model="tiny") == 1
        assert _metric(text, "bnn_queue_depth", model="tiny") == 0
        status, body = _request(client, "GET", "/v2/models/tiny/stats")
        stats = json.loads(body)["model_stats"][0]
        assert stats["inference_count"] == 48 and sum(b["compute_infer"]["count"] for b in stats["batch_stats"]) > 0
        client.close()
    assert _access_pids(server, "/metrics") == set(workers)


@pytest.mark.e2e
@pytest.mark.slow
def test_a_dead_worker_is_replaced_and_readiness_waits_for_it(two_workers):
    server = two_workers
    with _fresh(server) as http:
        assert all(http.post("/predict", **IMAGE).status_code == 200 for _ in range(5))
        victim, survivor = server.workers()
        os.kill(victim, signal.SIGKILL)
        # Until the replacement has loaded its models, the server is not ready (the survivor says so).
        _wait(lambda: http.get("/readyz").status_code == 503, 5, "readiness went false")
        _wait(lambda: len(server.workers()) == 2 and victim not in server.workers(), 10, "a worker was spawned")
        _wait(lambda: http.get("/readyz").status_code == 200, 60, "the server was ready again")
        assert survivor in server.workers()
        text = http.get("/metrics").text
        assert _metric(text, "bnn_workers_ready") == 2  # the dead worker's live gauge no longer counts
        assert _metric(text, "nv_inference_count", model="tiny", version="1") == 5  # its counts still do
        assert all(http.post("/predict", **IMAGE).status_code == 200 for _ in range(5))
    assert server.proc.poll() is None


@pytest.mark.e2e
@pytest.mark.slow
def test_sigterm_drains_every_worker(model_store_dir, tmp_path):
    server = start_server(model_store_dir, log_dir=tmp_path, workers=2, default_model="tiny", log_level="info")
    folder = _shared_folder(server)
    workers = server.workers()
    port = int(server.url.rsplit(":", 1)[1])
    body = png_bytes()
    head = (
        f"POST /predict HTTP/1.1\r\nhost: test\r\ncontent-type: image/png\r\ncontent-length: {len(body)}\r\n\r\n"
    ).encode()
    # Requests in flight at SIGTERM: their bodies are half sent, on connections each worker holds
    # (which worker accepts a connection is up to the kernel and the event loops: one worker can
    # take a whole burst, so each connection is pinned by a request first and kept alive).
    clients = _pinned_connections(server, port, set(workers), per_worker=4)
    for client in clients:
        client.sendall(head + body[:10])
    time.sleep(0.5)
    server.proc.send_signal(signal.SIGTERM)
    time.sleep(0.5)
    answers = []
    for client in clients:
        client.sendall(body[10:])
        answers.append(_read_response(client))
        client.close()
    assert server.proc.wait(timeout=30) == 0
    assert [status for status, _ in answers] == [200] * len(clients), answers
    out = server.output()
    assert _access_pids(server, "/predict") == set(workers)  # both workers had requests to finish
    for pid in workers:
        assert f"Finished server process [{pid}]" in out
    assert out.count("Application shutdown complete") == 2
    assert not Path(folder).exists()  # the run folder goes with the server


def _request(
    client: socket.socket, method: str, path: str, body: bytes = b"", content_type: str = ""
) -> tuple[int, bytes]:
    """One HTTP/1.1 request on a kept-alive connection: (status, body)."""
    head = f"{method} {path} HTTP/1.1\r\nhost: test\r\ncontent-length: {len(body)}\r\n"
    if content_type:
        head += f"content-type: {content_type}\r\n"
    client.sendall((head + "\r\n").encode() + body)
    return _read_response(client)


def _one_per_worker(server: Server) -> dict[int, socket.socket]:
    """A kept-alive connection held by each live worker, by pid."""
    port = int(server.url.rsplit(":", 1)[1])
    workers = set(server.workers())
    clients = _pinned_connections(server, port, workers, per_worker=1)
    return {pid: c for pid, c in zip(_pids_of(server, clients), clients)}


def _pinned_connections(server: Server, port: int, pids: set[int], per_worker: int) -> list[socket.socket]:
    """Kept-alive connections, ``per_worker`` held by each worker in ``pids``: each connection sends
    one request for a path of its own (a 404) and is kept by the worker whose access log has that
    path; connections to a worker that holds enough already are closed. At most 64 tries."""
    held: dict[int, list[socket.socket]] = {pid: [] for pid in pids}
    for _ in range(64):
        if all(len(c) >= per_worker for c in held.values()):
            break
        client = socket.create_connection(("127.0.0.1", port), timeout=20)
        path = f"/pin/{next(_PIN_PATHS)}"  # a path no earlier request used
        client.sendall(f"GET {path} HTTP/1.1\r\nhost: test\r\n\r\n".encode())
        status, _ = _read_response(client)
        assert status == 404
        _wait(lambda path=path: _access_pids(server, path), 10, f"the access log line of {path}")
        (pid,) = _access_pids(server, path)
        if len(held[pid]) < per_worker:
            held[pid].append(client)
        else:
            client.close()
    counts = {pid: len(c) for pid, c in held.items()}
    assert all(n == per_worker for n in counts.values()), f"connections per worker after 64 tries: {counts}"
    _PINNED.update({id(client): pid for pid, c in held.items() for client in c})
    return [client for c in held.values() for client in c]


_PINNED: dict[int, int] = {}  # id(connection) -> the worker that holds it
_PIN_PATHS = itertools.count()


def _pids_of(server: Server, clients: list[socket.socket]) -> list[int]:
    return [_PINNED[id(c)] for c in clients]


def _read_response(client: socket.socket) -> tuple[int, bytes]:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = client.recv(65536)
        if not chunk:
            break
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1]) if head else 0
    length = int(re.search(rb"content-length: (\d+)", head, flags=re.I).group(1)) if status else 0
    while len(rest) < length:
        chunk = client.recv(65536)
        if not chunk:
            break
        rest += chunk
    return status, rest


@pytest.mark.e2e
@pytest.mark.slow
def test_a_worker_that_cannot_start_stops_the_server(model_store_dir, tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        with pytest.raises(RuntimeError, match=r"exited early \(3\)"):
            start_server(model_store_dir, log_dir=tmp_path, workers=2, grpc_port=taken.getsockname()[1])


def _shared_folder(server: Server) -> str:
    environ = (Path("/proc") / str(server.workers()[0]) / "environ").read_bytes().split(b"\0")
    return next(v.split(b"=", 1)[1].decode() for v in environ if v.startswith(b"PROMETHEUS_MULTIPROC_DIR="))


@pytest.mark.e2e
@pytest.mark.slow
def test_model_changes_reach_every_worker_even_one_started_later(model_store_dir, tmp_path):
    store = tmp_path / "store"
    shutil.copytree(model_store_dir / "tiny", store / "tiny")
    export_tiny(store / "other", name="other")
    server = start_server(store, log_dir=tmp_path, workers=2, log_level="info")

    def readiness(http: httpx.Client) -> set[int]:
        """The model's readiness as each live worker answers it."""
        answers = set()
        for client in _one_per_worker(server).values():
            answers.add(_request(client, "GET", "/v2/models/other/ready")[0])
            client.close()
        return answers

    try:
        with _fresh(server) as http:
            assert readiness(http) == {200}
            r = http.post("/v2/repository/models/other/unload")
            assert r.status_code == 200, r.text
            assert readiness(http) == {404}  # whichever worker answers: unloaded
            assert _access_pids(server, "/v2/models/other/ready") == set(server.workers())
            assert http.post("/v2/repository/models/nowhere/load").status_code == 404
            # A worker started after the unload does not serve the model either.
            victim = server.workers()[0]
            os.kill(victim, signal.SIGKILL)
            _wait(lambda: len(server.workers()) == 2 and victim not in server.workers(), 10, "a worker was spawned")
            _wait(lambda: http.get("/readyz").status_code == 200, 60, "the server was ready again")
            assert readiness(http) == {404}
            r = http.post("/v2/repository/models/other/load")
            assert r.status_code == 200, r.text
            assert readiness(http) == {200}
            assert _access_pids(server, "/v2/models/other/ready") >= set(server.workers())
    finally:
        server.terminate()


# -- the pieces, in one process ------------------------------------------------------------------------------


def test_readiness_counts_live_workers_only(tmp_path):
    one, two = WorkerGroup(2, tmp_path), WorkerGroup(2, tmp_path)
    two.pid = _dead_pid()
    one.join()
    one.set_ready(True)
    assert not one.all_ready()  # one of two
    two.set_ready(True)
    assert not one.all_ready()  # the second's mark is a dead process's
    one.join()  # a worker starting sweeps the dead one's mark away
    assert sorted(p.name for p in (tmp_path / "ready").iterdir()) == [str(os.getpid())]
    assert WorkerGroup(1, tmp_path).expected == 1
    alone = WorkerGroup(4, None)  # no shared folder: a group of one
    alone.set_ready(True)
    assert alone.all_ready() and alone.expected == 1


def _dead_pid() -> int:
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)
    return pid


@pytest.mark.parametrize(
    "given",
    [
        {},
        {"api_key": "s3cret key", "grpc_port": None, "workers": 3, "max_queue_delay_ms": 0.5},
        {"model_store": "/srv/models", "allow_empty_store": True, "default_model": "tiny", "kernel_isa": "PORTABLE"},
        {"grpc_port": 9001, "kernel_threads": 2, "log_format": "text", "allow_empty_store": False},
    ],
)
def test_workers_read_back_the_settings_they_were_given(given, monkeypatch):
    for name in list(os.environ):
        if name.startswith("BNN_"):
            monkeypatch.delenv(name)
    settings = Settings(**given)
    for name, value in settings.as_environment().items():
        monkeypatch.setenv(name, value)
    again = Settings()
    assert again.model_fields_set == settings.model_fields_set
    expected = settings.model_dump() | ({"grpc_port": 0} if settings.grpc_port is None else {})
    assert again.model_dump() == expected
    assert (again.api_key is None) == (settings.api_key is None)
    if settings.api_key is not None:
        assert again.api_key.get_secret_value() == settings.api_key.get_secret_value()


def test_cpus_are_shared_out_among_workers(monkeypatch):
    monkeypatch.setattr("service.settings.available_cpus", lambda: 8)
    monkeypatch.setattr("service.settings._cgroup_memory_limit", lambda: None)
    assert Settings().worker_count == 8 and Settings().threads_per_worker == 1
    assert Settings(workers=3).threads_per_worker == 2
    assert Settings(workers=16).threads_per_worker == 1
    assert Settings(workers=2, kernel_threads=6).threads_per_worker == 6


def test_a_container_memory_limit_caps_the_default_workers(monkeypatch):
    monkeypatch.setattr("service.settings.available_cpus", lambda: 16)
    monkeypatch.setattr("service.settings._cgroup_memory_limit", lambda: 2 << 30)
    assert Settings().worker_count == 3  # 1 GiB left by the budget's half, 320 MiB each
    monkeypatch.setattr("service.settings._cgroup_memory_limit", lambda: 512 << 20)
    assert Settings().worker_count == 1
    assert Settings(workers=4).worker_count == 4  # as asked


def test_available_cpus_respects_the_affinity_mask():
    assert 1 <= available_cpus() <= len(os.sched_getaffinity(0))


def test_the_journal_orders_changes_and_knows_who_is_behind(tmp_path):
    journal = ControlJournal(tmp_path)
    assert [journal.append("unload", "a"), journal.append("load", "a"), journal.append("load", "b")] == [1, 2, 3]
    assert [(e["seq"], e["action"], e["model"]) for e in journal.entries(1)] == [(2, "load", "a"), (3, "load", "b")]
    with open(journal.path, "a") as f:
        f.write('{"seq": 4, "act')  # a line still being written is not an entry yet
    assert len(journal.entries()) == 3
    journal.applied(2)
    assert journal.behind(3) == [os.getpid()] and journal.behind(2) == []
    (journal.folder / "applied" / str(_dead_pid())).write_text("0")  # a dead worker is not waited for
    assert journal.behind(3) == [os.getpid()]
