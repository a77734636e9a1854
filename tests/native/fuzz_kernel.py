"""atheris harness over the packing and convolution entry points, with random geometry.

Every input either gives the reference's exact answer or raises ValueError/TypeError; anything
else (a crash, another exception, a wrong number) is a finding. Bounded run (what the tests do):

    python tests/native/fuzz_kernel.py -atheris_runs=3000 -max_total_time=30

Longer by hand: drop the limits, or add -max_total_time=3600.
"""

from __future__ import annotations

import sys

import atheris
import numpy as np
import torch
import torch.nn.functional as F

with atheris.instrument_imports(include=["service"]):
    from service import kernel

ISAS = kernel.available_isas()
torch.set_num_threads(1)


def reference(x, w, stride, padding, dilation, pad_value):
    sx, sw = kernel.sign(x), kernel.sign(w)
    if pad_value:
        sx = F.pad(sx, (padding[1], padding[1], padding[0], padding[0]), value=float(pad_value))
        padding = (0, 0)
    return F.conv2d(sx, sw, stride=stride, padding=padding, dilation=dilation)


COUNTS = {"exact": 0, "rejected": 0}


def one_input(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    isa = ISAS[fdp.ConsumeIntInRange(0, len(ISAS) - 1)]
    lo = 0 if fdp.ConsumeIntInRange(0, 19) == 0 else 1  # now and then an empty or invalid geometry
    dims = [fdp.ConsumeIntInRange(lo, 9) for _ in range(4)]
    wdims = [fdp.ConsumeIntInRange(lo, 9), dims[1] if fdp.ConsumeIntInRange(0, 9) else fdp.ConsumeIntInRange(lo, 9),
             fdp.ConsumeIntInRange(lo, 5), fdp.ConsumeIntInRange(lo, 5)]
    stride = (fdp.ConsumeIntInRange(lo - 1, 4) or 1, fdp.ConsumeIntInRange(lo - 1, 4) or 1)
    padding = (fdp.ConsumeIntInRange(lo - 1, 4), fdp.ConsumeIntInRange(lo - 1, 4))
    dilation = (fdp.ConsumeIntInRange(lo - 1, 4) or 1, fdp.ConsumeIntInRange(lo - 1, 4) or 1)
    pad_value = fdp.PickValueInList([-1, 0, 1, 2 if lo == 0 else 0])
    mode = fdp.ConsumeIntInRange(0, 3)
    g = torch.Generator().manual_seed(fdp.ConsumeIntInRange(0, 2**31))
    x, w = torch.randn(dims, generator=g), torch.randn(wdims, generator=g)
    specials = torch.tensor([0.0, -0.0, float("nan"), float("inf"), float("-inf"), 1e-38, -1e-38])
    if x.numel():
        for _ in range(fdp.ConsumeIntInRange(0, 4)):
            x.view(-1)[fdp.ConsumeIntInRange(0, x.numel() - 1)] = specials[fdp.ConsumeIntInRange(0, 6)]
    if mode == 1:
        x = x.contiguous(memory_format=torch.channels_last)
    with kernel.use_isa(isa):
        try:
            if mode == 3:
                raw = np.frombuffer(fdp.ConsumeBytes(8 * 64), dtype=np.uint8).copy()
                bits = torch.from_numpy(raw[: (raw.size // 8) * 8]).reshape(-1, 1, 1, 8) if raw.size >= 8 else torch.zeros(0, 1, 1, 8, dtype=torch.uint8)
                weights = kernel.unpack_weights(bits, max(1, dims[1]))
                kernel.binary_conv2d(x, weights, stride, padding, dilation, pad_value)
                COUNTS["exact"] += 1  # random bits: no float reference, but no crash
                return
            weight = kernel.pack_weights(w) if mode == 2 else w
            got = kernel.binary_conv2d(x, weight, stride, padding, dilation, pad_value)
        except (ValueError, TypeError):
            COUNTS["rejected"] += 1
            return
    expected = reference(x, w, stride, padding, dilation, pad_value)
    COUNTS["exact"] += torch.equal(got, expected)
    if not torch.equal(got, expected):
        raise AssertionError(f"mismatch on {isa}: x{tuple(x.shape)} w{tuple(w.shape)} s{stride} p{padding} d{dilation} pv{pad_value}")


if __name__ == "__main__":
    import atexit

    atexit.register(lambda: print(f"fuzz_kernel: {COUNTS['exact']} exact, {COUNTS['rejected']} rejected with a clear error", flush=True))
    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()
