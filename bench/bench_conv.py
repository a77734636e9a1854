"""Binary conv benchmark: service._core vs torch fp32 (one machine, same run, same thread count).

    .venv/bin/python bench/bench_conv.py                  # all paths, 1 and 2 threads, 3 rounds
    .venv/bin/python bench/bench_conv.py --quick          # fewer shapes / repeats
    .venv/bin/python bench/bench_conv.py --threads 1 --isa avx512

Times are best-of-many (the min), in ms per image. "ours" is the packed conv (conv2d_packed) with
NCHW output, "pack" is pack_activations of its NCHW input (measured separately); "ours_cl" and
"pack_cl" are the same for channels-last: NHWC output (channels_last_out=True, no transpose in
the epilogue) and packing of an NHWC input.
GMAC/s counts binary multiply-accumulates (N*O*OH*OW*C*KH*KW) of the conv alone. "peak" is the
active path's register-resident XOR+popcount+add loop on one thread (no loads, no Harley-Seal);
the kernel may exceed 1.0 of it because it needs fewer popcounts per MAC than that loop.

A second table per path and thread count is the binarised output, for a binary layer that feeds
another binary layer: "ours_cl" again (NHWC float output), "pk_out" = pack_activations of that
output for the next layer (what an unfused pipeline pays), "sign" = conv2d_packed_sign (the
epilogue writes the next layer's packed bits itself, no float output), "sign-cl" = the fused
packing's extra cost in microseconds (negative: cheaper than writing floats), "pk_out%" and
"fused%" = the two packing costs as a share of the conv, and "x chain" = (ours_cl + pk_out) / sign.
Never used as a pass/fail test.
"""
import argparse
import platform
import time

import numpy as np
import torch
import torch.nn.functional as F

from service import _core

