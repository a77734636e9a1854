"""Load test of POST /predict over loopback: throughput and p50/p99 latency, batching on vs off,
binary model vs the same architecture in float (both served by this service, the same way).

    .venv/bin/python bench/load_predict.py [--seconds 4] [--concurrency 1 8 32] [--images 1] [--batching on off]
        [--variants binary float bireal bireal-float] [--client wrk] [--workers 1 2] [--body multipart raw]
        [--baseline /tmp/bnn-base]

``--workers``: the current server with each number of worker processes (kernel threads: --threads each).
``--body raw`` sends the image as the whole request body (``Content-Type: image/png``), ``multipart`` as a
form upload. ``--baseline CHECKOUT``: the same cells, alternated cell by cell, against the server of an
older checkout (``git worktree add /tmp/bnn-base fec50ee``; run through bench/harness/checkout.py; one
worker, multipart only when it predates the raw body), so old and new are measured in the same run.

Bounded: each (variant, batching, concurrency) cell runs for --seconds (and, with the httpx client,
at most --max-requests), after a short warm-up. The load comes from `wrk` (Debian's package: a C
client that costs the 2-core machine little) when it is installed, else from an httpx client in
this process, which competes with the server for the same cores. The server is `python -m service` on a free 127.0.0.1 port.
The binary model is model_store/fashion-mnist-bnn when shipped, else FashionNet(binary=True) exported
with random weights (speed does not depend on the weights); the float one is FashionNet(binary=False)
exported the same way and run by the same graph executor (float conv via torch). The bireal pair is
Bi-Real-Net-18 (224x224 RGB, random weights) binary and float, a model whose compute outweighs the
HTTP work.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.harness import checkout  # noqa: E402 - after the path, to run as a file
from bench.harness import server as harness  # noqa: E402
from bench.harness.server import Server  # noqa: E402

LABELS = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
INPUT = {"channels": 1, "height": 28, "width": 28, "mean": [0.286], "std": [0.353]}
BIREAL_INPUT = {"channels": 3, "height": 224, "width": 224, "resize": "center_crop",
                "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
VARIANTS = ("binary", "float", "bireal", "bireal-float")


def build_stores(root: Path, variants: list[str]) -> dict[str, tuple[Path, str, bytes]]:
    """variant -> (model store folder, model name, the image every request uploads).

    binary / float: the shipped Fashion-MNIST model and its float twin (28x28 grey PNG).
    bireal / bireal-float: Bi-Real-Net-18 with random weights, binary and float (224x224 RGB JPEG),
    a model whose compute outweighs the HTTP work.
    """
    import torch

    from service.export import export_model
    from training.train_fashion_mnist import FashionNet

    stores = {}
    for variant in variants:
        store = root / variant
        store.mkdir()
        torch.manual_seed(0)
        if variant == "binary" and (REPO / "model_store" / "fashion-mnist-bnn" / "model.json").is_file():
            shutil.copytree(REPO / "model_store" / "fashion-mnist-bnn", store / "fashion-mnist-bnn")
            stores[variant] = (store, "fashion-mnist-bnn", sample_png())
        elif variant in ("binary", "float"):
            name = f"fashion-mnist-{'bnn' if variant == 'binary' else 'float'}"
            export_model(FashionNet(binary=variant == "binary"), store / name, name, "bench", INPUT, LABELS)
            stores[variant] = (store, name, sample_png())
        else:
            from bench.harness.model_bench import randomise
            from service.model.zoo import BiRealNet18

            name = variant
            net = randomise(BiRealNet18(binary=variant == "bireal"))
            export_model(net, store / name, name, "bench", BIREAL_INPUT, [f"class{i}" for i in range(1000)])
            stores[variant] = (store, name, sample_jpeg())
    return stores


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(store: Path, max_batch_size: int, threads: int, workers: int = 1,
                 baseline: Path | None = None) -> Server:
    """The server on ``store`` (the current code, or ``baseline``'s), ready; its log in a temporary folder."""
    settings = dict(max_batch_size=max_batch_size, max_queue_delay_ms=2, max_queue_size=4096, kernel_threads=threads,
                    workers=workers, log_level="warning")
    launch = checkout.launcher(baseline) if baseline is not None else None
    return harness.start_server(store, ready_timeout=120, launcher=launch, **settings)


def memory(server: Server) -> dict:
    """Resident and proportional memory (MiB) of the server's processes: each worker's (or the one
    process's), and the supervisor's when there are workers."""
    def mib(pid: int, field: str) -> float:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith(field + ":"):
                return round(int(line.split()[1]) / 1024, 1)
        return float("nan")

    workers = server.workers() or [server.pid]
    out = {"rss_mib_per_worker": [mib(p, "Rss") for p in workers], "pss_mib_per_worker": [mib(p, "Pss") for p in workers]}
    if server.workers():
        out["supervisor_rss_mib"] = mib(server.pid, "Rss")
    return out


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []:
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def sample_jpeg() -> bytes:
    """A 224x224 colour photo stand-in (smooth gradients, ~10 KB as JPEG)."""
    image = Image.linear_gradient("L").resize((224, 224)).convert("RGB")
    image = Image.merge("RGB", (image.getchannel(0), image.getchannel(0).rotate(90), image.getchannel(0).rotate(45)))
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def sample_png() -> bytes:
    image = Image.new("L", (28, 28), 0)
    for x in range(6, 22):
        for y in range(4, 24):
            image.putpixel((x, y), 200)
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


async def run_cell(url: str, model: str, image: bytes, concurrency: int, seconds: float, max_requests: int,
                   images: int = 1) -> dict:
    png = image
    latencies: list[float] = []
    errors = 0
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=60) as client:
        async def one() -> None:
            nonlocal errors
            start = time.perf_counter()
            r = await client.post("/predict", params={"model": model, "top_k": 1}, files=[("file", (f"x{i}.png", png)) for i in range(images)])
            if r.status_code == 200:
                latencies.append(time.perf_counter() - start)
            else:
                errors += 1

        await asyncio.gather(*(one() for _ in range(2 * concurrency)))  # warm-up
        latencies.clear()
        issued = 0
        stop_at = time.perf_counter() + seconds

        async def worker() -> None:
            nonlocal issued
            while time.perf_counter() < stop_at and issued < max_requests:
                issued += 1
                await one()

        began = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - began
    lat = sorted(latencies)
    pct = lambda q: lat[min(len(lat) - 1, int(q * len(lat)))] * 1000 if lat else float("nan")  # noqa: E731
    return {"requests": len(lat), "errors": errors, "seconds": round(elapsed, 2),
            "rps": round(len(lat) / elapsed, 1), "p50_ms": round(pct(0.50), 2), "p99_ms": round(pct(0.99), 2),
            "mean_ms": round(statistics.fmean(lat) * 1000, 2) if lat else None}


