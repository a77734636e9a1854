"""The shipped Fashion-MNIST binary CNN: packed-model latency vs the same network in PyTorch.

Times ``LoadedModel.predict`` of ``model_store/fashion-mnist-bnn`` against the same network as a
PyTorch model built from ``BinaryConv2d`` (eval mode, the project's kernel) and against its float
twin (``nn.Conv2d``, random weights: speed does not depend on them), at batch 1, 32 (the service's
largest batch) and 256, on 1 and
2 threads. Median of --repeats calls after 3 warm-up calls.

    .venv/bin/python bench/bench_fashion.py [--repeats 30] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import service.kernel as K  # noqa: E402
from bench.harness.model_bench import median_ms  # noqa: E402
from service.model import load_model  # noqa: E402
from service.tuning import keep_freed_memory  # noqa: E402
from training.train_fashion_mnist import FashionNet  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=30)
    p.add_argument("--threads", default="1,2")
    p.add_argument("--batches", default="1,32,256")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    keep_freed_memory()  # as the service does; applies to every model timed here
    torch.manual_seed(0)
    loaded = load_model(REPO / "model_store" / "fashion-mnist-bnn")
    torch_bnn = FashionNet(binary=True).eval()
    float_twin = FashionNet(binary=False).eval()
    rows = []
    for n in (int(t) for t in args.threads.split(",")):
        K.set_num_threads(n)
        torch.set_num_threads(n)
        for b in (int(v) for v in args.batches.split(",")):
            x = torch.randn(b, 1, 28, 28)
            row = {"threads": n, "batch": b, "isa": K.active_isa(),
                   "packed_bnn_ms": round(median_ms(loaded.predict, x, args.repeats), 3),
                   "torch_bnn_eval_ms": round(median_ms(torch_bnn, x, args.repeats), 3),
                   "float_torch_ms": round(median_ms(float_twin, x, args.repeats), 3)}
            rows.append(row)
            print(json.dumps(row), flush=True)
    print("\n| threads, batch | packed BNN ms | PyTorch BNN (eval) ms | float PyTorch ms | float / packed |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['threads']}, {r['batch']} | {r['packed_bnn_ms']} | {r['torch_bnn_eval_ms']} | "
              f"{r['float_torch_ms']} | {r['float_torch_ms'] / r['packed_bnn_ms']:.2f}x |")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
