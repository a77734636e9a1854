"""The float ops around the binary convolutions of Bi-Real-Net-18, on each path torch offers.

    .venv/bin/python bench/float_paths.py [--rounds 5] [--repeats 15] [--threads 1] [--json out.json]

Issue 16 asks for the float stem and the shortcut path on the fastest float path torch offers, or a
better one shown to be faster. This times, interleaved in rounds (medians of each round's median):

- the stem (7x7 conv 3->64 stride 2 at 224x224, BN folded into its weights, ReLU, 3x3/2 max pool):
  ``F.conv2d`` on channels-last input (what the executor runs), on NCHW input, oneDNN's
  ``aten.mkldnn_convolution``, and oneDNN's fused conv + ReLU (``mkldnn._convolution_pointwise``, a
  private op, with and without its weights reordered ahead); the ReLU and max pool as torch's two
  ops against the kernel's one pass (``service.kernel.max_pool2d(relu=True)``, what the executor
  runs);
- each downsampling shortcut (avgpool 2x2 + 1x1 conv, BN folded): conv2d against the same as one
  ``F.linear`` over the channels-last pixels.

Every variant is checked against the first of its group (with a ReLU after it for the fused
conv + ReLU): the maximum difference is printed (0: the same values).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.harness.procfs import cpu_name
from service import kernel


def _cl(x: torch.Tensor) -> torch.Tensor:
    return x.permute(0, 2, 3, 1).contiguous().permute(0, 3, 1, 2)


def groups() -> dict[str, dict[str, Callable[[], torch.Tensor]]]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 3, 224, 224, generator=g)
    xcl = _cl(x)
    w, b = torch.randn(64, 3, 7, 7, generator=g) * 0.1, torch.randn(64, generator=g)
    stem: dict[str, Callable[[], torch.Tensor]] = {
        "conv2d, channels-last input (executor)": lambda: F.conv2d(xcl, w, b, 2, 3),
        "conv2d, NCHW input": lambda: F.conv2d(x, w, b, 2, 3),
        "aten.mkldnn_convolution": lambda: torch.ops.aten.mkldnn_convolution(xcl, w, b, [3, 3], [2, 2], [1, 1], 1),
    }
    pointwise = getattr(torch.ops.mkldnn, "_convolution_pointwise", None)
    if pointwise is not None:
        stem["oneDNN conv + relu fused (private op)"] = lambda: pointwise(
            xcl, w, b, [3, 3], [2, 2], [1, 1], 1, "relu", [None], ""
        )
        try:
            packed = torch.ops.mkldnn._reorder_convolution_weight(w, [3, 3], [2, 2], [1, 1], 1, [1, 3, 224, 224])
            stem["oneDNN conv + relu fused, weights reordered"] = lambda: pointwise(
                xcl, packed, b, [3, 3], [2, 2], [1, 1], 1, "relu", [None], ""
            )
        except RuntimeError:
            pass
    y = F.conv2d(xcl, w, b, 2, 3)
    pool = {
        "relu, then max_pool2d (torch, 2 ops)": lambda: F.max_pool2d(F.relu(y), 3, 2, 1),
        "kernel.max_pool2d(relu=True) (executor)": lambda: kernel.max_pool2d(y, 3, 2, 1, relu=True),
    }
    out = {"stem conv (3->64, 7x7/2, 224x224)": stem, "stem relu + max pool (64x112x112)": pool}
    for cin, cout, hw in ((64, 128, 56), (128, 256, 28), (256, 512, 14)):
        s = _cl(torch.randn(1, cin, hw, hw, generator=g))
        wc = torch.randn(cout, cin, 1, 1, generator=g) * 0.1
        bc = torch.randn(cout, generator=g)

        def as_linear(s=s, wc=wc, bc=bc, cout=cout) -> torch.Tensor:
            p = F.avg_pool2d(s, 2)
            n, c, h, w_ = p.shape
            z = F.linear(p.permute(0, 2, 3, 1).reshape(-1, c), wc.view(cout, c), bc)
            return z.view(n, h, w_, cout).permute(0, 3, 1, 2)

        out[f"shortcut avgpool + 1x1 conv {cin}->{cout} at {hw}x{hw}"] = {
            "avg_pool2d, conv2d (executor)": lambda s=s, wc=wc, bc=bc: F.conv2d(F.avg_pool2d(s, 2), wc, bc),
            "avg_pool2d, linear over pixels": as_linear,
        }
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--repeats", type=int, default=15)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    kernel.set_num_threads(args.threads)
    result: dict[str, dict[str, dict[str, float]]] = {}
    with torch.no_grad():
        table = groups()
        times: dict[tuple[str, str], list[float]] = {}
        for _ in range(args.rounds):
            for group, variants in table.items():
                for name, fn in variants.items():
                    for _ in range(2):
                        fn()
                    ts = []
                    for _ in range(args.repeats):
                        t = time.perf_counter()
                        fn()
                        ts.append(time.perf_counter() - t)
                    times.setdefault((group, name), []).append(1000 * statistics.median(ts))
        print(
            f"CPU: {cpu_name()}, torch {torch.__version__}, {args.threads} thread(s), kernel path {kernel.active_isa()}"
        )
        for group, variants in table.items():
            first = next(iter(variants.values()))()
            print(f"\n| {group} | ms (median of {args.rounds} rounds) | max abs diff vs first |\n|---|---|---|")
            for name, fn in variants.items():
                ms = statistics.median(times[(group, name)])
                want = F.relu(first) if "relu fused" in name else first  # those include the ReLU
                diff = (fn() - want).abs().max().item()
                result.setdefault(group, {})[name] = {"ms": round(ms, 3), "max_abs_diff": diff}
                print(f"| {name} | {ms:.3f} | {diff:.3g} |")
    if args.json:
        Path(args.json).write_text(
            json.dumps({"cpu": cpu_name(), "threads": args.threads, "results": result}, indent=2)
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