WRK_SCRIPT = """
local f = assert(io.open(os.getenv("BNN_WRK_BODY"), "rb"))
wrk.method = "POST"
wrk.body = f:read("*all")
f:close()
wrk.headers["Content-Type"] = os.getenv("BNN_WRK_TYPE")
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("WRK %d %d %d %d %d %f\\n", summary.requests,
    e.connect + e.read + e.write + e.status + e.timeout, summary.duration,
    latency:percentile(50), latency:percentile(99), latency.mean))
end
"""


def run_cell_wrk(url: str, model: str, image: bytes, concurrency: int, seconds: float, images: int = 1,
                 raw: bool = False) -> dict:
    """The same cell driven by wrk (one client thread, ``concurrency`` connections); ``raw``: the one
    image as the whole body."""
    with tempfile.TemporaryDirectory() as tmp:
        body = Path(tmp) / "body"
        if raw:
            if images != 1:
                raise SystemExit("--body raw carries one image per request")
            body.write_bytes(image)
            content_type = "image/png" if image.startswith(b"\x89PNG") else "image/jpeg"
        else:
            part = (b"--bnnbenchboundary\r\nContent-Disposition: form-data; name=\"file\"; filename=\"x.png\"\r\n"
                    b"Content-Type: application/octet-stream\r\n\r\n" + image + b"\r\n")
            body.write_bytes(part * images + b"--bnnbenchboundary--\r\n")
            content_type = "multipart/form-data; boundary=bnnbenchboundary"
        script = Path(tmp) / "post.lua"
        script.write_text(WRK_SCRIPT)
        target = f"{url}/predict?model={model}&top_k=1"
        env = dict(os.environ, BNN_WRK_BODY=str(body), BNN_WRK_TYPE=content_type)
        subprocess.run(["wrk", "-t1", f"-c{concurrency}", "-d1s", "-s", str(script), target],  # warm-up
                       env=env, capture_output=True, check=True)
        out = subprocess.run(["wrk", "-t1", f"-c{concurrency}", f"-d{max(1, round(seconds))}s", "--timeout", "30s",
                              "-s", str(script), target], env=env, capture_output=True, text=True, check=True).stdout
    line = next(l for l in out.splitlines() if l.startswith("WRK "))
    requests, errors, duration_us, p50, p99, mean = line.split()[1:]
    ok, elapsed = int(requests) - int(errors), int(duration_us) / 1e6
    return {"requests": ok, "errors": int(errors), "seconds": round(elapsed, 2), "rps": round(ok / elapsed, 1),
            "p50_ms": round(int(p50) / 1000, 2), "p99_ms": round(int(p99) / 1000, 2),
            "mean_ms": round(float(mean) / 1000, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--max-requests", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--threads", type=int, default=1, help="kernel / torch threads in the server")
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=["binary", "float"],
                        help="binary/float: the shipped Fashion model and its float twin; bireal/bireal-float: Bi-Real-Net-18")
    parser.add_argument("--batching", nargs="+", choices=["on", "off"], default=["on", "off"])
    parser.add_argument("--images", type=int, default=1, help="images per request (repeated `file` fields)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--client", choices=["wrk", "httpx"], default="wrk" if shutil.which("wrk") else "httpx",
                        help="load generator (default: wrk when installed)")
    parser.add_argument("--workers", type=int, nargs="+", default=[1], help="worker processes of the current server")
    parser.add_argument("--body", nargs="+", choices=["multipart", "raw"], default=["multipart"],
                        help="how the image travels: a multipart form, or the raw request body")
    parser.add_argument("--baseline", type=Path, help="an older checkout, served alongside (one worker)")
    parser.add_argument("--rounds", type=int, default=1,
                        help="repeat every cell this many times, servers alternating; the summary takes medians")
    args = parser.parse_args()
    if args.client != "wrk" and "raw" in args.body:
        raise SystemExit("--body raw needs the wrk client")
    os.environ["OMP_NUM_THREADS"] = str(args.threads)  # torch's pool in step with the kernel's, per worker

    # Each server configuration: (label, workers, baseline checkout or None, bodies it takes).
    servers = [(f"current, {w} worker{'s' if w > 1 else ''}", w, None, args.body) for w in args.workers]
    if args.baseline is not None:
        old_bodies = [b for b in args.body if b == "multipart"]  # the raw body came with issue 15
        servers.insert(0, (f"baseline {args.baseline.name}", 1, args.baseline.resolve(), old_bodies))
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        stores = build_stores(Path(tmp), args.variants)
        for round_ in range(args.rounds):
            for variant in args.variants:
                store, model, image = stores[variant]
                for batching, max_batch in (("on", 32), ("off", 1)):
                    if batching not in args.batching:
                        continue
                    for label, workers, baseline, bodies in servers:
                        server = start_server(store, max_batch, args.threads, workers, baseline)
                        try:
                            for body, c in [(b, c) for b in bodies for c in args.concurrency]:
                                if args.client == "wrk":
                                    cell = run_cell_wrk(server.url, model, image, c, args.seconds, args.images,
                                                        raw=body == "raw")
                                else:
                                    cell = asyncio.run(run_cell(server.url, model, image, c, args.seconds,
                                                                args.max_requests, args.images))
                                cell.update(round=round_, server=label, variant=variant, batching=batching, body=body,
                                            concurrency=c, images_per_request=args.images,
                                            images_per_s=round(cell["rps"] * args.images, 1))
                                results.append(cell)
                                print(json.dumps(cell), flush=True)
                            print(json.dumps({"server": label, "variant": variant, "batching": batching,
                                              **memory(server)}), flush=True)
                        finally:
                            server.terminate()

    def rps(variant, batching, c, server=None, body=None):
        server = server or servers[-1][0]
        body = body or args.body[-1]
        found = [r["rps"] for r in results if (r["server"], r["variant"], r["batching"], r["body"], r["concurrency"])
                 == (server, variant, batching, body, c)]
        return statistics.median(found) if found else None

    print(f"\nmachine: {cpu_model()}, {os.cpu_count()} CPUs, python {platform.python_version()}, client {args.client}")
    print("| round | server | model | batching | body | concurrency | images/request | req/s | images/s | p50 ms | "
          "p99 ms | errors |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['round'] + 1} | {r['server']} | {r['variant']} | {r['batching']} | {r['body']} | {r['concurrency']} | "
              f"{r['images_per_request']} | {r['rps']} | {r['images_per_s']} | {r['p50_ms']} | {r['p99_ms']} | "
              f"{r['errors']} |")
    top = max(args.concurrency)
    current = [label for label, _, baseline, _ in servers if baseline is None]
    for variant in args.variants:
        for body in args.body:
            one = rps(variant, "on", top, current[0], body)
            for label in current:
                new = rps(variant, "on", top, label, body)
                if args.baseline is not None and new and (old := rps(variant, "on", top, servers[0][0], "multipart")):
                    print(f"{variant}, batching on, c={top}: {label} ({body}) / baseline (multipart): {new / old:.2f}x")
                if label != current[0] and new and one:
                    print(f"{variant}, batching on, c={top}, {body}: {label} / {current[0]}: {new / one:.2f}x")
    for variant in args.variants:
        on, off = rps(variant, "on", top, current[0]), rps(variant, "off", top, current[0])
        if on and off:
            print(f"{variant}: batching on/off at concurrency {top}: {on / off:.2f}x")
    for c in args.concurrency:
        for b_name, f_name in (("binary", "float"), ("bireal", "bireal-float")):
            b, f = rps(b_name, "on", c, current[0]), rps(f_name, "on", c, current[0])
            if b and f:
                print(f"{b_name}/{f_name} (batching on) at concurrency {c}: {b / f:.2f}x")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
