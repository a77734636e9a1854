"""Slow and surplus clients (service/api/protocol.py): headers not sent in time get 408 and a closed
connection, connections beyond the cap get 503 at once, idle keep-alive connections close, a slow
body is not the header timer's business, and other clients keep being served meanwhile. Every
refusal is JSON. Raw sockets on 127.0.0.1 only, a bounded number of them."""

from __future__ import annotations

import asyncio
import json
import resource
import select
import selectors
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import httpx
import pytest
import uvicorn

from bench.harness.server import Server, start_server
from service.api.protocol import GuardedH11Protocol, GuardedHttpToolsProtocol

pytestmark = [pytest.mark.slow, pytest.mark.e2e]

HEADER_TIMEOUT_S = 1.0
KEEPALIVE_TIMEOUT_S = 1.0
MAX_CONNECTIONS = 50
SLACK_S = 1.0  # scheduling slack on every deadline (loose: these check that limits hold, not their precision)
ATTACKERS = 200
PROBE_LATENCY_LIMIT_S = 1.0


# ---- a raw-socket client ------------------------------------------------------------------------


@dataclass
class Answer:
    """What the server wrote on a connection, and whether and when it closed it (from ``start``)."""

    raw: bytes = b""
    closed: bool = False
    first_byte_s: float | None = None
    closed_s: float | None = None
    status: int | None = None
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""

    def parse(self) -> Answer:
        head, sep, body = self.raw.partition(b"\r\n\r\n")
        if sep:
            lines = head.decode("latin-1").split("\r\n")
            self.status = int(lines[0].split()[1])
            self.headers = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:])}
            self.body = body
        return self

    def complete(self) -> bool:
        self.parse()
        return self.status is not None and len(self.body) >= int(self.headers.get("content-length", 0))

    def error(self) -> str:
        body = json.loads(self.body)
        assert self.headers["content-type"] == "application/json" and list(body) == ["error"], self.raw
        return body["error"]


def connect(server: Server | str) -> socket.socket:
    url = server if isinstance(server, str) else server.url
    host, port = url.removeprefix("http://").split(":")
    return socket.create_connection((host, int(port)), timeout=5)


def read_answer(sock: socket.socket, start: float, limit_s: float, answer: Answer | None = None,
                until_closed: bool = True) -> Answer:
    """Read until the server closes the connection (or, with ``until_closed=False``, until one whole
    response is in), at most ``limit_s`` after ``start``."""
    answer = answer or Answer()
    while (left := start + limit_s - time.monotonic()) > 0:
        if not until_closed and answer.complete():
            break
        if not select.select([sock], [], [], left)[0]:
            continue
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:  # the server closed with our bytes unread: the same as a close here
            chunk = b""
        now = time.monotonic() - start
        if not chunk:
            answer.closed, answer.closed_s = True, now
            break
        if answer.first_byte_s is None:
            answer.first_byte_s = now
        answer.raw += chunk
    return answer.parse()


def trickle(sock: socket.socket, data: bytes, chunk: int, every_s: float, limit_s: float) -> tuple[Answer, int]:
    """Send ``data`` ``chunk`` bytes every ``every_s`` s until it is all sent or the server answers;
    return what the server wrote within ``limit_s``, and how many bytes went out."""
    start, sent = time.monotonic(), 0
    while sent < len(data) and time.monotonic() - start < limit_s:
        if select.select([sock], [], [], every_s)[0]:
            break  # the server answered (or closed) while the client was still sending
        try:
            sent += sock.send(data[sent:sent + chunk])
        except (BrokenPipeError, ConnectionResetError):
            break
    return read_answer(sock, start, limit_s, until_closed=True), sent


def get(path: str = "/healthz", keep_alive: bool = True) -> bytes:
    connection = b"keep-alive" if keep_alive else b"close"
    return b"GET %s HTTP/1.1\r\nhost: test\r\nconnection: %s\r\n\r\n" % (path.encode(), connection)


# ---- the server under test ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def guarded(tiny_store, tmp_path_factory) -> Iterator[Server]:
    server = start_server(tiny_store, log_dir=tmp_path_factory.mktemp("slow_clients"), default_model="tiny",
                          header_timeout_s=HEADER_TIMEOUT_S, keepalive_timeout_s=KEEPALIVE_TIMEOUT_S,
                          max_connections=MAX_CONNECTIONS, body_timeout_s=30)
    yield server
    code = server.terminate()
    log = server.output()
    assert code in (0, -15), f"server exited with {code}:\n{log[-3000:]}"
    assert "Traceback" not in log, f"the server logged an unhandled error:\n{log[-5000:]}"


