"""Randomised exactness check of service._core against torch (every ISA path), float and binarised
output, and of the executor's fusions. Not a timing test.

    .venv/bin/python bench/check_exact.py [--n 150] [--seed 0]
    .venv/bin/python bench/check_exact.py --fashion-logits /tmp/new.npy [--checkout /tmp/bnn-base]

1. The kernel against torch's conv on random shapes, with the fused epilogue's every step (scale
   and bias; residual sum and PReLU on channels-last output; the packed-sign and the dual output)
   against the separate torch ops, bit for bit (zeros of both signs compared as bits).
   ReActNet's shifts likewise: the packing of sign(x + shift) (RSign folded into the packing), RPReLU
   in the epilogue (residual, shift, PReLU, shift), and the dual output's bits of y + shift (the
   next layer's RSign), against torch's separate ops.
2. Every model of model_store/ (and Bi-Real-Net-18 with --birealnet, ReActNet-A with --reactnet):
   the executor with its fusions (``LoadedModel.summary()["fusions"]``, packed and dual outputs,
   ``sign_shifts``) against the same graph run node by node (``Executor(fuse=False)``), on every ISA
   path and 1 and 2 threads.
3. With --fashion-logits FILE: the shipped model's logits on the 10,000 Fashion-MNIST test images
   are written to FILE (.npy), or, when FILE exists, compared with it bit for bit; with
   --checkout DIR they are computed by that older checkout's code (this environment's core).
"""
import argparse
import random
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from service import _core

REPO = Path(__file__).resolve().parents[1]


def sgn(t):
    return torch.where(t >= 0, 1.0, -1.0)


def same_bits(a, b):
    """Bit for bit (so +0.0 != -0.0), NaN in the same places."""
    nan = torch.isnan(a)
    return (a.shape == b.shape and torch.equal(nan, torch.isnan(b))
            and torch.equal(a.masked_fill(nan, 0).contiguous().view(torch.int32),
                            b.masked_fill(nan, 0).contiguous().view(torch.int32)))


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
    # The epilogue's later steps: residual sum, PReLU (NHWC float output), dual output.
    res = torch.randn(ref.shape).round() if rng.random() < 0.7 else None  # integers: exact zero sums
    slope = torch.randn(O) if rng.random() < 0.7 else None
    if slope is not None and rng.random() < 0.2:
        slope[:] = slope[0]
    want_f = ref if res is None else torch.add(ref, res)
    if slope is not None:
        want_f = F.prelu(want_f, slope)
    post = dict(kw)
    if res is not None:
        post["residual"] = res.permute(0, 2, 3, 1).contiguous().numpy()
    if slope is not None:
        post["slope"] = slope.numpy()
    packed = _core.pack_activations(arr, cl, (ph, pw))
    got_f = torch.from_numpy(_core.conv2d_packed(packed, pwt, (sh, sw), (dh, dw), pv, channels_last_out=True, **post))
    if not same_bits(got_f.permute(0, 3, 1, 2), want_f):
        raise SystemExit(f"MISMATCH (residual={res is not None} prelu={slope is not None}) {desc}")
    dual_f, dual_bits = _core.conv2d_packed_dual(packed, pwt, (sh, sw), (dh, dw), pv, out_padding=out_pad, **post)
    want_bits = _core.pack_activations(want_f.contiguous().numpy(), False, out_pad)
    if not same_bits(torch.from_numpy(dual_f).permute(0, 3, 1, 2), want_f) or not np.array_equal(
            dual_bits.words(), want_bits.words()):
        raise SystemExit(f"MISMATCH (dual output, residual={res is not None} prelu={slope is not None}) {desc}")
    reactnet_shifts(rng, x, arr, cl, ph, pw, pwt, (sh, sw), (dh, dw), pv, kw, ref, res, out_pad, desc)


def reactnet_shifts(rng, x, arr, cl, ph, pw, pwt, stride, dilation, pv, kw, ref, res, out_pad, desc):
    """RSign in the packing (sign(x + t)), RPReLU in the epilogue, the dual output's bits of y + t,
    each against torch's separate ops, bit for bit."""
    C, O = x.shape[1], ref.shape[1]
    t_in = torch.randn(C)
    if rng.random() < 0.5:
        x = x.clone()
        x[0, :, 0, 0] = -t_in  # sums of exactly zero
        arr = x.permute(0, 2, 3, 1).contiguous().numpy() if cl else x.numpy()
    want_in = _core.pack_activations(sgn(x + t_in.view(1, -1, 1, 1)).contiguous().numpy(), False, (ph, pw))
    shifted = _core.pack_activations(arr, cl, (ph, pw), shift=t_in.numpy())
    if not np.array_equal(shifted.words(), want_in.words()):
        raise SystemExit(f"MISMATCH (shifted packing) {desc}")
    # the conv of the shifted bits, then residual + RPReLU in the epilogue and shifted dual bits
    if pv == 0:
        conv = F.conv2d(F.pad(sgn(x + t_in.view(1, -1, 1, 1)), (pw, pw, ph, ph)).double(), sgn_w(pwt).double(),
                        stride=stride, dilation=dilation)
    else:
        conv = F.conv2d(F.pad(sgn(x + t_in.view(1, -1, 1, 1)), (pw, pw, ph, ph), value=float(pv)).double(),
                        sgn_w(pwt).double(), stride=stride, dilation=dilation)
    conv = conv.float()
    if "scale" in kw:
        conv = conv * torch.from_numpy(kw["scale"]).view(1, -1, 1, 1) + torch.from_numpy(kw["bias"]).view(1, -1, 1, 1)
    si, a, so, t_out = (torch.randn(O) for _ in range(4))
    want = conv if res is None else torch.add(conv, res)
    want = F.prelu(want + si.view(1, -1, 1, 1), a) + so.view(1, -1, 1, 1)
    post = dict(kw, shift_in=si.numpy(), slope=a.numpy(), shift_out=so.numpy())
    if res is not None:
        post["residual"] = res.permute(0, 2, 3, 1).contiguous().numpy()
    got = _core.conv2d(arr, cl, pwt, stride, (ph, pw), dilation, pv, channels_last_out=True,
                       input_shift=t_in.numpy(), **post)
    if not same_bits(torch.from_numpy(got).permute(0, 3, 1, 2), want):
        raise SystemExit(f"MISMATCH (input shift + rprelu epilogue, residual={res is not None}) {desc}")
    dual_f, dual_bits = _core.conv2d_packed_dual(shifted, pwt, stride, dilation, pv, out_padding=out_pad,
                                                 out_shift=t_out.numpy(), **post)
    want_bits = _core.pack_activations(sgn(want + t_out.view(1, -1, 1, 1)).contiguous().numpy(), False, out_pad)
    if not same_bits(torch.from_numpy(dual_f).permute(0, 3, 1, 2), want) or not np.array_equal(
            dual_bits.words(), want_bits.words()):
        raise SystemExit(f"MISMATCH (dual output with out_shift, residual={res is not None}) {desc}")


