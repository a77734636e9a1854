"""Binarisation and bit-packing: float tensors in, the core's packed weights and activations out."""

from __future__ import annotations

import numpy as np
import torch

from service import _core

from .geometry import IntPair, pair
from .runtime import ensure_configured

PackedWeights = _core.PackedWeights
# Bit-packed activations (channels-last words of 64 channels, with a +1 border): what a binary
# layer writes with InferenceConv.sign_packed and what the next binary layer reads without packing.
PackedActivations = _core.PackedActivations


def sign(t: torch.Tensor) -> torch.Tensor:
    """The binarisation every path uses: +1 where t >= 0, else -1 (NaN -> -1)."""
    return torch.where(t >= 0, 1.0, -1.0).to(torch.float32)


def check_float_tensor(t: torch.Tensor, name: str, ndim: int) -> None:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dim() != ndim:
        raise ValueError(f"{name} must be {ndim}-D, got shape {tuple(t.shape)}")
    if not t.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {t.dtype}")
    if t.device.type != "cpu":
        raise ValueError(f"{name} must be on the CPU, got device {t.device}")


def suggests_channels_last(x: torch.Tensor) -> bool:
    """torch's ``suggest_memory_format(x) == channels_last`` for a 4-D tensor (the rule its conv2d
    uses for the output layout): the strides order the dims C, W, H, N from fastest to slowest."""
    sizes, strides = x.shape, x.stride()
    if strides[1] == 0:
        return False
    smallest = 0
    for d in (1, 3, 2, 0):
        if sizes[d] == 0:
            return False
        if strides[d] < smallest:
            return False
        if d == 0 and smallest == strides[1]:
            return False
        smallest = strides[d] * (sizes[d] if sizes[d] > 1 else 1)
    return True


def as_kernel_input(x: torch.Tensor) -> tuple[np.ndarray, bool]:
    """A float32 buffer the core reads without copying where possible; True if channels-last."""
    x = x.detach()
    if x.dtype != torch.float32:
        # Binarise before narrowing: a tiny negative float64 must not round to -0.0 (= +1).
        x = sign(x)
    if not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last):
        return x.permute(0, 2, 3, 1).numpy(), True
    return x.contiguous().numpy(), False


# ---- weights -----------------------------------------------------------------------------


def pack_weights(weight: torch.Tensor) -> PackedWeights:
    """Binarise and bit-pack float weights [O, C, KH, KW] once, for reuse across calls."""
    check_float_tensor(weight, "weight", 4)
    if weight.numel() == 0:
        raise ValueError(f"weight must not be empty, got shape {tuple(weight.shape)}")
    w = weight.detach()
    if w.dtype != torch.float32:
        w = sign(w)
    return _core.PackedWeights.from_float(w.contiguous().numpy())


def packed_bits(weights: PackedWeights) -> torch.Tensor:
    """Canonical packing as uint8 [O, KH, KW, words * 8] (little-endian words): what the model store saves."""
    return torch.from_numpy(weights.bits().view(np.uint8).copy())


def unpack_weights(bits: torch.Tensor, in_channels: int) -> PackedWeights:
    """Inverse of :func:`packed_bits`; validates the shape and that no bit lies beyond in_channels."""
    if not isinstance(bits, torch.Tensor) or bits.dtype != torch.uint8 or bits.dim() != 4:
        raise ValueError("packed weight bits must be a 4-D uint8 tensor [O, KH, KW, words * 8]")
    if bits.shape[3] % 8 != 0:
        raise ValueError(f"packed weight bits: last dimension {bits.shape[3]} is not a multiple of 8")
    words = np.ascontiguousarray(bits.numpy()).view("<u8")
    return _core.PackedWeights.from_bits(words, int(in_channels))


def signed_weights(weights: PackedWeights) -> torch.Tensor:
    """±1 float weights [O, C, KH, KW] from packed ones (for gradients and references)."""
    o, c, (kh, kw) = weights.out_channels, weights.in_channels, weights.kernel_size
    bits = np.unpackbits(weights.bits().view(np.uint8), axis=-1, bitorder="little")[..., :c]
    return torch.from_numpy(1.0 - 2.0 * bits.astype(np.float32)).reshape(o, kh, kw, c).permute(0, 3, 1, 2).contiguous()


# ---- activations -------------------------------------------------------------------------


def channel_vector(v: torch.Tensor, n: int, name: str) -> np.ndarray:
    """A per-channel float vector of ``n`` values in the form the core takes (float32 numpy)."""
    if not isinstance(v, torch.Tensor) or v.dim() != 1 or v.shape[0] != n:
        raise ValueError(f"{name} must be a 1-D tensor of {n} values (one per channel)")
    return v.detach().to(torch.float32).contiguous().numpy()


def pack_activations(x: torch.Tensor, padding: IntPair = 0, shift: torch.Tensor | None = None) -> PackedActivations:
    """Binarise and bit-pack a float tensor [N, C, H, W] (NCHW or channels-last) with a +1 border of
    ``padding``: the input a binary layer with that padding reads. With ``shift`` ([C]), the signs
    of ``x + shift`` per channel (ReActNet's RSign), bit for bit ``sign(x + shift.view(1, -1, 1, 1))``."""
    check_float_tensor(x, "input", 4)
    if x.numel() == 0:
        raise ValueError(f"input must not be empty, got shape {tuple(x.shape)}")
    padding = pair(padding, "padding", 0)
    if shift is None:
        arr, channels_last = as_kernel_input(x)
        ensure_configured()
        return _core.pack_activations(arr, channels_last, padding)
    if x.dtype != torch.float32:
        raise ValueError(f"input must be float32 to be packed with a shift (the sum is float32), got {x.dtype}")
    vec = channel_vector(shift, x.shape[1], "shift")
    arr, channels_last = as_kernel_input(x)
    ensure_configured()
    return _core.pack_activations(arr, channels_last, padding, shift=vec)