# (name, N, C, H, W, O, k, stride, pad)
SHAPES_3X3 = [
    ("3x3 64x56x56->64", 1, 64, 56, 56, 64, 3, 1, 1),
    ("3x3 128x28x28->128", 1, 128, 28, 28, 128, 3, 1, 1),
    ("3x3 256x14x14->256", 1, 256, 14, 14, 256, 3, 1, 1),
    ("3x3 512x7x7->512", 1, 512, 7, 7, 512, 3, 1, 1),
]
SHAPES_OTHER = [
    ("1x1 64x56x56->256", 1, 64, 56, 56, 256, 1, 1, 0),
    ("1x1 256x56x56->64", 1, 256, 56, 56, 64, 1, 1, 0),
    ("1x1 512x28x28->128", 1, 512, 28, 28, 128, 1, 1, 0),
    ("1x1 1024x14x14->256", 1, 1024, 14, 14, 256, 1, 1, 0),
    ("1x1s2 256x56x56->512", 1, 256, 56, 56, 512, 1, 2, 0),
    ("3x3s2 64x56x56->128", 1, 64, 56, 56, 128, 3, 2, 1),
    ("3x3s2 128x28x28->256", 1, 128, 28, 28, 256, 3, 2, 1),
    ("3x3s2 256x14x14->512", 1, 256, 14, 14, 512, 3, 2, 1),
]
SHAPES_BATCH = [(n.replace("3x3", "3x3 b8"), 8, *rest) for (n, _, *rest) in SHAPES_3X3]
QUICK = [SHAPES_3X3[0], SHAPES_3X3[3], SHAPES_OTHER[1], SHAPES_OTHER[6], SHAPES_BATCH[0]]


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def best_time(fn, min_reps, min_time):
    fn()  # warm up
    best, reps, start = float("inf"), 0, time.perf_counter()
    while reps < min_reps or time.perf_counter() - start < min_time:
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
        reps += 1
    return best


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", default="1,2", help="comma-separated thread counts (default 1,2)")
    ap.add_argument("--isa", default=None, help="comma-separated paths (default: all but portable)")
    ap.add_argument("--quick", action="store_true", help="fewer shapes and repeats")
    ap.add_argument("--rounds", type=int, default=3, help="measurement rounds; each figure is the min over them")
    args = ap.parse_args()
    threads = [int(t) for t in args.threads.split(",")]
    isas = args.isa.split(",") if args.isa else [i for i in _core.available_isas() if i != "portable"]
    shapes = QUICK if args.quick else SHAPES_3X3 + SHAPES_OTHER + SHAPES_BATCH
    reps, mt = (5, 0.05) if args.quick else (15, 0.25)

    print(f"CPU: {cpu_model()}  ({torch.get_num_threads()} torch threads available, os cpus {len(__import__('os').sched_getaffinity(0))})")
    print(f"paths: {_core.available_isas()}  torch {torch.__version__}  rounds: {args.rounds}")
    rng = np.random.default_rng(0)
    inputs = {}
    for (name, N, C, H, W, O, k, _s, _p) in shapes:
        x = torch.from_numpy(rng.standard_normal((N, C, H, W), dtype=np.float32))
        w = torch.from_numpy(rng.standard_normal((O, C, k, k), dtype=np.float32))
        inputs[name] = (x, w, _core.PackedWeights.from_float(w.numpy()))
    # Every figure is the min over all rounds (each itself best-of-many): rounds interleave the
    # measurements, so a noisy minute on a shared machine spoils one round, not one row.
    best = {}

    def keep(key, values):
        best[key] = values if key not in best else tuple(min(a, b) for a, b in zip(best[key], values))

    prev_isa = _core.active_isa()
    for _ in range(args.rounds):
        for isa in isas:
            _core.set_isa(isa)
            peak = _core.popcount_peak(100000 if args.quick else 300000, 10 if args.quick else 30)
            keep(("peak", isa), (-peak,))
            for nt in threads:
                _core.set_num_threads(nt)
                torch.set_num_threads(nt)
                for (name, *_, s, p) in shapes:
                    x, w, pw = inputs[name]
                    xn = x.numpy()
                    packed = _core.pack_activations(xn, False, (p, p))
                    t_conv = best_time(lambda: _core.conv2d_packed(packed, pw, (s, s), (1, 1), 0), reps, mt)
                    t_pack = best_time(lambda: _core.pack_activations(xn, False, (p, p)), reps, mt)
                    xl = np.ascontiguousarray(xn.transpose(0, 2, 3, 1))
                    packed_cl = _core.pack_activations(xl, True, (p, p))
                    t_conv_cl = best_time(
                        lambda: _core.conv2d_packed(packed_cl, pw, (s, s), (1, 1), 0, channels_last_out=True), reps, mt)
                    t_pack_cl = best_time(lambda: _core.pack_activations(xl, True, (p, p)), reps, mt)
                    keep((isa, nt, name), (t_conv, t_pack, t_conv_cl, t_pack_cl))
                    y = _core.conv2d_packed(packed_cl, pw, (s, s), (1, 1), 0, channels_last_out=True)
                    t_pack_out = best_time(lambda: _core.pack_activations(y, True, (1, 1)), reps, mt)
                    t_sign = best_time(
                        lambda: _core.conv2d_packed_sign(packed_cl, pw, (s, s), (1, 1), 0, out_padding=(1, 1)), reps, mt)
                    keep(("sign", isa, nt, name), (t_pack_out, t_sign))
                    xc = x.contiguous(memory_format=torch.channels_last)
                    wc = w.contiguous(memory_format=torch.channels_last)
                    with torch.no_grad():
                        tn = best_time(lambda: F.conv2d(x, w, stride=s, padding=p), reps, mt)
                        tc = best_time(lambda: F.conv2d(xc, wc, stride=s, padding=p), reps, mt)
                    keep(("fp32", nt, name), (tn, tc))

    for isa in isas:
        peak = -best[("peak", isa)][0]
        print(f"\n== path {isa}: popcount peak (XOR+popcount+add, registers, 1 thread) = {peak / 1e9:.0f} G binary MAC/s")
        for nt in threads:
            print(f"-- {isa}, {nt} thread(s); ms per image")
            print(f"{'shape':24s} {'ours':>7s} {'pack':>7s} {'pack%':>6s} {'ours_cl':>7s} {'pack_cl':>7s} {'pack%':>6s} "
                  f"{'fp32':>7s} {'fp32cl':>7s} {'x fp32':>7s} {'x(+pk)':>7s} {'xcl':>6s} {'xcl+pk':>6s} "
                  f"{'GMAC/s':>7s} {'GMACcl':>7s} {'peak':>5s} {'pk_cl':>5s}")
            for (name, N, C, H, W, O, k, s, p) in shapes:
                t_conv, t_pack, t_conv_cl, t_pack_cl = best[(isa, nt, name)]
                tn, tc = best[("fp32", nt, name)]
                OH = (H + 2 * p - k) // s + 1
                OW = (W + 2 * p - k) // s + 1
                macs = N * O * OH * OW * C * k * k
                gmacs = macs / t_conv / 1e9
                gmacs_cl = macs / t_conv_cl / 1e9
                bestf = min(tn, tc)
                print(f"{name:24s} {t_conv / N * 1e3:7.3f} {t_pack / N * 1e3:7.3f} {100 * t_pack / t_conv:5.1f}% "
                      f"{t_conv_cl / N * 1e3:7.3f} {t_pack_cl / N * 1e3:7.3f} {100 * t_pack_cl / t_conv_cl:5.1f}% "
                      f"{tn / N * 1e3:7.3f} {tc / N * 1e3:7.3f} {bestf / t_conv:7.1f} {bestf / (t_conv + t_pack):7.1f} "
                      f"{bestf / t_conv_cl:6.1f} {bestf / (t_conv_cl + t_pack_cl):6.1f} "
                      f"{gmacs:7.0f} {gmacs_cl:7.0f} {gmacs * 1e9 / peak / nt:5.2f} {gmacs_cl * 1e9 / peak / nt:5.2f}")
            print(f"-- {isa}, {nt} thread(s), binarised output (next layer's packed bits); ms per image")
            print(f"{'shape':24s} {'ours_cl':>7s} {'pk_out':>7s} {'sign':>7s} {'sign-cl':>8s} {'pk_out%':>7s} "
                  f"{'fused%':>7s} {'x chain':>7s}")
            for (name, N, *_rest) in shapes:
                t_conv_cl = best[(isa, nt, name)][2]
                t_pack_out, t_sign = best[("sign", isa, nt, name)]
                print(f"{name:24s} {t_conv_cl / N * 1e3:7.3f} {t_pack_out / N * 1e3:7.3f} {t_sign / N * 1e3:7.3f} "
                      f"{(t_sign - t_conv_cl) / N * 1e6:7.1f}u {100 * t_pack_out / t_conv_cl:6.1f}% "
                      f"{100 * (t_sign - t_conv_cl) / t_conv_cl:6.1f}% {(t_conv_cl + t_pack_out) / t_sign:7.2f}")
    _core.set_isa(prev_isa)
    _core.set_num_threads(1)


if __name__ == "__main__":
    main()