def assert_408(answer: Answer, timeout_s: float = HEADER_TIMEOUT_S) -> None:
    assert answer.status == 408, answer
    assert answer.error() == f"request headers not received within {timeout_s:g} s"
    assert answer.headers["connection"] == "close"
    assert answer.closed and answer.closed_s is not None
    assert timeout_s - 0.05 <= answer.closed_s <= timeout_s + SLACK_S, answer.closed_s


def test_trickled_headers_get_408_and_a_closed_connection(guarded):
    with connect(guarded) as sock:
        sock.sendall(b"GET /healthz HT")  # half a request line, then a byte every 0.3 s
        answer, sent = trickle(sock, b"TP/1.1\r\nhost: test\r\nx-slow: " + b"a" * 100, 1, 0.3, 10)
    assert sent >= 2, "the client should have trickled a few bytes before the timeout"
    assert_408(answer)


def test_a_silent_connection_is_closed(guarded):
    with connect(guarded) as sock:
        assert_408(read_answer(sock, time.monotonic(), 10))


def test_a_trickled_second_request_on_a_kept_alive_connection_gets_408(guarded):
    with connect(guarded) as sock:
        sock.sendall(get())
        first = read_answer(sock, time.monotonic(), 5, until_closed=False)
        assert first.status == 200 and not first.closed, first
        time.sleep(KEEPALIVE_TIMEOUT_S / 2)  # idle, but within the keep-alive timeout
        answer, _ = trickle(sock, get(), 1, 0.2, 10)  # the header timer runs from the request's first byte
    assert_408(answer)


def test_an_idle_kept_alive_connection_is_closed_after_the_keepalive_timeout(guarded):
    with connect(guarded) as sock:
        start = time.monotonic()
        sock.sendall(get())
        first = read_answer(sock, start, 5, until_closed=False)
        assert first.status == 200 and first.headers.get("connection") != "close", first
        answered = time.monotonic()
        rest = read_answer(sock, answered, 10)
    assert rest.closed and rest.raw == b"", rest  # closed quietly: no 408 after a finished request
    assert KEEPALIVE_TIMEOUT_S - 0.05 <= rest.closed_s <= KEEPALIVE_TIMEOUT_S + SLACK_S, rest.closed_s


