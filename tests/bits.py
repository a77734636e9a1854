"""Comparing float tensors bit for bit, as the kernel's exactness tests do."""

from __future__ import annotations

import torch


def same_bits(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Equal bit for bit (so +0.0 != -0.0), NaN in the same places (any NaN)."""
    nan = a.isnan()
    bits_a, bits_b = (t.masked_fill(nan, 0.0).contiguous().view(torch.int32) for t in (a, b))
    return torch.equal(nan, b.isnan()) and torch.equal(bits_a, bits_b)
