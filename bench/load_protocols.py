"""Inference over the Open Inference Protocol, HTTP/REST next to gRPC: req/s and p50/p99 per concurrency.

    .venv/bin/python bench/load_protocols.py [--seconds 4] [--concurrency 1 32] [--workers 1 2]

One server (``python -m service``, the shipped model, batching on, gRPC on a free port) per worker
count. Every request carries the same one-image FP32 tensor [1, 1, 28, 28] and asks for the logits:

- ``grpc``: ``ModelInfer`` with ``raw_input_contents``, from a ``grpc.aio`` client (the request
  serialised once, the answer's bytes not parsed), ``concurrency`` calls in flight over
  ``min(concurrency, 4)`` channels;
- ``http (python)``: ``POST /v2/models/{name}/infer`` with the binary tensor extension (what
  ``tritonclient.http`` sends with binary data), from an asyncio client as lean as the gRPC one (the
  request bytes built once, kept-alive connections, one per request in flight);
- ``http (wrk)``: the same request from ``wrk``, a C client that costs the 2-core machine less.

Both Python clients run in this process and compete with the server for the cores, as ``wrk`` does
less; compare the two Python rows with each other. Bounded: --seconds per cell and --max-requests.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.harness import server as harness  # noqa: E402 - after the path, to run as a file
from bench.load_predict import cpu_model  # noqa: E402

MODEL = "fashion-mnist-bnn"
IMAGE = np.linspace(-1, 1, 28 * 28, dtype=np.float32).reshape(1, 1, 28, 28)


def http_request(host: str) -> bytes:
    raw = IMAGE.tobytes()
    header = json.dumps({
        "inputs": [{"name": "input", "shape": list(IMAGE.shape), "datatype": "FP32",
                    "parameters": {"binary_data_size": len(raw)}}],
        "outputs": [{"name": "logits", "parameters": {"binary_data": True}}],
    }).encode()
    body = header + raw
    head = (f"POST /v2/models/{MODEL}/infer HTTP/1.1\r\nhost: {host}\r\ncontent-type: application/octet-stream\r\n"
            f"inference-header-content-length: {len(header)}\r\ncontent-length: {len(body)}\r\n\r\n")
    return head.encode() + body


def grpc_request() -> bytes:
    from service.api.grpc import messages as pb

    request = pb.ModelInferRequest(model_name=MODEL)
    tensor = request.inputs.add()
    tensor.name, tensor.datatype = "input", "FP32"
    tensor.shape.extend(IMAGE.shape)
    request.outputs.add().name = "logits"
    request.raw_input_contents.append(IMAGE.tobytes())
    return request.SerializeToString()


def summary(latencies: list[float], errors: int, elapsed: float) -> dict:
    lat = sorted(latencies)

    def pct(q: float) -> float:
        return round(lat[min(len(lat) - 1, int(q * len(lat)))] * 1000, 2) if lat else float("nan")

    return {"requests": len(lat), "errors": errors, "seconds": round(elapsed, 2),
            "rps": round(len(lat) / elapsed, 1), "p50_ms": pct(0.50), "p99_ms": pct(0.99)}


async def drive(call, concurrency: int, seconds: float, max_requests: int) -> dict:
    """``concurrency`` loops each awaiting ``call(i)`` (i: the loop's number), after a warm-up."""
    latencies: list[float] = []
    errors = 0
    issued = 0
    stop_at = 0.0

    async def loop(i: int, warm: bool) -> None:
        nonlocal errors, issued
        while (time.perf_counter() < stop_at and issued < max_requests) if not warm else issued < 2 * concurrency:
            issued += 1
            start = time.perf_counter()
            ok = await call(i)
            if ok and not warm:
                latencies.append(time.perf_counter() - start)
            elif not ok:
                errors += 1

    await asyncio.gather(*(loop(i, True) for i in range(concurrency)))
    issued, errors = 0, 0
    stop_at = time.perf_counter() + seconds
    began = time.perf_counter()
    await asyncio.gather(*(loop(i, False) for i in range(concurrency)))
    return summary(latencies, errors, time.perf_counter() - began)


async def run_http(url: str, concurrency: int, seconds: float, max_requests: int) -> dict:
    host, port = url.removeprefix("http://").split(":")
    request = http_request(host)
    connections = [await asyncio.open_connection(host, int(port)) for _ in range(concurrency)]

    async def call(i: int) -> bool:
        reader, writer = connections[i]
        writer.write(request)
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length"))
        await reader.readexactly(length)
        return head.startswith(b"HTTP/1.1 200")

    try:
        return await drive(call, concurrency, seconds, max_requests)
    finally:
        for _, writer in connections:
            writer.close()


async def run_grpc(target: str, concurrency: int, seconds: float, max_requests: int) -> dict:
    import grpc

    from service.api.grpc import messages as pb

    request = grpc_request()
    channels = [grpc.aio.insecure_channel(target) for _ in range(min(concurrency, 4))]
    stubs = [c.unary_unary(f"/{pb.SERVICE}/ModelInfer", request_serializer=None, response_deserializer=None)
             for c in channels]

    async def call(i: int) -> bool:
        try:
            await stubs[i % len(stubs)](request, timeout=30)
        except grpc.RpcError:
            return False
        return True

    try:
        return await drive(call, concurrency, seconds, max_requests)
    finally:
        for channel in channels:
            await channel.close()


WRK_SCRIPT = """
local f = assert(io.open(os.getenv("BNN_WRK_REQUEST"), "rb"))
local raw = f:read("*all")
f:close()
local split = raw:find("\\r\\n\\r\\n", 1, true)
wrk.method = "POST"
wrk.body = raw:sub(split + 4)
for line in raw:sub(1, split - 1):gmatch("[^\\r\\n]+") do
  local name, value = line:match("^([%w-]+): (.*)$")
  if name and name ~= "content-length" and name ~= "host" then wrk.headers[name] = value end
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("WRK %d %d %d %d %d\\n", summary.requests,
    e.connect + e.read + e.write + e.status + e.timeout, summary.duration,
    latency:percentile(50), latency:percentile(99)))
end
"""


def run_wrk(url: str, concurrency: int, seconds: float) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        request, script = Path(tmp) / "request", Path(tmp) / "infer.lua"
        request.write_bytes(http_request("127.0.0.1"))
        script.write_text(WRK_SCRIPT)
        env = dict(os.environ, BNN_WRK_REQUEST=str(request))
        target = f"{url}/v2/models/{MODEL}/infer"
        subprocess.run(["wrk", "-t1", f"-c{concurrency}", "-d1s", "-s", str(script), target], env=env,
                       capture_output=True, check=True)
        out = subprocess.run(["wrk", "-t1", f"-c{concurrency}", f"-d{max(1, round(seconds))}s", "--timeout", "30s",
                              "-s", str(script), target], env=env, capture_output=True, text=True, check=True).stdout
    requests, errors, duration_us, p50, p99 = next(l for l in out.splitlines() if l.startswith("WRK ")).split()[1:]
    ok, elapsed = int(requests) - int(errors), int(duration_us) / 1e6
    return {"requests": ok, "errors": int(errors), "seconds": round(elapsed, 2), "rps": round(ok / elapsed, 1),
            "p50_ms": round(int(p50) / 1000, 2), "p99_ms": round(int(p99) / 1000, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--max-requests", type=int, default=20000)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--workers", type=int, nargs="+", default=[1])
    parser.add_argument("--threads", type=int, default=1, help="kernel / torch threads per worker")
    args = parser.parse_args()
    os.environ["OMP_NUM_THREADS"] = str(args.threads)

    results = []
    with tempfile.TemporaryDirectory() as tmp:
        store = Path(tmp) / "store"
        store.mkdir()
        model, origin = harness.fashion_model_into(store)
        assert model == MODEL
        for workers in args.workers:
            grpc_port = harness.free_port()
            server = harness.start_server(store, ready_timeout=120, workers=workers, grpc_port=grpc_port,
                                          kernel_threads=args.threads, max_batch_size=32, max_queue_delay_ms=2,
                                          max_queue_size=4096)
            try:
                for c in args.concurrency:
                    for client in ("grpc (python)", "http (python)", "http (wrk)"):
                        if client == "grpc (python)":
                            numbers = asyncio.run(run_grpc(f"127.0.0.1:{grpc_port}", c, args.seconds, args.max_requests))
                        elif client == "http (python)":
                            numbers = asyncio.run(run_http(server.url, c, args.seconds, args.max_requests))
                        elif shutil.which("wrk"):
                            numbers = run_wrk(server.url, c, args.seconds)
                        else:
                            continue
                        cell = {"workers": workers, "client": client, "concurrency": c, **numbers}
                        results.append(cell)
                        print(json.dumps(cell), flush=True)
            finally:
                server.terminate()

    print(f"\nmachine: {cpu_model()}, {os.cpu_count()} CPUs, python {platform.python_version()}; model: {origin}")
    print("| workers | protocol (client) | concurrency | req/s | p50 ms | p99 ms | errors |")
    print("|---|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['workers']} | {r['client']} | {r['concurrency']} | {r['rps']} | {r['p50_ms']} | {r['p99_ms']} | "
              f"{r['errors']} |")


if __name__ == "__main__":
    main()
