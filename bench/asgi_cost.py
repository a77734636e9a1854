"""Event-loop CPU per request: what the HTTP layer costs the one thread that serves every request.

Drives the ASGI app in this process (no sockets, no uvicorn: their work comes on top, the same for
every route) with 32 requests in flight, and reads the event-loop thread's own CPU time
(``time.thread_time``) around them. The model runs on the batcher's thread, as in the server, so
its compute is not in the figure (thread time is per thread), nor is the decoding of uploads over
``INLINE_DECODE_PIXELS``, which the server hands to a worker thread. Compare with the model's compute per
image (``bench/bench_fashion.py``): when the loop's share is larger, the HTTP work sets the
throughput.

    .venv/bin/python bench/asgi_cost.py [--requests 1280] [--images 1 16] [--repeat 1] [--no-raw]

``--no-raw`` leaves out the one-image raw-body request (``Content-Type: image/png``), for a run
against code that predates it (issue 15).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.load_predict import sample_png  # noqa: E402
from service.api import Settings, create_app  # noqa: E402

BOUNDARY = b"bnnbenchboundary"


def multipart(images: int) -> bytes:
    part = (
        b"--" + BOUNDARY + b'\r\nContent-Disposition: form-data; name="file"; filename="x.png"\r\n'
        b"Content-Type: image/png\r\n\r\n" + sample_png() + b"\r\n"
    )
    return part * images + b"--" + BOUNDARY + b"--\r\n"


def scope(method: str, path: str, query: bytes, headers: list[tuple[bytes, bytes]]) -> dict:
    return {
        "type": "http",
        "http_version": "1.1",
        "method": method,
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "scheme": "http",
        "server": ("127.0.0.1", 8000),
        "client": ("127.0.0.1", 50000),
        "headers": [(b"host", b"bench"), *headers],
        "query_string": query,
    }


async def loop_cpu_ms(app, method: str, path: str, body: bytes, headers, query: bytes, requests: int) -> float:
    async def one() -> None:
        sent = False
        status = []

        async def receive() -> dict:
            nonlocal sent
            if sent:  # nothing more will come; a real client would just wait for the response
                await asyncio.sleep(3600)
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        async def send(message: dict) -> None:
            if message["type"] == "http.response.start":
                status.append(message["status"])

        await app(scope(method, path, query, headers), receive, send)
        if status != [200]:
            raise RuntimeError(f"{method} {path}: status {status}")

    in_flight = 32
    for _ in range(3):  # warm-up
        await asyncio.gather(*(one() for _ in range(in_flight)))
    rounds = max(1, requests // in_flight)
    best = float("inf")
    for _ in range(REPEAT):  # the least of several passes: other work on a shared VM only ever adds
        start = time.thread_time()
        for _ in range(rounds):
            await asyncio.gather(*(one() for _ in range(in_flight)))
        best = min(best, (time.thread_time() - start) / (rounds * in_flight) * 1000)
    return best


REPEAT = 1  # --repeat


async def main(args: argparse.Namespace) -> None:
    app = create_app(Settings(model_store=REPO / "model_store", log_level="warning", max_batch_size=32))
    async with app.router.lifespan_context(app):
        frozen = gc.get_freeze_count()  # the app froze its start-up objects (service.tuning)
        gc.unfreeze()
        start = time.perf_counter()
        gc.collect()
        print(
            f"start-up objects frozen out of the collector: {frozen}; a full collection over them: "
            f"{(time.perf_counter() - start) * 1000:.1f} ms"
        )
        gc.freeze()
        trivial = await loop_cpu_ms(app, "GET", "/v2/health/live", b"", [], b"", args.requests)
        print(f"GET /v2/health/live: {trivial:.3f} ms of event-loop CPU per request (routing, middleware, JSON)")
        for n in args.images:
            body = multipart(n)
            headers = [
                (b"content-type", b"multipart/form-data; boundary=" + BOUNDARY),
                (b"content-length", str(len(body)).encode()),
            ]
            ms = await loop_cpu_ms(app, "POST", "/predict", body, headers, b"top_k=1", args.requests)
            print(
                f"POST /predict, {n} 28x28 PNG per request: {ms:.3f} ms of event-loop CPU per request "
                f"({ms / n:.3f} per image)"
            )
        if args.raw:
            body = sample_png()
            headers = [(b"content-type", b"image/png"), (b"content-length", str(len(body)).encode())]
            ms = await loop_cpu_ms(app, "POST", "/predict", body, headers, b"top_k=1", args.requests)
            print(
                f"POST /predict, one 28x28 PNG as the raw body (Content-Type: image/png): {ms:.3f} ms of "
                "event-loop CPU per request"
            )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=1280)
    parser.add_argument("--images", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--repeat", type=int, default=1, help="passes per figure; the least is reported")
    parser.add_argument("--no-raw", dest="raw", action="store_false", help="no raw-body request (older code)")
    arguments = parser.parse_args()
    REPEAT = max(1, arguments.repeat)
    asyncio.run(main(arguments))
