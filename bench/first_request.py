"""How much slower the first /predict is than the steady state, with and without warm-up.

Starts the real server (``python -m service``) on the shipped model once per setting of
BNN_WARMUP_BATCHES, sends one image as soon as it is ready, then --requests more one after
another, and prints the first request's latency against the median of the rest. Issue 14's target:
first within 2x the steady state with the default warm-up.

    .venv/bin/python bench/first_request.py --warmup 0,2 --requests 30

Not a test: nothing here passes or fails.
"""

from __future__ import annotations

import argparse
import io
import statistics
import tempfile
import time
from pathlib import Path

import httpx
from PIL import Image

from bench.harness.server import fashion_model_into, running_server
from service import kernel


def png() -> bytes:
    buf = io.BytesIO()
    Image.new("L", (28, 28), 100).save(buf, format="PNG")
    return buf.getvalue()


def latencies(url: str, requests: int) -> list[float]:
    body = png()
    out = []
    with httpx.Client(base_url=url, timeout=30) as http:
        # The client's own first-use costs stay out of the figures: the connection is opened, and
        # every multipart body built (httpx's first one reads the system's MIME types), untimed.
        http.get("/healthz").raise_for_status()
        prepared = [
            http.build_request("POST", "/predict", files=[("file", ("x.png", body))]) for _ in range(requests + 1)
        ]
        for request in prepared:
            start = time.perf_counter()
            r = http.send(request)
            out.append((time.perf_counter() - start) * 1e3)
            r.raise_for_status()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--warmup", default="0,2", help="BNN_WARMUP_BATCHES values to compare")
    ap.add_argument("--requests", type=int, default=30)
    ap.add_argument("--starts", type=int, default=3, help="server starts per setting (the first request is one sample)")
    args = ap.parse_args()
    cpu = next(
        l.split(":", 1)[1].strip() for l in Path("/proc/cpuinfo").read_text().splitlines() if l.startswith("model name")
    )
    print(f"CPU: {cpu}; kernel path: {kernel.active_isa()}; 1 kernel thread; one client, sequential requests")
    print(f"{'warmup batches':>15s} {'first ms':>10s} {'steady ms (median)':>19s} {'first/steady':>13s}")
    with tempfile.TemporaryDirectory() as tmp:
        store = Path(tmp)
        name, _ = fashion_model_into(store)
        summary = []
        for warmup in (int(w) for w in args.warmup.split(",")):
            ratios = []
            for _ in range(args.starts):
                with running_server(store, warmup_batches=warmup, default_model=name) as server:
                    times = latencies(server.url, args.requests)
                steady = statistics.median(times[1:])
                ratios.append(times[0] / steady)
                print(f"{warmup:15d} {times[0]:10.1f} {steady:19.2f} {ratios[-1]:13.2f}")
            summary.append(f"warm-up {warmup}: median first/steady {statistics.median(ratios):.2f} over {len(ratios)} starts")
        print("\n".join(summary))


if __name__ == "__main__":
    main()
