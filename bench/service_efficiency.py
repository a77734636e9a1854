"""How much of a model's own throughput the service delivers: images/s through ``POST /predict``
against ``model.predict`` alone, at the batch sizes the server formed and the same threads.

    .venv/bin/python bench/service_efficiency.py [--variant bireal] [--concurrency 8] [--threads 2]
        [--seconds 10] [--workers 1]

The server (``python -m service``, batching on, --workers processes of --threads kernel threads) is
driven by ``wrk`` with one 224x224 JPEG (Bi-Real-Net-18, random weights) or 28x28 PNG (the shipped
Fashion model) per request as the raw body, at --concurrency connections. Its statistics give how many
model calls it made of each batch size; the same model is then loaded in this process and
``predict`` timed on batches of each of those sizes (zeros, --threads threads, the least of 10 passes),
so "the model's own throughput" is images over time summed with the server's mix of batch sizes.
With several workers each runs the model on its own threads at once, so the model's figure is
multiplied by the workers (which assumes the cores are there: compare at workers x threads <= CPUs).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.load_predict import build_stores, cpu_model, run_cell_wrk, start_server  # noqa: E402


def model_images_per_s(folder: Path, mix: dict[int, int], threads: int, passes: int = 10) -> tuple[float, dict]:
    """Images/s of ``predict`` alone over the batch-size ``mix`` (size -> model calls), and ms per call per size."""
    import torch

    from service import kernel
    from service.model import load_model

    torch.set_num_threads(threads)
    kernel.configure(threads=threads)
    model = load_model(folder)
    spec = model.input
    per_call = {}
    for size in sorted(mix):
        batch = torch.zeros(size, spec.channels, spec.height, spec.width)
        for _ in range(2):  # warm
            model.predict(batch)
        best = float("inf")
        for _ in range(passes):
            start = time.perf_counter()
            model.predict(batch)
            best = min(best, time.perf_counter() - start)
        per_call[size] = best
    images = sum(size * calls for size, calls in mix.items())
    seconds = sum(per_call[size] * calls for size, calls in mix.items())
    return images / seconds, {size: round(t * 1000, 2) for size, t in per_call.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", choices=["bireal", "binary"], default="bireal")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    os.environ["OMP_NUM_THREADS"] = str(args.threads)

    with tempfile.TemporaryDirectory() as tmp:
        store, model, image = build_stores(Path(tmp), [args.variant])[args.variant]
        server = start_server(store, max_batch_size=32, threads=args.threads, workers=args.workers)
        try:
            before = httpx.get(f"{server.url}/v2/models/{model}/stats").json()["model_stats"][0]
            cell = run_cell_wrk(server.url, model, image, args.concurrency, args.seconds, raw=True)
            after = httpx.get(f"{server.url}/v2/models/{model}/stats").json()["model_stats"][0]
        finally:
            server.terminate()
        calls = lambda stats: {b["batch_size"]: b["compute_infer"]["count"] for b in stats["batch_stats"]}  # noqa: E731
        mix = {size: n - calls(before).get(size, 0) for size, n in calls(after).items()}
        mix = {size: n for size, n in mix.items() if n > 0}
        own, per_call = model_images_per_s(store / model, mix, args.threads)
    own *= args.workers
    served = cell["rps"]  # one image per request
    print(json.dumps({"variant": args.variant, "workers": args.workers, "threads": args.threads,
                      "concurrency": args.concurrency, "served_images_per_s": served, "batch_mix": mix,
                      "ms_per_call": per_call, "model_images_per_s": round(own, 1),
                      "ratio": round(served / own, 3), "p50_ms": cell["p50_ms"], "p99_ms": cell["p99_ms"],
                      "errors": cell["errors"]}))
    print(f"\nmachine: {cpu_model()}, {os.cpu_count()} CPUs, python {platform.python_version()}")
    print(f"{args.variant}, c={args.concurrency}, {args.workers} worker(s) x {args.threads} threads: "
          f"{served:.1f} images/s served, {own:.1f} images/s the model alone at the same batch sizes "
          f"({mix}): {served / own:.1%}")


if __name__ == "__main__":
    main()
