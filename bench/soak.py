"""Reliability under load, faults and hostile input, measured against a real `python -m service`.

    .venv/bin/python bench/soak.py --report RELIABILITY.md      # every scenario, a few minutes
    .venv/bin/python bench/soak.py --requests 2000 --skip-hostile

It measures and reports; the bounds a result must meet are asserted in tests/reliability (test_load.py runs
these scenarios with smaller counts). ``--report FILE`` rewrites only the part of FILE between the
``<!-- soak:begin -->`` and ``<!-- soak:end -->`` markers (the whole file when it has none); the prose
around them is written by hand.

Scenarios (each on its own loopback server where its settings differ):
  soak          N mixed /predict, /conv, /v2 infer requests at concurrency 64; failures other than 503,
                p50/p99, RSS after warm-up vs after the run
  overload      a burst far past a small queue bound: only 200 or fast 503 + Retry-After; then at once 200s
  slow clients  uploads trickled byte by byte over seconds while others are served; their latency
  graceful stop SIGTERM under load: requests in flight answered, new ones refused, exit within the grace time
  hostile       bench/harness's catalogues (images, /conv, /v2), model-store faults, schemathesis, API key
  resources     bench/harness/attacks.py (via bench/resource_attacks.py): one row per class of resource attack,
                with its statuses, the server's peak RSS, the worst /healthz latency and the CPU release
All traffic goes to 127.0.0.1 and every scenario is bounded in requests and seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import collections
import io
import json
import os
import platform
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
if not __package__:  # run as a script: the repository root makes `bench` importable
    sys.path.insert(0, str(REPO))

from bench.harness import attacks as resource_attacks  # noqa: E402
from bench.harness.procfs import cpu_name  # noqa: E402
from bench.harness.server import Server, fashion_model_into, running_server, start_server  # noqa: E402
from bench.resource_attacks import run_catalogue  # noqa: E402
from service import kernel  # noqa: E402
from service.settings import Settings  # noqa: E402

GRACEFUL_SHUTDOWN_S = Settings.model_fields["graceful_shutdown_s"].default  # the servers here run with defaults
CONCURRENCY = 64


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


# ---- the request mix ----------------------------------------------------------------------

@dataclass
class Mix:
    """Ready-made bodies for the three inference routes (decoded once, sent many times)."""

    model: str
    chw: tuple[int, int, int]
    png: bytes = b""
    conv_body: bytes = b""
    v2_body: bytes = b""

    def __post_init__(self) -> None:
        c, h, w = self.chw
        rng = np.random.default_rng(0)
        buf = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, (h, w), dtype=np.uint8)).save(buf, "PNG")
        self.png = buf.getvalue()
        x = rng.standard_normal((1, 16, 14, 14)).astype("<f4")
        k = rng.standard_normal((16, 16, 3, 3)).astype("<f4")
        self.conv_body = json.dumps({
            "input": {"shape": list(x.shape), "b64": base64.b64encode(x.tobytes()).decode()},
            "weight": {"shape": list(k.shape), "b64": base64.b64encode(k.tobytes()).decode()}, "padding": 1,
        }).encode()
        self.v2_body = json.dumps({"inputs": [{"name": "input", "shape": [1, c, h, w], "datatype": "FP32",
                                               "data": rng.standard_normal(c * h * w).round(3).tolist()}]}).encode()

    async def send(self, client: httpx.AsyncClient, i: int, headers: dict | None = None) -> tuple[str, httpx.Response]:
        kind = ("predict", "conv", "v2")[i % 3]
        headers = headers or {}
        json_headers = {"content-type": "application/json", **headers}
        if kind == "predict":
            r = await client.post("/predict", params={"model": self.model, "top_k": 3},
                                  files=[("file", ("x.png", self.png, "image/png"))], headers=headers)
        elif kind == "conv":
            r = await client.post("/conv", content=self.conv_body, headers=json_headers)
        else:
            r = await client.post(f"/v2/models/{self.model}/infer", content=self.v2_body, headers=json_headers)
        return kind, r


def _client(url: str, connections: int, keepalive: bool = True, timeout: float = 60) -> httpx.AsyncClient:
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections if keepalive else 0)
    return httpx.AsyncClient(base_url=url, limits=limits, timeout=timeout)


# ---- soak ---------------------------------------------------------------------------------

async def _drive(client: httpx.AsyncClient, mix: Mix, n: int, concurrency: int):
    counter = iter(range(n))
    statuses: collections.Counter = collections.Counter()
    latency: dict[str, list[float]] = collections.defaultdict(list)
    failures: list[str] = []

    async def worker() -> None:
        for i in counter:
            start = time.perf_counter()
            try:
                kind, r = await mix.send(client, i)
            except httpx.HTTPError as exc:
                statuses["transport error"] += 1
                failures.append(f"{type(exc).__name__}: {exc}")
                continue
            statuses[(kind, r.status_code)] += 1
            if r.status_code == 200:
                latency[kind].append(time.perf_counter() - start)
            elif r.status_code != 503:
                failures.append(f"{kind} {r.status_code}: {r.text[:200]}")

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return statuses, latency, failures


async def soak(server: Server, mix: Mix, n: int, warmup: int, concurrency: int = CONCURRENCY) -> dict:
    async with _client(server.url, concurrency) as client:
        await _drive(client, mix, warmup, concurrency)
        rss_warm = server.rss()
        start = time.perf_counter()
        statuses, latency, failures = await _drive(client, mix, n, concurrency)
        seconds = time.perf_counter() - start
    rss_end = server.rss()
    every = [v for values in latency.values() for v in values]
    return {
        "requests": n, "warmup": warmup, "concurrency": concurrency, "seconds": seconds, "rps": n / seconds,
        "ok": sum(c for k, c in statuses.items() if k != "transport error" and k[1] == 200),
        "backpressure_503": sum(c for k, c in statuses.items() if k != "transport error" and k[1] == 503),
        "failed": len(failures), "failures": failures[:5],
        "p50_ms": percentile(every, 50) * 1e3, "p99_ms": percentile(every, 99) * 1e3,
        "per_route": {k: {"n": len(v), "p50_ms": percentile(v, 50) * 1e3, "p99_ms": percentile(v, 99) * 1e3}
                      for k, v in sorted(latency.items())},
        "rss_warm_mib": rss_warm / 2**20, "rss_end_mib": rss_end / 2**20,
        "rss_growth_pct": 100 * (rss_end - rss_warm) / rss_warm,
    }


# ---- overload -----------------------------------------------------------------------------

async def overload(store: Path, mix: Mix, burst: int, queue: int = 8) -> dict:
    """A burst of ``burst`` simultaneous 8-image /v2 requests against a queue of ``queue`` images."""
    c, h, w = mix.chw
    rows = 8
    body = json.dumps({"inputs": [{"name": "input", "shape": [rows, c, h, w], "datatype": "FP32",
                                   "data": [0.25] * (rows * c * h * w)}]}).encode()
    with running_server(store, max_queue_size=queue, max_batch_size=rows) as server:
        host, port = server.url.removeprefix("http://").split(":")
        head = (f"POST /v2/models/{mix.model}/infer HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode()
        # Open every connection first, then write every request before reading any answer: the
        # burst reaches the server at once, whatever the client's own speed (an HTTP client that
        # awaits each request's exchange sent them one after another on a fast server, which then
        # kept up and the queue bound was never reached).
        conns = await asyncio.gather(*(asyncio.open_connection(host, int(port)) for _ in range(burst)))
        start = time.perf_counter()
        for _, writer in conns:
            writer.write(head + body)

        async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> tuple[int, float, str | None]:
            try:
                await writer.drain()
                status = int((await asyncio.wait_for(reader.readline(), 60)).split()[1])
                retry_after = None
                while (line := await asyncio.wait_for(reader.readline(), 60)) not in (b"\r\n", b""):
                    name, _, value = line.decode("latin-1").partition(":")
                    if name.strip().lower() == "retry-after":
                        retry_after = value.strip()
                await reader.read()  # the body, up to the server's close
                return status, time.perf_counter() - start, retry_after
            finally:
                writer.close()

        results = await asyncio.gather(*(answer(r, w) for r, w in conns), return_exceptions=True)
        burst_s = time.perf_counter() - start
        async with _client(server.url, 1) as client:
            recovery = []
            for i in range(30):  # at once after the burst, one at a time: all must succeed
                t = time.perf_counter()
                _, r = await mix.send(client, i)
                recovery.append((r.status_code, time.perf_counter() - t))
        rss = server.rss()
    answered = [x for x in results if not isinstance(x, BaseException)]
    rejected = [x for x in answered if x[0] == 503]
    return {
        "burst": burst, "queue_images": queue, "images_per_request": rows, "burst_seconds": burst_s,
        "ok": sum(1 for x in answered if x[0] == 200), "rejected_503": len(rejected),
        "other": [x[0] for x in answered if x[0] not in (200, 503)] + [repr(x) for x in results
                                                                      if isinstance(x, BaseException)],
        "retry_after_on_all_503": all(x[2] is not None and x[2].isdigit() for x in rejected),
        "p50_503_ms": percentile([x[1] for x in rejected], 50) * 1e3,
        "p99_503_ms": percentile([x[1] for x in rejected], 99) * 1e3,
        "recovery_ok": sum(1 for s, _ in recovery if s == 200), "recovery_n": len(recovery),
        "recovery_p99_ms": percentile([t for _, t in recovery], 99) * 1e3, "rss_mib": rss / 2**20,
    }


# ---- slow clients -------------------------------------------------------------------------

async def _trickle_upload(url: str, png: bytes, model: str, seconds: float) -> tuple[int, float]:
    """POST /predict over a raw socket, the body sent one byte at a time spread over ``seconds``."""
    host, port = url.removeprefix("http://").split(":")
    boundary = "trickle7x"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"slow.png\"\r\n"
            f"Content-Type: image/png\r\n\r\n").encode() + png + f"\r\n--{boundary}--\r\n".encode()
    head = (f"POST /predict?model={model} HTTP/1.1\r\nHost: {host}\r\nContent-Length: {len(body)}\r\n"
            f"Content-Type: multipart/form-data; boundary={boundary}\r\nConnection: close\r\n\r\n").encode()
    start = time.perf_counter()
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(head)
    pause = seconds / len(body)
    for i in range(len(body)):
        writer.write(body[i:i + 1])
        await writer.drain()
        await asyncio.sleep(pause)
    status_line = await asyncio.wait_for(reader.readline(), 30)
    writer.close()
    return int(status_line.split()[1]), time.perf_counter() - start


async def slow_clients(server: Server, mix: Mix, clients: int, seconds: float) -> dict:
    async with _client(server.url, 8) as client:
        async def normal_for(duration: float) -> list[float]:
            times, end, i = [], time.perf_counter() + duration, 0
            while time.perf_counter() < end:
                t = time.perf_counter()
                _, r = await mix.send(client, i)
                i += 1
                if r.status_code != 200:
                    raise RuntimeError(f"normal request failed during the slow uploads: {r.status_code} {r.text}")
                times.append(time.perf_counter() - t)
            return times

        baseline = await normal_for(1.0)
        trickles = asyncio.gather(*(_trickle_upload(server.url, mix.png, mix.model, seconds) for _ in range(clients)))
        during = await normal_for(seconds)
        slow = await trickles
    return {
        "slow_clients": clients, "trickle_seconds": seconds, "upload_bytes": len(mix.png),
        "slow_statuses": sorted({s for s, _ in slow}), "slow_took_s": max(t for _, t in slow),
        "others_n": len(during), "others_p50_ms": percentile(during, 50) * 1e3,
        "others_p99_ms": percentile(during, 99) * 1e3, "baseline_p99_ms": percentile(baseline, 99) * 1e3,
    }


# ---- graceful stop ------------------------------------------------------------------------

async def graceful_stop(store: Path, mix: Mix, concurrency: int = 32, load_s: float = 1.5, after_s: float = 1.5,
                        accepted_margin_s: float = 0.1) -> dict:
    """SIGTERM while ``concurrency`` clients (a new connection per request) keep sending.

    A request counts as accepted when the app began handling it: its X-Request-ID is in the server's
    access log (written when the app finishes with a request, whatever the outcome).
    """
    server = start_server(store, log_level="info")
    sigterm_at: float | None = None
    records: list[tuple[float, float, str, str]] = []  # (start, end, outcome, request id)
    stop_sending = time.perf_counter() + load_s + after_s

    async with _client(server.url, concurrency, keepalive=False, timeout=GRACEFUL_SHUTDOWN_S + 10) as client:
        async def worker(w: int) -> None:
            i = w
            while time.perf_counter() < stop_sending:
                start = time.perf_counter()
                request_id = f"graceful-{i}"
                try:
                    _, r = await mix.send(client, i, {"x-request-id": request_id})
                    outcome = str(r.status_code)
                except httpx.ConnectError:
                    outcome = "refused"
                except httpx.HTTPError as exc:
                    outcome = type(exc).__name__
                records.append((start, time.perf_counter(), outcome, request_id))
                i += concurrency
                if outcome == "refused":
                    await asyncio.sleep(0.05)

        exited_at: float | None = None

        async def terminate() -> None:
            nonlocal sigterm_at, exited_at
            await asyncio.sleep(load_s)
            sigterm_at = time.perf_counter()
            server.proc.terminate()
            deadline = sigterm_at + GRACEFUL_SHUTDOWN_S + 20
            while server.proc.poll() is None and time.perf_counter() < deadline:
                await asyncio.sleep(0.02)
            exited_at = time.perf_counter()

        await asyncio.gather(terminate(), *(worker(w) for w in range(concurrency)))
    if server.proc.poll() is None:
        server.proc.kill()
    code = server.proc.wait()
    assert sigterm_at is not None and exited_at is not None
    seen_by_app = logged_request_ids(server.output())
    in_flight = [r for r in records if r[0] < sigterm_at <= r[1]]
    accepted = [r for r in in_flight if r[3] in seen_by_app]
    not_read = [r for r in in_flight if r[3] not in seen_by_app]
    after = [r for r in records if r[0] >= sigterm_at + accepted_margin_s]
    return {
        "in_flight_at_sigterm": len(in_flight),
        "accepted": len(accepted), "accepted_answered_200": sum(1 for r in accepted if r[2] == "200"),
        "accepted_other": collections.Counter(r[2] for r in accepted if r[2] != "200"),
        "not_read_outcomes": collections.Counter(r[2] for r in not_read),
        "after_sigterm": len(after), "after_outcomes": collections.Counter(r[2] for r in after),
        "after_max_s": max((r[1] - r[0] for r in after), default=0.0),
        "clients": concurrency, "exit_code": code, "exit_within_s": exited_at - sigterm_at,
        "grace_s": GRACEFUL_SHUTDOWN_S,
        "traceback_in_log": "Traceback" in server.output(),
    }


def logged_request_ids(log: str) -> set[str]:
    """The X-Request-IDs in a server's access log: its JSON lines whose message (or the line itself) is the
    access record, a JSON object with "request_id"."""
    ids = set()
    for line in log.splitlines():
        if not line.startswith("{"):
            continue
        try:
            record = json.loads(line)
            message = record.get("message")
            access = json.loads(message) if isinstance(message, str) and message.startswith("{") else record
        except ValueError:
            continue
        if isinstance(access, dict) and "request_id" in access:
            ids.add(access["request_id"])
    return ids


# ---- hostile input (bench/harness's catalogues, as tests/reliability runs them) ------------

def hostile(server: Server, store: Path, mix: Mix, fuzz_examples: int) -> dict:
    from bench.harness.hostile import Context, all_cases, check
    from bench.harness.schema_fuzz import fuzz
    from bench.harness.store_faults import build_store, check_store
    from service.model import ModelStore

    ctx = Context(ModelStore.load(store).models[mix.model], mix.model, 16 * 1024 * 1024)
    groups: dict[str, list] = collections.defaultdict(list)
    with httpx.Client(base_url=server.url, timeout=30) as client:
        rss_before = server.rss()
        for case in all_cases():
            groups[case.group].append(check(case, client, ctx))
        rss_growth = (server.rss() - rss_before) / 2**20
    fuzzed = fuzz(server.url, max_examples=fuzz_examples)
    with tempfile.TemporaryDirectory(prefix="bnn-faulty-") as tmp:
        root, marker = Path(tmp) / "store", Path(tmp) / "UNPICKLED"
        root.mkdir()
        broken = build_store(root, marker, store / mix.model)
        with running_server(root) as faulty, httpx.Client(base_url=faulty.url, timeout=30) as client:
            groups["model-store"] = check_store(client, broken, marker, mix.png, mix.model)
    return {"groups": groups, "rss_growth_mib": rss_growth, "fuzz": fuzzed, "auth": auth_sweep(store)}


def auth_sweep(store: Path) -> dict:
    """Every operation in the schema without the key, with wrong keys, with the key."""
    key = "s3cret-\u00e9"
    open_paths = {"/healthz", "/readyz", "/v2/health/live", "/v2/health/ready", "/metrics"}
    counts, problems = collections.Counter(), []
    with running_server(store, api_key=key) as server, httpx.Client(base_url=server.url, timeout=10) as client:
        paths = client.get("/openapi.json").json()["paths"]
        model = client.get("/readyz").json()["models"][0]
        for path, methods in paths.items():
            for method in methods:
                url = path.replace("{name}", model)
                for label, headers in (("none", {}), ("wrong", {"X-API-Key": b"s3cret-"}),
                                       ("wrong bearer", {"Authorization": b"Bearer nope"}),
                                       ("key", {"X-API-Key": key.encode()})):
                    r = client.request(method.upper(), url, headers=headers)
                    counts[label] += 1
                    want_401 = label != "key" and path not in open_paths
                    if (r.status_code == 401) != want_401 or r.status_code >= 500:
                        problems.append(f"{method.upper()} {path} key={label}: {r.status_code}")
    return {"requests": sum(counts.values()), "operations": sum(len(m) for m in paths.values()),
            "open_paths": sorted(open_paths), "problems": problems}


# ---- the report ---------------------------------------------------------------------------
# What each check tries, and the findings, are prose in RELIABILITY.md; the bounds are tests/reliability's.

BEGIN, END = "<!-- soak:begin -->", "<!-- soak:end -->"
HOSTILE_TITLES = {"images": "Hostile images", "conv-values": "/conv NaN/inf binarisation",
                  "conv-invalid": "/conv invalid tensors", "v2-invalid": "/v2 invalid tensors",
                  "model-store": "Model-store faults"}


def _counts(values) -> str:
    c = collections.Counter(v if v is not None else "no answer" for v in values)
    return ", ".join(f"{k}: {v}" for k, v in sorted(c.items(), key=lambda kv: str(kv[0])))


def _resource_row(group: str, results_of_group: list) -> tuple:
    bad = [(c, o) for c, o in results_of_group if o.problem]
    rss = [o.peak_rss_delta for _, o in results_of_group if o.peak_rss_delta is not None]
    health = [o.health.worst_s for _, o in results_of_group if o.health is not None]
    release = [o.cpu_release_s for _, o in results_of_group if o.cpu_release_s is not None]
    statuses = _counts(s for _, o in results_of_group for s in o.statuses)
    result = (f"{len(results_of_group) - len(bad)}/{len(results_of_group)} cases as expected (statuses "
              f"{statuses}); peak RSS at most {max(rss) / (1 << 20):+.1f} MiB over the server's RSS before the case; "
              f"worst /healthz {max(health) * 1000:.0f} ms" if rss and health else "no figures")
    if release:
        result += f"; CPU busy at most {max(release) * 1000:.0f} ms after the 504 or the client leaving"
    if bad:
        result += "; " + "; ".join(f"{c.id}: {o.problem}" for c, o in bad[:3])
    return (resource_attacks.GROUPS.get(group, group), f"{len(results_of_group)} cases",
            sum(len(o.statuses) for _, o in results_of_group), result)


def rows(results: dict, meta: dict) -> list[tuple]:
    """(check, what was run, requests, what happened) for each scenario that ran."""
    out = []
    s = results.get("soak")
    if s:
        routes = "; ".join(f"{k} {v['n']} ok, p50 {v['p50_ms']:.1f} / p99 {v['p99_ms']:.1f} ms"
                           for k, v in s["per_route"].items())
        out.append(("Soak", f"{s['requests']} mixed /predict, /conv, /v2 infer (1/3 each) at concurrency "
                    f"{s['concurrency']} after {s['warmup']} warm-up", s["requests"],
                    f"{s['ok']} ok, {s['backpressure_503']} deliberate 503, {s['failed']} failed; "
                    f"{s['rps']:.0f} req/s; p50 {s['p50_ms']:.1f} ms, p99 {s['p99_ms']:.1f} ms ({routes}); "
                    f"RSS {s['rss_warm_mib']:.0f} MiB after warm-up -> {s['rss_end_mib']:.0f} MiB after "
                    f"({s['rss_growth_pct']:+.1f}%)"))
    o = results.get("overload")
    if o:
        out.append(("Overload", f"burst of {o['burst']} simultaneous /v2 infer of {o['images_per_request']} images "
                    f"each against a queue bound of {o['queue_images']} images, then {o['recovery_n']} requests "
                    "at once", o["burst"] + o["recovery_n"],
                    f"{o['ok']} ok, {o['rejected_503']} 503 (Retry-After on all: {o['retry_after_on_all_503']}; "
                    f"p50 {o['p50_503_ms']:.0f} ms, p99 {o['p99_503_ms']:.0f} ms), other: {o['other'] or 'none'}; "
                    f"burst over in {o['burst_seconds']:.2f} s; recovery {o['recovery_ok']}/{o['recovery_n']} ok, "
                    f"p99 {o['recovery_p99_ms']:.0f} ms"))
    c = results.get("slow")
    if c:
        out.append(("Slow clients", f"{c['slow_clients']} uploads of {c['upload_bytes']} B trickled byte by byte "
                    f"over {c['trickle_seconds']:.0f} s while one client keeps sending",
                    c["slow_clients"] + c["others_n"],
                    f"slow uploads answered {c['slow_statuses']} after {c['slow_took_s']:.1f} s; meanwhile "
                    f"{c['others_n']} other requests, p50 {c['others_p50_ms']:.1f} ms, p99 {c['others_p99_ms']:.1f} ms "
                    f"(p99 {c['baseline_p99_ms']:.1f} ms before)"))
    g = results.get("graceful")
    if g:
        out.append(("Graceful stop", f"SIGTERM under load from {g['clients']} clients (a connection per request); "
                    "requests kept coming after it", g["in_flight_at_sigterm"] + g["after_sigterm"],
                    f"{g['accepted_answered_200']}/{g['accepted']} accepted requests answered 200 "
                    f"({dict(g['accepted_other']) or 'no other outcome'}); {g['in_flight_at_sigterm'] - g['accepted']} "
                    f"more were sent but not yet read by the server (connection closed unanswered by uvicorn: "
                    f"{dict(g['not_read_outcomes']) or 'none'}); {g['after_sigterm']} sent after SIGTERM: "
                    f"{dict(g['after_outcomes'])}, slowest {g['after_max_s'] * 1e3:.0f} ms; exit code "
                    f"{g['exit_code']} after {g['exit_within_s']:.2f} s (grace {g['grace_s']} s); traceback in the "
                    f"log: {g['traceback_in_log']}"))
    h = results.get("hostile")
    if h:
        for group, outcomes in h["groups"].items():
            bad = [o for o in outcomes if o.problem]
            result = f"{len(outcomes) - len(bad)}/{len(outcomes)} as expected ({_counts(o.status for o in outcomes)})"
            if group == "conv-invalid":
                result += f"; server RSS {h['rss_growth_mib']:+.1f} MiB over the whole catalogue"
            if bad:
                result += "; " + "; ".join(f"{o.case}: {o.problem}" for o in bad[:3])
            out.append((HOSTILE_TITLES.get(group, group), f"{len(outcomes)} cases", len(outcomes), result))
        f = h["fuzz"]
        out.append(("Schema fuzzing", f"schemathesis {meta['schemathesis']}, {len(f.operations)} operations, "
                    f"<= {meta['fuzz_examples']} examples each", f.calls,
                    f"statuses {dict(sorted(f.statuses.items()))}; slowest {f.slowest_s:.2f} s; "
                    f"{len(f.failures)} failures" + (": " + "; ".join(f.failures[:2]) if f.failures else "")))
        a = h["auth"]
        out.append(("API key", f"{a['operations']} operations x 4 keys", a["requests"],
                    f"401 everywhere without it except {', '.join(a['open_paths'])}; "
                    f"{len(a['problems'])} problems" + (": " + "; ".join(a["problems"][:3]) if a["problems"] else "")))
    for group, results_of_group in (results.get("resources") or {}).items():
        out.append(_resource_row(group, results_of_group))
    return out


def render(results: dict, meta: dict) -> str:
    """The measured section of RELIABILITY.md, markers included."""
    lines = [
        BEGIN,
        f"Run: `.venv/bin/python bench/soak.py --report RELIABILITY.md` ({meta['wall_s']:.0f} s), "
        f"{time.strftime('%Y-%m-%d %H:%M:%S %Z')}.",
        "",
        f"Machine: {meta['machine']}. Model: {meta['model_source']}.",
        "",
        "| Check | What was run | Requests | What happened |",
        "| --- | --- | ---: | --- |",
    ]
    for row in rows(results, meta):
        lines.append("| " + " | ".join(str(x).replace("|", "\\|") for x in row) + " |")
    return "\n".join([*lines, END])


def write_report(path: Path, section: str) -> None:
    """Replace the text between the markers in ``path`` with ``section`` (the whole file when it has none)."""
    text = path.read_text() if path.exists() else ""
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        text = head + section + rest.split(END, 1)[1]
    else:
        text = section + "\n"
    path.write_text(text)


async def _async_main(args, store: Path, mix: Mix, results: dict) -> None:
    with running_server(store) as server:
        results["soak"] = await soak(server, mix, args.requests, args.warmup)
        results["slow"] = await slow_clients(server, mix, args.slow_clients, args.slow_seconds)
        if not args.skip_hostile:
            results["hostile"] = await asyncio.to_thread(hostile, server, store, mix, args.fuzz_examples)
    results["overload"] = await overload(store, mix, args.burst)
    results["graceful"] = await graceful_stop(store, mix)
    if not args.skip_resources:
        logs = Path(tempfile.mkdtemp(prefix="bnn-soak-attacks-"))
        _, outcomes = await asyncio.to_thread(run_catalogue, resource_attacks.catalogue(), store, logs)
        grouped: dict[str, list] = {}
        for case, outcome in outcomes:
            grouped.setdefault(case.group, []).append((case, outcome))
        results["resources"] = grouped


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000, help="soak requests after warm-up")
    parser.add_argument("--warmup", type=int, default=400)
    parser.add_argument("--burst", type=int, default=400, help="simultaneous requests of the overload burst")
    parser.add_argument("--slow-clients", type=int, default=4)
    parser.add_argument("--slow-seconds", type=float, default=4.0)
    parser.add_argument("--fuzz-examples", type=int, default=25)
    parser.add_argument("--skip-hostile", action="store_true")
    parser.add_argument("--skip-resources", action="store_true", help="skip the resource-attack catalogue")
    parser.add_argument("--report", type=Path, help="write the markdown report here")
    args = parser.parse_args(argv)
    import schemathesis

    start = time.perf_counter()
    results: dict = {}
    with tempfile.TemporaryDirectory(prefix="bnn-soak-") as tmp:
        store = Path(tmp) / "store"
        store.mkdir()
        name, source = fashion_model_into(store)
        from service.model import ModelStore
        spec = ModelStore.load(store).models[name].input
        mix = Mix(name, (spec.channels, spec.height, spec.width))
        asyncio.run(_async_main(args, store, mix, results))
    meta = {"wall_s": time.perf_counter() - start, "model_source": source, "schemathesis": schemathesis.__version__,
            "fuzz_examples": args.fuzz_examples,
            "machine": f"{cpu_name()} ({platform.machine()}), {os.cpu_count()} CPUs visible, kernel path "
                       f"`{kernel.active_isa()}`, Python {platform.python_version()}"}
    report = render(results, meta)
    print(report)
    if args.report:
        write_report(args.report, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
