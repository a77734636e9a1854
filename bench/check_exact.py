"""Randomised exactness check of service._core against torch (every ISA path), float and binarised
output. Not a timing test.

    .venv/bin/python bench/check_exact.py [--n 150] [--seed 0]
"""
import argparse
import random

import numpy as np
import torch
import torch.nn.functional as F

from service import _core


def sgn(t):
    return torch.where(t >= 0, 1.0, -1.0)


def one(rng, isa, threads):
    N = rng.choice([1, 1, 2, 3])
    C = rng.choice([1, 3, 17, 63, 64, 65, 100, 128, 130, 192, 256, 300])
    O = rng.choice([1, 5, 16, 17, 31, 32, 33, 48, 64, 70])
    KH, KW = rng.choice([(1, 1), (3, 3), (3, 3), (1, 3), (5, 5), (2, 2), (3, 1)])
    sh, sw = rng.choice([(1, 1), (1, 1), (2, 2), (1, 2), (3, 3)])
    dh, dw = rng.choice([(1, 1), (1, 1), (2, 2), (1, 2)])
    ph, pw = rng.choice([(0, 0), (1, 1), (1, 1), (2, 2), (0, 1), (3, 2)])
    pv = rng.choice([0, 1, -1])
    H = rng.randint(max(1, dh * (KH - 1) + 1 - 2 * ph), 40)
    W = rng.randint(max(1, dw * (KW - 1) + 1 - 2 * pw), 70)
    cl = rng.random() < 0.4
    x = torch.randn(N, C, H, W)
    x[x.abs() < 0.05] = 0.0
    w = torch.randn(O, C, KH, KW)
    scale = bias = None
    if rng.random() < 0.3:
        scale = torch.randn(O)
        bias = torch.randn(O)
    if cl:
        arr = x.permute(0, 2, 3, 1).contiguous().numpy()
    else:
        arr = x.numpy()
    pwt = _core.PackedWeights.from_float(w.numpy())
    kw = {}
    if scale is not None:
        kw = dict(scale=scale.numpy(), bias=bias.numpy())
    out = _core.conv2d(arr, cl, pwt, (sh, sw), (ph, pw), (dh, dw), pv, **kw)
    xs = sgn(x)
    if pv == 0:
        ref = F.conv2d(xs.double(), sgn(w).double(), stride=(sh, sw), padding=(ph, pw), dilation=(dh, dw))
    else:
        ref = F.conv2d(F.pad(xs, (pw, pw, ph, ph), value=float(pv)).double(), sgn(w).double(), stride=(sh, sw), dilation=(dh, dw))
    if scale is not None:
        ref = (ref.float() * scale.view(1, -1, 1, 1)) + bias.view(1, -1, 1, 1)
    ref = ref.float()
    got = torch.from_numpy(out)
    desc = f"isa={isa} thr={threads} N={N} C={C} O={O} k={KH}x{KW} s={sh},{sw} d={dh},{dw} p={ph},{pw} pv={pv} H={H} W={W} cl={cl} sb={scale is not None}"
    if got.shape != ref.shape or not torch.equal(got, ref):
        bad = (got - ref).abs().max().item() if got.shape == ref.shape else "shape"
        raise SystemExit(f"MISMATCH {desc} maxdiff={bad}")
    # The binarised output: the packed bits of sign(reference), with a random border.
    out_pad = (rng.randint(0, 2), rng.randint(0, 2))
    bits = _core.conv2d_packed_sign(_core.pack_activations(arr, cl, (ph, pw)), pwt, (sh, sw), (dh, dw), pv,
                                    out_padding=out_pad, **kw)
    want = _core.pack_activations(ref.contiguous().numpy(), False, out_pad)
    if not np.array_equal(bits.words(), want.words()):
        raise SystemExit(f"MISMATCH (binarised output) {desc} out_padding={out_pad}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=150)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    rng = random.Random(a.seed)
    torch.manual_seed(a.seed)
    prev = _core.active_isa()
    for isa in _core.available_isas():
        _core.set_isa(isa)
        for threads in (1, 2):
            _core.set_num_threads(threads)
            for _ in range(a.n if isa != "portable" else a.n // 3):
                one(rng, isa, threads)
        print("ok", isa)
    _core.set_isa(prev)
    _core.set_num_threads(1)


if __name__ == "__main__":
    main()