def test_a_slow_body_is_not_cut_by_the_header_timer(guarded):
    values = [1.0, -1.0] * 32
    body = json.dumps({"input": {"shape": [1, 1, 8, 8], "data": values},
                       "weight": {"shape": [1, 1, 3, 3], "data": values[:9]}}).encode()
    head = (b"POST /conv HTTP/1.1\r\nhost: test\r\ncontent-type: application/json\r\n"
            b"content-length: %d\r\nconnection: close\r\n\r\n" % len(body))
    with connect(guarded) as sock:
        sock.sendall(head)  # headers at once, then the body over 2.5 s: well past the header timeout
        chunk = -(-len(body) // 10)
        answer, sent = trickle(sock, body, chunk, 0.25, 30)
    assert sent == len(body), f"the server answered before the body was sent: {answer}"
    assert answer.first_byte_s is not None and answer.first_byte_s >= 2 * HEADER_TIMEOUT_S
    assert answer.status == 200, answer
    assert json.loads(answer.body)["shape"] == [1, 1, 6, 6]


def test_an_unparseable_request_gets_400_json(guarded):
    with connect(guarded) as sock:
        sock.sendall(b"\x00\x01 nonsense\r\n\r\n")
        answer = read_answer(sock, time.monotonic(), 5)
    assert answer.status == 400 and answer.error() and answer.closed, answer


# ---- many slow clients at once ---------------------------------------------------------------


@dataclass
class Probes:
    """GET /healthz on a fresh connection every 50 ms, in a thread, until stopped: (answer, seconds) each."""

    server: Server
    results: list[tuple[Answer, float]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        while not self._stop.is_set():
            start = time.monotonic()
            with connect(self.server) as sock:
                sock.sendall(get(keep_alive=False))
                answer = read_answer(sock, start, 5)
            self.results.append((answer, time.monotonic() - start))
            self._stop.wait(0.05)

    def __enter__(self) -> Probes:
        self._thread = threading.Thread(target=self.run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)

    @property
    def worst_s(self) -> float:
        return max(latency for _, latency in self.results)

    def statuses(self) -> list[int | None]:
        return [answer.status for answer, _ in self.results]


def slow_header_attack(server: Server, count: int, limit_s: float) -> list[Answer]:
    """Open ``count`` connections that each send part of a request line, and read what each gets."""
    start = time.monotonic()
    socks = []
    for _ in range(count):
        sock = connect(server)
        sock.sendall(b"GET /healthz HTTP/1.1\r\nhost: slow")  # and never the rest
        socks.append(sock)
    answers = {sock: Answer() for sock in socks}
    with selectors.DefaultSelector() as sel:
        for sock in socks:
            sock.setblocking(False)
            sel.register(sock, selectors.EVENT_READ)
        while sel.get_map() and (left := start + limit_s - time.monotonic()) > 0:
            for key, _ in sel.select(left):
                sock, answer = key.fileobj, answers[key.fileobj]
                try:
                    chunk = sock.recv(65536)
                except ConnectionResetError:
                    chunk = b""
                now = time.monotonic() - start
                if chunk:
                    answer.raw += chunk
                    answer.first_byte_s = answer.first_byte_s if answer.first_byte_s is not None else now
                else:
                    answer.closed, answer.closed_s = True, now
                    sel.unregister(sock)
    for sock in socks:
        sock.close()
    return [a.parse() for a in answers.values()]


@pytest.fixture
def enough_file_descriptors() -> int:
    """Raise the soft descriptor limit so that the attack and the probes fit; how many attackers fit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = ATTACKERS + 256
    if soft < need and (hard == resource.RLIM_INFINITY or hard > soft):
        resource.setrlimit(resource.RLIMIT_NOFILE, (need if hard == resource.RLIM_INFINITY else min(need, hard), hard))
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    attackers = min(ATTACKERS, soft - 256)
    assert attackers > MAX_CONNECTIONS, f"RLIMIT_NOFILE {soft} leaves too few descriptors to exceed the cap"
    return attackers


def test_slow_headers_below_the_cap_do_not_stall_other_clients(guarded):
    below_cap = MAX_CONNECTIONS - 10  # room for the probes
    with Probes(guarded) as probes:
        answers = slow_header_attack(guarded, below_cap, HEADER_TIMEOUT_S + SLACK_S + 1)
    for answer in answers:
        assert_408(answer)
    statuses = probes.statuses()
    assert len(statuses) >= 5 and set(statuses) == {200}, statuses
    print(f"\n{below_cap} slow-header connections: {len(statuses)} /healthz probes all 200, "
          f"worst {probes.worst_s * 1000:.0f} ms; 408 and closed after "
          f"{min(a.closed_s for a in answers):.2f}-{max(a.closed_s for a in answers):.2f} s")
    assert probes.worst_s < PROBE_LATENCY_LIMIT_S


def test_slow_headers_beyond_the_cap_get_503_at_once_and_the_server_recovers(guarded, enough_file_descriptors):
    attackers = enough_file_descriptors
    with Probes(guarded) as probes:
        answers = slow_header_attack(guarded, attackers, HEADER_TIMEOUT_S + SLACK_S + 1)
    refused = [a for a in answers if a.status == 503]
    held = [a for a in answers if a.status != 503]
    assert attackers - MAX_CONNECTIONS <= len(refused) < attackers, (len(refused), len(held))
    for answer in refused:
        assert "too many open connections" in answer.error()
        assert answer.headers["retry-after"] == "1" and answer.headers["connection"] == "close"
        assert answer.closed and answer.closed_s < SLACK_S, answer
    for answer in held:
        assert_408(answer)
    # While the cap is full a fresh connection is refused too, but always at once and in JSON.
    for answer, _ in probes.results:
        assert answer.status in (200, 503) and answer.closed, answer
        if answer.status == 503:
            assert answer.headers["retry-after"] == "1" and answer.error()
    assert probes.worst_s < PROBE_LATENCY_LIMIT_S
    print(f"\n{attackers} slow-header connections against a cap of {MAX_CONNECTIONS}: {len(refused)} got 503 "
          f"within {max(a.closed_s for a in refused) * 1000:.0f} ms, {len(held)} got 408 and closed after "
          f"{min(a.closed_s for a in held):.2f}-{max(a.closed_s for a in held):.2f} s; "
          f"{len(probes.results)} probes ({probes.statuses().count(200)} x 200, the rest 503), "
          f"worst {probes.worst_s * 1000:.0f} ms")
    with httpx.Client(base_url=guarded.url, timeout=5) as client:  # all slots free again
        for _ in range(MAX_CONNECTIONS + 10):
            assert client.get("/healthz").status_code == 200
        assert client.get("/readyz").status_code == 200
        metrics = client.get("/metrics").text  # the refusals are counted, by reason
    counted = {line.split("} ")[0]: float(line.split("} ")[1]) for line in metrics.splitlines()
               if line.startswith("bnn_http_connection_refusals_total{")}
    assert counted['bnn_http_connection_refusals_total{reason="connection_limit"'] >= len(refused)
    assert 'bnn_http_connection_refusals_total{reason="header_timeout"}' in metrics


# ---- both parsers uvicorn may pick, in process -----------------------------------------------


async def _echo_app(scope, receive, send) -> None:
    assert scope["type"] == "http"
    while (await receive()).get("more_body"):
        pass
    if scope["path"] == "/slow":
        await asyncio.sleep(0.8)
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
    await send({"type": "http.response.body", "body": b"ok"})


# uvicorn serves with httptools when it is installed and h11 otherwise; both get the same limits.
@pytest.mark.parametrize("base", [GuardedH11Protocol, GuardedHttpToolsProtocol], ids=["h11", "httptools"])
def test_both_parsers_time_headers_and_cap_connections(base):
    if base is None:
        pytest.skip("httptools is not installed")
    refusals: list[str] = []
    cls = type("Limited", (base,), {"header_timeout_s": 0.5, "max_connections": 3,
                                    "on_refusal": staticmethod(refusals.append)})
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = uvicorn.Config(_echo_app, host="127.0.0.1", port=port, http=cls, lifespan="off",
                            timeout_keep_alive=1, log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.01)
        target = f"http://127.0.0.1:{port}"
        with connect(target) as kept:  # a whole request, then a second one trickled: 408 from its first byte
            kept.sendall(get())
            assert read_answer(kept, time.monotonic(), 5, until_closed=False).status == 200
            answer, _ = trickle(kept, get(), 1, 0.1, 5)
            assert_408(answer, 0.5)
        opened = time.monotonic()
        with connect(target) as a, connect(target) as b, connect(target) as c:
            time.sleep(0.1)  # a, b and c hold all 3 slots; d is one too many
            with connect(target) as d:
                refused = read_answer(d, time.monotonic(), 5)
            assert refused.status == 503 and refused.headers["retry-after"] == "1" and refused.error()
            for sock in (a, b, c):
                assert_408(read_answer(sock, opened, 5), 0.5)
        with connect(target) as piped:  # a pipelined request stalls while the one before is served
            start = time.monotonic()
            piped.sendall(get("/slow") + b"GET /healthz HT")
            answer = read_answer(piped, start, 5)
        assert answer.status == 200 and answer.body.startswith(b"ok"), answer  # answered, not cut by a 408
        rest = answer.body[2:]
        assert rest == b"" or rest.startswith(b"HTTP/1.1 408 "), answer  # then closed, quietly or with 408
        assert answer.closed and answer.closed_s <= 0.8 + 1 + SLACK_S, answer
        with connect(target) as bad:
            bad.sendall(b"\x00\x01 nonsense\r\n\r\n")
            assert read_answer(bad, time.monotonic(), 5).status == 400
        assert sorted(refusals) == ["bad_request", "connection_limit", "header_timeout", "header_timeout",
                                    "header_timeout", "header_timeout"]
    finally:
        server.should_exit = True
        thread.join(10)


def test_sigterm_closes_connections_still_sending_headers(tiny_store, tmp_path):
    server = start_server(tiny_store, log_dir=tmp_path, default_model="tiny", header_timeout_s=60,
                          keepalive_timeout_s=60)  # timers far off: only the shutdown may close these
    socks: list[socket.socket] = []
    try:
        for _ in range(3):
            socks.append(connect(server))
            socks[-1].sendall(b"GET /healthz HTTP/1.1\r\nhost: slow")
        socks.append(connect(server))  # and one idle between requests
        socks[-1].sendall(get())
        assert read_answer(socks[-1], time.monotonic(), 5, until_closed=False).status == 200
        start = time.monotonic()
        server.proc.terminate()
        answers = [read_answer(sock, start, 10) for sock in socks]
        code = server.proc.wait(timeout=10)
        took = time.monotonic() - start
    finally:
        server.terminate()
        for sock in socks:
            sock.close()
    assert code in (0, -15), server.output()[-3000:]
    assert all(a.closed for a in answers), answers
    print(f"\nSIGTERM with 3 connections mid-headers and 1 idle: closed after "
          f"{max(a.closed_s for a in answers):.2f} s, exited after {took:.2f} s")
    assert took < 5, f"shutdown took {took:.1f} s with connections still sending headers"
    assert "Traceback" not in server.output(), server.output()[-5000:]
