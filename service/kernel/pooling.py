"""Max pooling on the kernel's threads, bit for bit ``F.max_pool2d`` (after ``F.relu`` with
``relu=True``): the graph's stem pools its ReLU'd float conv output in one pass over channels-last
memory instead of two torch ops (``native/src/pooling.h`` says how ties, ±0 and NaN come out
exactly as torch's)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from service import _core

from .geometry import IntPair, pair
from .runtime import ensure_configured


def _reference(
    x: torch.Tensor,
    k: tuple[int, int],
    s: tuple[int, int],
    p: tuple[int, int],
    d: tuple[int, int],
    ceil_mode: bool,
    relu: bool,
) -> torch.Tensor:
    return F.max_pool2d(F.relu(x) if relu else x, k, s, p, d, ceil_mode)


def max_pool2d(
    x: torch.Tensor,
    kernel_size: IntPair,
    stride: IntPair | None = None,
    padding: IntPair = 0,
    dilation: IntPair = 1,
    ceil_mode: bool = False,
    *,
    relu: bool = False,
) -> torch.Tensor:
    """``F.max_pool2d(F.relu(x) if relu else x, ...)``, the same bits. A float32 channels-last
    4-D ``x`` (what the graph executor holds) is pooled by the core, on the kernel's threads and
    under its cancellation; anything else (another dtype or layout, autograd) by torch. The result
    is channels-last like torch's for channels-last input. Bad geometry raises ValueError."""
    k = pair(kernel_size, "kernel_size", 1)
    s = k if stride is None else pair(stride, "stride", 1)
    p, d = pair(padding, "padding", 0), pair(dilation, "dilation", 1)
    nhwc = x.permute(0, 2, 3, 1) if x.dim() == 4 else None
    if (
        nhwc is None
        or x.dtype != torch.float32
        or x.device.type != "cpu"
        or (x.requires_grad and torch.is_grad_enabled())
        or not nhwc.is_contiguous()
    ):
        return _reference(x, k, s, p, d, ceil_mode, relu)
    ensure_configured()
    out = _core.max_pool2d_nhwc(nhwc.detach().numpy(), k, s, p, d, bool(ceil_mode), bool(relu))
    return torch.from_numpy(out).permute(0, 3, 1, 2)
