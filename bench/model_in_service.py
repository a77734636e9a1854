"""The model's time per image alone and inside a loaded server: how much the server's other work
(the event loop, in the same process and under the same GIL) slows the model down.

    .venv/bin/python bench/model_in_service.py [--variants binary float] [--concurrency 32] [--seconds 4]

For each model (the shipped binary Fashion-MNIST model and its float twin, built as
bench/load_predict.py builds them), with 1 kernel/torch thread:

1. ``predict`` in this process on zeros, batch 1 and 32: the least of 50 calls back to back, and the
   median of 100 batch-1 calls with --gap-ms of sleep between them (how a lone request finds the CPU);
2. a one-worker server under ``wrk`` at --concurrency, one PNG per request as the raw body; its
   statistics (``GET /v2/models/<name>/stats``) give the model calls it made, their mean batch size
   and their mean compute time, i.e. the model's time per image while the loop serves requests.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.load_predict import build_stores, cpu_model, run_cell_wrk, start_server  # noqa: E402


def alone(folder: Path, gap_ms: float) -> dict:
    import torch

    from service import kernel
    from service.model import load_model

    torch.set_num_threads(1)
    kernel.configure(threads=1)
    model = load_model(folder)
    out = {}
    for size in (1, 32):
        batch = torch.zeros(size, 1, 28, 28)
        for _ in range(20):
            model.predict(batch)
        best = float("inf")
        for _ in range(50):
            start = time.perf_counter()
            model.predict(batch)
            best = min(best, time.perf_counter() - start)
        out[f"batch{size}_ms"] = round(best * 1000, 3)
    one = torch.zeros(1, 1, 28, 28)
    gapped = []
    for _ in range(100):
        time.sleep(gap_ms / 1000)
        start = time.perf_counter()
        model.predict(one)
        gapped.append(time.perf_counter() - start)
    out[f"batch1_after_{gap_ms:g}ms_idle_ms"] = round(statistics.median(gapped) * 1000, 3)
    return out


def served(store: Path, model: str, image: bytes, concurrency: int, seconds: float) -> dict:
    server = start_server(store, max_batch_size=32, threads=1, workers=1)
    try:
        cell = run_cell_wrk(server.url, model, image, concurrency, seconds, raw=True)
        stats = httpx.get(f"{server.url}/v2/models/{model}/stats").json()["model_stats"][0]
    finally:
        server.terminate()
    batches = stats["batch_stats"]
    calls = sum(b["compute_infer"]["count"] for b in batches)
    images = sum(b["batch_size"] * b["compute_infer"]["count"] for b in batches)
    infer_ms = sum(b["compute_infer"]["ns"] for b in batches) / 1e6
    return {"req_per_s": cell["rps"], "model_calls": calls, "mean_batch": round(images / calls, 1),
            "ms_per_call": round(infer_ms / calls, 2), "ms_per_image": round(infer_ms / images, 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", nargs="+", choices=["binary", "float"], default=["binary", "float"])
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--gap-ms", type=float, default=3.0)
    args = parser.parse_args()
    os.environ["OMP_NUM_THREADS"] = "1"
    print(f"machine: {cpu_model()}, {os.cpu_count()} CPUs")
    with tempfile.TemporaryDirectory() as tmp:
        stores = build_stores(Path(tmp), args.variants)
        for variant in args.variants:
            store, model, image = stores[variant]
            print(variant, "alone:", alone(store / model, args.gap_ms), flush=True)
            print(variant, "in a loaded one-worker server:",
                  served(store, model, image, args.concurrency, args.seconds), flush=True)


if __name__ == "__main__":
    main()
