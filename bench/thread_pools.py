"""Two threads on the kernel's own workers against two threads on torch's OpenMP team
(``BNN_KERNEL_POOL``), one thread as the base, on a packed model at batch 1.

    .venv/bin/python bench/thread_pools.py [--model birealnet|reactnet] [--rounds 15] [--calls 8]
    OMP_WAIT_POLICY=PASSIVE .venv/bin/python bench/thread_pools.py   # as bnn-serve sets it by default

Each round runs ``--calls`` single-image predictions per configuration (1 thread; 2 threads, own
workers; 2 threads, OpenMP team), the configurations in turn, after 2 warm-up calls each; figures
are medians, best and first quartile over all rounds' calls, and the speed-up of each over the one
thread median. ``OMP_WAIT_POLICY`` is whatever the environment says (libgomp's default: idle team
threads spin a while, then sleep).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import service.kernel as K
from bench.harness.procfs import cpu_name
from bench.profile_model import birealnet_folder, reactnet_folder
from service.model import load_model
from service.tuning import keep_freed_memory

CONFIGS = ((1, "openmp"), (2, "own"), (2, "openmp"))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", choices=("birealnet", "reactnet"), default="birealnet")
    p.add_argument("--rounds", type=int, default=15)
    p.add_argument("--calls", type=int, default=8)
    p.add_argument("--json")
    args = p.parse_args(argv)
    keep_freed_memory()
    with tempfile.TemporaryDirectory() as tmp:
        folder = birealnet_folder(tmp) if args.model == "birealnet" else reactnet_folder(tmp)
        model = load_model(folder)
    x = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    times: dict[tuple[int, str], list[float]] = {c: [] for c in CONFIGS}
    with torch.no_grad():
        for _ in range(args.rounds):
            for threads, pool in CONFIGS:
                K.set_thread_pool(pool)
                K.set_num_threads(threads)
                torch.set_num_threads(threads)
                for _ in range(2):
                    model.predict(x)
                for _ in range(args.calls):
                    t = time.perf_counter()
                    model.predict(x)
                    times[(threads, pool)].append(1000 * (time.perf_counter() - t))
    base = statistics.median(times[CONFIGS[0]])
    policy = os.environ.get("OMP_WAIT_POLICY", "unset (libgomp default)")
    print(f"{args.model}, batch 1, CPU {cpu_name()}, kernel path {K.active_isa()}, OMP_WAIT_POLICY {policy}")
    print("| threads, pool | median ms | best | first quartile | speed-up (medians) |\n|---|---|---|---|---|")
    result = {}
    for (threads, pool), v in times.items():
        med = statistics.median(v)
        row = {
            "median_ms": round(med, 2),
            "best_ms": round(min(v), 2),
            "q1_ms": round(statistics.quantiles(v, n=4)[0], 2),
            "speedup": round(base / med, 2),
        }
        result[f"{threads}_{pool}"] = row
        print(f"| {threads}, {pool} | {row['median_ms']} | {row['best_ms']} | {row['q1_ms']} | {row['speedup']}x |")
    if args.json:
        Path(args.json).write_text(json.dumps({"cpu": cpu_name(), "omp_wait_policy": policy, **result}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