def sgn_w(pwt):
    """±1 float weights [O, C, KH, KW] from packed ones."""
    from service.kernel.packing import signed_weights

    return signed_weights(pwt)


def check_models(birealnet: bool, reactnet: bool = False) -> None:
    """Every stored model (and Bi-Real-Net-18, ReActNet-A): fused executor == node-by-node executor, bitwise."""
    from service.model import ModelStore, load_model
    from service.model.graph import Executor
    from service.model.store import read_weights

    store = ModelStore.load(REPO / "model_store")
    models = dict(store.models)
    with tempfile.TemporaryDirectory() as tmp:
        if birealnet or reactnet:
            sys.path.insert(0, str(REPO))
            from bench.profile_model import birealnet_folder, reactnet_folder

            if birealnet:
                models["birealnet18"] = load_model(birealnet_folder(tmp))
            if reactnet:
                models["reactnet_a"] = load_model(reactnet_folder(tmp))
        for name, model in models.items():
            graph = model.manifest.graph
            tensors, _ = read_weights(model.folder, model.manifest)
            unfused = Executor(graph.nodes, graph.output, tensors, fuse=False)
            spec = model.input
            g = torch.Generator().manual_seed(0)
            for isa in _core.available_isas():
                _core.set_isa(isa)
                for threads in (1, 2):
                    _core.set_num_threads(threads)
                    for batch in (1, 3):
                        x = torch.randn(batch, spec.channels, spec.height, spec.width, generator=g)
                        x[0, :, : spec.height // 4] = 0.0
                        with torch.no_grad():
                            if not same_bits(model.predict(x), unfused.run(x)):
                                raise SystemExit(f"MISMATCH fused vs unfused: {name} isa={isa} threads={threads}")
            print(f"ok {name}: fusions {model.summary()['fusions']}, dual outputs {list(model.executor.dual_outputs)}, "
                  f"sign shifts {model.executor.sign_shifts}")


def fashion_logits(path: Path) -> None:
    """The shipped model's 10,000 test logits: saved to ``path``, or compared with it bitwise."""
    sys.path.insert(0, str(REPO))
    from service.model import ModelStore
    from training.train_fashion_mnist import load_split

    model = ModelStore.load(REPO / "model_store").models["fashion-mnist-bnn"]
    images, labels = load_split("test")
    spec = model.input
    x = torch.from_numpy(images).float().div(255.0).unsqueeze(1)
    if spec.invert:
        x = 1.0 - x
    x = (x - spec.mean[0]) / spec.std[0]  # as tests/model/test_fashion_mnist_accuracy.py
    logits = torch.cat([model.predict(x[i : i + 1000]) for i in range(0, len(x), 1000)]).numpy()
    accuracy = float((logits.argmax(1) == labels).mean())
    if path.exists():
        before = np.load(path)
        same = np.array_equal(before.view(np.int32), logits.view(np.int32))
        print(f"fashion-mnist-bnn: {len(logits)} logits bit-identical to {path}: {same}; accuracy {accuracy:.4f}")
        if not same:
            diff = np.abs(before - logits)
            raise SystemExit(f"MISMATCH: {int((diff > 0).sum())} logits differ, max |diff| {diff.max()}, "
                             f"{int((before.argmax(1) != logits.argmax(1)).sum())} predictions change")
    else:
        np.save(path, logits)
        print(f"fashion-mnist-bnn: logits written to {path}; accuracy {accuracy:.4f}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=150)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--birealnet", action="store_true", help="also check Bi-Real-Net-18's fusions")
    ap.add_argument("--reactnet", action="store_true", help="also check ReActNet-A's fusions (224x224)")
    ap.add_argument("--fashion-logits", type=Path, help="write, or compare with, the shipped model's test logits")
    ap.add_argument("--checkout", type=Path, help="with --fashion-logits: an older checkout's code")
    a = ap.parse_args()
    if a.fashion_logits:
        if a.checkout:
            sys.path.insert(0, str(REPO))
            from bench.profile_model import use_checkout

            use_checkout(a.checkout)
        fashion_logits(a.fashion_logits)
        return
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
    check_models(a.birealnet, a.reactnet)
    _core.set_isa(prev)
    _core.set_num_threads(1)


if __name__ == "__main__":
    main()
