"""Before/after timing of two or more builds of the compiled core, interleaved.

Each build runs in its own process (two builds of one extension cannot share a process), the
builds alternate --rounds times, and every figure is the minimum over the rounds (each itself the
best of >= 20 calls and 0.2 s): a noisy minute on a shared VM spoils one round of one build, not
the comparison. Prints ms per image for each shape, thread count and output layout, and the
2-thread speed-up of each build.

    # build each version in its own checkout and keep its .so, e.g.
    git worktree add /tmp/old COMMIT && (cd /tmp/old && python -m pip wheel . --no-deps -w /tmp/old/wheel)
    unzip -j /tmp/old/wheel/*.whl 'service/_core*.so' -d /tmp/old/so
    .venv/bin/python bench/ab_cores.py /tmp/old/so/_core*.so build/*/_core*.so --rounds 4

--shapes picks bench_conv.py's shape groups (3x3, other, batch; default 3x3,batch). Not a test:
nothing here passes or fails.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def measure(shape_groups: str, threads: list[int], what: str) -> dict[str, float]:
    """Runs inside the child process (with the build under test loaded by with_core.py)."""
    import numpy as np

    sys.path.insert(0, str(REPO / "bench"))
    from bench_conv import SHAPES_3X3, SHAPES_BATCH, SHAPES_OTHER, best_time
    from service import _core

    groups = {"3x3": SHAPES_3X3, "other": SHAPES_OTHER, "batch": SHAPES_BATCH}
    shapes = [s for g in shape_groups.split(",") for s in groups[g]]
    rng = np.random.default_rng(0)
    out = {}
    for (name, N, C, H, W, O, k, s, p) in shapes:
        x = rng.standard_normal((N, C, H, W), dtype=np.float32)
        pw = _core.PackedWeights.from_float(rng.standard_normal((O, C, k, k), dtype=np.float32))
        pk = _core.pack_activations(x, False, (p, p))
        for nt in threads:
            _core.set_num_threads(nt)
            for cl in (False, True):
                if what == "pack":  # packing the conv's fp32 input, NCHW or NHWC
                    xin = np.ascontiguousarray(x.transpose(0, 2, 3, 1)) if cl else x
                    t = best_time(lambda: _core.pack_activations(xin, cl, (p, p)), 20, 0.2)
                else:
                    t = best_time(lambda: _core.conv2d_packed(pk, pw, (s, s), (1, 1), 0, channels_last_out=cl), 20, 0.2)
                out[f"{name}|{nt}|{'nhwc' if cl else 'nchw'}"] = t / N * 1e3
    _core.set_num_threads(1)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("cores", nargs="+", help="paths of _core*.so builds (two or more)")
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--shapes", default="3x3,batch")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--measure", choices=["conv", "pack"], default="conv",
                    help="conv2d_packed (NCHW / NHWC output) or pack_activations (NCHW / NHWC input)")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    threads = [int(t) for t in args.threads.split(",")]
    if args.child:
        print(json.dumps(measure(args.shapes, threads, args.measure)))
        return
    best: dict[str, list[float]] = {}
    for _ in range(args.rounds):
        for i, so in enumerate(args.cores):
            cmd = [sys.executable, str(REPO / "bench" / "with_core.py"), so, __file__, *args.cores,
                   "--child", "--shapes", args.shapes, "--threads", args.threads, "--measure", args.measure]
            res = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, check=True)
            for key, t in json.loads(res.stdout.strip().splitlines()[-1]).items():
                row = best.setdefault(key, [float("inf")] * len(args.cores))
                row[i] = min(row[i], t)
    labels = [f"build{i}" for i in range(len(args.cores))]
    for i, so in enumerate(args.cores):
        print(f"{labels[i]}: {so}")
    print(f"\n{args.measure}: ms per image, min over {args.rounds} interleaved rounds")
    print(f"{'shape | threads | output':40s} " + " ".join(f"{lab:>8s}" for lab in labels))
    for key, row in best.items():
        print(f"{key:40s} " + " ".join(f"{t:8.4f}" for t in row))
    if 1 in threads and 2 in threads:
        print("\n2-thread speed-up (1-thread time / 2-thread time)")
        for key, row in best.items():
            name, nt, layout = key.split("|")
            if nt == "2":
                one = best[f"{name}|1|{layout}"]
                print(f"{name + ' ' + layout:40s} " + " ".join(f"{a / b:8.2f}" for a, b in zip(one, row)))


if __name__ == "__main__":
    main()
